"""scikit-learn's handwritten digits laid out as a user's image folders (real-data check).

    python benchmarks/digits_folders.py OUT [--size 8]

Writes ``OUT/<campaign>/digit_<k>/<index>.png``: the 1,797 8x8 grey digits (values 0-16,
scaled to 0-255) of ``sklearn.datasets.load_digits`` in three campaigns of consecutive
images, so that each campaign holds other writers' digits: ``writers_a`` (the first 900,
the largest: the labeled campaign), ``writers_b`` (the next 600: pretraining) and
``writers_c`` (the last 297: the generalization campaign). The data ship with scikit-learn,
so nothing is downloaded. Then run the study as a new user would::

    python studies/scaling.py --data OUT --out runs/digits

``--size`` enlarges the images (nearest neighbour) when a larger file is wanted; the study
resizes every image to ``data.image_size`` in any case.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

#: (campaign, number of consecutive images), in the order of the data set.
CAMPAIGNS: tuple[tuple[str, int], ...] = (("writers_a", 900), ("writers_b", 600), ("writers_c", 297))


def write_digits(out: Path, size: int = 8) -> dict[str, int]:
    """Write the digits under ``out``; returns the image count per campaign.

    Args:
        out: the folder to write (created; existing files of the same names are replaced).
        size: edge length of the written PNGs in pixels (a multiple of 8 keeps pixels square).

    Example:
        >>> counts = write_digits(Path("/tmp/digits"))  # doctest: +SKIP
        >>> counts["writers_a"]  # doctest: +SKIP
        900
    """
    if size < 8 or size % 8:
        raise ValueError(f"--size must be a multiple of 8, got {size}")
    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).astype(np.uint8)
    counts: dict[str, int] = {}
    start = 0
    for campaign, count in CAMPAIGNS:
        for index in range(start, start + count):
            folder = out / campaign / f"digit_{int(digits.target[index])}"
            folder.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(images[index])
            if size != 8:
                image = image.resize((size, size), Image.Resampling.NEAREST)
            image.save(folder / f"{index:04d}.png")
        counts[campaign] = count
        start += count
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", type=Path, help="folder to write the campaigns into")
    parser.add_argument("--size", type=int, default=8, help="PNG edge in pixels (multiple of 8)")
    args = parser.parse_args(argv)
    counts = write_digits(args.out, args.size)
    print(f"wrote {sum(counts.values())} digits under {args.out}: {counts}")


if __name__ == "__main__":
    main()
