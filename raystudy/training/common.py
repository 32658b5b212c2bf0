"""Small helpers shared by pretraining, fine-tuning and the probes."""

from __future__ import annotations

import random
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from raystudy.config import AugmentConfig


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast(device: torch.device):
    """bf16 autocast on the GPU, plain fp32 on the CPU.

    Example:
        >>> with autocast(device):
        ...     loss = model(x)
    """
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def images_to_device(images: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    """``images[rows]`` ((n, S, S) uint8) as a (n, 1, S, S) uint8 tensor on ``device``."""
    return torch.from_numpy(images[rows]).unsqueeze(1).to(device, non_blocking=True)


def pick_device(gpus: float) -> torch.device:
    """The GPU when this trial was given one, else the CPU (loudly, when it was given one)."""
    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    if gpus > 0:
        import sys

        print(
            f"raystudy: WARNING: this trial holds {gpus:g} GPU but CUDA is absent here "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); it runs on the CPU",
            file=sys.stderr,
            flush=True,
        )
    return torch.device("cpu")


def augment_kwargs(aug: AugmentConfig, in_channels: int) -> dict[str, Any]:
    """``PretrainAugment`` kwargs from a config's ``augment`` section."""
    return {
        "resize": aug.resize,
        "crop_size": aug.crop_size,
        "crop_scale": tuple(aug.crop_scale),
        "jitter_p": aug.jitter_p,
        "brightness": aug.brightness,
        "contrast": aug.contrast,
        "saturation": aug.saturation,
        "blur_p": aug.blur_p,
        "blur_sigma": tuple(aug.blur_sigma),
        "solarize_p": aug.solarize_p,
        "flip_p": aug.flip_p,
        "rotation_degrees": tuple(aug.rotation_degrees),
        "out_channels": in_channels,
    }
