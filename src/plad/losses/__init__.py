"""Calibration losses and baselines; each is built from ``configs/loss/<name>.yaml`` via Hydra."""

from plad.losses.base import CalibrationLoss, SequenceScores, check_score_mode
from plad.losses.dpo import DPOLoss
from plad.losses.ipo import IPOLoss
from plad.losses.kd import KDLoss
from plad.losses.listwise import ListwiseLoss
from plad.losses.margin import MarginLoss
from plad.losses.ranking import RankingLoss
from plad.losses.seqkd import SeqKDLoss
from plad.losses.sft import SFTLoss
from plad.losses.simpo import SimPOLoss

__all__ = [
    "CalibrationLoss",
    "SequenceScores",
    "check_score_mode",
    "DPOLoss",
    "IPOLoss",
    "KDLoss",
    "ListwiseLoss",
    "MarginLoss",
    "RankingLoss",
    "SeqKDLoss",
    "SFTLoss",
    "SimPOLoss",
]
