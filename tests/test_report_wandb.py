"""The report from W&B runs: a real 2-job `logger=wandb` multirun (offline) saves its report inputs
into each W&B run; the offline run folders, and the same files served by a fake W&B API, give the
table the local job folders give. A wandb:// source without credentials fails in one line."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from plad.report import main

ROOT = Path(__file__).resolve().parents[1]
N_BOOT = "100"
SAVED = (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "metrics.json", "samples.jsonl")
ENV = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """`train.py -m loss=sft,ranking debug=fast logger=wandb`, offline: two jobs, two W&B runs."""
    logs = tmp_path_factory.mktemp("wandb_logs")
    cmd = [sys.executable, "train.py", "-m", "loss=sft,ranking", "debug=fast", "logger=wandb", f"paths.log_dir={logs}"]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=ENV)
    assert res.returncode == 0, res.stderr[-3000:]
    (path,) = (logs / "multiruns").glob("*/*")
    return path


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _same_table(a: dict, b: dict) -> None:
    """Equal groups (rows, stats, bootstrap CIs) and jobs; job names (folder vs W&B run id) aside."""
    assert a["groups"] == b["groups"] and a["warnings"] == b["warnings"]
    strip = lambda r: sorted((({k: v for k, v in j.items() if k != "job"}) for j in r["jobs"]),  # noqa: E731
                             key=lambda j: (j["loss"], str(j["seed"])))
    assert strip(a) == strip(b)


def _runs(sweep: Path) -> list[Path]:
    return sorted(sweep.glob("*/wandb/offline-run-*"))


def test_each_job_leaves_one_offline_run_with_config_metrics_and_samples(sweep):
    """logger=wandb: one offline run per job (wandb.finish between jobs: no merging), holding the
    whole config, the evaluation metrics and the per-example samples table."""
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert len(jobs) == 2 and all(len(list((j / "wandb").glob("offline-run-*"))) == 1 for j in jobs)
    for run in _runs(sweep):
        record = next(run.glob("run-*.wandb")).read_bytes()
        assert b"base_seed" in record and b"eval/systems/student/quality" in record
        tables = list(run.glob("files/media/table/**/*.table.json"))
        assert tables and json.loads(tables[0].read_text())["data"]


def test_offline_runs_give_the_local_table(sweep, tmp_path):
    runs = _runs(sweep)
    assert len(runs) == 2
    for run in runs:  # copies (not symlinks) of the job's report inputs, under the job's relative paths
        job = run.parents[1]
        for rel in SAVED:
            saved = run / "files" / rel
            assert saved.is_file() and not saved.is_symlink() and saved.read_bytes() == (job / rel).read_bytes()
    main([str(sweep), "--n-boot", N_BOOT])
    local = _report(sweep)
    assert sorted((j["job"], j["loss"]) for j in local["jobs"]) == [("0", "sft"), ("1", "ranking")]  # copies skipped
    assert [j["status"] for j in local["jobs"]] == ["ok", "ok"]
    main([str(sweep), "--wandb", "--n-boot", N_BOOT, "--out", str(tmp_path / "found")])
    main([*map(str, runs), "--n-boot", N_BOOT, "--out", str(tmp_path / "given")])
    moved = tmp_path / "moved"  # the run folders alone, away from the job folders
    for run in runs:
        shutil.copytree(run, moved / "wandb" / run.name)
    main([str(moved), "--n-boot", N_BOOT])
    ids = sorted(r.name.rsplit("-", 1)[-1] for r in runs)
    for out in (tmp_path / "found", tmp_path / "given", moved):
        report = _report(out)
        _same_table(local, report)
        assert sorted(j["job"] for j in report["jobs"]) == ids


class FakeFile:
    def __init__(self, path: Path, name: str):
        self.path, self.name = path, name

    def download(self, root: str, replace: bool = False) -> None:
        dst = Path(root) / self.name
        assert replace or not dst.exists()
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.path, dst)


class FakeRun:
    """What wandb.apis.public.Run offers the reader, served from an offline run's files/."""
    def __init__(self, run_dir: Path, config: dict | None = None):
        self.files_dir, self.id = run_dir / "files", run_dir.name.rsplit("-", 1)[-1]
        self.name, self.group, self.tags, self.config = f"run-{self.id}", "g", ["a"], config or {}

    def files(self) -> list[FakeFile]:
        paths = sorted(p for p in self.files_dir.rglob("*") if p.is_file())
        return [FakeFile(p, str(p.relative_to(self.files_dir))) for p in paths]

    def file(self, name: str) -> FakeFile:
        return FakeFile(self.files_dir / name, name)


class FakeApi:
    calls: list[tuple[str, dict]] = []
    served: list[FakeRun] = []

    def __init__(self, **kwargs):
        pass

    def runs(self, path: str, filters: dict | None = None) -> list[FakeRun]:
        FakeApi.calls.append((path, filters))
        return FakeApi.served


def test_online_reader_on_recorded_runs_gives_the_local_table(sweep, tmp_path, monkeypatch):
    import wandb

    main([str(sweep), "--n-boot", N_BOOT, "--out", str(tmp_path / "local")])
    foreign = tmp_path / "wandb" / "run-20260101_000000-other"  # a run of another program: left out
    (foreign / "files").mkdir(parents=True)
    (foreign / "files" / "metrics.json").write_text("{}")
    FakeApi.served = [FakeRun(r) for r in _runs(sweep)] + [FakeRun(foreign)]
    monkeypatch.setattr(wandb, "Api", FakeApi)
    out = tmp_path / "online"
    main(["wandb://ent/proj", "--group", "g", "--tags", "a", "b", "--filter", "seed=0", "--filter", "state=finished",
          "--n-boot", N_BOOT, "--out", str(out)])
    assert FakeApi.calls == [("ent/proj", {"group": "g", "tags": {"$in": ["a", "b"]}, "config.seed": 0,
                                           "state": "finished"})]
    _same_table(_report(tmp_path / "local"), _report(out))
    downloaded = sorted(p.relative_to(out / "wandb_runs").as_posix() for p in (out / "wandb_runs").rglob("*")
                        if p.is_file())
    assert all(p.split("/", 1)[1] in SAVED for p in downloaded)  # no media tables, no output.log
    assert len(downloaded) == 10


def _one_line_exit(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_wandb_url_errors_are_one_line(tmp_path, capsys):
    assert _one_line_exit(["wandb://only-entity", "--out", str(tmp_path)], capsys) == \
        "error: wandb://only-entity: expected wandb://<entity>/<project>, got wandb://only-entity"
    assert _one_line_exit(["wandb://x/y", "--filter", "seed", "--out", str(tmp_path)], capsys) == \
        "error: wandb://x/y: --filter: expected key=value, got 'seed'"


def test_wandb_url_without_credentials_exits_2_in_one_line(tmp_path):
    """For real: no API key, an unreachable server; it must fail fast, not hang."""
    env = {k: v for k, v in ENV.items() if k != "WANDB_API_KEY"}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "cfg"), WANDB_BASE_URL="http://127.0.0.1:9")
    res = subprocess.run([sys.executable, "-m", "plad.report", "wandb://x/y", "--out", str(tmp_path / "out")],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: wandb://x/y: "), res.stderr
    assert not (tmp_path / "out" / "report.md").exists()
