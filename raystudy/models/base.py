"""What every pretraining method is (``PretrainModel``) and the online/target (momentum)
encoder pair shared by MoCo and BYOL (paper Sect. 3.2-3.3)."""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn

from raystudy.methods import ModelConfig


def byol_momentum(step: int, total_steps: int, base: float = 0.99, final: float = 1.0) -> float:
    """Cosine increase of the EMA momentum from base (step 0) to final (step total_steps).

    Example:
        >>> byol_momentum(0, 100), byol_momentum(100, 100)
        (0.99, 1.0)
    """
    progress = min(1.0, step / max(1, total_steps))
    return final - (final - base) * 0.5 * (1.0 + math.cos(math.pi * progress))


class PretrainModel(nn.Module, ABC):
    """A self-supervised method: two views in, a loss out; ``online_encoder`` is transferred.

    Subclasses build themselves from the study config (:meth:`from_config`) and may
    update state after each optimizer step (:meth:`after_step`: momentum encoders).
    The pretraining loop knows nothing else about a method.
    """

    online_encoder: nn.Module
    # pretrain.sync_batchnorm "auto": whether the method's BatchNorm uses statistics over all DDP workers
    wants_sync_batchnorm: bool = False

    @classmethod
    @abstractmethod
    def from_config(
        cls, encoder: nn.Module, feature_dim: int, model: ModelConfig, section: Any, n_images: int, global_batch: int
    ) -> PretrainModel:
        """Build the method around ``encoder`` (output ``feature_dim``) from its ``pretrain.<name>`` section.

        Args:
            encoder: the backbone (B, C, H, W) -> (B, feature_dim), randomly or pre-initialised.
            feature_dim: width of the encoder's output.
            model: the study's ``model`` section (head widths).
            section: the method's config dataclass (``pretrain.<name>``).
            n_images: images in the pretraining pool.
            global_batch: images per optimizer step over all workers.
        """

    def after_step(self, step: int, total_steps: int) -> None:
        """Called after every optimizer step (``step`` counts from 0); no-op by default."""

    def no_learning_loss(self, global_batch: int) -> float | None:
        """The loss of an encoder that has learned nothing, or None where the method has no
        such fixed level (BYOL). The report draws it beside the pretraining loss."""
        return None

    @abstractmethod
    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Two augmented views (B, C, H, W) -> {"loss": scalar tensor, ...metrics}."""


class MomentumMethod(PretrainModel):
    """Online encoder + projector trained by gradients; target copies updated by EMA (Eq. 3).

    ``online_encoder`` is the backbone that is transferred downstream; after every
    step the target moves towards the online weights with :meth:`momentum_at`.
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
            for p_q, p_k in zip(online.parameters(), target.parameters(), strict=True):
                p_k.mul_(m).add_(p_q.detach(), alpha=1.0 - m)
            for b_q, b_k in zip(online.buffers(), target.buffers(), strict=True):
                b_k.copy_(b_q)

    @abstractmethod
    def momentum_at(self, step: int, total_steps: int) -> float:
        """The EMA momentum m after step ``step`` of ``total_steps``."""

    def after_step(self, step: int, total_steps: int) -> None:
        self.update_momentum(self.momentum_at(step, total_steps))
