"""Accuracy figures: Figs. 4, 9 and 12, learning-curve fits and paired differences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.config import REFERENCE_COLOR, display_name, model_color, order_models
from analysis.figures._common import SizeAxis, fade, fmt_int, model_boxes, no_data_figure, style
from analysis.results import Results, resolve
from analysis.select import archs_of, category_sets, done_trials, majority_share, n_categories_of, set_label
from analysis.stats import (
    ALPHA,
    BACKTEST_TOLERANCE_PP,
    MAX_BAND_WIDTH,
    QUOTE_LIMIT,
    CurveFit,
    backtest_table,
    fit_learning_curves,
    learning_curve_answers,
    paired_difference_table,
    significant,
)


def p_label(p: float, n_pairs: int) -> str:
    """Short label of a Holm-adjusted p under a mean difference ('p_adj=0.04', 'n.s. p_adj=0.09',
    '1 fold'); significant means p <= ALPHA, as in the text."""
    if n_pairs < 2 or p != p:
        return "1 fold" if n_pairs < 2 else ""
    return f"p_adj={p:.2g}" if p <= ALPHA else f"n.s. p_adj={p:.2g}"


METRIC_LABEL = {
    "overall_accuracy": "Overall accuracy",
    "generalization_accuracy": "Accuracy on the unseen campaign",
    "macro_f1": "Macro F1",
}


def _reference_points(cfg: dict[str, Any], category_set: str, n_categories: int | None) -> list[dict[str, Any]]:
    out = []
    for p in cfg.get("reference_points") or []:
        if not isinstance(p, dict) or p.get("train_size") is None or p.get("accuracy") is None:
            continue
        if p.get("category_set") is not None and str(p["category_set"]) != category_set:
            continue
        if p.get("n_categories") is not None and n_categories is not None and int(p["n_categories"]) != n_categories:
            continue
        out.append(p)
    return out


BOX_GAP = 0.15  # plotly boxgap: the share of a size's slot left empty between groups of boxes


def fold_points(
    data: pd.DataFrame,
    metric: str,
    model: str,
    axis: SizeAxis,
    sizes: Sequence[int] | None = None,
    slot: int = 0,
    n_slots: int = 1,
) -> go.Scatter:
    """Every fold's value as a dot over the model's box (its ``slot`` of ``n_slots`` grouped boxes);
    a cell that did not fit its training images (``trials.fitted`` False) is a hollow dot."""
    sub = data[data["model"] == model]
    if sizes is not None:
        sub = sub[sub["train_size"].isin(list(sizes))]
    width = 1.0 - BOX_GAP
    shift = -width / 2 + width / n_slots * (slot + 0.5)
    unfitted = unfitted_mask(sub)
    return go.Scatter(
        x=axis.pos(sub["train_size"].to_numpy()) + shift,
        y=sub[metric],
        mode="markers",
        legendgroup=str(model),
        showlegend=False,
        name=f"{display_name(model)} folds",
        marker=dict(
            color=model_color(model),
            size=6,
            symbol=np.where(unfitted, "circle-open", "circle"),
            line=dict(width=np.where(unfitted, 1.6, 0.8), color=np.where(unfitted, model_color(model), "white")),
        ),
        customdata=np.stack([sub["train_size"], sub["fold"].fillna(-1)], axis=-1),
        text=np.where(unfitted, " (did not fit its training images)", ""),
        hovertemplate="n = %{customdata[0]:,}, fold %{customdata[1]}: %{y:.1%}%{text}<extra>"
        + display_name(model)
        + "</extra>",
    )


def unfitted_mask(trials: pd.DataFrame) -> np.ndarray:
    """True for rows of cells that ended below ``finetune.fit_accuracy`` on their own training
    images (``trials.fitted`` False; runs from before the column: none)."""
    if "fitted" not in trials.columns:
        return np.zeros(len(trials), dtype=bool)
    return (trials["fitted"] == False).to_numpy(dtype=bool)  # noqa: E712 (nulls are not False)


def _hline(fig: go.Figure, y: float, text: str, color: str, dash: str, cols: int, position: str) -> None:
    """A horizontal reference line across every panel, labelled once (in the first panel).

    Plotly writes its placeholder "new text" for an annotation given a position but no text,
    so the other panels get the line alone.
    """
    for col in range(1, cols + 1):
        label = (
            dict(annotation_text=text, annotation_position=position, annotation_font=dict(size=11, color=color))
            if col == 1
            else {}
        )
        fig.add_hline(y=y, line=dict(color=color, dash=dash, width=1.3), row=1, col=col, **label)


def label_positions(ys: Sequence[float]) -> list[str]:
    """Where each line's label goes so that no two labels meet: above the highest line, below
    every other one, alternating sides for those in between (in the order of ``ys``)."""
    order = sorted(range(len(ys)), key=lambda i: -ys[i])
    positions = [""] * len(ys)
    for rank, i in enumerate(order):
        if rank == 0:
            positions[i] = "top right"
        elif rank == len(order) - 1:
            positions[i] = "bottom right"
        else:
            positions[i] = "bottom left" if rank % 2 else "top left"
    return positions


def _box_figure(
    data: pd.DataFrame,
    metric: str,
    cset: str,
    cfg: dict[str, Any],
    models: Sequence[str] | None,
    inset: bool,
    refs: list[dict[str, Any]],
    title: str,
    lines: Sequence[tuple[float, str, str, str]] = (),
) -> go.Figure:
    models = [m for m in (models or order_models(data["model"])) if (data["model"] == m).any()]
    sizes = sorted(data["train_size"].unique().tolist())
    axis = SizeAxis(sizes + [int(p["train_size"]) for p in refs])
    zoom = sizes[-2:] if inset and len(sizes) >= 3 else []
    if zoom:
        fig = make_subplots(
            rows=1,
            cols=2,
            column_widths=[0.77, 0.23],
            horizontal_spacing=0.07,
            subplot_titles=("", f"zoom: n = {fmt_int(zoom[0])} and {fmt_int(zoom[1])}"),
        )
    else:
        fig = make_subplots(rows=1, cols=1)
    for i, model in enumerate(models):
        box = model_boxes(data, metric, model, axis)
        if box is not None:
            fig.add_trace(box, row=1, col=1)
            fig.add_trace(fold_points(data, metric, model, axis, slot=i, n_slots=len(models)), row=1, col=1)
        if zoom:
            box = model_boxes(data, metric, model, axis, sizes=zoom, showlegend=False)
            if box is not None:
                fig.add_trace(box, row=1, col=2)
                fig.add_trace(
                    fold_points(data, metric, model, axis, sizes=zoom, slot=i, n_slots=len(models)), row=1, col=2
                )
    for (y, text, color, dash), position in zip(lines, label_positions([line[0] for line in lines]), strict=True):
        _hline(fig, y, text, color, dash, 2 if zoom else 1, position)
    for i, p in enumerate(refs):
        # Just right of the model boxes of that size, like the paper's green IceDetectNet box.
        x_ref = axis.pos(int(p["train_size"])) + 0.42
        label = str(p.get("label") or f"reference {i + 1}")
        spread = float(p.get("spread") or 0.0)
        panels = [1] + ([2] if zoom and int(p["train_size"]) >= zoom[0] else [])
        for col in panels:
            fig.add_trace(
                go.Scatter(
                    x=[x_ref],
                    y=[float(p["accuracy"])],
                    mode="markers",
                    marker=dict(symbol="diamond", size=11, color=REFERENCE_COLOR, line=dict(width=1, color="black")),
                    error_y=dict(type="constant", value=spread, color=REFERENCE_COLOR, thickness=2, width=6),
                    name=f"{label} (reference)",
                    legendgroup=f"ref-{i}",
                    showlegend=col == 1,
                    hovertemplate=(
                        f"{label}: %{{y:.1%}} \u00b1 {spread:.1%}<br>n = {fmt_int(p['train_size'])}<extra></extra>"
                    ),
                ),
                row=1,
                col=col,
            )
    ylabel = METRIC_LABEL.get(metric, metric)
    style(fig, title, height=540, boxmode="group", boxgroupgap=0.25, boxgap=BOX_GAP)
    fig.update_xaxes(axis.axis(sizes=sizes), row=1, col=1)
    fig.update_yaxes(title=ylabel, tickformat=".0%", row=1, col=1)
    if zoom:
        ax = axis.axis(title="n", sizes=zoom)
        ax["range"] = [axis.pos(zoom[0]) - 0.5, axis.pos(zoom[-1]) + 0.5]
        fig.update_xaxes(ax, row=1, col=2)
        fig.update_yaxes(tickformat=".1%", row=1, col=2)
    return fig


def accuracy_vs_size(
    results: Results | None = None,
    *,
    trials: pd.DataFrame | None = None,
    per_class: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    category_set: str | None = None,
    metric: str = "overall_accuracy",
    models: Sequence[str] | None = None,
    inset: bool = True,
    reference_points: bool = True,
    title: str | None = None,
    arch: Any = None,
) -> go.Figure:
    """Figs. 4 and 9: accuracy over folds as boxes per model and size (fold dots over them), with a
    zoom panel and the majority-class and supervised-ceiling lines where the run has them; one
    backbone (``arch``, default the first recorded; its name in the title when there are several)."""
    res = resolve(results, config=config, trials=trials, per_class=per_class)
    arch, arch_note = _arch(res, arch)
    done = done_trials(res.trials, metric, arch=arch)
    sets = category_sets(done)
    base = f"{METRIC_LABEL.get(metric, metric)} vs training set size"
    if not sets or (category_set is not None and category_set not in sets):
        return no_data_figure(
            title or base, "no data yet: no finished trials" + (f" for {category_set}" if category_set else "")
        )
    cset = category_set or sets[0]
    data = done[done["category_set"] == cset]
    ncat = n_categories_of(cset, data)
    refs = _reference_points(res.config, cset, ncat) if reference_points else []
    return _box_figure(
        data,
        metric,
        cset,
        res.config,
        models,
        inset,
        refs,
        title or f"{base} \u2014 {set_label(cset, ncat)}{arch_note}",
        reference_lines(res, cset, metric, "validation", arch),
    )


def _arch(res: Results, arch: Any) -> tuple[Any, str]:
    """The backbone a figure draws (default the first recorded) and its title note ('' for one)."""
    archs = archs_of(res.trials)
    arch = arch if arch is not None else archs[0]
    return arch, (f" ({arch})" if len(archs) > 1 else "")


MAJORITY_COLOR, CEILING_COLOR = "#b22222", "#2f4f4f"


def reference_lines(
    res: Results, cset: str, metric: str, split: str, arch: Any = None
) -> list[tuple[float, str, str, str]]:
    """(y, label, colour, dash) of the majority-class share of ``split`` and of the supervised
    ceiling (mean over its folds) where the run has them, of one backbone (default the first)."""
    out = []
    arch = arch if arch is not None else archs_of(res.trials)[0]
    share = majority_share(res.per_class, cset, split, res.trials, arch)
    if share is not None:
        out.append(
            (share, f"majority class {share:.1%} (always predicting the most frequent category)", MAJORITY_COLOR, "dot")
        )
    ceil = done_trials(res.trials, metric, ceiling=True, arch=arch)
    ceil = ceil[ceil["category_set"] == cset]
    if len(ceil):
        n = int(ceil["train_size"].max())
        out.append(
            (
                float(ceil[metric].mean()),
                f"supervised ceiling {ceil[metric].mean():.1%} (all {n:,} labeled images, "
                f"{len(ceil)} fold{'s' if len(ceil) != 1 else ''})",
                CEILING_COLOR,
                "dash",
            )
        )
    return out


def generalization(
    results: Results | None = None,
    *,
    trials: pd.DataFrame | None = None,
    per_class: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    category_set: str | None = None,
    models: Sequence[str] | None = None,
    title: str | None = None,
    arch: Any = None,
) -> go.Figure:
    """Fig. 12: accuracy on the unseen campaign (generalization_accuracy) per model and size, with
    the campaign's majority-class share; one backbone (``arch``, default the first recorded)."""
    res = resolve(results, config=config, trials=trials, per_class=per_class)
    arch, arch_note = _arch(res, arch)
    done = done_trials(res.trials, "generalization_accuracy", arch=arch)
    sets = category_sets(done)
    if not sets or (category_set is not None and category_set not in sets):
        return no_data_figure(
            title or "Accuracy on the unseen campaign", "no data yet: no generalization accuracy recorded"
        )
    cset = category_set or sets[0]
    data = done[done["category_set"] == cset]
    campaigns = [res.campaign(c) for c in data["generalization_campaign"].dropna().astype(str).unique()]
    where = " / ".join(campaigns) if campaigns else "the unseen campaign"
    return _box_figure(
        data,
        "generalization_accuracy",
        cset,
        res.config,
        models,
        False,
        [],
        title
        or f"Accuracy on {where} without further fine-tuning \u2014 "
        f"{set_label(cset, n_categories_of(cset, data))}{arch_note}",
        reference_lines(res, cset, "generalization_accuracy", "generalization", arch),
    )


def learning_curves(
    results: Results | None = None,
    *,
    trials: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    category_set: str | None = None,
    models: Sequence[str] | None = None,
    fits: dict[tuple[str, str], CurveFit] | None = None,
    title: str | None = None,
    arch: Any = None,
) -> go.Figure:
    """Boxes of Fig. 4 with the weighted fit per model (:mod:`analysis.curves`), its 95 % band and
    the targets (crosses only where the report quotes a number: reliable, backtest passed);
    one backbone (``arch``, default the first recorded, the one :func:`fit_learning_curves` fits)."""
    res = resolve(results, config=config, trials=trials)
    cfg = res.config
    arch, arch_note = _arch(res, arch)
    done = done_trials(res.trials, arch=arch)
    sets = category_sets(done)
    if not sets or (category_set is not None and category_set not in sets):
        return no_data_figure(title or "Learning curves", "no data yet: no finished trials")
    cset = category_set or sets[0]
    data = done[done["category_set"] == cset]
    if fits is None:
        fits = fit_learning_curves(data, n_boot=int(cfg["curve_bootstrap"]), seed=int(cfg["seed"]))
    models = [m for m in (models or order_models(data["model"])) if (data["model"] == m).any()]
    sizes = sorted(data["train_size"].unique().tolist())
    targets = [float(t) for t in cfg.get("targets") or []]
    # Extend the curves towards a target answer the report quotes (within QUOTE_LIMIT x the largest size).
    n_hi = float(max(sizes))
    max_band = float(cfg.get("max_band_width") or MAX_BAND_WIDTH)
    tolerance = float(cfg.get("backtest_tolerance_pp") or BACKTEST_TOLERANCE_PP)
    mine = {k: f for k, f in fits.items() if k[0] == cset}
    answers = learning_curve_answers(mine, targets, max_band, tolerance)
    problems = {
        m: [p for p in str(g["problems"].iloc[0]).split("; ") if p] for m, g in answers.groupby("model", sort=False)
    }
    for m in models:
        fit = fits.get((cset, m))
        for t in targets:
            n_t = fit.samples_to_reach(t)["n"] if fit and not problems.get(m) else None
            if n_t is not None and n_hi < n_t <= QUOTE_LIMIT * max(sizes):
                n_hi = n_t
    axis = SizeAxis(sizes + ([int(np.ceil(n_hi))] if n_hi > max(sizes) else []))
    fig = go.Figure()
    grid = np.geomspace(min(sizes), n_hi, 200)
    for m in models:
        box = model_boxes(data, "overall_accuracy", m, axis)
        if box is not None:
            fig.add_trace(box)
        fit = fits.get((cset, m))
        if fit is None:
            continue
        color = model_color(m)
        band = fit.band(grid)
        if band is not None:
            fig.add_trace(
                go.Scatter(
                    x=np.concatenate([axis.pos(grid), axis.pos(grid)[::-1]]),
                    y=np.concatenate([band[1], band[0][::-1]]),
                    fill="toself",
                    fillcolor=fade(color, 0.15),
                    line=dict(width=0),
                    hoverinfo="skip",
                    name=f"{display_name(m)} 95 % band",
                    legendgroup=f"fit-{m}",
                    showlegend=False,
                )
            )
        verdict = "fit unreliable: " + "; ".join(p.split(": ")[0] for p in problems[m]) if problems[m] else "fit"
        fig.add_trace(
            go.Scatter(
                x=axis.pos(grid),
                y=fit.predict(grid),
                mode="lines",
                line=dict(color=color, width=2 if not problems[m] else 1, dash="dash" if not problems[m] else "dot"),
                name=f"{display_name(m)} fit: a={fit.a:.3f}, b={fit.b:.3g}, c={fit.c:.2f}"
                + (f", d={fit.d:,.0f}" if fit.d else "")
                + (f"<br>  {verdict}" if problems[m] else ""),
                legendgroup=f"fit-{m}",
                customdata=grid,
                hovertemplate="n = %{customdata:,.0f}<br>OA = %{y:.1%}<extra>" + display_name(m) + "</extra>",
            )
        )
        for t in targets if not problems[m] else []:
            ans = fit.samples_to_reach(t)
            if ans["n"] is not None and ans["n"] <= n_hi * 1.0001:
                ci = (
                    f" (95 % CI {fmt_int(ans['low'])}\u2013{fmt_int(ans['high'])})"
                    if ans["low"] is not None and ans["high"] is not None
                    else ""
                )
                fig.add_trace(
                    go.Scatter(
                        x=[axis.pos(ans["n"])],
                        y=[t],
                        mode="markers",
                        showlegend=False,
                        marker=dict(symbol="x", size=11, color=color),
                        legendgroup=f"fit-{m}",
                        hovertemplate=(
                            f"{display_name(m)} reaches {t:.0%} at n \u2248 {fmt_int(ans['n'])}{ci}<extra></extra>"
                        ),
                    )
                )
    for t in targets:
        fig.add_hline(
            y=t,
            line=dict(color="#999", dash="dot", width=1),
            annotation_text=f"target {t:.0%}",
            annotation_position="top left",
        )
    style(
        fig,
        title
        or f"Learning curves (weighted fits: a \u2212 b\u00b7n^(\u2212c) or a \u2212 b\u00b7(n+d)^(\u2212c)) \u2014 "
        f"{set_label(cset, n_categories_of(cset, data))}{arch_note}",
        height=560,
        boxmode="group",
    )
    fig.update_layout(
        legend=dict(orientation="v", x=1.02, xanchor="left", y=1.0, yanchor="top"), margin=dict(r=330, t=80)
    )
    fig.update_xaxes(axis.axis(sizes=sizes))
    fig.update_yaxes(title="Overall accuracy", tickformat=".0%")
    return fig


def backtest(
    results: Results | None = None,
    *,
    trials: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    fits: dict[tuple[str, str], CurveFit] | None = None,
    table: pd.DataFrame | None = None,
    title: str | None = None,
) -> go.Figure:
    """Backtest of every learning curve: OA predicted at the largest size by the curve fitted
    without it (95 % prediction interval) against the measured fold mean; filled: passed."""
    res = resolve(results, config=config, trials=trials)
    cfg = res.config
    tolerance = float(cfg.get("backtest_tolerance_pp") or BACKTEST_TOLERANCE_PP)
    if table is None:
        if fits is None:
            fits = fit_learning_curves(res.trials)
        table = backtest_table(fits, tolerance)
    if table.empty:
        return no_data_figure(
            title or "Backtest of the learning curves", "no backtest: every curve has fewer than 5 sizes"
        )
    fig = go.Figure()
    several = "arch" in table.columns and table["arch"].nunique() > 1
    labels = [
        f"{display_name(r.model)}<br>{r.category_set}{f' ({r.arch})' if several else ''}, n = {int(r.size):,}"
        for r in table.itertuples()
    ]
    for model in order_models(table["model"]):
        sub = table[table["model"] == model]
        x = [labels[i] for i in np.flatnonzero(table["model"].to_numpy() == model)]
        color = model_color(model)
        fig.add_trace(
            go.Scatter(
                x=x,
                y=100 * sub["predicted"],
                mode="markers",
                marker=dict(symbol="line-ew-open", size=18, color=color),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=100 * (sub["high"] - sub["predicted"]),
                    arrayminus=100 * (sub["predicted"] - sub["low"]),
                    color=color,
                ),
                name=f"{display_name(model)}: predicted (95 % prediction interval)",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=100 * sub["measured"],
                mode="markers",
                marker=dict(
                    symbol=["circle" if p else "circle-open" for p in sub["passed"]],
                    size=11,
                    color=color,
                    line=dict(width=2, color=color),
                ),
                name=f"{display_name(model)}: measured (filled: within {tolerance:g} pp, passed)",
                customdata=np.stack([sub["error_pp"], sub["covered"]], axis=-1),
                hovertemplate="measured %{y:.1f} %<br>error %{customdata[0]:+.1f} pp<br>in interval: "
                "%{customdata[1]}<extra></extra>",
            )
        )
    style(
        fig,
        title or f"Backtest: each curve fitted without its largest size predicts it (tolerance {tolerance:g} pp)",
        height=460,
    )
    fig.update_yaxes(title="Overall accuracy at the largest size (%)")
    return fig


def paired_differences(
    results: Results | None = None,
    *,
    trials: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    model: str | None = None,
    reference_model: str | None = None,
    metric: str = "overall_accuracy",
    table: pd.DataFrame | None = None,
    title: str | None = None,
) -> go.Figure:
    """CSSL minus reference per size, paired by fold: mean with bootstrap 95 % CI, fold points."""
    res = resolve(results, config=config, trials=trials)
    cfg = res.config
    model = model or str(cfg["cssl_model"])
    reference_model = reference_model or str(cfg["reference_model"])
    name = f"{display_name(model)} \u2212 {display_name(reference_model)}"
    if table is None:
        table = paired_difference_table(
            res.trials, model, reference_model, metric, n_boot=int(cfg["n_bootstrap"]), seed=int(cfg["seed"])
        )
    if table.empty:
        return no_data_figure(title or f"Paired difference {name}", "no data yet: no fold has results for both models")
    axis = SizeAxis(table["train_size"].tolist())
    archs = list(pd.unique(table["arch"])) if "arch" in table.columns else [None]
    groups = [(a, c) for a in archs for c in category_sets(table if a is None or a != a else table[table["arch"] == a])]
    fig = go.Figure()
    colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    for i, (arch, cset) in enumerate(groups):
        sub = table[table["category_set"] == cset]
        if "arch" in sub.columns:
            sub = sub[sub["arch"].isna()] if arch is None or arch != arch else sub[sub["arch"] == arch]
        sub = sub.sort_values("train_size")
        color = colors[i % len(colors)]
        shift = (i - (len(groups) - 1) / 2) * 0.12
        x = axis.pos(sub["train_size"].to_numpy()) + shift
        mean = 100 * sub["mean_diff"].to_numpy(dtype=float)
        hi = 100 * sub["ci_high"].to_numpy(dtype=float) - mean
        lo = mean - 100 * sub["ci_low"].to_numpy(dtype=float)
        p = (sub["p_adjusted"] if "p_adjusted" in sub.columns else sub["p_value"]).to_numpy(dtype=float)
        label = set_label(cset, n_categories_of(cset, sub)) + (f", {arch}" if len(archs) > 1 else "")
        fx, fy = [], []
        for xi, diffs in zip(x, sub["diffs"], strict=True):
            fx += [xi] * len(diffs)
            fy += [100 * d for d in diffs]
        fig.add_trace(
            go.Scatter(
                x=fx,
                y=fy,
                mode="markers",
                marker=dict(color=fade(color, 0.45), size=6),
                name=f"{label}: single folds",
                legendgroup=cset,
                hoverinfo="y",
            )
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=mean,
                mode="lines+markers+text",
                name=f"{label}: mean, 95 % CI ({'Student t' if (sub['ci_method'] == 't').all() else 'bootstrap'})",
                legendgroup=cset,
                line=dict(color=color, width=2),
                marker=dict(size=9, color=color),
                error_y=dict(
                    type="data",
                    symmetric=False,
                    array=np.nan_to_num(hi),
                    arrayminus=np.nan_to_num(lo),
                    thickness=1.5,
                    width=5,
                ),
                text=["*" if v else "" for v in significant(p)],
                textposition="top center",
                textfont=dict(size=16, color=color),
                customdata=np.stack([sub["train_size"], sub["n_pairs"], np.nan_to_num(p, nan=-1)], axis=-1),
                hovertemplate=(
                    "n = %{customdata[0]:,}<br>mean \u0394 = %{y:.2f} pp<br>pairs: %{customdata[1]}"
                    "<br>Holm-adjusted p = %{customdata[2]:.3g} (-1: too few pairs)<extra>" + label + "</extra>"
                ),
            )
        )
        for xi, pi, npair in zip(x, p, sub["n_pairs"], strict=True):
            text = p_label(pi, int(npair))
            if text:  # one row of labels per group along the bottom: no two labels meet
                fig.add_annotation(
                    x=xi,
                    y=0.01 + 0.05 * i,
                    yref="paper",
                    yanchor="bottom",
                    text=text,
                    showarrow=False,
                    font=dict(size=10, color=color),
                )
    fig.add_hline(y=0, line=dict(color="black", width=1))
    style(
        fig,
        title
        or f"Paired difference in {METRIC_LABEL.get(metric, metric).lower()}: {name} "
        f"(same fold; * Holm-adjusted p \u2264 {ALPHA:g}, {table['test'].iloc[0]})",
        height=500,
    )
    fig.update_xaxes(axis.axis())
    fig.update_yaxes(title="\u0394 accuracy (pp, percentage points)", zeroline=False)
    return fig
