"""MLP heads: projector/predictor (Sect. 3.2) and the downstream classifier (Sect. 3.4).

The paper calls both heads a "3-layer MLP" and counts layers of neurons: an input
layer (the encoder's pooled features), one hidden layer and an output layer
(Sect. 3.2: "The hidden layer in the middle has 4096 neurons, and the output layer
has the dimension of 256"). That is two Linear layers, as in MoCo v3 and solo-learn
for ResNets, so ``num_layers`` below counts Linear layers and defaults to 2.
"""

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
    """Projector (paper Sect. 3.2: features -> 4096 hidden -> 256) or BYOL predictor.

    Args:
        in_dim: input features (the encoder's pooled feature size for a projector).
        hidden_dim: hidden layer width (4096 in the paper).
        out_dim: embedding size (256 in the paper).
        num_layers: Linear layers; 2 is the paper's "3-layer MLP" (input, hidden, output).

    Example:
        >>> ProjectionMLP(512, 4096, 256)(torch.randn(8, 512)).shape
        torch.Size([8, 256])
    """

    def __init__(self, in_dim: int, hidden_dim: int = 4096, out_dim: int = 256, num_layers: int = 2) -> None:
        super().__init__()
        self.net = _mlp(in_dim, hidden_dim, out_dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, in_dim) -> (B, out_dim)


class ClassifierMLP(nn.Module):
    """The paper's "3-layer MLP" classifier (Sect. 3.4): features -> hidden -> one logit per category.

    Same layer count as the projector (Linear-BN-ReLU, Linear); the output layer has one
    neuron per category. The paper does not give the hidden width: it is
    ``model.classifier_hidden_dim`` in the study config (this project's choice).

    Args:
        in_dim: the encoder's pooled feature size.
        num_classes: categories of the category set.
        hidden_dim: hidden layer width.
        num_layers: Linear layers (2 = the paper's input, hidden and output layers).
        dropout: dropout after the hidden activation (0: none, as in the paper).
    """

    def __init__(
        self, in_dim: int, num_classes: int, hidden_dim: int = 512, num_layers: int = 2, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.net = _mlp(in_dim, hidden_dim, num_classes, num_layers, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, in_dim) -> (B, num_classes)


class Classifier(nn.Module):
    """Downstream network: transferred encoder + MLP classifier; softmax is left to the loss."""

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        num_classes: int,
        hidden_dim: int = 512,
        num_layers: int = 2,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = ClassifierMLP(feature_dim, num_classes, hidden_dim, num_layers, dropout)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)  # (B, C, H, W) -> (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))  # (B, num_classes) logits
