"""BYOL (Grill et al., 2020), paper Sect. 3.3, Eq. 2; config section ``pretrain.byol``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from raystudy.methods import BYOLConfig, ModelConfig
from raystudy.models.base import MomentumMethod, byol_momentum
from raystudy.models.heads import ProjectionMLP


def byol_loss(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """mean(2 − 2 cos(p, z)) over the batch; p, z: (B, D). 0 when aligned, 4 when opposite."""
    return (2 - 2 * F.cosine_similarity(p, z.detach(), dim=-1)).mean()


class BYOL(MomentumMethod):
    """Online encoder → projector → predictor regresses the target projection of the other view.

    Symmetric loss: byol_loss(p1, z2_target) + byol_loss(p2, z1_target), so it lies in [0, 8].
    The predictor is not part of the momentum pairs (the target has none). The momentum
    follows :func:`~raystudy.models.base.byol_momentum` from ``base_momentum``.

    Args:
        encoder: backbone (B, C, H, W) -> (B, feature_dim).
        feature_dim: width of the encoder output.
        proj_hidden_dim, proj_dim: projector widths; pred_hidden_dim: predictor's hidden width.
        proj_layers: projector depth.
        base_momentum: EMA momentum at step 0.

    Example:
        >>> enc, dim = build_encoder("resnet18")
        >>> byol = BYOL(enc, dim, proj_hidden_dim=64, proj_dim=32, pred_hidden_dim=64)
        >>> byol(torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32))["loss"]  # in [0, 8]
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        pred_hidden_dim: int = 4096,
        proj_layers: int = 2,  # the paper's "3-layer MLP": features -> hidden -> out
        base_momentum: float = 0.99,
    ) -> None:
        super().__init__(encoder, ProjectionMLP(feature_dim, proj_hidden_dim, proj_dim, proj_layers))
        self.online_predictor = ProjectionMLP(proj_dim, pred_hidden_dim, proj_dim, num_layers=2)
        self.base_momentum = base_momentum

    @classmethod
    def from_config(
        cls,
        encoder: nn.Module,
        feature_dim: int,
        model: ModelConfig,
        section: BYOLConfig,
        n_images: int,
        global_batch: int,
    ) -> BYOL:
        return cls(
            encoder,
            feature_dim,
            proj_hidden_dim=model.proj_hidden_dim,
            proj_dim=model.proj_dim,
            pred_hidden_dim=model.pred_hidden_dim,
            base_momentum=section.base_momentum,
        )

    def momentum_at(self, step: int, total_steps: int) -> float:
        return byol_momentum(step, total_steps, self.base_momentum)

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
