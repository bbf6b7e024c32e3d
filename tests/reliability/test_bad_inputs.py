"""Catalogue of bad inputs: every case stops the run with one line naming the field or file and what
was expected (exit code 2 from ``train.py``), before any expensive stage and without writing to the
cache. Cases run in-process through ``plad.pipeline.run`` (the entry point's code path) with SFT and
generation replaced by tripwires; two representative ones also run as real processes (started first,
so their start-up overlaps the in-process cases). An unknown group option (``loss=nope``) is Hydra's
own error with the list of choices (README); a class name that does not import is covered here."""

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import HANG_S, forkserver
from helpers.configs import compose_run_config

ROOT = Path(__file__).resolve().parents[2]
SMALL = [
    "debug=fast",
    "task.n_train=8",
    "model.student.sft.train_examples=4",
    "task.n_unlabeled=4",
    "task.n_validation=2",
    "task.n_test=2",
]
NO_SCORER = "pairs.scorer=null"  # the default scorer needs a white-box teacher, not a teacher file


class Reached(Exception):
    """An expensive stage started."""


class Truncated(str):
    """Not an error: the run goes on, and the field is named in a truncation warning."""


def rows(n: int = 16, **overrides) -> list[dict]:
    out = [
        {"uid": f"u{i}", "source_text": f"Call Ann Lee{i} at 555-01{i:02d}.", "target_text": "Call [NAME] at [PHONE]."}
        for i in range(n)
    ]
    for i, row in overrides.items():
        out[int(i[1:])].update(row)
    return out


def jsonl(rows_: list) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows_)


FILES = {
    "empty.jsonl": "",
    "columns.jsonl": jsonl([{"text": r["source_text"], "target_text": r["target_text"]} for r in rows()]),
    "latin1.jsonl": jsonl(rows()[:2]).encode()
    + b'{"source_text": "caf\xe9", "target_text": "x"}\n'
    + jsonl(rows()[3:]).encode(),
    "malformed.jsonl": jsonl(rows()[:4]) + '{"source_text": "a", "target_text"\n' + jsonl(rows()[5:]),
    "dupes.jsonl": jsonl(rows(r7={"uid": "u3"})),
    "null.jsonl": jsonl(rows(r5={"source_text": None})),
    "numbers.jsonl": jsonl([{**r, "source_text": i} for i, r in enumerate(rows())]),
    "nan.csv": "source_text,target_text\n"
    + "".join(f"{r['source_text']},{'NaN' if i == 6 else r['target_text']}\n" for i, r in enumerate(rows())),
    "notes.txt": "not data\n",
    "long.jsonl": jsonl(rows(r2={"source_text": "word " * 2000})),
    "teacher_ok.jsonl": jsonl([{"id": "x", "output": "y"}]),
    "teacher_malformed.jsonl": '{"id": "a", "output": "b"}\n{"id": "c", output}\n',
    "teacher_empty_output.jsonl": jsonl([{"id": "a", "output": "b"}, {"id": "c", "output": "  "}]),
    "teacher_empty.jsonl": "\n",
    "teacher_unknown_id.jsonl": jsonl([{"id": "no-such-prompt", "output": "Call [NAME]."}]),
}
SRC = "task.source={d}/"

# (case id, overrides, expected): the message starts with "<field>:" (and names the file where one is
# given: the part after "|" must appear in it).
BAD_INPUTS = [
    # -- plain config values
    ("zero distill batch", ["distill.batch_size=0"], "distill.batch_size"),
    ("negative distill lr", ["distill.lr=-1"], "distill.lr"),
    ("negative distill steps", ["distill.max_steps=-1"], "distill.max_steps"),
    ("zero n_train", ["task.n_train=0"], "task.n_train"),
    ("devices that are not a count", ["trainer.devices=abc"], "trainer.devices"),
    (
        "prompt and completion past the positions",
        [
            "task.max_prompt_tokens=480",
            "task.max_new_tokens=64",
            "model.teacher.pretrain=null",
            "model.student.pretrain=null",
        ],
        "task.max_prompt_tokens|480 + 64",
    ),
    ("copy pretraining past the positions", ["task.max_prompt_tokens=300"], "task.max_prompt_tokens|pretrain"),
    ("unknown accelerator", ["trainer.accelerator=npu"], "trainer.accelerator"),
    ("unknown precision", ["trainer.precision=17"], "trainer.precision"),
    ("zero nodes", ["+trainer.num_nodes=0"], "trainer.num_nodes"),
    ("misspelled calibration system", ["eval.calibration.systems=[student,studnet]"], "eval.calibration.systems"),
    (
        "label budget over n_train",
        ["task.n_train=8", "model.student.sft.train_examples=9"],
        "model.student.sft.train_examples",
    ),
    ("zero label budget", ["model.student.sft.train_examples=0"], "model.student.sft.train_examples"),
    ("zero task label budget", ["task.student_labels=0"], "task.student_labels"),
    ("task SFT steps as text", ["task.student_sft_steps=many"], "task.student_sft_steps"),
    ("task lr for a misspelled loss", ["+task.lrs.seqdk=1e-3"], "task.lrs"),
    ("unknown SFT monitor", ["model.student.sft.monitor=bleu"], "model.student.sft.monitor"),
    ("unknown cut_samples", ["pairs.cut_samples=trim"], "pairs.cut_samples"),
    ("pretrain template without {text}", ["model.student.pretrain.template=copy"], "model.student.pretrain.template"),
    ("unknown pretrain key", ["+model.student.pretrain.epochs=2"], "model.student.pretrain"),
    ("negative n_unlabeled", ["task.n_unlabeled=-3"], "task.n_unlabeled"),
    ("word-like name share above 1", ["task.wordlike_share=1.5"], "task.wordlike_share"),
    ("leak probe share as text", ["task.probe_share=half"], "task.probe_share"),
    ("scramble share above 1", ["task.scramble_share=2"], "task.scramble_share"),
    (
        "validation held-out phrasings as text",
        ["task.validation_heldout_templates=few"],
        "task.validation_heldout_templates",
    ),
    ("zero max_new_tokens", ["task.max_new_tokens=0"], "task.max_new_tokens"),
    ("zero teacher SFT batch", ["model.teacher.sft.batch_size=0"], "model.teacher.sft.batch_size"),
    ("negative student SFT steps", ["model.student.sft.max_steps=-5"], "model.student.sft.max_steps"),
    ("zero student samples", ["pairs.n_student=0"], "pairs.n_student"),
    ("zero shard size", ["pairs.shard_size=0"], "pairs.shard_size"),
    ("zero eval max_new_tokens", ["eval.generation.max_new_tokens=0"], "eval.generation.max_new_tokens"),
    ("zero eval batch", ["eval.batch_size=0"], "eval.batch_size"),
    ("unknown eval split", ["eval.split=nope"], "eval.split"),
    ("unknown decoding", ["eval.decoding=beam"], "eval.decoding"),
    ("zero eval temperature", ["eval.generation.temperature=0"], "eval.generation.temperature"),
    ("top_p above one", ["pairs.student.top_p=1.5"], "pairs.student.top_p"),
    ("rerank of zero samples", ["eval.decoding=rerank", "eval.rerank.n=0"], "eval.rerank.n"),
    ("calibration of one sample", ["eval.calibration.k=1"], "eval.calibration.k"),
    ("zero SFT patience", ["sft_selection.patience=0"], "sft_selection.patience"),
    ("oracle loss without the switch", ["loss=sft_oracle"], "pairs.oracle_references"),
    ("unknown stage", ["stages=[sft,pairs,distill,eval]"], "stages"),
    ("unknown task argument", ["+task.n_trian=5"], "task"),
    ("unknown loss class", ["loss._target_=plad.losses.nope.NopeLoss"], "loss._target_"),
    ("unknown scorer class", ["pairs.scorer._target_=plad.pairs.quality.NopeScorer"], "pairs.scorer._target_"),
    # -- generation backends: vLLM is an optional extra (and needs a GPU): one line, before any stage
    ("vllm backend on this machine", ["generation=vllm"], "generation=vllm"),
    (
        "vllm memory share above one",
        ["generation=vllm", "generation.gpu_memory_utilization=1.5"],
        "generation.gpu_memory_utilization",
    ),
    # -- models
    ("missing pretrained dir", ["model.teacher.pretrained=./no/such/model"], "model.teacher.pretrained"),
    (
        "pretrained dir without weights",
        ["model.teacher.pretrained={d}/no_weights"],
        "model.teacher.pretrained|no_weights",
    ),
    (
        "tokenizer larger than the model's vocabulary",
        ["model.teacher.pretrained={d}/vocab_mismatch"],
        "model.teacher.pretrained|vocab_mismatch",
    ),
    (
        "kd with a black-box teacher file",
        ["loss=kd", NO_SCORER, "pairs.teacher_outputs={d}/teacher_ok.jsonl"],
        "pairs.teacher_outputs",
    ),
    (
        "kd with a trained vs a pretrained tokenizer",
        ["loss=kd", "model.teacher.pretrained={d}/model_a"],
        "model.tokenizer.pretrained",
    ),
    (
        "kd with two pretrained vocabularies",
        ["loss=kd", "model.teacher.pretrained={d}/model_a", "model.student.pretrained={d}/model_b"],
        "model.student.pretrained",
    ),
    # -- data files (task.source)
    ("missing data file", [SRC + "missing.jsonl"], "task.source|missing.jsonl"),
    ("unsupported data format", [SRC + "notes.txt"], "task.source|notes.txt"),
    ("empty data file", [SRC + "empty.jsonl"], "task.source|empty.jsonl"),
    ("missing column", [SRC + "columns.jsonl"], "task.columns.text|source_text"),
    ("non-UTF-8 bytes", [SRC + "latin1.jsonl"], "task.source|latin1.jsonl"),
    ("malformed JSONL line", [SRC + "malformed.jsonl"], "task.source|line 5"),
    ("duplicate ids", [SRC + "dupes.jsonl", "+task.columns.id=uid"], "task.columns.id|u3"),
    ("null text", [SRC + "null.jsonl"], "task.columns.text|None"),
    ("numbers in a text column", [SRC + "numbers.jsonl"], "task.columns.text"),
    ("NaN in a CSV column", [SRC + "nan.csv"], "task.columns.reference|train-6"),  # pandas' NaN arrives as None
    # A prompt far longer than task.max_prompt_tokens is truncated, not refused: real data sets have a
    # few long rows, and models keep the prompt's end (next to the completion). The run warns and goes on.
    ("text far longer than max_prompt_tokens", [SRC + "long.jsonl"], Truncated("task.max_prompt_tokens")),
    # -- black-box teacher file (the first: defect 6, once a traceback after both SFT stages)
    ("missing teacher file", ["pairs.teacher_outputs=/nonexistent.jsonl"], "pairs.teacher_outputs|nonexistent"),
    ("teacher file is a directory", ["pairs.teacher_outputs={d}"], "pairs.teacher_outputs|directory"),
    ("empty teacher file", ["pairs.teacher_outputs={d}/teacher_empty.jsonl"], "pairs.teacher_outputs|empty"),
    ("malformed teacher line", ["pairs.teacher_outputs={d}/teacher_malformed.jsonl"], "pairs.teacher_outputs|line 2"),
    ("empty teacher output", ["pairs.teacher_outputs={d}/teacher_empty_output.jsonl"], "pairs.teacher_outputs|line 2"),
    # needs the loaded splits: checked by plad.stages.data.load_checked, before they are cached
    (
        "teacher output for an unknown id",
        [NO_SCORER, "pairs.teacher_outputs={d}/teacher_unknown_id.jsonl"],
        "pairs.teacher_outputs|no-such-prompt",
    ),
]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The files the cases name, and three tiny checkpoints (two vocabularies; one mismatched)."""
    from omegaconf import OmegaConf

    from plad.models.build import build_model, save_model, train_tokenizer

    d = tmp_path_factory.mktemp("inputs")
    for name, content in FILES.items():
        (d / name).write_bytes(content if isinstance(content, bytes) else content.encode())
    corpus = [r["source_text"] + " " + r["target_text"] for r in rows()] * 4
    tok_a, tok_b = train_tokenizer(corpus, 300), train_tokenizer(corpus, 290)
    spec = OmegaConf.create(
        {
            "config": {
                "_target_": "transformers.LlamaConfig",
                "hidden_size": 8,
                "intermediate_size": 16,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
            }
        }
    )
    for name, tok, sized_for in [
        ("model_a", tok_a, tok_a),
        ("model_b", tok_b, tok_b),
        ("vocab_mismatch", tok_a, tok_b),
    ]:  # 300 tokens, embedding of 290
        save_model(build_model(spec, sized_for, seed=0), tok, d / name)
    (d / "no_weights").mkdir()
    tok_a.save_pretrained(d / "no_weights")
    (d / "no_weights" / "config.json").write_text((d / "model_a" / "config.json").read_text())
    return d


@pytest.fixture
def tripwires(monkeypatch):
    """SFT and generation raise ``Reached``: a case that gets that far failed to stop early."""
    import plad.backends.hf_sampling
    import plad.training.trainer

    def reached(*args, **kwargs):
        raise Reached("an expensive stage started")

    monkeypatch.setattr(plad.training.trainer, "fit_sft", reached)
    monkeypatch.setattr(plad.backends.hf_sampling, "generate", reached)


CONFIGS = ROOT / "configs"
GROUPS = {p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*") if p.is_dir()}
_composed: dict[tuple[str, ...], Any] = {}


def configure(log_dir: Path, run_dir: Path, *overrides: str) -> Any:
    """``compose_run_config``, for dozens of cases: composing costs ~0.4 s of CPU, so each selection of
    config groups is composed once, and value overrides are applied to a copy by Hydra's own step."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(
        [f"paths.log_dir={log_dir}", f"paths.output_dir={run_dir}", *overrides]
    )
    groups = tuple(o.input_line for o in parsed if o.key_or_group in GROUPS)
    if groups not in _composed:
        _composed[groups] = compose_run_config(log_dir, run_dir, *groups)
    cfg = copy.deepcopy(_composed[groups])
    ConfigLoaderImpl._apply_overrides_to_config([o for o in parsed if o.key_or_group not in GROUPS], cfg)
    HydraConfig.instance().set_config(cfg)
    return cfg


def cache_files(log_dir: Path) -> list[Path]:
    cache = log_dir / "cache"
    return sorted(p for p in cache.rglob("*")) if cache.exists() else []


def test_catalogue_is_large_and_unique():
    assert len(BAD_INPUTS) >= 25 and len({name for name, _, _ in BAD_INPUTS}) == len(BAD_INPUTS)


@pytest.mark.parametrize("overrides, expected", [pytest.param(o, e, id=n) for n, o, e in BAD_INPUTS])
def test_bad_input_stops_before_expensive_work(overrides, expected, data_dir, processes, tmp_path, tripwires, caplog):
    """``processes`` is only requested to start the real processes early."""
    from plad.cli import input_error
    from plad.pipeline import run

    log_dir = tmp_path / "logs"
    (tmp_path / "run").mkdir()
    small = SMALL if any(o.startswith("task.source") for o in overrides) else ["debug=fast"]
    cfg = configure(log_dir, tmp_path / "run", *small, *[o.format(d=data_dir) for o in overrides])
    field, _, named = expected.partition("|")
    if isinstance(expected, Truncated):
        with pytest.raises(Reached):  # valid input: the run reaches SFT ...
            run(cfg)
        warned = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"{field}:")]
        assert warned and "1 of 16 prompts" in warned[0] and "truncated" in warned[0], warned  # ... warned
        return
    with pytest.raises(Exception) as info:
        run(cfg)
    if isinstance(info.value, Reached):
        raise info.value
    error = input_error(info.value)  # what train.py prints as "error: ..." with exit code 2
    assert error is not None, f"not a one-line config error: {info.value!r}"
    message = str(error)
    assert "\n" not in message and message.startswith(f"{field}: "), message
    assert named in message, message
    assert cache_files(log_dir) == [], "wrote to the cache before failing"


def test_load_checked_stops_before_caching(data_dir, tmp_path):
    """The data-dependent check (teacher file vs unlabeled prompts) runs before the splits are cached."""
    from plad.stages.data import load_checked
    from plad.stages.preflight import preflight

    cfg = configure(
        tmp_path / "logs",
        tmp_path / "run",
        "debug=fast",
        NO_SCORER,
        f"pairs.teacher_outputs={data_dir}/teacher_unknown_id.jsonl",
    )
    task, _ = preflight(cfg)
    with pytest.raises(ValueError, match=r"^pairs\.teacher_outputs: 1 rows match no prompt \(first ids: no-such"):
        load_checked(cfg, task, tmp_path / "logs" / "cache")
    assert cache_files(tmp_path / "logs") == []
    unlabeled = task.load()["unlabeled"]  # a file answering every unlabeled prompt passes, and is cached
    good = tmp_path / "teacher.jsonl"
    good.write_text(jsonl([{"id": i, "output": "Call [NAME]."} for i in unlabeled["id"]]))
    cfg.pairs.teacher_outputs = str(good)
    assert list(load_checked(cfg, task, tmp_path / "logs" / "cache")["unlabeled"]["id"]) == unlabeled["id"]
    assert cache_files(tmp_path / "logs")


# Real processes: exit code 2 and exactly one line on stderr, nothing cached. The first is defect 6: a
# missing teacher file used to fail with a FileNotFoundError traceback (exit 1) after both SFT stages.
PROCESSES = {
    "missing teacher file": ["pairs.teacher_outputs=/nonexistent.jsonl", NO_SCORER],
    "non-UTF-8 data file": [*SMALL[1:], SRC + "latin1.jsonl"],
}


@pytest.fixture(scope="module")
def processes(data_dir, tmp_path_factory):
    """Started once, early, so their start-up (imports: ~10 s each) overlaps the in-process cases."""
    root, procs = tmp_path_factory.mktemp("processes"), {}
    for name, overrides in PROCESSES.items():
        log_dir = root / name.replace(" ", "_")
        cmd = [
            sys.executable,
            "train.py",
            "debug=fast",
            f"paths.log_dir={log_dir}",
            *[o.format(d=data_dir) for o in overrides],
        ]
        procs[name] = (
            log_dir,
            forkserver.start(
                cmd, cwd=ROOT, env=forkserver.env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
            ),
        )
    yield procs
    for _, proc in procs.values():
        try:
            proc.kill()  # still running only when the test that reads them did not run
        except ProcessLookupError:
            pass  # it had ended by itself
        proc.communicate()


def test_bad_inputs_exit_2_with_one_stderr_line(processes):
    for name, (log_dir, proc) in processes.items():
        _, stderr = proc.communicate(timeout=HANG_S)
        lines = stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (name, stderr[-2000:])
        assert cache_files(log_dir) == [], name
