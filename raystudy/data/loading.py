"""Find images (folder layout or manifest), check them, decode them once into a cache.

Layout: ``DATA/<campaign>/<category>/<image files>`` (PNG, JPEG or TIFF; grey or
RGB; 8- or 16-bit), or a manifest (CSV or Parquet with columns path, label,
campaign; relative paths are relative to the manifest). Every image is decoded
once per study into a uint8 array of shape (N, S, S) saved in the run folder;
trials share that array and never decode an image again.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from raystudy.catalog import Catalog

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
MAX_LISTED = 20
DECODE_COUNT = 0  # images decoded by this process (the benchmark checks "decoded once")


class DataError(ValueError):
    """Input data that cannot be used; the message names the files and the fix."""


def _listing(items: list[str], what: str) -> str:
    shown = "\n    ".join(items[:MAX_LISTED])
    more = f"\n    ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return f"{len(items)} {what}:\n    {shown}{more}"


@dataclass
class ImageSet:
    """Decoded images and their index (row i of ``index`` is ``images[i]``)."""

    images: np.ndarray  # (N, S, S) uint8
    index: pd.DataFrame  # image_id, path, campaign, category

    def campaign_mask(self, campaign: str) -> np.ndarray:
        return (self.index["campaign"] == campaign).to_numpy()


def scan_folder(root: Path, catalog: Catalog) -> pd.DataFrame:
    """List ``root/<campaign>/<category>/*`` into a frame; all problems reported at once."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(
            f"data folder {root} does not exist; pass --data DIR with the layout "
            "DIR/<campaign>/<category>/<images>, or a manifest file"
        )
    rows, unknown, empty, not_images = [], [], [], []
    for campaign_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for cat_dir in sorted(p for p in campaign_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            category = catalog.resolve(cat_dir.name)
            if category is None:
                unknown.append(str(cat_dir))
                continue
            files = sorted(f for f in cat_dir.iterdir() if f.is_file() and not f.name.startswith("."))
            images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]
            not_images += [str(f) for f in files if f.suffix.lower() not in IMAGE_SUFFIXES]
            if not images:
                empty.append(str(cat_dir))
            rows += [(str(f), category, campaign_dir.name) for f in images]
    problems = []
    if unknown:
        problems.append(
            _listing(unknown, "category folder(s) not in the catalog")
            + f"\n  known categories: {', '.join(catalog.categories)}; "
            "rename the folders or add them under catalog.aliases in the study config"
        )
    if empty:
        problems.append(_listing(empty, "category folder(s) without images") + "\n  remove them or add images")
    if not_images:
        problems.append(
            _listing(not_images, "file(s) that are not PNG, JPEG or TIFF images")
            + "\n  move them out of the data folder"
        )
    if problems:
        raise DataError(f"data folder {root}:\n" + "\n".join(problems))
    if not rows:
        raise DataError(f"data folder {root} holds no images in the layout <campaign>/<category>/<images>")
    return pd.DataFrame(rows, columns=["path", "category", "campaign"])


def read_manifest(path: Path, catalog: Catalog) -> pd.DataFrame:
    """Read a CSV or Parquet manifest with columns path, label, campaign."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"manifest {path} does not exist")
    df = pd.read_parquet(path) if path.suffix.lower() == ".parquet" else pd.read_csv(path)
    missing_cols = {"path", "label", "campaign"} - set(df.columns)
    if missing_cols:
        raise DataError(f"manifest {path} lacks column(s) {sorted(missing_cols)}; it needs path, label, campaign")
    base = path.parent
    paths = [str(p if Path(p).is_absolute() else base / p) for p in df["path"].astype(str)]
    labels = df["label"].astype(str).tolist()
    categories = [catalog.resolve(label) for label in labels]
    unknown = sorted({lab for lab, c in zip(labels, categories) if c is None})
    missing = [p for p in paths if not Path(p).is_file()]
    problems = []
    if unknown:
        problems.append(
            _listing(unknown, "label(s) not in the catalog")
            + f"\n  known categories: {', '.join(catalog.categories)}; add catalog.aliases for them"
        )
    if missing:
        problems.append(_listing(missing, "image file(s) listed but missing"))
    if problems:
        raise DataError(f"manifest {path}:\n" + "\n".join(problems))
    return pd.DataFrame({"path": paths, "category": categories, "campaign": df["campaign"].astype(str)})


def decode_image(path: str, size: int) -> np.ndarray:
    """One image -> (size, size) uint8 grey; 16-bit scaled by its range, colour to luma."""
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
            arr = np.asarray(img, dtype=np.float64)
            lo, hi = float(arr.min()), float(arr.max())
            arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
            img = Image.fromarray(arr.astype(np.uint8), mode="L")
        elif img.mode in ("RGBA", "LA", "P", "PA"):
            img = img.convert("RGBA").convert("L") if img.mode != "LA" else img.convert("L")
        elif img.mode != "L":
            img = img.convert("L")
        img = img.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _fingerprint(df: pd.DataFrame, size: int) -> str:
    h = hashlib.sha256(str(size).encode())
    for path in df["path"]:
        st = os.stat(path)
        h.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def why_unreadable(path: str, err: BaseException) -> str:
    """A short reason for one unreadable image file."""
    if os.path.isfile(path) and os.path.getsize(path) == 0:
        return "empty file, 0 bytes"
    if isinstance(err, UnidentifiedImageError):
        return "not a readable PNG, JPEG or TIFF image"
    text = str(err).splitlines()
    return f"{type(err).__name__}: {text[0] if text else 'unreadable'}"


def decode_all(df: pd.DataFrame, size: int, workers: int = 4) -> np.ndarray:
    """Decode every listed image; unreadable files are all reported in one error."""
    out = np.empty((len(df), size, size), dtype=np.uint8)
    bad: list[str] = []

    def work(i_path: tuple[int, str]) -> None:
        i, path = i_path
        try:
            out[i] = decode_image(path, size)
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
            bad.append(f"{path} ({why_unreadable(path, err)})")

    global DECODE_COUNT
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, enumerate(df["path"])))
    DECODE_COUNT += len(df)
    if bad:
        raise DataError(_listing(sorted(bad), "unreadable image(s)") + "\n  fix or remove them, then rerun")
    return out


def load_images(table: pd.DataFrame, size: int, cache_dir: Path) -> ImageSet:
    """Decode ``table`` (path, category, campaign) into a cached array, reused when unchanged."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    table = table.sort_values(["campaign", "category", "path"]).reset_index(drop=True)
    key = _fingerprint(table, size)
    array_path = cache_dir / f"images-{size}px-{key}.npy"
    index_path = cache_dir / f"images-{size}px-{key}.parquet"
    index = table.assign(image_id=[f"{c}/{Path(p).name}" for c, p in zip(table["campaign"], table["path"])])
    if array_path.is_file() and index_path.is_file():
        return ImageSet(images=np.load(array_path), index=pd.read_parquet(index_path))
    images = decode_all(table, size)
    for final, write in (
        (array_path, lambda p: np.save(p, images)),
        (index_path, lambda p: index.to_parquet(p, index=False)),
    ):
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, final)
    return ImageSet(images=images, index=index)


def check_campaigns(table: pd.DataFrame, needed: dict[str, str], where: str) -> None:
    """Every campaign a study role needs must have images."""
    have = set(table["campaign"])
    missing = [f"{role}: '{c}'" for role, c in needed.items() if c not in have]
    if missing:
        raise DataError(
            f"{where}: campaign(s) without images: {', '.join(missing)}; "
            f"campaigns found: {sorted(have)}. Fix data.* in the study config or add the images"
        )
