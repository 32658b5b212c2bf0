"""Online/target (momentum) encoder pair shared by MoCo and BYOL (paper Sect. 3.2-3.3)."""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod

import torch
from torch import nn


class MomentumMethod(nn.Module, ABC):
    """Online encoder + projector trained by gradients; target copies updated by EMA (Eq. 3).

    ``online_encoder`` is the backbone that is transferred downstream.
    """

    def __init__(self, encoder: nn.Module, projector: nn.Module) -> None:
        super().__init__()
        self.online_encoder = encoder
        self.online_projector = projector
        self.target_encoder = copy.deepcopy(encoder)
        self.target_projector = copy.deepcopy(projector)
        for module in (self.target_encoder, self.target_projector):
            for p in module.parameters():
                p.requires_grad_(False)

    @property
    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        """(online, target) module pairs updated by :meth:`update_momentum`."""
        return [(self.online_encoder, self.target_encoder), (self.online_projector, self.target_projector)]

    @torch.no_grad()
    def update_momentum(self, m: float) -> None:
        """θ_K ← m θ_K + (1 − m) θ_Q for parameters; buffers (BN statistics) are copied."""
        for online, target in self.momentum_pairs:
            for p_q, p_k in zip(online.parameters(), target.parameters()):
                p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)
            for b_q, b_k in zip(online.buffers(), target.buffers()):
                b_k.copy_(b_q)

    @abstractmethod
    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Two augmented views (B, C, H, W) -> {"loss": scalar tensor, ...metrics}."""
