"""Find images (folder layout or manifest), check them, decode them once into a cache.

Layout: ``DATA/<campaign>/<category>/<image files>`` or, for one campaign,
``DATA/<category>/<image files>`` (PNG, JPEG or TIFF; grey or RGB; 8- or 16-bit), or a manifest
(CSV or Parquet with columns path, label, campaign; relative paths are relative to the manifest). Every image is decoded
once per study into a uint8 array of shape (N, S, S) saved in the run folder;
trials share that array and never decode an image again. Every problem found is
collected in a :class:`~raystudy.data.problems.Problems` and reported at once.
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

from raystudy.catalog import Catalog, normalize_name
from raystudy.data.problems import DataError, Problems  # noqa: F401  (DataError: its public name here)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".tif", ".tiff"}
DECODE_COUNT = 0  # images decoded by this process (the benchmark checks "decoded once")
LAYOUT = "DIR/<campaign>/<category>/<images> (or DIR/<category>/<images> for one campaign)"


@dataclass
class ImageSet:
    """Decoded images and their index (row i of ``index`` is ``images[i]``)."""

    images: np.ndarray  # (N, S, S) uint8
    index: pd.DataFrame  # image_id, path, campaign, category

    def campaign_mask(self, campaign: str) -> np.ndarray:
        return (self.index["campaign"] == campaign).to_numpy()


def empty_table() -> pd.DataFrame:
    return pd.DataFrame({"path": [], "category": [], "campaign": []}, dtype=str)


def category_of(
    name: str, catalog: Catalog, new_categories: bool, problems: Problems, where: str, kind: str
) -> str | None:
    """A folder name or label -> its category; unknown names are new categories or a problem.

    Args:
        name: the folder name or manifest label.
        new_categories: accept names outside the catalog as new categories (normalized).
        where: the folder or manifest row, named in the problem.
        kind: the problem's kind, e.g. "category folder(s) not in the catalog".
    """
    category = catalog.resolve(name)
    if category is not None:
        return category
    if new_categories:
        return normalize_name(name)
    hint = catalog.closest(name)
    problems.add(
        kind,
        where + (f" (did you mean '{hint}'?)" if hint else ""),
        fix=f"known categories: {', '.join(catalog.categories)}; rename them, add them under catalog.aliases, "
        "or set catalog.strict: false to accept them as new categories",
    )
    return None


def _visible(path: Path, problems: Problems) -> bool:
    """False for hidden files and folders (a warning names them)."""
    if path.name.startswith("."):
        problems.warn("hidden file(s) or folder(s), ignored", str(path))
        return False
    return True


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def _listing(folder: Path, problems: Problems) -> list[Path] | None:
    """The entries of ``folder``, sorted; None (and a problem naming it) when it cannot be read."""
    try:
        return sorted(folder.iterdir())
    except OSError as err:
        problems.add(
            "folder(s) that cannot be read",
            f"{folder} ({err.strerror or type(err).__name__})",
            fix="make them readable by this user (chmod u+rx) or move them out of the data folder",
        )
        return None


def _scan_category(cat_dir: Path, category: str, campaign: str, problems: Problems) -> list[tuple[str, str, str]]:
    """The image rows of one category folder; everything else in it is a warning or a problem."""
    images = []
    listed = _listing(cat_dir, problems)
    if listed is None:
        return []
    for f in listed:
        if not _visible(f, problems):
            continue
        if f.is_symlink() and not f.exists():
            problems.add("broken symbolic link(s)", f"{f} -> {os.readlink(f)}", fix="repair or remove them")
        elif f.is_dir():
            n = sum(1 for g in f.rglob("*") if g.is_file() and _is_image(g))
            problems.warn(
                "sub-folder(s) inside category folders, not used",
                f"{f} ({n} image(s))",
                fix="images must sit directly in their category folder; move them up to use them",
            )
        elif _is_image(f):
            images.append(f)
        else:
            problems.add(
                "file(s) that are not PNG, JPEG or TIFF images", str(f), fix="move them out of the data folder"
            )
    if not images:
        problems.add("category folder(s) without images", str(cat_dir), fix="remove them or add images")
    return [(str(f), category, campaign) for f in images]


def _stray_files(folder: Path, problems: Problems, own_files: frozenset[str] = frozenset()) -> list[Path]:
    """Sub-folders of ``folder``; its own files are a problem (images) or a warning (others).

    ``own_files``: names that belong to the folder's maker (the synthetic set's marker), skipped silently.
    """
    dirs = []
    for f in _listing(folder, problems) or []:
        if f.name in own_files or not _visible(f, problems):
            continue
        if f.is_dir():
            dirs.append(f)
        elif _is_image(f):
            problems.add(
                "image(s) outside a category folder", str(f), fix=f"put every image in a category folder: {LAYOUT}"
            )
        elif f.is_symlink() and not f.exists():
            problems.add("broken symbolic link(s)", f"{f} -> {os.readlink(f)}", fix="repair or remove them")
        else:
            problems.warn("file(s) outside category folders, ignored", str(f))
    return dirs


def _holds_folders(folder: Path) -> bool:
    try:
        return any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir())
    except OSError:  # an unreadable folder: reported where its entries are listed
        return False


def scan_folder(
    root: Path,
    catalog: Catalog,
    problems: Problems | None = None,
    new_categories: bool = False,
    own_files: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """List ``root/<campaign>/<category>/*`` (or ``root/<category>/*``, one campaign named after ``root``).

    Args:
        problems: collects every problem; None: raise them here in one DataError.
        new_categories: folder names outside the catalog become new categories.
        own_files: names at ``root`` that its maker wrote (the synthetic set's marker): not reported.

    Example:
        >>> table = scan_folder(Path("data/holimo"), Catalog())  # doctest: +SKIP
        >>> table.columns.tolist()
        ['path', 'category', 'campaign']
    """
    own = problems is None
    problems = problems if problems is not None else Problems()
    root = Path(root)
    rows: list[tuple[str, str, str]] = []
    if not root.exists():
        problems.add(
            "missing data folder(s)",
            f"{root} does not exist; pass --data DIR with the layout {LAYOUT}, or a manifest file",
        )
    elif not root.is_dir():
        problems.add(
            "missing data folder(s)",
            f"{root} is a file, not a folder; pass --data DIR with the layout {LAYOUT}, or a .csv / .parquet manifest",
        )
    else:
        tops = _stray_files(root, problems, own_files)
        campaigns = [d for d in tops if _holds_folders(d)]
        if campaigns:  # DIR/<campaign>/<category>/<images>
            for d in tops:
                if d not in campaigns:
                    problems.add(
                        "folder(s) at the campaign level without category folders",
                        str(d),
                        fix=f"the layout is {LAYOUT}; move them into a campaign folder or remove them",
                    )
            groups = [(d.name, _stray_files(d, problems)) for d in campaigns]
        else:  # DIR/<category>/<images>: one campaign
            groups = [(root.name, tops)]
        for campaign, cat_dirs in groups:
            for cat_dir in cat_dirs:
                category = category_of(
                    cat_dir.name,
                    catalog,
                    new_categories,
                    problems,
                    str(cat_dir),
                    "category folder(s) not in the catalog",
                )
                if category is not None:
                    rows += _scan_category(cat_dir, category, campaign, problems)
        if not rows and not problems:
            problems.add("data folder(s) without images", str(root), fix=f"the layout is {LAYOUT}")
    if own:
        problems.raise_if_any(f"data folder {root}")
    return pd.DataFrame(rows, columns=["path", "category", "campaign"]) if rows else empty_table()


MANIFEST_COLUMNS = ("path", "label", "campaign")


def _read_manifest_frame(path: Path, problems: Problems) -> pd.DataFrame | None:
    """The manifest as text columns, or None (with the reason in ``problems``)."""
    what = "manifest(s) that cannot be read"
    try:
        if path.suffix.lower() == ".parquet":
            df = pd.read_parquet(path)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], skipinitialspace=True)
    except pd.errors.EmptyDataError:
        problems.add(
            what, f"{path} is empty", fix="a manifest needs the header line path,label,campaign and one row per image"
        )
        return None
    except pd.errors.ParserError as err:
        problems.add(
            what, f"{path} is not valid CSV ({str(err).strip().splitlines()[0]})", fix="check its quotes and commas"
        )
        return None
    except UnicodeDecodeError:
        problems.add(what, f"{path} is not a text (CSV) file", fix="save it as CSV text or Parquet")
        return None
    except Exception as err:  # pyarrow / fastparquet raise their own types
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        problems.add(
            what,
            f"{path} is not a Parquet file ({first})",
            fix="write it with pandas.DataFrame.to_parquet, or save it as .csv",
        )
        return None
    df.columns = [str(c).strip().lower() for c in df.columns]
    missing = [c for c in MANIFEST_COLUMNS if c not in df.columns]
    if missing:
        problems.add(
            what,
            f"{path} lacks column(s) {missing}; it has {list(df.columns)}",
            fix="a manifest needs the columns path, label, campaign",
        )
        return None
    if df.empty:
        problems.add(what, f"{path} has no rows", fix="list one image per row: path,label,campaign")
        return None
    return df[list(MANIFEST_COLUMNS)]


def read_manifest(
    path: Path, catalog: Catalog, problems: Problems | None = None, new_categories: bool = False
) -> pd.DataFrame:
    """Read a CSV or Parquet manifest with columns path, label, campaign (paths relative to it).

    Every bad row is reported: blank cells, unknown labels, missing files, a file listed
    twice or under two labels. Returns the good rows as path, category, campaign.
    """
    own = problems is None
    problems = problems if problems is not None else Problems()
    path = Path(path)
    df = None
    if not path.is_file():
        problems.add(
            "missing manifest(s)",
            f"{path} does not exist",
            fix="pass --data with a .csv / .parquet manifest or an image folder",
        )
    else:
        df = _read_manifest_frame(path, problems)
    rows: list[tuple[str, str, str]] = []
    if df is not None:
        first_line = 1 if path.suffix.lower() == ".parquet" else 2  # CSV: line 1 is the header
        unit = "row" if path.suffix.lower() == ".parquet" else "line"
        where = [f"{path} {unit} {i + first_line}" for i in range(len(df))]
        cells = df.apply(lambda col: col.map(lambda v: "" if v is None or v != v else str(v).strip()))
        base = path.parent
        listed: dict[str, list[int]] = {}
        candidates: list[tuple[int, str, str | None, str]] = []
        for i, (p, label, campaign) in enumerate(cells.itertuples(index=False, name=None)):
            blank = [c for c, v in zip(MANIFEST_COLUMNS, (p, label, campaign), strict=True) if not v]
            if blank:
                problems.add(
                    "manifest row(s) with a blank cell",
                    f"{where[i]}: {', '.join(blank)} blank",
                    fix="fill in every cell or remove the row",
                )
                continue
            full = str(Path(p) if Path(p).is_absolute() else base / p)
            listed.setdefault(full, []).append(i)
            category = category_of(
                label, catalog, new_categories, problems, f"{where[i]}: '{label}'", "label(s) not in the catalog"
            )
            candidates.append((i, full, category, campaign))
        repeated = set()
        for full, idx in listed.items():
            if len(idx) < 2:
                continue
            repeated.add(full)
            labels = sorted({cells["label"].iloc[i] for i in idx})
            lines = ", ".join(str(i + first_line) for i in idx)
            if len(labels) > 1:
                problems.add(
                    "file(s) listed under two or more labels",
                    f"{full}: {labels} ({unit}s {lines})",
                    fix="give each image one label",
                )
            else:
                problems.add(
                    "duplicate manifest row(s)",
                    f"{full} ({unit}s {lines})",
                    fix="keep one row per image (a duplicate could land in both train and validation)",
                )
        for i, full, category, campaign in candidates:
            if not os.path.isfile(full):
                problems.add(
                    "image file(s) listed but missing",
                    f"{full} ({where[i]})",
                    fix="fix the paths (relative paths are relative to the manifest)",
                )
            elif full not in repeated and category is not None:
                rows.append((full, category, campaign))
    if own:
        problems.raise_if_any(f"manifest {path}")
    return pd.DataFrame(rows, columns=["path", "category", "campaign"]) if rows else empty_table()


def decode_image(path: str, size: int) -> np.ndarray:
    """One image -> (size, size) uint8 grey; 16-bit scaled by its range, colour to luma."""
    with Image.open(path) as opened:
        opened.load()
        img: Image.Image = opened
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
    if isinstance(err, Image.DecompressionBombError):
        return f"too large to decode safely: {str(err).split(',')[0]}; shrink it"
    text = str(err).splitlines()
    return f"{type(err).__name__}: {text[0] if text else 'unreadable'}"


def decode_all(df: pd.DataFrame, size: int, problems: Problems | None = None, workers: int = 4) -> np.ndarray:
    """Decode every listed image; unreadable files are all reported (in ``problems``, else raised)."""
    out = np.empty((len(df), size, size), dtype=np.uint8)
    bad: list[str] = []

    def work(i_path: tuple[int, str]) -> None:
        i, path = i_path
        try:
            out[i] = decode_image(path, size)
        except Exception as err:  # any decoder error is the file's problem, named with its path
            bad.append(f"{path} ({why_unreadable(path, err)})")

    global DECODE_COUNT
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(work, enumerate(df["path"])))
    DECODE_COUNT += len(df)
    own = problems is None
    problems = problems if problems is not None else Problems()
    for item in sorted(bad):
        problems.add("unreadable image(s)", item, fix="fix or remove them, then rerun")
    if own:
        problems.raise_if_any()
    return out


def load_images(
    table: pd.DataFrame, size: int, cache_dir: Path, problems: Problems | None = None, where: str | None = None
) -> ImageSet:
    """Decode ``table`` (path, category, campaign) into a cached array, reused when unchanged.

    Nothing is written while ``problems`` holds any (those found before and here):
    they are raised together in one DataError headed by ``where``.
    """
    problems = Problems() if problems is None else problems
    cache_dir = Path(cache_dir)
    table = table.sort_values(["campaign", "category", "path"]).reset_index(drop=True)
    ids = [f"{c}/{Path(p).name}" for c, p in zip(table["campaign"], table["path"], strict=True)]
    index = table.assign(image_id=ids)
    if problems:  # report the unreadable files too, then stop
        decode_all(table, size, problems)
        problems.raise_if_any(where)
    key = _fingerprint(table, size)
    array_path = cache_dir / f"images-{size}px-{key}.npy"
    index_path = cache_dir / f"images-{size}px-{key}.parquet"
    if array_path.is_file() and index_path.is_file():
        problems.raise_if_any(where)
        return ImageSet(images=np.load(array_path), index=pd.read_parquet(index_path))
    images = decode_all(table, size, problems)
    problems.raise_if_any(where)
    cache_dir.mkdir(parents=True, exist_ok=True)
    for final, write in (
        (array_path, lambda p: np.save(p, images)),
        (index_path, lambda p: index.to_parquet(p, index=False)),
    ):
        tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, final)
    return ImageSet(images=images, index=index)


def check_campaigns(table: pd.DataFrame, needed: dict[str, str], where: str, problems: Problems | None = None) -> None:
    """Every campaign a study role needs must have images (a problem, else raised)."""
    have = set(table["campaign"])
    missing = [f"{role}: '{c}'" for role, c in needed.items() if c not in have]
    if not missing:
        return
    own = problems is None
    problems = problems if problems is not None else Problems()
    problems.add(
        "campaign(s) the study needs",
        f"campaign(s) without images: {', '.join(missing)}; campaigns found: {sorted(have)}",
        fix="fix data.* in the study config, add the images, "
        "or run with --data and no data.* keys to assign the campaigns found",
    )
    if own:
        problems.raise_if_any(where)
