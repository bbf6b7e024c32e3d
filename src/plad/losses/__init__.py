"""Calibration losses and baselines; each is built from ``configs/loss/<name>.yaml`` via Hydra."""

from plad.losses.base import CalibrationLoss, SequenceScores, check_score_mode
from plad.losses.dpkd import DPKDLoss
from plad.losses.dpo import DPOLoss
from plad.losses.gkd import GKDLoss
from plad.losses.ipo import IPOLoss
from plad.losses.kd import KDLoss
from plad.losses.listwise import ListwiseLoss
from plad.losses.margin import MarginLoss
from plad.losses.ranking import RankingLoss
from plad.losses.seqkd import SeqKDLoss
from plad.losses.sft import SFTLoss
from plad.losses.simpo import SimPOLoss
from plad.losses.skew_kl import SkewKLLoss
from plad.losses.taid import TAIDLoss
from plad.losses.white_box import WhiteBoxLoss

__all__ = [
    "CalibrationLoss",
    "SequenceScores",
    "check_score_mode",
    "DPKDLoss",
    "DPOLoss",
    "GKDLoss",
    "IPOLoss",
    "KDLoss",
    "ListwiseLoss",
    "MarginLoss",
    "RankingLoss",
    "SeqKDLoss",
    "SFTLoss",
    "SimPOLoss",
    "SkewKLLoss",
    "TAIDLoss",
    "WhiteBoxLoss",
]
