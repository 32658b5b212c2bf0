"""Learning-rate and momentum schedules (paper Sect. 4.1), as plain functions of the step."""

from __future__ import annotations

import math

import torch


def scaled_lr(base_lr: float, global_batch_size: int) -> float:
    """Linear scaling rule: base_lr * global_batch_size / 256.

    Example:
        >>> scaled_lr(0.3, 512)
        0.6
    """
    return base_lr * global_batch_size / 256


def warmup_cosine_lr(step: int, total_steps: int, warmup_steps: int, target_lr: float, start_lr: float = 1e-5) -> float:
    """Linear warm-up from start_lr to target_lr over warmup_steps, then cosine to 0 at total_steps.

    step == 0 -> start_lr (or target_lr without warm-up); step == warmup_steps -> target_lr;
    step >= total_steps -> 0.

    Args:
        step: optimizer steps taken so far; total_steps: of the whole run.
        warmup_steps: length of the linear warm-up; target_lr: the peak.
        start_lr: the first step's rate.

    Example:
        >>> warmup_cosine_lr(50, 100, 0, 1.0)  # half-way down the cosine
        0.5
    """
    if step < warmup_steps:
        return start_lr + (target_lr - start_lr) * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 0.5 * target_lr * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set lr on every param group (times the group's optional ``lr_scale``).

    Example:
        >>> set_lr(optimizer, warmup_cosine_lr(step, total, warmup, target))
    """
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
