"""The stage dependency rule (``stages``): a stage takes its inputs from an earlier listed stage or
from the cache, and an input that is neither fails in one line before any training."""

import json
from pathlib import Path

import pytest


def _cache_entries(log_dir: Path) -> list[Path]:
    return sorted(p for p in (log_dir / "cache").glob("*/*") if p.is_dir()) if (log_dir / "cache").exists() else []


@pytest.fixture(scope="module")
def warm_logs(tmp_path_factory) -> Path:
    """A log dir whose cache holds every stage of one whole debug=fast run (built here, so no test
    depends on another having run first)."""
    from helpers.configs import compose_run_config

    from plad.pipeline import run

    logs = tmp_path_factory.mktemp("warm_logs")
    (logs / "full").mkdir()
    run(compose_run_config(logs, logs / "full", "debug=fast"))
    return logs


@pytest.mark.parametrize("stages,needs", [("[distill,evaluate]", "sft"), ("[pairs]", "sft"), ("[evaluate]", "sft")])
def test_an_input_neither_listed_nor_cached_fails_before_any_training(run_pipeline, tmp_path, stages, needs):
    with pytest.raises(ValueError, match=rf"^stages: '\w+' needs the output of '{needs}', which is not in"):
        run_pipeline("debug=fast", f"stages={stages}", log_dir=tmp_path / "cold")
    assert not list((tmp_path / "cold" / "cache").glob("models/*"))  # no SFT ran


def test_stages_out_of_order_fail(run_pipeline, tmp_path):
    with pytest.raises(ValueError, match=r"^stages: expected stages in the order"):
        run_pipeline("debug=fast", "stages=[distill,pairs]", log_dir=tmp_path / "cold")


def test_distill_and_evaluate_from_the_cache_actually_distill(run_pipeline, warm_logs):
    """The case that used to skip distillation silently: after a full run, stages=[distill,evaluate]
    takes SFT models and pairs from the cache, builds nothing cached, and trains the student."""
    before = {p: (p / "COMPLETE").stat().st_mtime for p in _cache_entries(warm_logs) if (p / "COMPLETE").exists()}
    results = run_pipeline("debug=fast", "stages=[distill,evaluate]", log_dir=warm_logs, name="resumed")
    assert results["reused"] == {"teacher": True, "student_init": True, "pairs": True}
    assert "distill" in results["timings"] and (results["run_dir"] / "student" / "model.safetensors").is_file()
    metrics = json.loads((results["run_dir"] / "metrics.json").read_text())
    assert set(metrics["systems"]) == {"teacher", "student_init", "student", *metrics["peer_systems"]}
    assert {p: (p / "COMPLETE").stat().st_mtime for p in before} == before  # nothing cached was rebuilt


def test_pair_loss_without_cached_pairs_fails_before_training(run_pipeline, warm_logs):
    """SFT models are cached, but no pair set with 3 student samples exists: the rule names 'pairs'."""
    with pytest.raises(ValueError, match=r"^stages: 'distill' needs the output of 'pairs'"):
        run_pipeline("debug=fast", "stages=[distill,evaluate]", "pairs.n_student=3", log_dir=warm_logs, name="no_pairs")


def test_sft_and_evaluate_only_evaluate_the_sft_models(run_pipeline, warm_logs):
    results = run_pipeline("debug=fast", "stages=[sft,evaluate]", log_dir=warm_logs, name="sft_eval")
    assert "pairs" not in results["reused"] and "distill" not in results["timings"]
    assert set(results["metrics"]["systems"]) == {"teacher", "student_init", "rule_based"}


def test_a_stage_version_bump_moves_that_stage_and_its_dependents_only(tmp_path, monkeypatch):
    """Cache keys come from one helper (plad.cache.stage_key) with one version per stage."""
    from helpers.configs import compose_run_config
    from hydra.utils import instantiate

    from plad.cache import STAGE_VERSIONS
    from plad.stages import evaluate, sft

    cfg = compose_run_config(tmp_path / "logs", tmp_path / "run", "debug=fast")
    task = instantiate(cfg.task)

    def keys() -> tuple[str, str]:
        student = sft.entry(cfg, "student", task, tmp_path)
        outputs = evaluate.output_cache_entries(
            {"split": "test"}, task, {"student_init": student}, tmp_path, {"backend": "hf"}
        )
        return student.fingerprint, outputs["student_init"].name

    before = keys()
    monkeypatch.setitem(STAGE_VERSIONS, "eval", "eval-bumped")
    assert keys()[0] == before[0] and keys()[1] != before[1]
    monkeypatch.setitem(STAGE_VERSIONS, "models", "sft-bumped")
    assert keys()[0] != before[0]


def test_a_run_hides_the_heap_that_existed_before_it_from_the_collector_and_gives_it_back():
    """Model releases call gc.collect(); over the imported stack each costs ~0.5 s, so a run freezes
    what existed before it. Its own garbage must still be collected, and the heap unfrozen after
    (unless the caller had frozen it: the test session)."""
    import gc
    import weakref

    from plad.pipeline import _frozen_heap

    class Node:
        pass

    gc.unfreeze()  # a plain process: nothing frozen before the run
    try:
        with _frozen_heap():
            assert gc.get_freeze_count() > 0
            node = Node()
            node.me = node  # a cycle: only the collector frees it
            alive = weakref.ref(node)
            del node
            gc.collect()
            assert alive() is None
        assert gc.get_freeze_count() == 0
        gc.freeze()
        frozen = gc.get_freeze_count()
        with _frozen_heap():
            pass
        assert gc.get_freeze_count() >= frozen
    finally:
        gc.collect()
        gc.freeze()


def test_pretrained_weights_are_keyed_by_content_not_by_their_path(tmp_path):
    """Replacing the weights behind model.teacher.pretrained (same path, same size) moves the SFT
    entries that depend on them; the same files keep their keys."""
    from helpers.configs import compose_run_config
    from helpers.pairs import save_tiny
    from hydra.utils import instantiate

    from plad.stages import sft

    weights = save_tiny(tmp_path / "given", seed=0)
    cfg = compose_run_config(
        tmp_path / "logs",
        tmp_path / "run",
        "debug=fast",
        f"model.teacher.pretrained={weights}",
        "model.teacher.pretrain=null",
    )
    task = instantiate(cfg.task)
    before = sft.entry(cfg, "teacher", task, tmp_path).fingerprint
    assert sft.entry(cfg, "teacher", task, tmp_path).fingerprint == before
    size = (weights / "model.safetensors").stat().st_size
    save_tiny(tmp_path / "other", seed=1)
    (tmp_path / "other" / "model.safetensors").replace(weights / "model.safetensors")
    assert (weights / "model.safetensors").stat().st_size == size  # same architecture, other weights
    assert sft.entry(cfg, "teacher", task, tmp_path).fingerprint != before
