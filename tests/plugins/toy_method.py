"""A toy pretraining method registered from outside raystudy (no raystudy file changes).

Pulls the two views' embeddings together and keeps the batch spread (a VICReg-like
variance term), with its own config section ``pretrain.toy`` and no momentum encoder.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch import nn

from raystudy.configbase import Section, gt
from raystudy.methods import ModelConfig
from raystudy.models import PretrainModel, ProjectionMLP
from raystudy.registry import MethodSpec, register_method


class ToyConfig(Section):
    spread_weight: Annotated[float, gt(0)] = 1.0


class ToyMethod(PretrainModel):
    def __init__(self, encoder: nn.Module, feature_dim: int, proj_dim: int, spread_weight: float) -> None:
        super().__init__()
        self.online_encoder = encoder
        self.projector = ProjectionMLP(feature_dim, proj_dim, proj_dim, num_layers=2)
        self.spread_weight = spread_weight
        self.steps_seen: list[tuple[int, int]] = []

    @classmethod
    def from_config(cls, encoder, feature_dim, model: ModelConfig, section: ToyConfig, n_images, global_batch):
        return cls(encoder, feature_dim, model.proj_dim, section.spread_weight)

    def after_step(self, step: int, total_steps: int) -> None:
        self.steps_seen.append((step, total_steps))

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        z1 = F.normalize(self.projector(self.online_encoder(view1)), dim=1)  # (B, D)
        z2 = F.normalize(self.projector(self.online_encoder(view2)), dim=1)  # (B, D)
        align = (z1 - z2).pow(2).sum(1).mean()
        spread = F.relu(1 - torch.cat([z1, z2]).std(0)).mean()
        return {"loss": align + self.spread_weight * spread}


register_method(MethodSpec("toy", ToyConfig, ToyMethod, display_name="Toy"))
