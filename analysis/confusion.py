"""Confusion matrices: fold averages, margins (precision/recall/OA) and the paper's views."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from analysis.select import ANY, comparable
from raystudy.catalog import Catalog

GROUP_ORDER: tuple[str, ...] = ("aged", "aggregate", "aged_aggregate")


def confusion_with_margins(matrix: np.ndarray | pd.DataFrame):
    """(matrix, precision per predicted column, recall per true row, overall accuracy).

    Rows are true labels, columns predictions. Precision/recall are NaN for an
    empty column/row; OA is NaN for an empty matrix. A DataFrame gives Series.
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {m.shape}")
    diag = np.diag(m)
    col, row, total = m.sum(axis=0), m.sum(axis=1), m.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(col > 0, diag / col, np.nan)
        recall = np.where(row > 0, diag / row, np.nan)
    oa = float(diag.sum() / total) if total > 0 else float("nan")
    if isinstance(matrix, pd.DataFrame):
        return (
            matrix,
            pd.Series(precision, index=matrix.columns, name="precision"),
            pd.Series(recall, index=matrix.index, name="recall"),
            oa,
        )
    return m, precision, recall, oa


def fold_confusion(
    confusion: pd.DataFrame,
    model: str,
    category_set: str,
    train_size: int,
    split: str = "validation",
    how: str = "mean",
    order: Sequence[str] | None = None,
    trials: pd.DataFrame | None = None,
    arch: object = ANY,
) -> pd.DataFrame:
    """True x predicted counts of one experiment, summed or averaged over its folds; comparable
    cells only (one ``arch``, the random draw, no ceiling cell: :func:`analysis.select.comparable`)."""
    confusion = comparable(confusion, trials, arch=arch)
    sub = confusion[
        (confusion["model"] == model)
        & (confusion["category_set"] == category_set)
        & (confusion["train_size"] == train_size)
        & (confusion["split"] == split)
    ]
    if sub.empty:
        return pd.DataFrame()
    labels = list(pd.unique(pd.concat([sub["true_category"], sub["predicted_category"]]).dropna().astype(str)))
    known = [c for c in (order or []) if c in labels]
    labels = known + sorted(set(labels) - set(known))
    m = sub.pivot_table(
        index="true_category", columns="predicted_category", values="count", aggfunc="sum", fill_value=0
    ).reindex(index=labels, columns=labels, fill_value=0)
    if how == "mean":
        n_folds = max(sub["cell_id"].nunique() if sub["cell_id"].notna().any() else sub["fold"].nunique(), 1)
        m = m / n_folds
    m.index.name, m.columns.name = "true", "predicted"
    return m.astype(float)


def restrict(matrix: pd.DataFrame, categories: Sequence[str]) -> pd.DataFrame:
    """Rows AND columns of the given categories only (the paper's basic-habit matrix)."""
    keep = [c for c in matrix.index if c in set(categories)]
    return matrix.loc[keep, keep]


def merge_groups(matrix: pd.DataFrame, groups: dict[str, str], order: Sequence[str] = GROUP_ORDER) -> pd.DataFrame:
    """Sum rows and columns by group (e.g. complex shapes -> aged / aggregate / aged_aggregate)."""
    cats = [c for c in matrix.index if c in groups]
    sub = matrix.loc[cats, cats]
    merged = sub.groupby(lambda c: groups[c]).sum().T.groupby(lambda c: groups[c]).sum().T
    labels = [g for g in order if g in merged.index] + sorted(set(merged.index) - set(order))
    out = merged.reindex(index=labels, columns=labels, fill_value=0.0)
    out.index.name, out.columns.name = matrix.index.name, matrix.columns.name
    return out


def confusion_views(
    matrix: pd.DataFrame, catalog: Catalog | None = None, view: str = "auto"
) -> list[tuple[str, pd.DataFrame]]:
    """The panels the paper draws: 'basic habits' + 'complex shapes (merged)' or the full matrix.

    'auto' splits when the matrix has at least two basic habits and two complex groups.
    """
    catalog = catalog or Catalog()
    basic = [c for c in matrix.index if catalog.is_basic(c)]
    groups = {c: catalog.group(c) for c in matrix.index if not catalog.is_basic(c)}
    split = view == "split" or (view == "auto" and len(basic) >= 2 and len(set(groups.values())) >= 2)
    if not split:
        return [("all categories", matrix)]
    return [
        ("basic habits", restrict(matrix, basic)),
        ("complex shapes merged by process", merge_groups(matrix, groups)),
    ]
