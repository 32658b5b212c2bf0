"""The built-in pretraining methods: their config sections and registrations (no torch), and
the ``model`` section every method builds its backbone and heads from.

Each method's model class is named by its import path, resolved only when a model is built
(:meth:`raystudy.registry.MethodSpec.model_class`), so reading a study config imports no torch.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from raystudy.configbase import Section, at_least, gt, in_unit_interval, weights_path
from raystudy.registry import MethodSpec, register_method

# the backbones of raystudy.models.encoders (kept here as names: the config does not import torch)
Arch = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet18_w16"]


class ModelConfig(Section):
    """Backbone and heads (Sect. 3.2 and 3.4)."""

    arch: Arch = "resnet50"
    in_channels: Literal[1, 3] = 1
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    classifier_hidden_dim: int = 512  # the classifier's hidden layer (the paper gives no width)
    # Initial weights: a checkpoint file, or "random" (None: random too, unless require_init).
    # The paper starts pretraining from ImageNet MoCo / BYOL weights (IM1K-Unsup-MoCo /
    # -BYOL) and the baseline from IM1K-Unsup-MoCo (Sect. 4.2.1).
    pretrain_init: dict[str, str] = Field(default_factory=dict)  # method -> checkpoint | "random"
    baseline_init: str | None = None
    require_init: bool = False  # True: refuse to start until every initial weight is given (or "random")

    @field_validator("in_channels", mode="before")
    @classmethod
    def _no_bool(cls, value: object) -> object:
        """``true`` is not the number 1 (pydantic's Literal would take it)."""
        if isinstance(value, bool):
            raise PydanticCustomError("literal_error", "Input should be 1 or 3", {"expected": "1 or 3"})
        return value

    def baseline_weights(self) -> str | None:
        """The baseline's initial checkpoint, or None for random weights."""
        return weights_path(self.baseline_init)

    def pretrain_weights(self, method: str) -> str | None:
        """The checkpoint pretraining of ``method`` starts from, or None for random weights."""
        return weights_path(self.pretrain_init.get(method))


class MoCoConfig(Section):
    """``pretrain.moco``: constant EMA momentum, key queue, InfoNCE temperature."""

    momentum: Annotated[float, in_unit_interval()] = 0.99
    queue_size: Annotated[int, at_least(1)] = 65536  # clipped to the pool (clip_queue_size)
    temperature: Annotated[float, gt(0)] = 0.2
    symmetric: bool = False  # True: MoCo v3-style symmetrized loss (twice the cost)


class BYOLConfig(Section):
    """``pretrain.byol``: the target's EMA momentum rises from ``base_momentum`` to 1 (cosine);
    ``min_steps`` replaces ``pretrain.min_steps`` for BYOL (None: that one)."""

    base_momentum: Annotated[float, in_unit_interval()] = 0.99
    # BYOL learns less per step than MoCo (no negatives, a slowly moving target): the demo gives it
    # 3,000 steps where MoCo gets 744 (README, "Steps for small data sets")
    min_steps: Annotated[int, at_least(0)] | None = None


class SimCLRConfig(Section):
    """``pretrain.simclr``: the NT-Xent temperature."""

    temperature: Annotated[float, gt(0)] = 0.2


register_method(
    MethodSpec(
        "moco",
        MoCoConfig,
        "raystudy.models.moco:MoCo",
        display_name="MoCo",
        color="#1f77b4",
        moved_keys={
            "moco_momentum": "momentum",
            "queue_size": "queue_size",
            "temperature": "temperature",
            "moco_symmetric": "symmetric",
        },
        order=0,
    )
)
register_method(
    MethodSpec(
        "byol",
        BYOLConfig,
        "raystudy.models.byol:BYOL",
        display_name="BYOL",
        color="#ff7f0e",
        moved_keys={"byol_base_momentum": "base_momentum"},
        order=1,
    )
)
register_method(
    MethodSpec("simclr", SimCLRConfig, "raystudy.models.simclr:SimCLR", display_name="SimCLR", color="#8c6d31", order=2)
)
