"""Real-data loading of the tasks: local files through a column mapping, proportional truncation,
config errors naming the field, and fingerprints that follow config and file content."""

import pytest
from datasets import Dataset
from helpers.tasks import SMALL, rows

from plad.tasks.anonymization import AnonymizationTask
from plad.tasks.base import SPLITS
from plad.tasks.summarization import SummarizationTask


def _write(rows_: list[dict], path) -> None:
    ds = Dataset.from_list(rows_)
    {".jsonl": ds.to_json, ".csv": ds.to_csv, ".parquet": ds.to_parquet}[path.suffix](str(path))


PII_ROWS = [
    {"uid": f"u{i}", "src": f"Mail Bob{i} at bob{i}@x.org today.", "masked": "Mail [NAME] at [EMAIL] today."}
    for i in range(40)
]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_anonymization_loads_local_file_with_column_mapping(tmp_path, suffix):
    path = tmp_path / f"pii{suffix}"
    _write(PII_ROWS, path)
    task = AnonymizationTask(
        source=str(path),
        columns={"text": "src", "reference": "masked", "id": "uid"},
        n_train=20,
        n_unlabeled=10,
        n_validation=5,
        n_test=5,
    )
    data = task.load()
    assert {s: len(data[s]) for s in SPLITS} == {"train": 20, "unlabeled": 10, "validation": 5, "test": 5}
    ids = [i for s in SPLITS for i in data[s]["id"]]
    assert len(set(ids)) == 40 and set(ids) == {r["uid"] for r in PII_ROWS}
    row = data["test"][0]
    i = row["id"][1:]
    assert row["prompt"] == f"Anonymize: Mail Bob{i} at bob{i}@x.org today.\nOutput:"
    assert (row["pii_values"], row["pii_types"]) == ([f"Bob{i}", f"bob{i}@x.org"], ["NAME", "EMAIL"])
    assert rows(data) == rows(AnonymizationTask(**task.config).load())  # seeded carving


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_summarization_loads_tldr_style_split_files(tmp_path, suffix):
    train = [{"prompt": f"POST: story {i}\nTL;DR:", "label": f" summary {i}"} for i in range(30)]
    test = [{"prompt": f"POST: held {i}\nTL;DR:", "label": f" held summary {i}"} for i in range(8)]
    _write(train, tmp_path / f"train{suffix}")
    _write(test, tmp_path / f"test{suffix}")
    task = SummarizationTask(
        source={"train": str(tmp_path / f"train{suffix}"), "test": str(tmp_path / f"test{suffix}")},
        prompt_template="{document}",
        n_train=12,
        n_unlabeled=8,
        n_validation=4,
        n_test=20,
    )
    data = task.load()
    assert {s: len(data[s]) for s in SPLITS} == {"train": 12, "unlabeled": 8, "validation": 4, "test": 8}
    assert all(p.startswith("POST: held") for p in data["test"]["prompt"])
    assert all(r.startswith("summary") for s in ("train", "unlabeled", "validation") for r in data[s]["reference"])
    carved = [p for s in ("train", "unlabeled", "validation") for p in data[s]["prompt"]]
    assert len(set(carved)) == len(carved)  # carved splits never overlap


def test_small_source_truncates_proportionally_or_fails(tmp_path):
    path = tmp_path / "small.jsonl"
    _write(PII_ROWS[:10], path)
    cols = {"text": "src", "reference": "masked"}
    data = AnonymizationTask(source=str(path), columns=cols, n_train=8, n_unlabeled=4, n_validation=2, n_test=2).load()
    assert {s: len(data[s]) for s in SPLITS} == {"train": 5, "unlabeled": 2, "validation": 1, "test": 1}
    _write(PII_ROWS[:3], path)
    with pytest.raises(ValueError, match=r"task\.n_\w+: the data has only 3 rows"):
        AnonymizationTask(source=str(path), columns=cols, **SMALL).load()


# ------------------------------------------------------------------------------ config errors
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_train": -3}, r"task\.n_train: expected a positive integer, got -3"),
        ({"n_test": 0}, r"task\.n_test: expected a positive integer"),
        ({"max_new_tokens": 0}, r"task\.max_new_tokens: expected a positive integer"),
        ({"n_heldout_templates": 100}, r"task\.n_heldout_templates: expected an integer in \[0, "),
        ({"prompt_template": "no slot"}, r"task\.prompt_template: expected a string containing '\{text\}'"),
        ({"columns": {"txt": "a"}}, r"task\.columns: expected keys among"),
    ],
)
def test_bad_config_raises_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AnonymizationTask(**kwargs)


def test_missing_file_and_missing_column_raise(tmp_path):
    with pytest.raises(ValueError, match=r"task\.source: file not found: .*nope\.jsonl"):
        SummarizationTask(source=str(tmp_path / "nope.jsonl")).load()
    path = tmp_path / "d.jsonl"
    _write([{"prompt": "a", "label": "b"}], path)
    with pytest.raises(
        ValueError, match=r"task\.columns\.reference: column 'foo' not in the data \(available: prompt, label\)"
    ):
        SummarizationTask(source=str(path), columns={"document": "prompt", "reference": "foo"}).load()
    with pytest.raises(ValueError, match=r"task\.split: source split 'dev' not found"):
        SummarizationTask(source=str(path), split="dev").load()


def test_fingerprint_follows_config_and_file_content(tmp_path):
    base = AnonymizationTask(**SMALL).fingerprint()
    assert AnonymizationTask(**SMALL).fingerprint() == base
    assert AnonymizationTask(**{**SMALL, "n_train": 61}).fingerprint() != base
    assert AnonymizationTask(seed=1, **SMALL).fingerprint() != base
    assert SummarizationTask(**SMALL).fingerprint() != base
    path = tmp_path / "pii.jsonl"
    _write(PII_ROWS, path)
    task = AnonymizationTask(source=str(path), columns={"text": "src", "reference": "masked"})
    before = task.fingerprint()
    _write(PII_ROWS[:-1], path)
    assert task.fingerprint() != before
