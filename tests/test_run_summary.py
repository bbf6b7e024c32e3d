"""The end-of-run summary: headline columns first, oracle runs flagged, pseudo-label noise shown."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from plad.run_summary import print_summary, summary_columns

SYSTEMS = {
    "teacher": {"rougeL": 0.7, "rouge1": 0.8, "gen_tokens": 12.0, "degenerate": 0.01, "quality": 0.7},
    "student": {
        "rougeL": 0.6,
        "rouge1": 0.7,
        "gen_tokens": 11.0,
        "degenerate": 0.05,
        "quality": 0.6,
        "exact_match": 0.2,
    },
}


def test_summary_columns_put_headline_metrics_first():
    expected = ["rougeL", "exact_match", "degenerate", "rouge1", "gen_tokens", "quality"]
    assert summary_columns("rougeL", SYSTEMS) == expected
    assert summary_columns("rougeL", SYSTEMS, max_columns=2) == ["rougeL", "exact_match", "degenerate"]  # never cut
    assert summary_columns("quality", {"a": {"quality": 1.0, "note": "x"}}) == ["quality"]


def test_summary_flags_oracle_runs_and_prints_noise(capsys, tmp_path: Path):
    task = SimpleNamespace(name="summarization", main_metric="rougeL", higher_is_better=True)
    metrics = {
        "split": "test",
        "decoding": "rerank",
        "oracle": True,
        "systems": SYSTEMS,
        "diagnostics": {"pseudo_label_noise": {"student_wins": 0.125, "ties": 0.05, "n_pairs": 80}},
    }
    print_summary(task, {"metrics": metrics}, tmp_path, {"sft": 1.0})
    out = " ".join(capsys.readouterr().out.split())
    assert "rerank decoding" in out and "ORACLE" in out
    assert "pseudo-label noise: student_wins 0.125, ties 0.050, n_pairs 80" in out
    metrics["oracle"] = False
    print_summary(task, {"metrics": metrics}, tmp_path, {})
    assert "ORACLE" not in capsys.readouterr().out


def test_table_prints_full_metric_and_system_names_when_not_a_terminal(capsys, tmp_path: Path):
    """Captured stdout is not a terminal (80 columns): names must still appear whole, never "leak_ra…"."""
    task = SimpleNamespace(name="anonymization", main_metric="quality", higher_is_better=True)
    names = ["quality", "exact_match", "leak_rate", "degenerate", "placeholder_precision", "placeholder_f1/USERNAME"]
    systems = {s: {k: 0.5 for k in names} for s in ("teacher", "student_init", "student")}
    print_summary(task, {"metrics": {"systems": systems}}, tmp_path, {})
    out = capsys.readouterr().out
    assert "…" not in out
    for name in names + list(systems):
        assert name in out, name
