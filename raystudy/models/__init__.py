"""Encoders, heads and the two contrastive pre-training methods (MoCo, BYOL)."""

from raystudy.models.base import MomentumMethod
from raystudy.models.byol import BYOL, byol_loss
from raystudy.models.encoders import build_encoder, load_encoder_weights
from raystudy.models.heads import Classifier, ClassifierMLP, ProjectionMLP
from raystudy.models.moco import MoCo, clip_queue_size, concat_all_gather, info_nce

__all__ = [
    "BYOL",
    "Classifier",
    "ClassifierMLP",
    "MoCo",
    "MomentumMethod",
    "ProjectionMLP",
    "build_encoder",
    "byol_loss",
    "clip_queue_size",
    "concat_all_gather",
    "info_nce",
    "load_encoder_weights",
]
