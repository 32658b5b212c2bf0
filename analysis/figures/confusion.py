"""Figs. 6, 7 and 11: fold-averaged confusion matrices with precision/recall margins."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.config import display_name
from analysis.confusion import confusion_views, confusion_with_margins, fold_confusion
from analysis.figures._common import fmt_int, no_data_figure, style
from analysis.results import Results, resolve
from analysis.select import archs_of, category_sets, comparable, n_categories_of, set_label

MARGIN_ROW = "precision"
MARGIN_COL = "recall"


def _num(x: float, integral: bool) -> str:
    return fmt_int(x) if integral else f"{x:.1f}"


def margin_heatmap(matrix: pd.DataFrame, showscale: bool = False, corner: str = "OA") -> go.Heatmap:
    """(k+1) x (k+1) heatmap: column shares inside, precision row, recall column; the corner holds
    the accuracy on the matrix shown, labelled ``corner``."""
    m, precision, recall, oa = confusion_with_margins(matrix)
    values = m.to_numpy(dtype=float)
    k = len(values)
    integral = bool(np.allclose(values, np.round(values)))
    col, row, total = values.sum(axis=0), values.sum(axis=1), values.sum()
    z = np.full((k + 1, k + 1), np.nan)
    text = [["" for _ in range(k + 1)] for _ in range(k + 1)]
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(col > 0, values / col, np.nan)
    for i in range(k):
        for j in range(k):
            z[i, j] = share[i, j]
            s = "" if np.isnan(share[i, j]) else f"<br>{share[i, j]:.0%}"
            text[i][j] = _num(values[i, j], integral) + s
        z[i, k] = recall.iloc[i]
        text[i][k] = f"{_num(row[i], integral)}<br><b>{_pct(recall.iloc[i])}</b>"
    for j in range(k):
        z[k, j] = precision.iloc[j]
        text[k][j] = f"{_num(col[j], integral)}<br><b>{_pct(precision.iloc[j])}</b>"
    z[k, k] = oa
    text[k][k] = f"{_num(total, integral)}<br><b>{corner} {_pct(oa)}</b>"
    labels = [str(c) for c in m.columns]
    return go.Heatmap(
        z=z,
        x=labels + [MARGIN_COL],
        y=[str(c) for c in m.index] + [MARGIN_ROW],
        text=text,
        texttemplate="%{text}",
        textfont=dict(size=10 if k > 6 else 12),
        colorscale="Blues",
        zmin=0,
        zmax=1,
        showscale=showscale,
        xgap=1,
        ygap=1,
        colorbar=dict(title="share / rate", tickformat=".0%", len=0.6),
        hovertemplate="true %{y}<br>predicted %{x}<br>%{text}<extra></extra>",
    )


def _pct(x: float) -> str:
    return "n/a" if x != x else f"{100 * x:.1f} %"


def default_size(confusion: pd.DataFrame, category_set: str, models: Sequence[str], split: str) -> int | None:
    """Largest train size every model has in the confusion table (else any model's largest)."""
    sub = confusion[(confusion["category_set"] == category_set) & (confusion["split"] == split)]
    per_model = [set(sub.loc[sub["model"] == m, "train_size"].dropna().astype(int)) for m in models]
    per_model = [s for s in per_model if s]
    if not per_model:
        return None
    common = set.intersection(*per_model)
    return int(max(common)) if common else int(max(max(s) for s in per_model))


def confusion_matrices(
    results: Results | None = None,
    *,
    confusion: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    category_set: str | None = None,
    models: Sequence[str] | None = None,
    train_size: int | None = None,
    split: str = "validation",
    view: str = "auto",
    how: str = "mean",
    title: str | None = None,
    arch: Any = None,
) -> go.Figure:
    """Side-by-side confusion matrices of two models (rows: views such as basic / complex), of one
    backbone (``arch``; default the first recorded) and comparable cells only."""
    res = resolve(results, config=config, confusion=confusion)
    archs = archs_of(res.trials, res.confusion)
    arch = arch if arch is not None else archs[0]
    cm = comparable(res.confusion, res.trials, arch=arch)
    models = [str(m) for m in (models or res.config["compare_models"])]
    sets = category_sets(cm[cm["split"] == split])
    base = "Confusion matrices"
    if not sets or (category_set is not None and category_set not in sets):
        return no_data_figure(title or base, f"no data yet: no {split} confusion counts")
    cset = category_set or sets[0]
    size = train_size if train_size is not None else default_size(cm, cset, models, split)
    catalog = res.catalog
    try:
        order = list(catalog.category_set(cset))
    except KeyError:
        order = list(catalog.categories)
    panels: list[tuple[str, list[tuple[str, pd.DataFrame]]]] = []
    for m in models:
        mat = (
            fold_confusion(cm, m, cset, size, split=split, how=how, order=order) if size is not None else pd.DataFrame()
        )
        if not mat.empty:
            panels.append((m, confusion_views(mat, catalog, view)))
    if not panels:
        return no_data_figure(title or base, f"no data yet: no confusion counts for {', '.join(models)} at n = {size}")
    n_rows = max(len(v) for _, v in panels)
    titles = []
    for r in range(n_rows):
        for m, views in panels:
            titles.append(f"{display_name(m)}<br>{views[r][0]}" if r < len(views) else "")  # 2 lines: fit side by side
    fig = make_subplots(
        rows=n_rows,
        cols=len(panels),
        subplot_titles=titles,
        horizontal_spacing=0.12,
        vertical_spacing=0.16 if n_rows > 1 else 0.1,
    )
    first = True
    for c, (_m, views) in enumerate(panels, start=1):
        for r, (_, mat) in enumerate(views, start=1):
            corner = "OA" if len(views) == 1 else "subset OA"
            fig.add_trace(margin_heatmap(mat, showscale=first, corner=corner), row=r, col=c)
            first = False
            fig.update_yaxes(
                autorange="reversed", title="true category" if c == 1 else None, row=r, col=c, tickfont=dict(size=11)
            )
            fig.update_xaxes(title="predicted category", row=r, col=c, tickangle=-35, tickfont=dict(size=11))
    ncat = n_categories_of(cset, cm)
    agg = "averaged over folds" if how == "mean" else "summed over folds"
    heights = [max(len(v[r][1]) for _, v in panels if r < len(v)) for r in range(n_rows)]
    style(
        fig,
        title
        or (
            f"{base}, {split} set, n = {fmt_int(size)} \u2014 {set_label(cset, ncat)}"
            f"{f' ({arch})' if len(archs) > 1 else ''}<br><sup>counts {agg}; "
            "cell %: share of the predicted column; last row: precision; last column: recall; "
            + (
                "corner: overall accuracy"
                if n_rows == 1
                else "corner: accuracy on that subset (images of its categories, predictions among them)"
            )
            + "</sup>"
        ),
        height=int(180 + sum(70 + 48 * (h + 1) for h in heights)),
    )
    fig.update_layout(legend=dict(visible=False), margin=dict(l=150, r=40, t=120, b=110))
    return fig
