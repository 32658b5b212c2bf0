"""Tiny image folders as a user would bring them (test helper): PNGs of simple numpy shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Ten of the paper's categories, the four column shapes among them (so '4cat' is held).
TEN = (
    "column",
    "column_aged",
    "column_aggregate",
    "column_aged_aggregate",
    "plate",
    "droplet",
    "irregular",
    "small",
    "cpc",
    "plate_aggregate",
)


def write_image(path: Path, seed: int, size: int = 32) -> Path:
    """One grey PNG: a bright rectangle whose shape depends on ``seed``, on noise."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, (size, size), dtype=np.uint8)
    h, w = 4 + seed % 7 * 3, 4 + seed % 5 * 4
    y, x = rng.integers(0, size - h), rng.integers(0, size - w)
    img[y : y + h, x : x + w] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def make_folder(root: Path, campaigns: dict[str, dict[str, int]]) -> Path:
    """``root/<campaign>/<category>/<i>.png`` (campaign "" = flat ``root/<category>/``)."""
    for campaign, counts in campaigns.items():
        for k, (category, n) in enumerate(counts.items()):
            for i in range(n):
                write_image(root / campaign / category / f"{i:03d}.png", seed=k * 7 + i)
    return root


def ten_categories(root: Path) -> Path:
    """Three campaigns with non-paper names holding ten paper categories (120 / 60 / 30 images)."""
    return make_folder(
        root,
        {
            "alps_2021": {c: 12 for c in TEN},
            "arctic_2022": {c: 6 for c in TEN},
            "lab_2023": {c: 3 for c in TEN},
        },
    )
