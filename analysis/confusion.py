"""Confusion matrices: fold averages, margins (precision/recall/OA) and the paper's views."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from statsmodels.stats.inter_rater import cohens_kappa

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


KAPPA_SLIGHT = 0.2  # Landis & Koch (1977): kappa up to 0.2 is "slight" agreement beyond chance


def fold_agreement(
    confusion: pd.DataFrame,
    category_set: str,
    split: str = "generalization",
    trials: pd.DataFrame | None = None,
    arch: object = ANY,
) -> pd.DataFrame:
    """Per fold model: Cohen's kappa of its predictions against the true categories of ``split``
    with its asymptotic standard error (statsmodels' ``cohens_kappa``), the most-predicted
    category, its predicted share and its true share.

    A kappa near 0 means agreement no better than predicting by the class mix alone: unlike the
    predicted share of one category, it does not fire on a good model of a campaign that is
    mostly one category. A model that puts every image into one category has kappa 0 exactly
    (standard error 0: a fact of this data, the asymptotic variance is not defined); a split whose images
    all have one true category has no kappa (NaN) and no row is flagged. Comparable cells only.
    """
    confusion = comparable(confusion, trials, arch=arch)
    cm = confusion[(confusion["split"] == split) & (confusion["category_set"] == category_set)]
    rows = []
    for (model, size, fold), g in cm.groupby(["model", "train_size", "fold"]):
        table = g.pivot_table(
            index="true_category", columns="predicted_category", values="count", aggfunc="sum", fill_value=0
        )
        cats = sorted(set(table.index) | set(table.columns))
        table = table.reindex(index=cats, columns=cats, fill_value=0)
        counts = table.to_numpy(dtype=float)
        predicted, true = counts.sum(axis=0), counts.sum(axis=1)
        top = int(np.argmax(predicted))
        if (true > 0).sum() < 2:
            kappa, se = float("nan"), float("nan")
        elif (predicted > 0).sum() == 1:
            kappa, se = 0.0, 0.0
        else:
            res = cohens_kappa(counts)
            kappa, se = float(res["kappa"]), float(res["std_kappa"])
        rows.append(
            {
                "model": model,
                "train_size": size,
                "fold": fold,
                "kappa": kappa,
                "kappa_se": se,
                "category": cats[top],
                "predicted_share": predicted[top] / counts.sum(),
                "true_share": true[top] / counts.sum(),
            }
        )
    columns = ["model", "train_size", "fold", "kappa", "kappa_se", "category", "predicted_share", "true_share"]
    return pd.DataFrame(rows, columns=columns)
