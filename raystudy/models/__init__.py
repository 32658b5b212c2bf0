"""Encoders, heads and the pretraining methods (MoCo, BYOL, SimCLR; see ``raystudy.registry``)."""

from raystudy.models.base import MomentumMethod, PretrainModel
from raystudy.models.byol import BYOL, BYOLConfig, byol_loss
from raystudy.models.distributed import concat_all_gather, gather_no_grad, gather_with_grad, world_size
from raystudy.models.encoders import build_encoder, load_encoder_weights
from raystudy.models.heads import Classifier, ClassifierMLP, ProjectionMLP
from raystudy.models.moco import MoCo, MoCoConfig, clip_queue_size, info_nce
from raystudy.models.simclr import SimCLR, SimCLRConfig, nt_xent

__all__ = [
    "BYOL",
    "BYOLConfig",
    "Classifier",
    "ClassifierMLP",
    "MoCo",
    "MoCoConfig",
    "MomentumMethod",
    "PretrainModel",
    "ProjectionMLP",
    "SimCLR",
    "SimCLRConfig",
    "build_encoder",
    "byol_loss",
    "clip_queue_size",
    "concat_all_gather",
    "gather_no_grad",
    "gather_with_grad",
    "info_nce",
    "load_encoder_weights",
    "nt_xent",
    "world_size",
]
