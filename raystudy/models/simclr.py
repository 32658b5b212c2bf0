"""SimCLR (Chen et al., 2020): NT-Xent over the in-batch negatives of both views;
config section ``pretrain.simclr``. No momentum encoder, no queue."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from raystudy.methods import ModelConfig, SimCLRConfig
from raystudy.models.base import PretrainModel
from raystudy.models.distributed import gather_with_grad
from raystudy.models.heads import ProjectionMLP


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross entropy) of the two views of a batch.

    Every embedding's positive is the other view of the same image; its negatives are
    the other 2B - 2 embeddings of both views (of every DDP rank, gathered). The loss is
    the mean cross entropy over the 2B local embeddings.

    Args:
        z1, z2: (B, D) projections of view 1 and view 2 (normalised here).
        temperature: softmax temperature T.

    Example:
        >>> loss = nt_xent(torch.randn(8, 32), torch.randn(8, 32), temperature=0.2)
    """
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # (2B, D): view 1 rows, then view 2 rows
    z_all, offset = gather_with_grad(z)  # (world * 2B, D); its backward sums over ranks
    logits = z @ z_all.T / temperature  # (2B, world * 2B)
    local = torch.arange(2 * b, device=z.device)
    logits[local, offset + local] = float("-inf")  # an embedding is not its own negative
    positives = offset + (local + b) % (2 * b)  # view 1 row i <-> view 2 row i
    return F.cross_entropy(logits, positives)


class SimCLR(PretrainModel):
    """Encoder -> projector; both views contrasted against each other's batch (NT-Xent).

    Args:
        encoder: backbone (B, C, H, W) -> (B, feature_dim).
        feature_dim: width of the encoder output.
        proj_hidden_dim, proj_dim: projector widths; proj_layers: projector depth.
        temperature: NT-Xent's T.

    Example:
        >>> enc, dim = build_encoder("resnet18")
        >>> simclr = SimCLR(enc, dim, proj_hidden_dim=64, proj_dim=32)
        >>> simclr(torch.randn(8, 1, 32, 32), torch.randn(8, 1, 32, 32))["loss"]  # scalar
    """

    # the negatives are the whole global batch, and so are the BatchNorm statistics (Chen et al. 2020, global BN)
    wants_sync_batchnorm = True

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        temperature: float = 0.2,
        proj_layers: int = 3,
    ) -> None:
        super().__init__()
        self.online_encoder = encoder
        self.projector = ProjectionMLP(feature_dim, proj_hidden_dim, proj_dim, proj_layers)
        self.temperature = temperature

    @classmethod
    def from_config(
        cls,
        encoder: nn.Module,
        feature_dim: int,
        model: ModelConfig,
        section: SimCLRConfig,
        n_images: int,
        global_batch: int,
    ) -> SimCLR:
        return cls(encoder, feature_dim, model.proj_hidden_dim, model.proj_dim, section.temperature)

    def no_learning_loss(self, global_batch: int) -> float:
        """ln(2B - 1): NT-Xent when the positive scores like each of the 2B - 2 in-batch negatives."""
        return math.log(2 * global_batch - 1)

    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        z1 = self.projector(self.online_encoder(view1))  # (B, proj_dim)
        z2 = self.projector(self.online_encoder(view2))  # (B, proj_dim)
        return {"loss": nt_xent(z1.float(), z2.float(), self.temperature)}
