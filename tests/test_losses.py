"""Calibration losses: hand-computed values, gradient signs, and parity with TRL's own loss code."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from helpers.configs import loss_config, loss_names
from helpers.losses import random_pairs
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from plad.losses import (
    CalibrationLoss,
    DPKDLoss,
    DPOLoss,
    GKDLoss,
    IPOLoss,
    KDLoss,
    ListwiseLoss,
    MarginLoss,
    RankingLoss,
    SeqKDLoss,
    SequenceScores,
    SFTLoss,
    SimPOLoss,
    SkewKLLoss,
    TAIDLoss,
)
from plad.losses.sft import SFTOracleLoss
from plad.training.modules import build_loss

# Two pairs: mean scores [[-1, -1], [-2, -3]], summed [[-2, -4], [-6, -3]].
LOGP = [[-2.0, -4.0], [-6.0, -3.0]]
NTOK = [[2, 4], [3, 1]]


def scores(logp=LOGP, n_tokens=NTOK, grad: bool = False, **extra) -> SequenceScores:
    lp = torch.tensor(logp, dtype=torch.float64, requires_grad=grad)
    return SequenceScores(logp=lp, n_tokens=torch.tensor(n_tokens), **extra)


# --------------------------------------------------------------------------- hand-computed values
def test_ranking_hinge_active_inactive_and_mean_vs_sum() -> None:
    # mean: relu(.5 - (-1) + (-1)) = .5 (active), relu(.5 + 2 - 3) = 0 (inactive)
    loss, m = RankingLoss(beta=0.5, score="mean")(scores())
    assert loss.item() == pytest.approx(0.25) and m["hinge_active"].item() == pytest.approx(0.5)
    # sum: relu(.5 + 2 - 4) = 0, relu(.5 + 6 - 3) = 3.5
    loss_sum, m_sum = RankingLoss(beta=0.5, score="sum")(scores())
    assert loss_sum.item() == pytest.approx(1.75) and m_sum["hinge_active"].item() == pytest.approx(0.5)
    assert m["rank_acc"].item() == pytest.approx(0.5)  # 1 > 1 is False, -2 > -3 is True
    assert m["margin"].item() == pytest.approx(0.5)


def test_ranking_inactive_hinge_has_no_gradient() -> None:
    s = scores(grad=True)
    RankingLoss(beta=0.5, score="mean")(s)[0].backward()
    assert s.logp.grad[1].abs().sum().item() == 0.0  # second pair satisfies the margin
    assert s.logp.grad[0].tolist() == pytest.approx([-1 / 2 / 2, 1 / 4 / 2])  # d/dlogp of mean score, / 2 pairs


def test_ranking_without_rejected_grad_has_the_same_value_and_moves_only_y_plus() -> None:
    s, t = scores(grad=True), scores(grad=True)
    full, stopped = RankingLoss(beta=0.5)(s)[0], RankingLoss(beta=0.5, rejected_grad=False)(t)[0]
    assert stopped.item() == full.item()
    full.backward()
    stopped.backward()
    assert t.logp.grad[:, 0].tolist() == s.logp.grad[:, 0].tolist()  # y+ as before
    assert s.logp.grad[0, 1].item() != 0.0 and t.logp.grad[:, 1].abs().sum().item() == 0.0  # y- untouched


def test_margin_scales_with_quality_gap() -> None:
    quality = torch.tensor([[0.9, 0.1], [0.5, 0.5]], dtype=torch.float64)
    # pair 1: relu(beta * .8 - 0), pair 2: relu(0 - 1) = 0
    for beta in (1.0, 2.0):
        loss, m = MarginLoss(beta=beta)(scores(quality=quality))
        assert loss.item() == pytest.approx(beta * 0.8 / 2)
        assert m["quality_gap"].item() == pytest.approx(0.4)
    flipped, _ = MarginLoss(beta=1.0)(scores(quality=quality.flip(1)))
    assert flipped.item() == 0.0  # the student's output is better: no push towards y+


def test_reg_weight_adds_token_averaged_nll_on_chosen() -> None:
    base, _ = RankingLoss(beta=0.5)(scores())
    loss, m = RankingLoss(beta=0.5, reg_weight=0.3)(scores())
    nll = (2.0 + 6.0) / (2 + 3)
    assert m["reg_nll"].item() == pytest.approx(nll)
    assert (loss - base).item() == pytest.approx(0.3 * nll)


@pytest.mark.parametrize("cls", [SFTLoss, SeqKDLoss])
def test_cross_entropy_baselines_average_over_tokens(cls) -> None:
    loss, m = cls()(scores(logp=[[-2.0], [-6.0]], n_tokens=[[2], [3]]))
    assert loss.item() == pytest.approx(8 / 5)  # not the per-sequence mean (1 + 2) / 2
    assert m["tokens"].item() == 5 and "rank_acc" not in m


# --------------------------------------------------------------------------- gradient signs
@pytest.mark.parametrize(
    "loss",
    [
        RankingLoss(beta=5.0),
        RankingLoss(beta=50.0, score="sum"),
        MarginLoss(beta=3.0),
        DPOLoss(beta=0.1),
        DPOLoss(beta=0.5, label_smoothing=0.2),
        SimPOLoss(beta=2.0, gamma=1.0),
        IPOLoss(beta=0.01),
    ],
)
def test_preference_gradients_raise_chosen_and_lower_rejected(loss: CalibrationLoss) -> None:
    for seed in range(3):
        s = random_pairs(seed)
        value, _ = loss(s)
        value.backward()
        assert (s.logp.grad[:, 0] <= 0).all() and (s.logp.grad[:, 1] >= 0).all()
        assert s.logp.grad.abs().sum() > 0


def test_ipo_regresses_to_its_target_gap() -> None:
    """IPO is a squared loss: above the target gap 1/(2 beta) the gradient signs flip (by design)."""
    s = scores(grad=True, ref_logp=torch.zeros(2, 2, dtype=torch.float64))
    beta = 0.1  # target 5; mean log-ratio gaps are 0 and 1 -> below target
    IPOLoss(beta=beta)(s)[0].backward()
    assert (s.logp.grad[:, 0] < 0).all() and (s.logp.grad[:, 1] > 0).all()
    s = scores(grad=True, ref_logp=torch.zeros(2, 2, dtype=torch.float64))
    IPOLoss(beta=10.0)(s)[0].backward()  # target 0.05; pair 2 (gap 1) is above it
    assert s.logp.grad[1, 0] > 0 and s.logp.grad[1, 1] < 0


# --------------------------------------------------------------------------- listwise
def listmle_reference(s: list[float], teacher: list[bool], quality: list[float] | None) -> float:
    """Slow ListMLE: sort by (teacher first, quality desc); sum_i -s_i + log sum_{k >= i} exp(s_k)."""
    q = quality or [0.0] * len(s)
    order = sorted(range(len(s)), key=lambda i: (not teacher[i], -q[i]))
    ranked = [s[i] for i in order]
    return sum(-ranked[i] + math.log(sum(math.exp(v) for v in ranked[i:])) for i in range(len(s)))


def test_listmle_matches_slow_reference_with_ragged_mask() -> None:
    logp = torch.tensor([[-3.0, -5.0, -2.0, -7.0], [-4.0, -1.0, -6.0, float("nan")]], dtype=torch.float64)
    n = torch.tensor([[3, 5, 2, 7], [2, 1, 3, 0]])
    quality = torch.tensor([[0.2, 0.9, 0.5, 0.1], [0.3, 0.1, 0.8, float("nan")]], dtype=torch.float64)
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    s = SequenceScores(
        logp=logp.requires_grad_(), n_tokens=n, quality=quality, mask=mask, n_teacher=torch.tensor([1, 2])
    )
    loss, m = ListwiseLoss(method="listmle", score="sum")(s)
    # list 1: teacher 0 first, then students by quality 1 (0.9), 2 (0.5), 3 (0.1); list 2: teachers 0, 1, student 2
    ref1 = listmle_reference([-3.0, -5.0, -2.0, -7.0], [True, False, False, False], [0.2, 0.9, 0.5, 0.1])
    ref2 = listmle_reference([-4.0, -1.0, -6.0], [True, True, False], [0.3, 0.1, 0.8])
    assert loss.item() == pytest.approx((ref1 + ref2) / 2, abs=1e-9)
    loss.backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[1, 3] == 0  # padding gets no gradient
    assert 0 <= m["rank_acc"].item() <= 1 and m["n_candidates"].item() == pytest.approx(3.5)


def test_listwise_ties_and_padding_invariance() -> None:
    # Without quality, the two teacher samples tie: each pays -s_i + lse over both teachers and the student.
    logp = torch.tensor([[-1.0, -2.0, -4.0]], dtype=torch.float64)
    s = SequenceScores(logp=logp, n_tokens=torch.ones(1, 3, dtype=torch.long), n_teacher=torch.tensor([2]))
    lse = torch.logsumexp(logp[0], 0).item()
    expected = (lse + 1.0) + (lse + 2.0) + 0.0
    assert ListwiseLoss(method="listmle")(s)[0].item() == pytest.approx(expected)
    # softmax target: mass 1/2 on each teacher sample
    expected_ce = -0.5 * (logp[0].log_softmax(0)[0] + logp[0].log_softmax(0)[1]).item()
    assert ListwiseLoss(method="softmax")(s)[0].item() == pytest.approx(expected_ce)
    # A padded copy of the list gives the same loss for both methods.
    padded = SequenceScores(
        logp=torch.cat([logp, torch.tensor([[1e9]], dtype=torch.float64)], 1),
        n_tokens=torch.ones(1, 4, dtype=torch.long),
        n_teacher=torch.tensor([2]),
        mask=torch.tensor([[True, True, True, False]]),
    )
    for method in ("listmle", "softmax"):
        assert ListwiseLoss(method=method)(padded)[0].item() == pytest.approx(ListwiseLoss(method=method)(s)[0].item())


def test_listwise_teacher_outranks_better_quality_student() -> None:
    s = SequenceScores(
        logp=torch.tensor([[-1.0, -2.0]]),
        n_tokens=torch.ones(1, 2, dtype=torch.long),
        quality=torch.tensor([[0.1, 0.9]]),
        n_teacher=torch.tensor([1]),
    )
    better = ListwiseLoss().better(s)
    assert better[0].tolist() == [[False, True], [False, False]]
    without_teacher = SequenceScores(logp=s.logp, n_tokens=s.n_tokens, quality=s.quality)
    assert ListwiseLoss().better(without_teacher)[0].tolist() == [[False, False], [True, False]]
    with pytest.raises(ValueError, match="n_teacher"):
        ListwiseLoss()(SequenceScores(logp=s.logp, n_tokens=s.n_tokens))


# --------------------------------------------------------------------------- white-box KD
def kd_scores(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> SequenceScores:
    return SequenceScores(
        logp=torch.zeros(student.shape[0], 1),
        n_tokens=torch.ones(student.shape[0], 1),
        logits=student,
        teacher_logits=teacher,
        labels=labels,
    )


def test_kd_zero_iff_equal_and_matches_torch_kl() -> None:
    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(2, 5, 11, generator=g), torch.randn(2, 5, 11, generator=g)
    labels = torch.tensor([[-100, 3, 4, 5, -100], [-100, -100, 1, 2, 3]])
    assert KDLoss()(kd_scores(student, student.clone(), labels))[0].item() == pytest.approx(0.0, abs=1e-7)
    # hand value: teacher [.5, .5] vs student [.75, .25] -> .5 * ln(4/3)
    one = kd_scores(torch.tensor([[[math.log(3.0), 0.0]]]), torch.tensor([[[0.0, 0.0]]]), torch.tensor([[0]]))
    assert KDLoss()(one)[0].item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    for t in (1.0, 2.0):
        loss, _ = KDLoss(temperature=t)(kd_scores(student, teacher, labels))
        keep = labels != -100
        ref = (
            F.kl_div(F.log_softmax(student[keep] / t, -1), F.softmax(teacher[keep] / t, -1), reduction="batchmean")
            * t**2
        )
        assert loss.item() > 0 and loss.item() == pytest.approx(ref.item(), rel=1e-5)
    # ignored positions do not matter
    noisy = student.clone()
    noisy[labels == -100] += 100 * torch.randn_like(noisy[labels == -100])
    assert KDLoss()(kd_scores(noisy, teacher, labels))[0].item() == pytest.approx(
        KDLoss()(kd_scores(student, teacher, labels))[0].item(), rel=1e-6
    )


def test_kd_vocab_mismatch_and_tokenizer_check() -> None:
    labels = torch.tensor([[1, 2]])
    student, teacher = torch.randn(1, 2, 8), torch.randn(1, 2, 10)
    with pytest.raises(ValueError, match="share a tokenizer"):
        KDLoss()(kd_scores(student, teacher, labels))
    padded = torch.cat([student, torch.randn(1, 2, 2)], -1)  # same real vocab, padded embedding
    assert KDLoss(vocab_size=8)(kd_scores(student, padded, labels))[0].item() == pytest.approx(
        KDLoss()(kd_scores(student, padded[..., :8], labels))[0].item()
    )
    tok = lambda vocab: SimpleNamespace(get_vocab=lambda: dict(vocab))  # noqa: E731
    assert KDLoss.check_compatible(tok({"a": 0, "b": 1}), tok({"b": 1, "a": 0})) == 2
    with pytest.raises(ValueError, match="loss=kd needs teacher and student to share a tokenizer"):
        KDLoss.check_compatible(tok({"a": 0, "b": 1}), tok({"a": 1, "b": 0}))


# --------------------------------------------------------------------------- validation and configs
@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (RankingLoss, {"beta": -1.0}, "loss.beta"),
        (RankingLoss, {"score": "max"}, "loss.score"),
        (RankingLoss, {"reg_weight": -0.1}, "loss.reg_weight"),
        (RankingLoss, {"rejected_grad": "no"}, "loss.rejected_grad"),
        (MarginLoss, {"beta": -2.0}, "loss.beta"),
        (ListwiseLoss, {"method": "lambda"}, "loss.method"),
        (ListwiseLoss, {"temperature": 0.0}, "loss.temperature"),
        (DPOLoss, {"beta": 0.0}, "loss.beta"),
        (DPOLoss, {"label_smoothing": 0.5}, "loss.label_smoothing"),
        (DPOLoss, {"label_smoothing": "0.1"}, "loss.label_smoothing"),
        (IPOLoss, {"beta": -0.1}, "loss.beta"),
        (SimPOLoss, {"gamma": -1.0}, "loss.gamma"),
        (SimPOLoss, {"label_smoothing": [0.1]}, "loss.label_smoothing"),
        (KDLoss, {"temperature": 0.0}, "loss.temperature"),
        (KDLoss, {"vocab_size": 0}, "loss.vocab_size"),
    ],
)
def test_bad_hyperparameters_name_the_field(cls, kwargs, field) -> None:
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        cls(**kwargs)


def test_missing_inputs_and_wrong_shapes_fail_clearly() -> None:
    with pytest.raises(ValueError, match="ref_logp"):
        DPOLoss()(scores())
    with pytest.raises(ValueError, match="quality"):
        MarginLoss()(scores())
    with pytest.raises(ValueError, match="teacher_logits"):
        KDLoss()(scores())
    with pytest.raises(ValueError, match=r"logp: expected shape \[B, 2\]"):
        RankingLoss()(scores(logp=[[-1.0, -2.0, -3.0]], n_tokens=[[1, 1, 1]]))


def test_configs_instantiate_with_documented_defaults() -> None:
    expected = {
        "ranking": RankingLoss,
        "margin": MarginLoss,
        "listwise": ListwiseLoss,
        "dpo": DPOLoss,
        "ipo": IPOLoss,
        "simpo": SimPOLoss,
        "sft": SFTLoss,
        "sft_oracle": SFTOracleLoss,
        "seqkd": SeqKDLoss,
        "kd": KDLoss,
        "gkd": GKDLoss,
        "skew_kl": SkewKLLoss,
        "taid": TAIDLoss,
        "dpkd": DPKDLoss,
        "ranking_no_reg": RankingLoss,
        "ranking_y_plus": RankingLoss,
        "ranking_sum": RankingLoss,
        "ranking_on_policy": RankingLoss,  # + on_policy, a run key like lr (distill.on_policy)
        "gkd_on_policy": GKDLoss,
    }
    assert loss_names() == sorted(expected)
    for name, cls in expected.items():
        cfg = loss_config(name)
        assert cfg.lr > 0, name  # every method has its own distill learning rate ...
        with pytest.raises(InstantiationException, match="lr|on_policy"):
            instantiate(cfg)  # ... which is not a loss argument,
        loss = build_loss(cfg)  # so it is stripped in one place
        assert type(loss) is cls, name
        if name not in ("ranking", "margin", "listwise", "ranking_y_plus", "ranking_sum", "ranking_on_policy"):
            assert loss.reg_weight == 0.0, name
    # the ablation variants differ from ranking in exactly what their names say
    ranking = OmegaConf.to_container(loss_config("ranking"))
    for name, change in {
        "ranking_no_reg": {"reg_weight": 0.0},
        "ranking_y_plus": {"rejected_grad": False},
        "ranking_sum": {"score": "sum", "beta": 8.0},
    }.items():
        assert OmegaConf.to_container(loss_config(name)) == {**ranking, **change}, name


def test_cross_entropy_baselines_declare_their_data() -> None:
    """sft = continued SFT on the labeled train split; seqkd and the oracle train on the pair cache."""
    assert (SFTLoss.data_source, SFTLoss.inputs, SFTLoss.needs_oracle_references) == (
        "train_split",
        ("reference",),
        False,
    )
    assert (SFTOracleLoss.data_source, SFTOracleLoss.inputs, SFTOracleLoss.needs_oracle_references) == (
        "pairs",
        ("reference",),
        True,
    )
    assert (SeqKDLoss.data_source, SeqKDLoss.inputs, SeqKDLoss.needs_oracle_references) == ("pairs", ("chosen",), False)
    assert RankingLoss.data_source == "pairs" and not RankingLoss.needs_oracle_references
