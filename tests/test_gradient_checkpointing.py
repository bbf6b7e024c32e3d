"""`gradient_checkpointing: true` recomputes every layer's activations in the backward pass and
changes nothing else: the same losses and gradients (full fine-tuning and LoRA, llama and t5),
and the SFT and distillation stages both turn it on and end with the same weights."""

import copy
from pathlib import Path

import pytest
import torch
from helpers.pairs import PROMPTS, save_tiny, tiny_llama, tiny_t5, train_tokenizer
from transformers.modeling_layers import GradientCheckpointingLayer

from plad.data.collate import Collator
from plad.models.build import load_saved
from plad.models.logprobs import sequence_logprobs
from plad.models.lora import prepare
from plad.training.modules import DistillModule, zero_dropout

RANKING = {"_target_": "plad.losses.ranking.RankingLoss", "beta": 1.0, "reg_weight": 0.1}


def _batch(tok, enc_dec: bool, k: int = 1):
    rows = [{"prompt": PROMPTS[i % len(PROMPTS)], "reference": f"good text number {i}"} for i in range(6)]
    batch = Collator(tok, enc_dec, 32, 12)(rows)
    batch["mask"] = torch.ones(len(rows) // k, k, dtype=torch.bool)
    return batch


def _count_layer_calls(model: torch.nn.Module) -> list[int]:
    """Calls of the Linear modules inside the model's decoder/encoder blocks: forward, plus the
    recomputation under checkpointing (transformers checkpoints a block's ``forward``, so the
    block's own hooks fire once; torch stops recomputing once the saved tensors it needs are back,
    so not every module runs twice)."""
    calls = [0]
    for layer in model.modules():
        if isinstance(layer, GradientCheckpointingLayer):
            for m in layer.modules():
                if isinstance(m, torch.nn.Linear):
                    m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _loss_and_grads(model: torch.nn.Module, batch) -> tuple[float, dict[str, torch.Tensor]]:
    model.train()
    out = sequence_logprobs(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
    loss = -out.sum_logp.sum() / out.n_tokens.sum()
    loss.backward()
    return loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", ["llama", "t5"])
@pytest.mark.parametrize("lora", [None, {"r": 4}])
def test_checkpointing_recomputes_layers_and_keeps_losses_and_gradients(family, lora):
    tok = train_tokenizer()
    base = tiny_llama(tok) if family == "llama" else tiny_t5(tok)
    zero_dropout(base)  # T5's 0.1 would draw different masks per forward
    models = {}
    for on in (False, True):
        torch.manual_seed(1)  # the same LoRA A init in both
        models[on] = prepare(copy.deepcopy(base), lora, gradient_checkpointing=on)
    if lora:  # B starts at 0, which would leave A's gradient 0: give both the same non-zero B
        torch.manual_seed(2)
        b = [torch.randn_like(p) * 0.1 for n, p in models[False].named_parameters() if "lora_B" in n]
        for model in models.values():
            for value, (_, p) in zip(b, [(n, p) for n, p in model.named_parameters() if "lora_B" in n]):
                p.data.copy_(value)
    calls = {on: _count_layer_calls(m) for on, m in models.items()}
    batch = _batch(tok, family == "t5")
    (loss_off, grads_off), (loss_on, grads_on) = (_loss_and_grads(models[on], batch) for on in (False, True))
    assert calls[True][0] > calls[False][0] > 0  # layers ran again in the backward pass
    assert abs(loss_on - loss_off) < 1e-6
    assert grads_on.keys() == grads_off.keys() and len(grads_on) > 0
    assert all(n.count("lora_") for n in grads_on) == bool(lora)
    for n in grads_off:
        assert torch.allclose(grads_on[n], grads_off[n], atol=1e-6, rtol=1e-5), n


def test_distill_module_with_checkpointing_gives_the_same_loss_and_gradients(tmp_path):
    student = save_tiny(tmp_path / "student")
    modules = {}
    for on in (False, True):
        torch.manual_seed(0)
        modules[on] = DistillModule(
            str(student), RANKING, lr=1e-3, max_steps=1, lora={"r": 4}, gradient_checkpointing=on
        )
    tok = load_saved(student)[1]
    batch = _batch(tok, False, k=2)
    results = {}
    for on, module in modules.items():
        calls = _count_layer_calls(module.student)
        loss, _ = module.loss_fn(module.scores(batch))
        loss.backward()
        results[on] = (
            loss.item(),
            calls[0],
            {n: p.grad for n, p in module.student.named_parameters() if p.requires_grad},
        )
    assert results[True][1] > results[False][1] > 0
    assert abs(results[True][0] - results[False][0]) < 1e-6
    for n, g in results[False][2].items():
        assert torch.allclose(results[True][2][n], g, atol=1e-6, rtol=1e-5), n


def test_sft_and_distillation_stages_turn_it_on_and_end_with_the_same_weights(run_pipeline, tmp_path, monkeypatch):
    import plad.models.lora as lora

    enabled = []
    real = lora.enable_gradient_checkpointing
    monkeypatch.setattr(
        lora, "enable_gradient_checkpointing", lambda model, field="": (enabled.append(field), real(model, field))[1]
    )
    common = ("debug=fast", "stages=[sft,distill]", "loss=sft", "model.teacher.sft.max_steps=0")
    off = run_pipeline(*common, log_dir=tmp_path / "off", name="off")
    assert enabled == []
    on = run_pipeline(*common, "model.student.gradient_checkpointing=true", log_dir=tmp_path / "on", name="on")
    assert enabled == ["model.student.gradient_checkpointing"] * 2  # SFT, then distillation
    for system in ("student_init", "student"):
        a, b = (load_saved(Path(r["systems"][system]))[0].state_dict() for r in (off, on))
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-6), (system, k)
