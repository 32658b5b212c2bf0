"""Small helpers shared by pretraining and fine-tuning."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def pick_device(gpus: float) -> torch.device:
    """The GPU when this trial was given one, else the CPU (loudly, when it was given one)."""
    if gpus > 0 and torch.cuda.is_available():
        return torch.device("cuda")
    if gpus > 0:
        import sys

        print(f"raystudy: WARNING: this trial holds {gpus:g} GPU but CUDA is absent here "
              f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); it runs on the CPU", file=sys.stderr, flush=True)
    return torch.device("cpu")


def augment_kwargs(aug: dict[str, Any], in_channels: int) -> dict[str, Any]:
    """Pretraining augmentation kwargs from the config's ``augment`` mapping."""
    return {
        "resize": aug["resize"],
        "crop_size": aug["crop_size"],
        "crop_scale": tuple(aug["crop_scale"]),
        "jitter_p": aug["jitter_p"],
        "brightness": aug["brightness"],
        "contrast": aug["contrast"],
        "saturation": aug["saturation"],
        "blur_p": aug["blur_p"],
        "blur_sigma": tuple(aug["blur_sigma"]),
        "solarize_p": aug["solarize_p"],
        "flip_p": aug["flip_p"],
        "rotation_degrees": tuple(aug["rotation_degrees"]),
        "out_channels": in_channels,
    }
