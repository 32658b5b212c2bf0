"""The run folder (``--out``): usable before anything starts, and left as found on bad input."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from raystudy.data.problems import DataError


def check_run_folder(run_dir: Path) -> None:
    """A folder raystudy can create and write, else a DataError saying what to do.

    Example:
        >>> check_run_folder(Path("runs/demo"))  # doctest: +SKIP
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise DataError(f"--out {run_dir} is a file, not a folder; choose a folder path with --out DIR")
    parent = run_dir
    while not parent.exists():  # the nearest existing folder above it must be writable
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"--out {run_dir}: {parent} is a file, not a folder; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"--out {run_dir}: {parent} is not writable by this user; choose another --out")


def entries(run_dir: Path) -> set[str] | None:
    """Top-level names in ``run_dir`` (None when it does not exist): what :func:`removed_if_failing` keeps."""
    run_dir = Path(run_dir)
    return set(os.listdir(run_dir)) if run_dir.is_dir() else None


@contextmanager
def removed_if_failing(run_dir: Path, before: set[str] | None) -> Iterator[None]:
    """Remove what was created in ``run_dir`` since ``before = entries(run_dir)`` when the block raises.

    A folder that did not exist is removed whole; in one that did, only new top-level
    entries are removed (results of an earlier run stay). Nothing half-written is left.
    """
    run_dir = Path(run_dir)
    try:
        yield
    except BaseException:
        if before is None:
            shutil.rmtree(run_dir, ignore_errors=True)
        elif run_dir.is_dir():
            for name in set(os.listdir(run_dir)) - before:
                path = run_dir / name
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        raise
