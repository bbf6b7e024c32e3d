"""LoRA students through PEFT (plad.models.lora): only adapters train, distillation moves the merged
weights of the targeted modules only, saved students are plain transformers models plus a PEFT
adapter, DPO's reference with adapters off equals the pair stage's cached one, bad values fail in
one line, the SFT cache key, and `model.student.lora.r=8 debug=fast` for every family."""

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lightning as L
import pytest
import torch
from helpers.numerics import assert_sums_close, sums_close
from helpers.pairs import PROMPTS, save_tiny
from omegaconf import OmegaConf, open_dict
from torch.utils.data import DataLoader

from plad.data.pair_datamodule import PairCollator
from plad.models.build import load_saved, save_model, validate_model_spec
from plad.models.encoding import encode_example
from plad.models.likelihood import score_completions
from plad.models.lora import ADAPTER_DIR, is_lora, merged
from plad.training.modules import DistillModule

ROOT = Path(__file__).resolve().parents[1]
DPO = {"_target_": "plad.losses.dpo.DPOLoss", "beta": 1.0}
LORA = {"r": 4, "alpha": 16, "dropout": 0.0, "target_modules": None}
TARGETS = ("q_proj", "v_proj")  # PEFT's default for llama


def pair_batches(student: Path, n: int = 16, batch_size: int = 8) -> list[dict[str, torch.Tensor]]:
    """Pair batches whose ``ref_logp`` are scored as the pair stage scores them: the saved SFT'd
    student, fresh from disk, through ``score_completions`` (its own batching and padding)."""
    model, tok = load_saved(student)
    prompts = [PROMPTS[i % len(PROMPTS)] + f" #{i}" for i in range(n)]
    chosen = [f"good text here {i}" for i in range(n)]
    rejected = [f"invoice due Monday {i} Paris" for i in range(n)]
    ref = score_completions(
        model, tok, prompts * 2, chosen + rejected, max_prompt_tokens=32, max_completion_tokens=16, progress=False
    ).sum_logp
    rows = []
    for i, p in enumerate(prompts):
        feats = [encode_example(tok, p, c, False, 32, 16) for c in (chosen[i], rejected[i])]
        rows.append(
            {
                "input_ids": [f["input_ids"] for f in feats],
                "labels": [f["labels"] for f in feats],
                "ref_logp": [ref[i], ref[n + i]],
            }
        )
    collate = PairCollator(tok.pad_token_id, False)
    return [collate(rows[i : i + batch_size]) for i in range(0, n, batch_size)]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model`` in eval mode for the block, its mode restored whatever happens: the module-scoped
    ``trained`` module is shared, and a failing test must not leave it in eval mode for the next."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _module(student: Path, **kw) -> DistillModule:
    kw = {"lora": LORA, "reference": "adapters_off", **kw}
    return DistillModule(str(student), DPO, lr=1e-2, max_steps=8, warmup_steps=0, **kw)


def _loss(module: DistillModule, batches) -> float:
    with torch.no_grad():
        return sum(module.loss_fn(module.scores(b))[0].item() for b in batches) / len(batches)


def _fit(module: DistillModule, batches, steps: int) -> None:
    L.seed_everything(0, verbose=False)
    trainer = L.Trainer(
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
        limit_val_batches=0,
    )
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny llama student, its pair batches, and a LoRA DPO module trained 8 steps on them (the
    loss before and after)."""
    student = save_tiny(tmp_path_factory.mktemp("lora") / "student", seed=0)
    batches = pair_batches(student)
    module = _module(student)
    before = _loss(module, batches)
    _fit(module, batches, steps=8)
    return student, batches, module, before, _loss(module, batches)


def test_only_adapter_parameters_receive_gradients_and_reach_the_optimizer(trained):
    student, batches, _, _, _ = trained
    module = _module(student)
    module.loss_fn(module.scores(batches[0]))[0].backward()
    named = dict(module.student.named_parameters())
    adapters = {k for k in named if "lora_" in k}
    assert adapters and len(adapters) == 2 * 2 * 2  # 2 layers x (q_proj, v_proj) x (A, B)
    for k, p in named.items():
        if k in adapters:
            assert p.requires_grad and p.grad is not None, k
        else:
            assert not p.requires_grad and p.grad is None, k
    assert any(named[k].grad.abs().sum() > 0 for k in adapters if "lora_B" in k)  # B = 0 at init: A's grad is 0
    optimizer = module.configure_optimizers()["optimizer"]
    in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert in_optimizer == {id(named[k]) for k in adapters}


def test_lora_distillation_lowers_the_loss_and_moves_only_the_targeted_merged_weights(trained):
    student, _, module, before, after = trained
    assert before == pytest.approx(torch.log(torch.tensor(2.0)).item(), abs=1e-5)  # DPO at step 0: reward 0
    assert after < before - 0.1
    base = load_saved(student)[0].state_dict()
    plain = merged(module.student)
    assert not is_lora(plain) and is_lora(module.student)  # merged on a copy: training can go on
    assert any(p.requires_grad for n, p in module.student.named_parameters() if "lora_" in n)
    state = plain.state_dict()
    assert set(state) == set(base)
    for k, v in state.items():
        if any(f"{t}.weight" in k for t in TARGETS):
            assert not torch.equal(v, base[k]), k
        else:
            assert torch.equal(v, base[k]), k


def test_saved_student_loads_with_plain_transformers_and_the_adapter_with_peft(trained, tmp_path):
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    student, batches, module, _, _ = trained
    save_model(module.student, module.tokenizer, tmp_path / "out")
    with safe_open(str(tmp_path / "out" / "model.safetensors"), "pt") as f:
        assert not [k for k in f.keys() if "lora" in k or "base_layer" in k]
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(student), tmp_path / "out" / ADAPTER_DIR)
    b = batches[0]
    with eval_mode(module.student), torch.no_grad():
        expected = module.student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        for model in (plain, adapted.eval()):
            got = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            assert (got - expected).abs().max().item() < 1e-5
    base = AutoModelForCausalLM.from_pretrained(student).eval()
    with torch.no_grad():
        assert (base(input_ids=b["input_ids"]).logits - expected).abs().max().item() > 1e-3  # it did train


def test_reference_with_adapters_off_equals_the_cached_reference(trained):
    """The distilled student's base weights are the SFT'd student that the pair stage scored."""
    _, batches, module, _, _ = trained
    assert module.student.training
    for b in batches:
        B, K = b["mask"].shape
        on_the_fly = module.reference_logp(b).view(B, K)
        assert module.student.training  # restored after the eval-mode reference pass
        n_terms = (b["labels"][:, 1:] != -100).sum(-1).view(B, K)  # the summed tokens of each sequence
        # Other batch shapes than the pair stage's (score_completions sorts by length, batches of 16):
        # equal up to reordering the float32 sums, a bound that follows from magnitude and length.
        assert_sums_close(on_the_fly, b["ref_logp"], n_terms)
        with torch.no_grad():
            scores = module.scores(b)
        assert torch.equal(scores.ref_logp, on_the_fly)
        # The bound still catches what a defect would change: the policy (adapters on) instead of
        # the reference, another row's reference, one completion token fewer.
        assert not sums_close(scores.logp, scores.ref_logp, n_terms)
        assert not sums_close(on_the_fly, b["ref_logp"].roll(1, 0), n_terms)
        shorter = {**b, "labels": _drop_last_target(b["labels"])}
        assert not sums_close(module.reference_logp(shorter).view(B, K), b["ref_logp"], n_terms)


def _drop_last_target(labels: torch.Tensor) -> torch.Tensor:
    """The labels with each sequence's last scored token ignored (a one-token shift of the end)."""
    out = labels.clone()
    last = (labels != -100).long().cumsum(-1).argmax(-1)
    out[torch.arange(len(out)), last] = -100
    return out


LLAMA_STUDENT = OmegaConf.load(ROOT / "configs" / "model" / "llama.yaml").student


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("lora", {"r": -1}, "model.student.lora.r: expected a positive integer or null, got -1"),
        ("lora", {"r": 2.5}, "model.student.lora.r: expected a positive integer or null, got 2.5"),
        ("lora", {"r": 8, "alpha": 0}, "model.student.lora.alpha: expected a positive number, got 0"),
        ("lora", {"r": 8, "dropout": 1.0}, "model.student.lora.dropout: expected a number in [0, 1), got 1.0"),
        ("lora", {"r": 8, "target_modules": []}, "model.student.lora.target_modules: expected null (PEFT's default"),
        (
            "lora",
            {"r": 8, "target_modules": ["nope"]},
            "model.student.lora.target_modules: expected module names of a 'llama' model",
        ),
        (
            "lora",
            {"rank": 8},
            "model.student.lora: expected keys among ['r', 'alpha', 'dropout', 'target_modules'], got unknown ['rank']",
        ),
        ("lora", 8, "model.student.lora: expected a mapping"),
        ("gradient_checkpointing", "yes", "model.student.gradient_checkpointing: expected true or false, got 'yes'"),
    ],
)
def test_bad_lora_values_fail_in_one_line(key, value, message):
    spec = OmegaConf.create(OmegaConf.to_container(LLAMA_STUDENT))
    spec[key] = value
    with pytest.raises(ValueError) as e:
        validate_model_spec(spec, "model.student")
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_a_model_type_without_a_peft_default_needs_target_modules():
    spec = OmegaConf.create(OmegaConf.to_container(LLAMA_STUDENT))
    spec.config = {
        "_target_": "transformers.OlmoConfig",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
    }
    validate_model_spec(spec, "model.student")  # full fine-tuning: fine
    spec.lora.r = 8
    with pytest.raises(
        ValueError,
        match=r"^model.student.lora.target_modules: expected module names of a "
        r"'olmo' model .*got None: Please specify",
    ) as e:
        validate_model_spec(spec, "model.student")
    assert "\n" not in str(e.value)
    spec.lora.target_modules = ["q_proj", "v_proj"]
    validate_model_spec(spec, "model.student")


def test_reference_and_strategy_rules_fail_at_preflight_and_module_build(tmp_path):
    from helpers.configs import compose_run_config

    from plad.stages.preflight import check_lora, preflight

    cfg = compose_run_config(
        tmp_path / "logs", tmp_path / "run", "debug=fast", "loss=dpo", "distill.reference=adapters_off"
    )
    with pytest.raises(
        ValueError,
        match=r"^distill.reference: 'adapters_off' needs a LoRA student "
        r"\(model.student.lora.r\), got r=null \(use 'cached'\)$",
    ):
        preflight(cfg)
    with pytest.raises(ValueError, match=r"^distill.reference: 'adapters_off' needs a LoRA student"):
        DistillModule(str(save_tiny(tmp_path / "s")), DPO, lr=1e-3, max_steps=1, reference="adapters_off")
    cfg = compose_run_config(tmp_path / "logs", tmp_path / "run", "debug=fast", "distill.reference=frozen")
    with pytest.raises(
        ValueError,
        match=r"^distill.reference: expected one of \['cached', 'adapters_off'\], "
        r"got 'frozen'$",
    ):
        check_lora(cfg)


def test_a_sharded_strategys_gathered_state_becomes_the_lora_model_again(tmp_path, monkeypatch):
    """FSDP/DeepSpeed wrap the module they train, so rank 0 rebuilds the student from the gathered
    full state (plad.training.weights.trained_model): a LoRA student comes back with its adapters, equal outputs."""
    import types

    import plad.training.weights
    from plad.models.build import load_saved
    from plad.models.lora import merged, wrap
    from plad.training.weights import trained_model

    model, _ = load_saved(save_tiny(tmp_path / "s"))
    peft_model = wrap(model, {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": None})
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_()  # trained adapters (B starts at 0)
    state = {k: v.clone() for k, v in peft_model.state_dict().items()}
    monkeypatch.setattr(plad.training.weights, "is_sharded", lambda strategy: True)
    rebuilt = trained_model(types.SimpleNamespace(strategy=None), peft_model, state)
    assert rebuilt is not peft_model and type(rebuilt) is type(peft_model)
    ids = torch.tensor([[1, 5, 9, 12, 7]])
    with torch.no_grad():
        expected = merged(peft_model).eval()(ids).logits
        assert torch.allclose(merged(rebuilt).eval()(ids).logits, expected, atol=1e-6)
        with peft_model.disable_adapter():  # the adapters matter: without them the outputs differ
            assert not torch.allclose(peft_model.eval()(input_ids=ids).logits, expected, atol=1e-3)


def test_sft_cache_key_counts_lora_only_when_on_and_never_gradient_checkpointing(tmp_path):
    from helpers.configs import compose_run_config
    from hydra.utils import instantiate

    from plad.stages import sft

    composed = compose_run_config(tmp_path / "logs", tmp_path / "run", "debug=fast")
    task = instantiate(composed.task)

    def key(drop: bool = False, gradient_checkpointing: bool = False, **lora) -> str:
        cfg = copy.deepcopy(composed)
        cfg.model.student.gradient_checkpointing = gradient_checkpointing
        cfg.model.student.lora.update(lora)
        if drop:  # the spec as it was before the lora / gradient_checkpointing options existed
            with open_dict(cfg):
                del cfg.model.student.lora, cfg.model.student.gradient_checkpointing
        return sft.entry(cfg, "student", task, tmp_path).fingerprint

    base = key()
    assert key(gradient_checkpointing=True) == base
    assert key(alpha=32) == base == key(drop=True)  # r null: full fine-tuning, keyed as before the option
    lora = key(r=8)
    assert lora != base
    assert key(r=8, gradient_checkpointing=True) == lora
    assert key(r=8, alpha=32) != lora


def _targets(adapter_dir: Path) -> set[str]:
    return set(json.loads((adapter_dir / "adapter_config.json").read_text())["target_modules"])


def _only_targets_moved(after: dict, before: dict, targets: set[str]) -> None:
    assert set(after) == set(before)
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved and all(k.rsplit(".", 2)[-2] in targets and k.endswith(".weight") for k in moved), moved


@pytest.mark.parametrize("family", ["llama", "gpt_neo", "t5"])
def test_lora_student_runs_sft_and_distillation_for_every_family(run_pipeline, family):
    """`model.student.lora.r=8 debug=fast` (without evaluation, which sees only saved plain models):
    SFT and distillation each train a LoRA adapter, and each saved student differs from its start only
    in the adapter's target modules."""
    results = run_pipeline(
        f"model={family}",
        "model.student.lora.r=8",
        "debug=fast",
        "stages=[sft,distill]",
        "loss=sft",
        "model.teacher.sft.max_steps=0",
    )  # the teacher plays no part here
    student0, student = Path(results["systems"]["student_init"]), Path(results["systems"]["student"])
    stats = json.loads((student0 / "sft_stats.json").read_text())
    assert 0 < stats["trainable_parameters"] < stats["parameters"]
    model0, tok = load_saved(student0)
    # SFT's start: the copy-pretrained model (pretraining trains every weight, before LoRA is attached)
    start = next((results["run_dir"].parent / "logs" / "cache" / "models").glob(f"{family}-student_pretrained-*"))
    init = load_saved(start)[0]
    _only_targets_moved(model0.state_dict(), init.state_dict(), _targets(student0 / ADAPTER_DIR))
    distilled = load_saved(student)[0]
    _only_targets_moved(distilled.state_dict(), model0.state_dict(), _targets(student / ADAPTER_DIR))
