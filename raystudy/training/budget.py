"""How long a fine-tuning cell trains: the stopping rule of ``finetune``, in one function;
and how many epochs a pretraining run takes (:func:`pretrain_epochs`).

The same rule for every model type, so curves compare models and not training time:
``epochs`` passes over the cell's n training images, at least ``min_steps`` optimizer
steps (a cell of 40 images gets more epochs), at most ``max_steps`` (0: no cap). The
scheduler's progress estimate and ``raystudy plan`` use the same function. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from raystudy.config import FinetuneConfig, GridConfig, PretrainConfig

StopReason = Literal["epochs", "min_steps", "max_steps"]


@dataclass(frozen=True)
class StepBudget:
    """The training length of one cell.

    Attributes:
        batch: images per optimizer step (the global batch, at most n).
        micro_batch: images per forward/backward pass; gradients of ``batch / micro_batch``
            passes are accumulated into one step.
        steps_per_epoch: optimizer steps per pass over the n images.
        epochs: passes over the n images.
        stop_reason: the bound that set ``epochs``: ``epochs`` (the configured epochs),
            ``min_steps`` (the step floor gave more) or ``max_steps`` (the cap gave fewer).
    """

    batch: int
    micro_batch: int
    steps_per_epoch: int
    epochs: int
    stop_reason: StopReason

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def images(self) -> int:
        """Images processed in training (an upper bound: an epoch's last step may hold fewer)."""
        return self.epochs * self.steps_per_epoch * self.batch


def step_budget(
    n_train: int,
    epochs: int,
    batch_size: int,
    min_steps: int = 0,
    max_steps: int = 0,
    micro_batch_size: int = 0,
) -> StepBudget:
    """The stopping rule applied to a cell with ``n_train`` training images.

    Args:
        n_train: training images of the cell.
        epochs: the configured passes over them (``finetune.epochs``).
        batch_size: the global batch (``finetune.batch_size``); at most ``n_train``.
        min_steps: step floor (``finetune.min_steps``); whole epochs are added to reach it.
        max_steps: step cap (``finetune.max_steps``); 0 means none.
        micro_batch_size: images per forward pass (``finetune.micro_batch_size``); 0: the batch.

    Example:
        >>> b = step_budget(n_train=43, epochs=30, batch_size=32, min_steps=200)
        >>> (b.batch, b.steps_per_epoch, b.epochs, b.total_steps, b.stop_reason)
        (32, 2, 100, 200, 'min_steps')
    """
    if n_train < 1:
        raise ValueError(f"a cell needs at least one training image, got {n_train}")
    batch = max(1, min(batch_size, n_train))
    micro = batch if micro_batch_size <= 0 else min(micro_batch_size, batch)
    steps_per_epoch = math.ceil(n_train / batch)
    n_epochs = epochs
    reason: Literal["epochs", "min_steps", "max_steps"] = "epochs"
    if epochs * steps_per_epoch < min_steps:
        n_epochs, reason = math.ceil(min_steps / steps_per_epoch), "min_steps"
    if max_steps and n_epochs * steps_per_epoch > max_steps:
        n_epochs, reason = max(1, max_steps // steps_per_epoch), "max_steps"
    return StepBudget(batch, micro, steps_per_epoch, n_epochs, reason)


def cell_budget(finetune: FinetuneConfig, n_train: int, epochs: int | None = None) -> StepBudget:
    """:func:`step_budget` with the values of a study's ``finetune`` section.

    ``epochs`` replaces ``finetune.epochs`` (the supervised-ceiling cell trains longer).
    """
    return step_budget(
        n_train,
        finetune.epochs if epochs is None else epochs,
        finetune.batch_size,
        finetune.min_steps,
        finetune.max_steps,
        finetune.micro_batch_size,
    )


def ceiling_budget(finetune: FinetuneConfig, grid: GridConfig, category_set: str, n_train: int) -> StepBudget:
    """One cosine cycle of the supervised-ceiling cell of ``category_set`` (``n_train`` images).

    At least ``grid.ceiling_epochs`` passes and at least as many steps as the longest cell of
    the set (its sizes up to ``n_train``, each counted with all n images, an upper bound under
    the paper protocol), so the ceiling never trains less than a point of its curves. The
    trainer repeats the cycle (a warm restart) while a cycle ends below
    ``finetune.fit_accuracy`` on the training images, ``grid.ceiling_max_cycles`` at most.

    Example:
        >>> f, g = FinetuneConfig(epochs=45, min_steps=160, batch_size=32), GridConfig(ceiling_epochs=15)
        >>> b = ceiling_budget(f, g, "4cat", 300)  # 4cat sizes up to 300: its 256-image cell is the longest
        >>> (b.steps_per_epoch, b.epochs, b.total_steps)
        (10, 36, 360)
    """
    longest = max(
        (cell_budget(finetune, n).total_steps for n in grid.sizes.get(category_set, []) if n <= n_train),
        default=0,
    )
    return step_budget(
        n_train,
        grid.ceiling_epochs,
        finetune.batch_size,
        max(finetune.min_steps, longest),
        0,
        finetune.micro_batch_size,
    )


def epoch_steps(n_images: int, global_batch: int) -> int:
    """Optimizer steps in one pretraining epoch (whole global batches only; at least one)."""
    return max(1, n_images // global_batch)


def method_min_steps(pretrain: PretrainConfig, method: str | None = None) -> int:
    """The step floor of ``method``'s pretraining: its section's ``min_steps`` where the method
    declares one and it is set (``pretrain.byol.min_steps``), else ``pretrain.min_steps``."""
    own = getattr(pretrain.section(method), "min_steps", None) if method in pretrain.sections else None
    return pretrain.min_steps if own is None else int(own)


def pretrain_epochs(pretrain: PretrainConfig, n_images: int, world: int, method: str | None = None) -> int:
    """Epochs of a pretraining run of ``method`` on ``n_images`` over ``world`` workers:
    ``pretrain.epochs``, raised until the run takes at least :func:`method_min_steps` steps.

    A small data set gives few steps per epoch: at the demo's 8 epochs, 1,500 images at batch 32
    are 368 steps, half the demo's 744 on 3,000 images. Scaling the epochs by the data-set size
    gives every run about the same number of steps (and the same time per run). ``min_steps`` 0:
    ``pretrain.epochs`` as given. An early stop (``pretrain.patience``) may end a run sooner.

    Example:
        >>> pretrain_epochs(PretrainConfig(epochs=8, min_steps=744, batch_size_per_worker=32), 1500, 1)
        17
    """
    steps = epoch_steps(n_images, pretrain.batch_size_per_worker * world)
    return max(pretrain.epochs, math.ceil(method_min_steps(pretrain, method) / steps))
