"""BYOL (Grill et al., 2020), paper Sect. 3.3, Eq. 2."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raystudy.models.base import MomentumMethod
from raystudy.models.heads import ProjectionMLP


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """mean(2 − 2 cos(p, z)) over the batch; p, z: (B, D). 0 when aligned, 4 when opposite."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


class BYOL(MomentumMethod):
    """Online encoder → projector → predictor regresses the target projection of the other view.

    Symmetric loss: byol_loss(p1, z2_target) + byol_loss(p2, z1_target), so it lies in [0, 8].
    The predictor is not part of the momentum pairs (the target has none).
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        pred_hidden_dim: int = 4096,
        proj_layers: int = 2,  # the paper's "3-layer MLP": features -> hidden -> out
    ) -> None:
        super().__init__(encoder, ProjectionMLP(feature_dim, proj_hidden_dim, proj_dim, proj_layers))
        self.online_predictor = ProjectionMLP(proj_dim, pred_hidden_dim, proj_dim, num_layers=2)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        p1 = self.online_predictor(self.online_projector(self.online_encoder(view1)))  # (B, proj_dim)
        p2 = self.online_predictor(self.online_projector(self.online_encoder(view2)))  # (B, proj_dim)
        with torch.no_grad():
            z1 = self.target_projector(self.target_encoder(view1))  # (B, proj_dim)
            z2 = self.target_projector(self.target_encoder(view2))  # (B, proj_dim)
        loss = byol_loss(p1, z2) + byol_loss(p2, z1)
        with torch.no_grad():
            cos = 0.5 * (F.cosine_similarity(p1, z2, dim=-1).mean() + F.cosine_similarity(p2, z1, dim=-1).mean())
        return {"loss": loss, "cos_sim": cos}
