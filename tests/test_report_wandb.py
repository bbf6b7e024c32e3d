"""The report from W&B runs, on one real multirun, the issue's acceptance command (offline):
`train.py -m loss=sft,ranking seed=0,1 debug=fast logger=wandb`. Its jobs reuse the cached stages;
each saves its report inputs into its W&B run; the offline run folders, and the same files served
by a fake W&B API, give the table the local job folders give; --group/--tags/--filter work on
folders too; --publish's report spec matches the table. Errors without credentials are one line."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from helpers import HANG_S, forkserver

from plad.report import build_report, main
from plad.report.publish import build_spec
from plad.report.wandb_runs import filter_jobs, offline_jobs, run_ids

ROOT = Path(__file__).resolve().parents[1]
N_BOOT = "100"
SAVED = (".hydra/config.yaml", ".hydra/overrides.yaml", ".hydra/hydra.yaml", "metrics.json", "samples.jsonl")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """The acceptance multirun, offline: four jobs (loss x seed), four W&B runs; the cache is the
    sweep's ``parents[2] / "cache"``."""
    logs = tmp_path_factory.mktemp("wandb_logs")
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        "loss=sft,ranking",
        "seed=0,1",
        "debug=fast",
        "logger=wandb",
        f"paths.log_dir={logs}",
    ]
    res = forkserver.run(cmd, cwd=ROOT, env=forkserver.env(), capture_output=True, text=True, timeout=HANG_S)
    assert res.returncode == 0, res.stderr[-3000:]
    (path,) = (logs / "multiruns").glob("*/*")
    return path


def _report(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def _same_table(a: dict, b: dict) -> None:
    """Equal groups (rows, stats, bootstrap CIs) and jobs; job names (folder vs W&B run id) aside."""
    assert a["groups"] == b["groups"] and a["warnings"] == b["warnings"]
    strip = lambda r: sorted(
        (({k: v for k, v in j.items() if k != "job"}) for j in r["jobs"]),  # noqa: E731
        key=lambda j: (j["loss"], str(j["seed"])),
    )
    assert strip(a) == strip(b)


def _runs(sweep: Path) -> list[Path]:
    return sorted(sweep.glob("*/wandb/offline-run-*"))


def _moved(sweep: Path, dest: Path) -> list[Path]:
    """Copies of the run folders alone, away from the job folders, under ``dest/wandb``."""
    return [Path(shutil.copytree(run, dest / "wandb" / run.name)) for run in _runs(sweep)]


def test_multirun_reuses_the_cache_and_the_report_aggregates_it(sweep):
    """Only the first job trains the teacher, the student and makes pairs; `plad.report` then
    averages both seeds per loss."""
    logs = sweep.parents[2]
    jobs = sorted(sweep.glob("[0-9]*"), key=lambda p: int(p.name))
    assert len(jobs) == 4 and all((j / "metrics.json").is_file() for j in jobs)
    # Jobs run (sft, 0), (sft, 1), (ranking, 0), (ranking, 1). The seed varies everything below the
    # data: each seed builds its own initial student and pairs; the second loss at a seed reuses them.
    # The teacher is a fixed model (data seed): built once, shared by both seeds.
    reused = [json.loads((j / "run_summary.json").read_text())["reused"] for j in jobs]
    built, cached = ({"teacher": v, "student_init": v, "pairs": v} for v in (False, True))
    assert reused == [built, {**built, "teacher": True}, cached, cached]
    # the teacher and each seed's student, each beside its copy-pretrained start
    models = sorted(p.name.split("-")[1] for p in (logs / "cache" / "models").iterdir())
    assert models == ["student", "student", "student_pretrained", "student_pretrained", "teacher", "teacher_pretrained"]
    assert len(list((logs / "cache" / "pairs").iterdir())) == 2
    # greedy test outputs of the fixed teacher (once) and initial student (once per seed), then reused
    assert sorted(p.name.split("-")[0] for p in (logs / "cache" / "eval").iterdir()) == [
        "student_init",
        "student_init",
        "teacher",
    ]
    systems = [json.loads((j / "metrics.json").read_text())["systems"] for j in jobs]
    for a, b in ((0, 2), (1, 3)):  # same seed, other loss: the same fixed systems
        assert (
            systems[a]["teacher"] == systems[b]["teacher"] and systems[a]["student_init"] == systems[b]["student_init"]
        )

    main([str(sweep), "--n-boot", N_BOOT])
    md = (sweep / "report.md").read_text()
    assert "## anonymization · llama · split=test · decoding=greedy" in md
    table = md.split("| method |")[1].split("\n\n")[0]  # the main table: one row per method, seeds counted
    rows = {r[0]: r[-1] for r in ([c.strip() for c in line.strip("|").split("|")] for line in table.splitlines()[2:])}
    assert rows["sft"] == rows["ranking"] == "2"
    charts = list(sweep.glob("*.png"))
    assert charts and all(mpimg.imread(p).ndim == 3 for p in charts)


def test_each_job_leaves_one_offline_run_with_config_metrics_and_samples(sweep):
    """logger=wandb: one offline run per job (wandb.finish between jobs: no merging), holding the
    whole config, the evaluation metrics and the per-example samples table."""
    jobs = sorted(p for p in sweep.iterdir() if p.name.isdigit())
    assert len(jobs) == 4 and all(len(list((j / "wandb").glob("offline-run-*"))) == 1 for j in jobs)
    for run in _runs(sweep):
        record = next(run.glob("run-*.wandb")).read_bytes()
        assert b"base_seed" in record and b"eval/systems/student/quality" in record
        tables = list(run.glob("files/media/table/**/*.table.json"))
        assert tables and json.loads(tables[0].read_text())["data"]


def test_offline_runs_give_the_local_table(sweep, tmp_path):
    runs = _runs(sweep)
    assert len(runs) == 4
    for run in runs:  # copies (not symlinks) of the job's report inputs, under the job's relative paths
        job = run.parents[1]
        for rel in SAVED:
            saved = run / "files" / rel
            assert saved.is_file() and not saved.is_symlink() and saved.read_bytes() == (job / rel).read_bytes()
    main([str(sweep), "--n-boot", N_BOOT])
    local = _report(sweep)
    assert [(j["job"], j["loss"], j["seed"]) for j in local["jobs"]] == [  # the W&B copies skipped
        ("0", "sft", 0),
        ("1", "sft", 1),
        ("2", "ranking", 0),
        ("3", "ranking", 1),
    ]
    assert [j["status"] for j in local["jobs"]] == ["ok"] * 4
    main([str(sweep), "--wandb", "--n-boot", N_BOOT, "--out", str(tmp_path / "found")])
    main([*map(str, runs), "--n-boot", N_BOOT, "--out", str(tmp_path / "given")])
    _moved(sweep, moved := tmp_path / "moved")
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
    """What wandb.apis.public.Run offers the reader (id, files), served from an offline run's files/."""

    def __init__(self, run_dir: Path):
        self.files_dir, self.id = run_dir / "files", run_dir.name.rsplit("-", 1)[-1]

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
    main(
        [
            "wandb://ent/proj",
            "--group",
            "g",
            "--tags",
            "a",
            "b",
            "--filter",
            "seed=0",
            "--filter",
            "state=finished",
            "--n-boot",
            N_BOOT,
            "--out",
            str(out),
        ]
    )
    assert FakeApi.calls == [
        ("ent/proj", {"group": "g", "tags": {"$in": ["a", "b"]}, "config.seed": 0, "state": "finished"})
    ]
    _same_table(_report(tmp_path / "local"), _report(out))
    downloaded = sorted(
        p.relative_to(out / "wandb_runs").as_posix() for p in (out / "wandb_runs").rglob("*") if p.is_file()
    )
    assert all(p.split("/", 1)[1] in SAVED for p in downloaded)  # no media tables, no output.log
    assert len(downloaded) == 4 * len(SAVED)


def _one_line_exit(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    return err[0]


def test_wandb_url_errors_are_one_line(tmp_path, capsys):
    assert (
        _one_line_exit(["wandb://only-entity", "--out", str(tmp_path)], capsys)
        == "error: wandb://only-entity: expected wandb://<entity>/<project>, got wandb://only-entity"
    )
    assert (
        _one_line_exit(["wandb://x/y", "--filter", "seed", "--out", str(tmp_path)], capsys)
        == "error: wandb://x/y: --filter: expected key=value, got 'seed'"
    )


def test_wandb_url_without_credentials_exits_2_in_one_line(tmp_path):
    """For real: no API key, an unreachable server; it must fail fast, not hang."""
    env = {k: v for k, v in forkserver.env().items() if k != "WANDB_API_KEY"}
    env.update(HOME=str(tmp_path), WANDB_CONFIG_DIR=str(tmp_path / "cfg"), WANDB_BASE_URL="http://127.0.0.1:9")
    res = subprocess.run(
        [sys.executable, "-m", "plad.report", "wandb://x/y", "--out", str(tmp_path / "out")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: wandb://x/y: "), res.stderr
    assert not (tmp_path / "out" / "report.md").exists()


def test_filters_apply_to_multirun_and_offline_folders(sweep, tmp_path, capsys):
    """--group/--tags/--filter on folders: values from each job's saved config (the W&B group
    resolved as the job resolved it); the local and the offline reading keep the same jobs."""
    main(
        [str(sweep), "--filter", "seed=1", "--group", "anonymization-llama", "--n-boot", N_BOOT, "--out", str(tmp_path)]
    )
    local = _report(tmp_path)
    assert [(j["job"], j["loss"], j["seed"]) for j in local["jobs"]] == [("1", "sft", 1), ("3", "ranking", 1)]
    main([str(sweep), "--wandb", "--filter", "seed=1", "--n-boot", N_BOOT, "--out", str(tmp_path / "offline")])
    _same_table(local, _report(tmp_path / "offline"))
    tagged = _moved(sweep, moved := tmp_path / "moved")[2]  # tagged `keep` in its saved config: --tags keeps it
    config = tagged / "files" / ".hydra" / "config.yaml"
    config.write_text(config.read_text().replace("\ntags: []\n", "\ntags: [keep]\n", 1))
    jobs = offline_jobs([moved])
    assert [j.name for j in filter_jobs(jobs, tags=["other", "keep"])] == [tagged.name.rsplit("-", 1)[-1]]
    assert [j.loss for j in filter_jobs(jobs, filters=["loss._target_=plad.losses.sft.SFTLoss"])] == ["sft", "sft"]
    assert _one_line_exit([str(sweep), "--group", "t5"], capsys) == "error: no jobs match --group/--tags/--filter"
    assert _one_line_exit([str(moved), "--filter", "state=finished"], capsys).startswith(
        "error: --filter state: a W&B run field, only with a wandb://<entity>/<project> source"
    )


def test_publish_spec_of_the_offline_jobs_matches_the_table(sweep, tmp_path):
    """Panels per table: main metric per loss with mean ± std over seeds (the table's numbers),
    calibration scatter, win rates, runs grouped by loss, config differences; every metric a
    panel draws is one the runs logged. debug=fast students all score 0.5: one run's score is
    moved (in memory) so the error bars are not 0 = 0."""
    jobs = offline_jobs(_runs(sweep))
    next(j for j in jobs if (j.loss, j.seed) == ("sft", 1)).metrics["systems"]["student"]["quality"] = 0.8
    (group,) = _report(build_report(tmp_path, tmp_path, n_boot=10, jobs=jobs).parent)["groups"]
    spec = build_spec(jobs, run_ids(jobs, named_by_id=True), "ent", "proj")
    (section,) = spec["sections"]
    assert (spec["entity"], spec["project"]) == ("ent", "proj")
    bar, scatter, wins, table, diff = section["panels"]
    assert [p["kind"] for p in section["panels"]] == ["bar", "scatter", "bar", "run_table", "config_diff"]
    assert section["groupby"] == table["groupby"] == ["loss._target_"]
    by_loss = {loss: sorted(j.name for j in jobs if j.loss == loss) for loss in ("sft", "ranking")}
    rows = {r["label"]: r["stats"][group["main_metric"]] for r in group["rows"]}
    assert [(b["label"], b["mean"], b["std"], b["n"], sorted(b["runs"])) for b in bar["bars"]] == [
        (loss, rows[loss]["mean"], rows[loss]["std"], 2, by_loss[loss]) for loss in ("sft", "ranking")
    ]
    assert bar["bars"][0]["std"] == pytest.approx(statistics.stdev([0.5, 0.8]))  # ddof=1, as the table
    assert [b["group"]["loss._target_"] for b in bar["bars"]] == [
        "plad.losses.sft.SFTLoss",
        "plad.losses.ranking.RankingLoss",
    ]
    assert [r["label"] for r in bar["references"]][:2] == ["initial student", "teacher"]
    assert [(r["label"], sorted(r["runs"]), r["seeds"]) for r in table["rows"]] == [
        (loss, by_loss[loss], [0, 1]) for loss in ("sft", "ranking")
    ]
    points = {p["run"]: p for p in scatter["points"]}
    assert sorted(points) == sorted(section["runs"]) == sorted(j.name for j in jobs)
    assert all(points[j.name]["x"] == j.metrics["calibration"]["student"]["spearman"] for j in jobs)
    assert (
        "eval/win_rate/student_vs_teacher/rate" in wins["metrics"]
        and wins["bars"][0]["rates"]["student_vs_teacher"]["n"] == 2
    )
    assert {"seed", "loss._target_"} <= set(diff["keys"]) and "base_seed" not in diff["keys"]
    assert all(len({repr(v) for v in runs.values()}) > 1 for runs in diff["keys"].values())
    logged = [next(r.glob("run-*.wandb")).read_bytes() for r in _runs(sweep)]  # the keys the panels draw
    assert all(
        k.encode() in record
        for k in [*bar["metrics"], scatter["x"], scatter["y"], *wins["metrics"]]
        for record in logged
    )
    with pytest.raises(ValueError, match="has no W&B run"):
        build_spec(jobs, {}, "ent", "proj")


def test_publish_spec_becomes_wandb_report_objects(sweep):
    """Built, not saved (saving needs W&B): the panels and the run set point at the runs."""
    wr = pytest.importorskip("wandb_workspaces.reports.v2")
    from plad.report.publish import wandb_report

    jobs = offline_jobs(_runs(sweep))
    report = wandb_report(build_spec(jobs, run_ids(jobs, named_by_id=True), "ent", "proj"))
    assert isinstance(report, wr.Report) and (report.entity, report.project) == ("ent", "proj")
    (grid,) = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    (runset,) = grid.runsets
    assert runset.filters.startswith('Metric("ID") in [') and all(f"'{j.name}'" in runset.filters for j in jobs)
    assert runset.groupby == ["config.loss._target_"]
    assert [type(p).__name__ for p in grid.panels] == ["BarPlot", "ScatterPlot", "BarPlot", "RunComparer"]
    assert all(
        p.groupby_aggfunc == "mean" and p.groupby_rangefunc == "stddev" and p.groupby.name == "loss._target_"
        for p in grid.panels
        if isinstance(p, wr.BarPlot)
    )
    assert grid.panels[1].x.name == "eval/calibration/student/spearman"
    assert any(isinstance(b, wr.MarkdownBlock) and "| method | quality | seeds |" in b.text for b in report.blocks)


def test_publish_errors_are_one_line(sweep, tmp_path, capsys, monkeypatch):
    """Folders need --project; no extra, no credentials: one line each, exit 2, before any work."""
    assert _one_line_exit([str(sweep), "--publish", "--out", str(tmp_path)], capsys).startswith(
        "error: --publish: expected --project <entity>/<project>"
    )
    for name in ("wandb_workspaces", "wandb_workspaces.reports", "wandb_workspaces.reports.v2"):
        monkeypatch.setitem(sys.modules, name, None)
    assert (
        _one_line_exit(["wandb://x/y", "--publish", "--out", str(tmp_path)], capsys)
        == "error: --publish: needs the wandb-reports extra: pip install 'plad[wandb-reports]'"
    )
    monkeypatch.undo()
    pytest.importorskip("wandb_workspaces.reports.v2")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var, value in dict(HOME=tmp_path, WANDB_CONFIG_DIR=tmp_path / "c", WANDB_BASE_URL="http://127.0.0.1:9").items():
        monkeypatch.setenv(var, str(value))
    for argv in (["wandb://x/y", "--publish"], [str(sweep), "--publish", "--project", "x/y"]):
        assert _one_line_exit([*argv, "--out", str(tmp_path)], capsys).startswith(
            "error: --publish: no W&B credentials or network ("
        )
    assert not (tmp_path / "report.md").exists()
