"""The neighbouring distillation losses (gkd, skew_kl, taid, dpkd) against their reference
implementations, transcribed in tests/helpers/reference_losses.py (repo, path and commit there):
the same values (to 1e-6) and gradients on fixed random logits, ignored positions ignored."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers import reference_losses as ref

from plad.losses import DPKDLoss, GKDLoss, SequenceScores, SkewKLLoss, TAIDLoss

TOL = {"rtol": 1e-6, "atol": 1e-6}


def logits(seed: int = 0, n: int = 4, length: int = 7, vocab: int = 11) -> tuple[torch.Tensor, ...]:
    """(student, teacher, labels): float64 [n, length, vocab] logits; labels -100 on a 'prompt'
    prefix of each row and on the right padding of rows 1 and 2 (different lengths)."""
    g = torch.Generator().manual_seed(seed)
    student = 2 * torch.randn(n, length, vocab, generator=g, dtype=torch.float64)
    teacher = 2 * torch.randn(n, length, vocab, generator=g, dtype=torch.float64)
    labels = torch.randint(0, vocab, (n, length), generator=g)
    labels[:, :2] = -100
    labels[1, 5:] = -100
    labels[2, 4:] = -100
    return student, teacher, labels


def scores(student, teacher, labels, k: int = 1, progress: float | None = None) -> SequenceScores:
    mask = labels != -100
    return SequenceScores(
        logp=torch.zeros(labels.shape[0] // k, k, dtype=student.dtype),
        n_tokens=mask.sum(-1).view(-1, k),
        logits=student,
        teacher_logits=teacher,
        labels=labels,
        progress=progress,
    )


def value_and_grad(f, student: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = student.detach().clone().requires_grad_()
    value = f(x)
    (grad,) = torch.autograd.grad(value, x)
    return value.detach(), grad


def assert_same(ours, reference, student: torch.Tensor) -> None:
    """Same value and same gradient with respect to the student's logits."""
    (v, g), (rv, rg) = value_and_grad(ours, student), value_and_grad(reference, student)
    torch.testing.assert_close(v, rv.to(v.dtype), **TOL)
    torch.testing.assert_close(g, rg.to(g.dtype), **TOL)


def assert_ignores_masked_positions(loss, student, teacher, labels, k: int = 1) -> None:
    """Any logits at labels == -100 give the same loss, and no gradient reaches them."""
    g = torch.Generator().manual_seed(1)
    ignored = labels == -100
    noisy_s, noisy_t = student.clone(), teacher.clone()
    noisy_s[ignored] += 50 * torch.randn(noisy_s[ignored].shape, generator=g, dtype=student.dtype)
    noisy_t[ignored] -= 50 * torch.randn(noisy_t[ignored].shape, generator=g, dtype=student.dtype)
    base = loss(scores(student, teacher, labels, k))[0]
    value, grad = value_and_grad(lambda x: loss(scores(x, noisy_t, labels, k))[0], noisy_s)
    torch.testing.assert_close(value, base.detach(), **TOL)
    assert grad[ignored].abs().max() == 0 and grad[~ignored].abs().max() > 0


# --------------------------------------------------------------------------- gkd
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_gkd_is_trls_generalized_jsd(beta: float, temperature: float) -> None:
    student, teacher, labels = logits()
    loss = GKDLoss(beta=beta, temperature=temperature)
    assert_same(
        lambda x: loss(scores(x, teacher, labels))[0],
        lambda x: ref.generalized_jsd_loss(x, teacher, labels, beta=beta, temperature=temperature),
        student,
    )
    assert_ignores_masked_positions(loss, student, teacher, labels)


def test_gkd_global_token_count_is_trls_num_items_in_batch() -> None:
    student, teacher, labels = logits()
    s = scores(student, teacher, labels)
    s.global_first_tokens = torch.tensor(40.0)  # e.g. this micro-batch is part of a larger step
    ours = GKDLoss(beta=0.3)(s)[0]
    theirs = ref.generalized_jsd_loss(student, teacher, labels, beta=0.3, num_items_in_batch=torch.tensor(40.0))
    torch.testing.assert_close(ours, theirs, **TOL)


def test_gkd_matches_the_installed_trl() -> None:
    """The transcription is TRL's code: the installed release's function gives the same values."""
    pytest.importorskip("trl")
    from trl.experimental.gkd.gkd_trainer import GKDTrainer

    student, teacher, labels = logits(seed=3)
    for beta in (0.0, 0.5, 1.0):
        ours = GKDLoss(beta=beta)(scores(student, teacher, labels))[0]
        theirs = GKDTrainer.generalized_jsd_loss(student, teacher, labels, beta=beta)
        torch.testing.assert_close(ours, theirs, **TOL)


def test_gkd_beta_0_is_kd() -> None:
    from plad.losses import KDLoss

    student, teacher, labels = logits()
    s = scores(student, teacher, labels)
    torch.testing.assert_close(GKDLoss(beta=0.0)(s)[0], KDLoss()(s)[0], **TOL)  # both keep float64


# --------------------------------------------------------------------------- skew_kl
@pytest.mark.parametrize("alpha", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_skew_kl_is_distillms(alpha: float, direction: str) -> None:
    student, teacher, labels = logits()
    loss = SkewKLLoss(alpha=alpha, direction=direction)
    reference = ref.skewed_forward_kl if direction == "forward" else ref.skewed_reverse_kl
    assert_same(
        lambda x: loss(scores(x, teacher, labels))[0],
        lambda x: reference(x, teacher, {"label": labels}, lam=alpha),
        student,
    )
    assert_ignores_masked_positions(loss, student, teacher, labels)


def test_skew_kl_values_are_the_divergences_the_paper_defines() -> None:
    """forward = KL(p || a p + (1-a) q) + H(p) (the reference's cross-entropy); reverse = KL(q || (1-a) p + a q)."""
    student, teacher, labels = logits()
    keep = labels != -100
    p, q = F.softmax(teacher[keep], -1), F.softmax(student[keep], -1)
    a = 0.2

    def kl(x, y):
        return (x * (x / y).log()).sum(-1).mean()

    entropy = -(p * p.log()).sum(-1).mean()
    forward = SkewKLLoss(alpha=a)(scores(student, teacher, labels))[0]
    reverse = SkewKLLoss(alpha=a, direction="reverse")(scores(student, teacher, labels))[0]
    torch.testing.assert_close(forward, kl(p, a * p + (1 - a) * q) + entropy, **TOL)
    torch.testing.assert_close(reverse, kl(q, (1 - a) * p + a * q), **TOL)
    same = SkewKLLoss(alpha=a, direction="reverse")(scores(teacher, teacher, labels))[0]
    assert same.item() == pytest.approx(0.0, abs=1e-12)


# --------------------------------------------------------------------------- taid
@pytest.mark.parametrize("t", [0.0, 0.4, 0.75, 1.0])
def test_taid_loss_at_time_t_is_taids(t: float) -> None:
    student, teacher, labels = logits()
    ours, theirs = TAIDLoss().eval(), ref.TAID()
    ours.t.fill_(t), theirs.t.fill_(t)
    assert_same(
        lambda x: ours(scores(x, teacher, labels))[0],
        lambda x: theirs.compute_loss(x, teacher, (labels != -100).int()),
        student,
    )
    assert_ignores_masked_positions(ours, student, teacher, labels)


@pytest.mark.parametrize("adaptive", [True, False])
def test_taid_schedule_follows_taids_update_t(adaptive: bool) -> None:
    """Batch after batch (losses that rise and fall), t, the loss and the momentum follow the
    reference's forward, which updates t after each batch from global_step / estimated steps."""
    max_steps, kw = 10, {"t_start": 0.2, "t_end": 0.9, "alpha": 0.2, "beta": 0.5}
    ours = TAIDLoss(adaptive=adaptive, **kw).train()
    theirs = ref.TAID(disable_adaptive=not adaptive, **kw)
    ts = []
    for step in range(8):
        student, teacher, labels = logits(seed=step)
        student = student * (1 + step % 3)  # losses that go up and down
        value, metrics = ours(scores(student, teacher, labels, progress=step / max_steps))
        module = SimpleNamespace(trainer=SimpleNamespace(global_step=step, estimated_stepping_batches=max_steps))
        out = theirs(module, student, teacher, (labels != -100).int())
        torch.testing.assert_close(value, out["distil_loss"].to(value.dtype), **TOL)
        torch.testing.assert_close(ours.t, theirs.t.to(ours.t.dtype), **TOL)
        torch.testing.assert_close(ours.momentum, theirs.momentum, **TOL)
        ts.append(ours.t.item())
    assert ts[0] == pytest.approx(kw["t_start"]) and ts[-1] > ts[0]  # the first batch only records its loss
    if adaptive:
        linear = [kw["t_start"] + (kw["t_end"] - kw["t_start"]) * s / max_steps for s in range(8)]
        assert any(t > lin + 1e-6 for t, lin in zip(ts[1:], linear[1:]))  # the adaptive term mattered


def test_taid_moves_t_only_in_training_with_a_progress_and_resumes_from_its_state() -> None:
    student, teacher, labels = logits()
    loss = TAIDLoss(alpha=0.3)
    for step in range(3):
        loss.train()(scores(student * (step + 1), teacher, labels, progress=0.1 * step))
    state = {k: v.clone() for k, v in loss.state_dict().items()}
    assert set(state) == {"t", "prev_loss", "momentum"} and state["t"] > 0.4
    loss.eval()(scores(student, teacher, labels, progress=0.5))  # validation
    loss.train()(scores(student, teacher, labels))  # no progress: outside a training module
    assert all(torch.equal(v, state[k]) for k, v in loss.state_dict().items())
    resumed = TAIDLoss(alpha=0.3)
    resumed.load_state_dict(state)
    for x in (loss, resumed):
        x.train()(scores(student * 5, teacher, labels, progress=0.3))
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in loss.state_dict().items())


def test_taid_skips_a_non_finite_loss() -> None:
    student, teacher, labels = logits()
    loss = TAIDLoss(alpha=0.3).train()
    loss(scores(student, teacher, labels, progress=0.0))
    before = {k: v.clone() for k, v in loss.state_dict().items()}
    student[0, 3, 0] = float("nan")
    value = loss(scores(student, teacher, labels, progress=0.1))[0]
    assert not torch.isfinite(value)
    assert all(torch.equal(v, before[k]) for k, v in loss.state_dict().items())


# --------------------------------------------------------------------------- dpkd (DistiLLM-2)
def distillm2(loss_type: str, student, teacher, labels, beta: float = 0.1, gradual: bool = False, step: int = 0):
    """The reference on our example-major rows [c0, r0, c1, r1, ...], reordered to its [c..., r...]."""
    order = torch.cat([torch.arange(0, len(labels), 2), torch.arange(1, len(labels), 2)])
    trainer = SimpleNamespace(
        loss_type=loss_type,
        beta=beta,
        gradual_beta=gradual,
        state=SimpleNamespace(global_step=step, max_steps=10),
        accelerator=SimpleNamespace(device="cpu"),
        is_encoder_decoder=True,  # our logits are already aligned with their targets: no shift
    )
    return ref.distillm2_batch_loss(trainer, student[order], teacher[order], labels[order].clone(), len(labels) // 2)


@pytest.mark.parametrize("loss_type", ["distillm_v2", "dpkd"])
def test_dpkd_is_distillm2s_kd_loss(loss_type: str) -> None:
    student, teacher, labels = logits(n=6)
    loss = DPKDLoss(loss_type=loss_type, beta=0.5)
    assert_same(
        lambda x: loss(scores(x, teacher, labels, k=2))[0],
        lambda x: distillm2(loss_type, x, teacher, labels, beta=0.5),
        student,
    )
    assert_ignores_masked_positions(loss, student, teacher, labels, k=2)


@pytest.mark.parametrize("step", [0, 2, 5, 9])
def test_dpkd_gradual_beta_is_distillm2s(step: int) -> None:
    student, teacher, labels = logits(n=6)
    loss = DPKDLoss(gradual_beta=True)
    assert_same(
        lambda x: loss(scores(x, teacher, labels, k=2, progress=step / 10))[0],
        lambda x: distillm2("distillm_v2", x, teacher, labels, gradual=True, step=step),
        student,
    )


def test_dpkd_needs_pairs() -> None:
    student, teacher, labels = logits(n=3)
    with pytest.raises(ValueError, match=r"logp: expected shape \[B, 2\]"):
        DPKDLoss()(scores(student, teacher, labels, k=1))


# --------------------------------------------------------------------------- hyper-parameters
@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (GKDLoss, {"beta": 1.5}, "loss.beta"),
        (GKDLoss, {"beta": "0.5"}, "loss.beta"),
        (GKDLoss, {"temperature": 0.0}, "loss.temperature"),
        (GKDLoss, {"vocab_size": 0}, "loss.vocab_size"),
        (SkewKLLoss, {"alpha": 1.0}, "loss.alpha"),
        (SkewKLLoss, {"alpha": "0.1"}, "loss.alpha"),
        (SkewKLLoss, {"direction": "both"}, "loss.direction"),
        (TAIDLoss, {"t_start": 1.0}, "loss.t_start"),
        (TAIDLoss, {"t_start": "0.2"}, "loss.t_start"),
        (TAIDLoss, {"t_end": None}, "loss.t_end"),
        (TAIDLoss, {"t_start": 0.5, "t_end": 0.4}, "loss.t_end"),
        (TAIDLoss, {"alpha": -0.1}, "loss.alpha"),
        (TAIDLoss, {"beta": 2.0}, "loss.beta"),
        (TAIDLoss, {"alpha": "0.1"}, "loss.alpha"),
        (TAIDLoss, {"adaptive": "yes"}, "loss.adaptive"),
        (DPKDLoss, {"loss_type": "dpo"}, "loss.loss_type"),
        (DPKDLoss, {"alpha_chosen": 0.0}, "loss.alpha_chosen"),
        (DPKDLoss, {"alpha_rejected": 1.0}, "loss.alpha_rejected"),
        (DPKDLoss, {"beta": 0.0}, "loss.beta"),
        (DPKDLoss, {"gradual_beta": 1}, "loss.gradual_beta"),
    ],
)
def test_bad_hyperparameters_name_the_field(cls, kwargs, field) -> None:
    with pytest.raises(ValueError, match="^" + field.replace(".", r"\.") + ": expected"):
        cls(**kwargs)


@pytest.mark.parametrize("cls", [GKDLoss, SkewKLLoss, TAIDLoss, DPKDLoss])
def test_white_box_losses_name_the_missing_teacher_logits(cls) -> None:
    k = len(cls.inputs)
    with pytest.raises(ValueError, match="^teacher_logits: "):
        cls()(SequenceScores(logp=torch.zeros(2, k), n_tokens=torch.ones(2, k)))
