"""Small selection helpers shared by the statistics and the figures."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd


def latest_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per cell: the most recently finished trial (rows without a cell id are kept)."""
    if trials.empty:
        return trials
    df = trials.copy()
    df["_order"] = np.arange(len(df))
    df = df.sort_values(["finished_at", "_order"], na_position="first", kind="stable")
    has_id = df["cell_id"].notna()
    keep = pd.concat([df[has_id].drop_duplicates("cell_id", keep="last"), df[~has_id]])
    return keep.sort_values("_order").drop(columns="_order").reset_index(drop=True)


CEILING = "ceiling"  # trials.protocol of the supervised ceiling (all labeled images of a set)


def is_ceiling(trials: pd.DataFrame) -> pd.Series:
    """True for rows of the supervised ceiling (``protocol == 'ceiling'``)."""
    if "protocol" not in trials.columns:
        return pd.Series(False, index=trials.index)
    return trials["protocol"].astype("object") == CEILING


RANDOM = "random"  # trials.selection of the stratified random draw (null in runs before the column)


def selection_of(trials: pd.DataFrame) -> pd.Series:
    """Each row's selection strategy; ``random`` where the column is absent or null."""
    if "selection" not in trials.columns:
        return pd.Series(RANDOM, index=trials.index, dtype="object")
    return trials["selection"].astype("object").where(trials["selection"].notna(), RANDOM)


ANY = "*"  # ``arch=ANY``: keep every backbone (only for views that show them side by side)


def archs_of(*frames: pd.DataFrame | None) -> list[str | None]:
    """The backbones (``arch``) found in the frames, sorted; ``[None]`` when none is recorded."""
    found: set[str] = set()
    for df in frames:
        if df is not None and len(df) and "arch" in df.columns:
            found |= set(df["arch"].dropna().astype(str))
    archs: list[str | None] = list(sorted(found))  # typed so that [None] fits
    return archs or [None]


def ceiling_cells(trials: pd.DataFrame | None) -> set[Any]:
    """Cell ids of the supervised-ceiling rows of ``trials``."""
    if trials is None or trials.empty or "cell_id" not in trials.columns:
        return set()
    return set(trials.loc[is_ceiling(trials), "cell_id"].dropna())


def comparable(
    frame: pd.DataFrame,
    trials: pd.DataFrame | None = None,
    *,
    arch: Any = ANY,
    selection: str | None = RANDOM,
    ceiling: bool = False,
) -> pd.DataFrame:
    """The rows of any cell-keyed table (``trials``, ``per_class``, ``confusion``) that one
    statistic, figure or sentence may pool: one backbone ``arch`` (``ANY`` keeps every one;
    ``None`` matches rows without an arch; a frame that records no arch is not filtered by it),
    one selection strategy (``None`` keeps every one)
    and, unless ``ceiling`` is True, no supervised-ceiling cell (with ``ceiling=True`` only those).

    The ceiling is known from ``trials.protocol``: ``frame`` itself when it has that column,
    else the cell ids of ``trials`` (a ``per_class`` or ``confusion`` frame without ``trials``
    keeps cells whose id is not marked; their figures pass it).
    """
    if frame is None or frame.empty:
        return frame
    keep = pd.Series(True, index=frame.index)
    if arch is not ANY and arch != ANY and "arch" in frame.columns and frame["arch"].notna().any():
        col = frame["arch"].astype("object")
        keep &= col.isna() if arch is None else (col == arch)
    if selection is not None:
        keep &= selection_of(frame) == selection
    if "protocol" in frame.columns:
        keep &= is_ceiling(frame) == ceiling
    elif "cell_id" in frame.columns and trials is not None:
        keep &= frame["cell_id"].isin(ceiling_cells(trials)) == ceiling
    return frame[keep]


def done_trials(
    trials: pd.DataFrame,
    metric: str = "overall_accuracy",
    ceiling: bool = False,
    selection: str | None = RANDOM,
    arch: Any = ANY,
) -> pd.DataFrame:
    """Finished trials (status 'done') with a value for ``metric``, of comparable cells
    (:func:`comparable`).

    The supervised ceiling is a reference, not a point of a learning curve: its rows are
    left out, or with ``ceiling=True`` they are the only rows returned. Only cells of the
    ``selection`` strategy are kept (default random: every figure of the paper is about the
    random draw); ``selection=None`` keeps every strategy. ``arch`` keeps one backbone
    (default ``ANY``: every one; every statistic passes one arch at a time).
    """
    df = latest_trials(trials)
    if df.empty:
        return df
    df = comparable(df, arch=arch, selection=selection, ceiling=ceiling)
    status = df["status"].astype("object")
    ok = (status.isna() | (status == "done")) & df[metric].notna() & df["train_size"].notna()
    out = df[ok].copy()
    out["train_size"] = out["train_size"].astype(int)
    out[metric] = out[metric].astype(float)
    return out.reset_index(drop=True)


def category_sets(*frames: pd.DataFrame) -> list[str]:
    """Category sets found in the frames, most categories first (ties: by name)."""
    counts: dict[str, float] = {}
    for df in frames:
        if df is None or df.empty or "category_set" not in df.columns:
            continue
        sub = df[df["category_set"].notna()]
        n = pd.to_numeric(sub["n_categories"], errors="coerce") if "n_categories" in sub else None
        for name in sub["category_set"].astype(str).unique():
            value = -1.0
            if n is not None:
                vals = n[sub["category_set"].astype(str) == name].dropna()
                value = float(vals.max()) if len(vals) else -1.0
            counts[name] = max(counts.get(name, -1.0), value)
    return sorted(counts, key=lambda s: (-counts[s], s))


def n_categories_of(category_set: str, *frames: pd.DataFrame) -> int | None:
    for df in frames:
        if df is None or df.empty or "n_categories" not in df.columns:
            continue
        n = pd.to_numeric(df.loc[df["category_set"] == category_set, "n_categories"], errors="coerce").dropna()
        if len(n):
            return int(n.max())
    return None


def set_label(category_set: str | None, n_categories: int | None) -> str:
    """'19 categories (19cat)' style label."""
    if category_set is None:
        return "all categories"
    if n_categories:
        return f"{n_categories} categories ({category_set})"
    return str(category_set)


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return [value]
    return list(value)


def nan_to_none(value: Any) -> Any:
    try:
        return None if value is None or (isinstance(value, float) and np.isnan(value)) else value
    except TypeError:
        return value


def majority_share(
    per_class: pd.DataFrame,
    category_set: str,
    split: str = "validation",
    trials: pd.DataFrame | None = None,
    arch: Any = ANY,
) -> float | None:
    """Share of the most frequent category in ``split`` (mean over comparable cells, :func:`comparable`):
    the accuracy of always predicting the majority class. None without per-class supports."""
    per_class = comparable(per_class, trials, arch=arch)
    if per_class is None or per_class.empty:
        return None
    pc = per_class[
        (per_class["category_set"] == category_set) & (per_class["split"] == split) & per_class["support"].notna()
    ]
    if pc.empty:
        return None
    per_cell = pc.groupby("cell_id")["support"].agg(lambda s: s.max() / s.sum() if s.sum() > 0 else np.nan)
    per_cell = per_cell.dropna()
    return float(per_cell.mean()) if len(per_cell) else None
