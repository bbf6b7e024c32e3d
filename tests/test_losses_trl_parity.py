"""Parity of our DPO / IPO / SimPO-style losses with TRL's own loss code, value and gradient."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from helpers.losses import random_pairs

from plad.losses import DPOLoss, IPOLoss, RankingLoss, SequenceScores, SimPOLoss


@pytest.fixture(scope="module")
def trl():
    pytest.importorskip("trl")
    from trl.experimental.cpo.cpo_trainer import CPOTrainer
    from trl.trainer.dpo_trainer import DPOTrainer

    return SimpleNamespace(dpo=DPOTrainer, cpo=CPOTrainer)


def trl_dpo(trl, loss_type: str, beta: float, s: SequenceScores) -> torch.Tensor:
    """DPOTrainer._compute_loss on a fake model whose per-token log-probs sum to our ``logp``."""
    logp, n = s.logp.detach(), s.n_tokens
    seqs = torch.cat([logp[:, 0], logp[:, 1]])  # TRL batches [chosen..., rejected...]
    lengths = torch.cat([n[:, 0], n[:, 1]])
    width = int(lengths.max()) + 1
    completion_mask = (torch.arange(width)[None] >= 1) & (torch.arange(width)[None] <= lengths[:, None])
    shifted = completion_mask[:, 1:].to(logp.dtype)
    per_token = shifted * (seqs / lengths)[:, None]  # fused head: masked positions are 0
    zeros = torch.zeros_like(per_token)
    model = lambda **kw: SimpleNamespace(
        log_probs=per_token,
        entropy=zeros,
        mean_logits=zeros,  # noqa: E731
        is_top1=zeros.bool(),
    )
    acc = SimpleNamespace(device="cpu", gather=lambda x: x, gather_for_metrics=lambda x: x)
    fake = SimpleNamespace(
        model=SimpleNamespace(training=True),
        accelerator=acc,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=0.0,
        use_weighting=False,
        _metrics={"train": defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
        args=SimpleNamespace(),
    )
    inputs = {
        "input_ids": torch.zeros(width, dtype=torch.long).expand(len(seqs), width),
        "attention_mask": torch.ones(len(seqs), width, dtype=torch.long),
        "completion_mask": completion_mask.long(),
        "ref_chosen_logps": s.ref_logp[:, 0],
        "ref_rejected_logps": s.ref_logp[:, 1],
    }
    return trl.dpo._compute_loss(fake, model, inputs, return_outputs=False)


def trl_cpo(trl, loss_type: str, beta: float, chosen, rejected, label_smoothing=0.0, gamma=0.0):
    fake = SimpleNamespace(
        alpha=0.0,
        accelerator=SimpleNamespace(device="cpu"),
        loss_type=loss_type,
        beta=beta,
        label_smoothing=label_smoothing,
        simpo_gamma=gamma,
    )
    return trl.cpo.cpo_loss(fake, chosen, rejected)[0].mean()


@pytest.mark.parametrize("seed", [0, 1])
def test_parity_dpo_sigmoid_and_ipo_with_trl_dpo_trainer(trl, seed: int) -> None:
    s = random_pairs(seed)
    for beta in (0.1, 0.7):
        assert DPOLoss(beta=beta)(s)[0].item() == pytest.approx(trl_dpo(trl, "sigmoid", beta, s).item(), abs=1e-6)
        assert IPOLoss(beta=beta)(s)[0].item() == pytest.approx(trl_dpo(trl, "ipo", beta, s).item(), abs=1e-6)
    # hinge with a zero reference = our ranking loss on summed scores with beta -> 1 / beta_trl
    zero_ref = SequenceScores(logp=s.logp, n_tokens=s.n_tokens, ref_logp=torch.zeros_like(s.ref_logp))
    ours = 0.5 * RankingLoss(beta=1 / 0.5, score="sum")(zero_ref)[0]
    assert ours.item() == pytest.approx(trl_dpo(trl, "hinge", 0.5, zero_ref).item(), abs=1e-6)


def assert_same_value_and_grad(ours: torch.Tensor, theirs: torch.Tensor, leaf: torch.Tensor) -> None:
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)
    (g_ours,) = torch.autograd.grad(ours, leaf, retain_graph=True)
    (g_theirs,) = torch.autograd.grad(theirs, leaf, retain_graph=True)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_parity_with_trl_cpo_loss(trl, seed: int) -> None:
    s = random_pairs(seed)
    mean = s.logp / s.n_tokens
    for beta, eps in ((0.1, 0.0), (0.5, 0.2)):
        # conservative DPO: CPO's sigmoid applied to the log-ratios
        ratio = s.logp - s.ref_logp
        assert_same_value_and_grad(
            DPOLoss(beta=beta, label_smoothing=eps)(s)[0],
            trl_cpo(trl, "sigmoid", beta, ratio[:, 0], ratio[:, 1], eps),
            s.logp,
        )
        # SimPO: CPO averages log-probs over tokens for simpo
        assert_same_value_and_grad(
            SimPOLoss(beta=beta * 10, gamma=1.5, label_smoothing=eps)(s)[0],
            trl_cpo(trl, "simpo", beta * 10, mean[:, 0], mean[:, 1], eps, gamma=1.5),
            s.logp,
        )
        # hinge on summed log-likelihoods = beta_trl * ranking(beta = 1 / beta_trl, score=sum)
        assert_same_value_and_grad(
            beta * RankingLoss(beta=1 / beta, score="sum")(s)[0],
            trl_cpo(trl, "hinge", beta, s.logp[:, 0], s.logp[:, 1]),
            s.logp,
        )
        # CPO's IPO (token-averaged, no reference) = our IPO with a zero reference
        zero_ref = SequenceScores(logp=s.logp, n_tokens=s.n_tokens, ref_logp=torch.zeros_like(s.ref_logp))
        assert_same_value_and_grad(
            IPOLoss(beta=beta)(zero_ref)[0], trl_cpo(trl, "ipo", beta, mean[:, 0], mean[:, 1]), s.logp
        )


def test_ipo_sum_score_is_the_unnormalised_paper_form() -> None:
    s = random_pairs(3)
    h = ((s.logp - s.ref_logp)[:, 0] - (s.logp - s.ref_logp)[:, 1]).detach()
    expected = ((h - 1 / (2 * 0.3)) ** 2).mean()
    assert IPOLoss(beta=0.3, score="sum")(s)[0].item() == pytest.approx(expected.item())
    assert IPOLoss(beta=0.3, score="mean")(s)[0].item() != pytest.approx(expected.item())
