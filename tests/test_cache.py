"""The fingerprint cache: stable keys, invalidation on any input change, atomic entries."""
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from plad.cache import atomic_dir, entry_dir, file_hash, fingerprint, is_complete


def test_fingerprint_is_stable_and_order_insensitive_for_dicts():
    a = fingerprint({"lr": 1e-3, "steps": 10}, "data-v1")
    b = fingerprint(OmegaConf.create({"steps": 10, "lr": 1e-3}), "data-v1")
    assert a == b


@pytest.mark.parametrize("change", [({"lr": 2e-3, "steps": 10}, "data-v1"), ({"lr": 1e-3, "steps": 10}, "data-v2")])
def test_fingerprint_changes_with_any_input(change):
    assert fingerprint({"lr": 1e-3, "steps": 10}, "data-v1") != fingerprint(*change)


def test_file_hash_follows_content(tmp_path: Path):
    f = tmp_path / "x.jsonl"
    f.write_text("a\n")
    h1 = file_hash(f)
    f.write_text("b\n")
    assert file_hash(f) != h1


def test_atomic_dir_publishes_only_on_success(tmp_path: Path):
    final = entry_dir(tmp_path, "models", "abc")
    with pytest.raises(RuntimeError):
        with atomic_dir(final) as tmp:
            (tmp / "weights").write_text("half")
            raise RuntimeError("killed")
    assert not final.exists() and not is_complete(final)
    assert list((tmp_path / "models").iterdir()) == []  # no temp dir left behind
    with atomic_dir(final) as tmp:
        (tmp / "weights").write_text("full")
    assert is_complete(final) and (final / "weights").read_text() == "full"


def test_incomplete_entry_is_not_complete_and_gets_replaced(tmp_path: Path):
    final = entry_dir(tmp_path, "pairs", "fp")
    final.mkdir(parents=True)
    (final / "junk").write_text("left by a killed run")
    assert not is_complete(final)
    with atomic_dir(final) as tmp:
        (tmp / "data").write_text("ok")
    assert is_complete(final) and not (final / "junk").exists()
