"""MLP heads: projector/predictor (Sect. 3.2) and the downstream classifier (Sect. 3.4)."""

from __future__ import annotations

import torch
from torch import nn


def _mlp(in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, dropout: float = 0.0) -> nn.Sequential:
    """(Linear-BN-ReLU[-Dropout]) x (num_layers - 1), then Linear."""
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(num_layers - 1):
        # the Linear bias is redundant before BN (as in MoCo v3)
        layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        dim = hidden_dim
    layers.append(nn.Linear(dim, out_dim))
    return nn.Sequential(*layers)


class ProjectionMLP(nn.Module):
    """Projector (3 layers, 4096 hidden, 256 out in the paper) or BYOL predictor (2 layers).

    Args:
        in_dim: input width (the encoder's feature_dim for a projector).
        hidden_dim: width of the hidden Linear-BN-ReLU layers.
        out_dim: output width.
        num_layers: Linear layers in all (>= 1).

    Example:
        >>> proj = ProjectionMLP(512, hidden_dim=4096, out_dim=256)
        >>> proj(torch.randn(8, 512)).shape  # torch.Size([8, 256])
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, num_layers: int = 3) -> None:
        super().__init__()
        self.net = _mlp(in_dim, hidden_dim, out_dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, in_dim) -> (B, out_dim)


class ClassifierMLP(nn.Module):
    """The paper's 3-layer MLP classifier: (Linear-BN-ReLU) x 2, Linear -> logits.

    Args:
        in_dim: the encoder's feature_dim; num_classes: logits out.
        hidden_dim, num_layers: hidden width and Linear layers in all; dropout: after each ReLU.

    Example:
        >>> ClassifierMLP(512, num_classes=19)(torch.randn(8, 512)).shape  # torch.Size([8, 19])
    """

    def __init__(
        self, in_dim: int, num_classes: int, hidden_dim: int = 512, num_layers: int = 3, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.net = _mlp(in_dim, hidden_dim, num_classes, num_layers, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, in_dim) -> (B, num_classes)


class Classifier(nn.Module):
    """Downstream network: transferred encoder + MLP classifier; softmax is left to the loss.

    Args:
        encoder: backbone (B, C, H, W) -> (B, feature_dim); feature_dim: its width.
        num_classes, hidden_dim, num_layers, dropout: the :class:`ClassifierMLP`.

    Example:
        >>> enc, dim = build_encoder("resnet18")
        >>> Classifier(enc, dim, num_classes=4)(torch.randn(2, 1, 32, 32)).shape  # torch.Size([2, 4])
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        num_classes: int,
        hidden_dim: int = 512,
        num_layers: int = 3,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ClassifierMLP(feature_dim, num_classes, hidden_dim, num_layers, dropout)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, C, H, W) -> (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # (B, num_classes) logits
