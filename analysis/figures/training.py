"""Figs. A1, A2 (loss curves), the online kNN of pre-training and Table B1 (training times)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots
from statsmodels.stats.proportion import proportion_confint

from analysis.config import display_name, model_color, order_models, pretrain_name
from analysis.figures._common import fmt_int, no_data_figure, style
from analysis.results import Results, resolve
from analysis.select import category_sets, done_trials, n_categories_of, set_label

MAX_POINTS = 2000  # per line, to keep the report small


def _thin(df: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    if len(df) <= max_points:
        return df
    idx = np.unique(np.linspace(0, len(df) - 1, max_points).round().astype(int))
    return df.iloc[idx]


def _x_column(df: pd.DataFrame, x: str) -> str:
    return x if df[x].notna().any() else ("epoch" if x == "step" else "step")


def pretraining_loss(
    results: Results | None = None,
    *,
    losses: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    x: str = "step",
    title: str | None = None,
) -> go.Figure:
    """Fig. A1: the contrastive pre-training loss of each run (one panel per model)."""
    res = resolve(results, config=config, losses=losses)
    df = res.losses[(res.losses["stage"] == "pretrain") & res.losses["loss"].notna()]
    base = "Unsupervised pre-training loss"
    if df.empty:
        return no_data_figure(title or base, "no data yet: no pre-training loss logged")
    df = df.assign(model=df["model"].fillna(df["run"]))
    models = order_models(df["model"].astype(str))
    fig = make_subplots(
        rows=1, cols=len(models), subplot_titles=[pretrain_name(m) for m in models], horizontal_spacing=0.08
    )
    xcol = _x_column(df, x)
    for c, m in enumerate(models, start=1):
        sub = df[df["model"].astype(str) == m]
        for run, g in sub.groupby(sub["run"].fillna(f"pretrain-{m}").astype(str)):
            g = _thin(g.sort_values([xcol]))
            fig.add_trace(
                go.Scatter(
                    x=g[xcol],
                    y=g["loss"],
                    mode="lines",
                    name=f"{pretrain_name(m)}: {run}",
                    line=dict(color=model_color(m), width=1.5),
                ),
                row=1,
                col=c,
            )
        fig.update_xaxes(title=f"training {xcol}", row=1, col=c)
    levels = no_learning_levels(res)
    for c, m in enumerate(models, start=1):
        if m in levels:
            what, level = levels[m]
            fig.add_hline(
                y=level,
                line=dict(color="#b22222", dash="dot", width=1.3),
                row=1,
                col=c,
                annotation_text=f"no-learning level {what} = {level:.2f}",
                annotation_position="top right",
                annotation_font=dict(size=11, color="#b22222"),
            )
    fig.update_yaxes(title="loss", row=1, col=1)
    style(fig, title or base, height=420)
    several = df.groupby("model")["run"].nunique().max() > 1
    fig.update_layout(showlegend=bool(several), legend=dict(y=1.12), margin=dict(t=120 if several else 90))
    return fig


def no_learning_levels(res: Results) -> dict[str, tuple[str, float]]:
    """{method: (what, level)}: the loss of an encoder that learned nothing, as each pretraining run
    recorded it (``pretraining.no_learning_loss``: ln(K+1) for MoCo's K queue keys, ln(2B-1) for
    SimCLR); methods without such a level (BYOL) are absent."""
    if "no_learning_loss" not in res.pretraining:
        return {}
    pre = res.pretraining[res.pretraining["no_learning_loss"].notna()]
    what = {"moco": "ln(K+1)", "simclr": "ln(2B-1)"}
    return {
        str(r["model"]): (what.get(str(r["model"]), "no-learning level"), float(r["no_learning_loss"]))
        for _, r in pre.iterrows()
    }


def finetuning_loss(
    results: Results | None = None,
    *,
    losses: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    model: str | None = None,
    category_set: str | None = None,
    fold: int | str = 0,
    x: str = "step",
    title: str | None = None,
) -> go.Figure:
    """Fig. A2: fine-tuning loss per training-set size (fold ``fold``, or 'mean' over folds)."""
    res = resolve(results, config=config, losses=losses)
    model = model or str(res.config["cssl_model"])
    df = res.losses[(res.losses["stage"] == "finetune") & (res.losses["model"] == model) & res.losses["loss"].notna()]
    base = f"Supervised fine-tuning loss of {display_name(model)}"
    sets = category_sets(df)
    if not sets or (category_set is not None and category_set not in sets):
        return no_data_figure(title or base, "no data yet: no fine-tuning loss logged")
    cset = category_set or sets[0]
    df = df[df["category_set"] == cset]
    xcol = _x_column(df, x)
    if fold == "mean":
        df = df.groupby(["train_size", xcol], as_index=False)["loss"].mean()
        which = "mean over folds"
    else:
        folds = sorted(df["fold"].dropna().astype(int).unique())
        use = int(fold) if int(fold) in folds else (folds[0] if folds else None)
        df = df[df["fold"] == use] if use is not None else df
        which = f"fold {use}"
    sizes = sorted(df["train_size"].dropna().astype(int).unique())
    colors = sample_colorscale("Viridis", [i / max(len(sizes) - 1, 1) * 0.9 for i in range(len(sizes))])
    fig = go.Figure()
    for size, color in zip(sizes, colors, strict=True):
        g = _thin(df[df["train_size"] == size].sort_values(xcol))
        fig.add_trace(
            go.Scatter(
                x=g[xcol], y=g["loss"], mode="lines", name=f"n = {fmt_int(size)}", line=dict(color=color, width=1.5)
            )
        )
    style(
        fig,
        title or f"{base} \u2014 {set_label(cset, n_categories_of(cset, res.trials, res.grid))}, {which}",
        height=460,
    )
    fig.update_xaxes(title=f"training {xcol}")
    fig.update_yaxes(title="cross-entropy loss")
    return fig


def training_time_table(
    results: Results | None = None,
    *,
    trials: pd.DataFrame | None = None,
    pretraining: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Table B1: pre-training minutes per model; fine-tuning minutes per fold (mean) per size and model."""
    res = resolve(results, config=config, trials=trials, pretraining=pretraining)
    done = done_trials(res.trials, "train_seconds")
    pre = res.pretraining[res.pretraining["seconds"].notna()]
    base = "Training time (Table B1)"
    if done.empty and pre.empty:
        return no_data_figure(title or base, "no data yet: no training times recorded")
    models = order_models(list(done["model"]) + list(pre["model"].dropna()))
    unit, div = ("s", 1.0) if max(list(done["train_seconds"]) + list(pre["seconds"]) or [0]) < 60 else ("min", 60.0)
    header = ["Stage", "Category set", "Training set size n", "Folds"] + [f"{display_name(m)} ({unit})" for m in models]
    rows: list[list[Any]] = []
    pre = pre.assign(_rank=pre["model"].map({m: i for i, m in enumerate(models)})).sort_values("_rank")
    for i, (_, p) in enumerate(pre.iterrows()):  # one row per method under one heading
        cells = ["" for _ in models]
        cells[models.index(str(p["model"]))] = f"{p['seconds'] / div:.1f}"
        arch = p["arch"] if p["arch"] == p["arch"] else "encoder"
        what = f"{pretrain_name(p['model'])} ({arch}, whole run)"
        stage = f"Unsupervised pre-training: {what}" if i == 0 else f"\u2003\u2003\u2003{what}"
        n = "" if p["n_images"] != p["n_images"] else fmt_int(p["n_images"])
        rows.append([stage, "\u2014", n, "\u2014"] + cells)
    for cset in category_sets(done):
        sub = done[done["category_set"] == cset]
        table = sub.pivot_table(index="train_size", columns="model", values="train_seconds", aggfunc="mean")
        folds = sub.groupby("train_size")["fold"].nunique()
        for size, r in table.sort_index().iterrows():
            rows.append(
                [
                    "Supervised fine-tuning",
                    set_label(cset, n_categories_of(cset, sub)),
                    fmt_int(size),
                    str(int(folds.get(size, 0))),
                ]
                + [("" if m not in r or r[m] != r[m] else f"{r[m] / div:.1f}") for m in models]
            )
    columns = list(map(list, zip(*rows, strict=True))) if rows else [[] for _ in header]
    fig = go.Figure(
        go.Table(
            header=dict(values=[f"<b>{h}</b>" for h in header], fill_color="#dde6f0", align="left"),
            cells=dict(
                values=columns,
                align="left",
                height=24,
                fill_color=[["#ffffff" if i % 2 else "#f6f8fa" for i in range(len(rows))]],
            ),
            columnwidth=[2.2, 1.6, 1.2, 0.6] + [1.1] * len(models),
        )
    )
    word = "seconds" if unit == "s" else "minutes"
    style(
        fig,
        title
        or (
            f"{base}<br><sup>fine-tuning: mean {word} per fold over finished folds; "
            f"pre-training: {word} of the whole run, one row for every method</sup>"
        ),
        height=min(160 + 25 * (len(rows) + 1), 900),
    )
    fig.update_layout(margin=dict(l=20, r=20, t=90, b=20))
    return fig


def online_knn_table(pretraining: pd.DataFrame) -> pd.DataFrame:
    """The online kNN curves of ``pretraining`` as one row per encoder and epoch: the numbers behind
    :func:`online_knn`.

    Args:
        pretraining: the run's ``pretraining`` table (``online_knn_curve`` holds a JSON list per encoder).

    Returns:
        Columns model, arch, epoch, knn_accuracy, ci95_low, ci95_high (the Wilson 95 % interval of the
        share of ``queries`` correct queries; NaN when the count was not recorded), queries and
        starting_weights (the same encoder's kNN at the weights its pretraining started from).

    Example:
        >>> online_knn_table(load_results("runs/demo").pretraining)
    """
    columns = ["model", "arch", "epoch", "knn_accuracy", "ci95_low", "ci95_high", "queries", "starting_weights"]
    if pretraining.empty or "online_knn_curve" not in pretraining:
        return pd.DataFrame(columns=columns)
    parts = []
    for r in pretraining[pretraining["online_knn_curve"].notna()].itertuples():
        curve = np.asarray(json.loads(r.online_knn_curve), dtype=float)
        queries = getattr(r, "online_knn_queries", np.nan)
        queries = int(queries) if queries == queries and queries else 0
        if queries:
            lo, hi = proportion_confint(np.round(curve * queries), queries, alpha=0.05, method="wilson")
        else:
            lo = hi = np.full(len(curve), np.nan)
        start = getattr(r, "online_knn_random_init", np.nan)
        parts.append(
            pd.DataFrame(
                {
                    "model": r.model,
                    "arch": r.arch,
                    "epoch": np.arange(1, len(curve) + 1),
                    "knn_accuracy": curve,
                    "ci95_low": lo,
                    "ci95_high": hi,
                    "queries": queries,
                    "starting_weights": np.nan if start is None else start,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)[columns] if parts else pd.DataFrame(columns=columns)


def online_knn(
    results: Results | None = None,
    *,
    pretraining: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    title: str | None = None,
) -> go.Figure:
    """The encoder's online kNN accuracy after every pretraining epoch (``pretraining.online_knn_curve``),
    per method and arch, with the Wilson 95 % interval of each epoch's share of correct queries and the
    same encoder at its starting weights (``online_knn_random_init``) as a dotted line: whether, and
    when, pretraining learned (issue 22). The probe slice is labeled images no cell trains or validates on.

    Example:
        >>> fig = online_knn(load_results("runs/demo"))
    """
    res = resolve(results, config=config, pretraining=pretraining)
    base = "Online kNN accuracy during pre-training"
    table = online_knn_table(res.pretraining)
    if table.empty:
        return no_data_figure(title or base, "no data yet: no online kNN recorded (pretrain.online_knn_images = 0?)")
    fig = go.Figure()
    for (model, arch), curve in table.groupby(["model", "arch"], sort=False, dropna=False):
        queries = int(curve["queries"].iloc[0])
        name = f"{pretrain_name(str(model))} ({arch})"
        color = model_color(str(model))
        y = curve["knn_accuracy"].to_numpy()
        if queries:
            error = dict(
                type="data",
                symmetric=False,
                array=curve["ci95_high"].to_numpy() - y,
                arrayminus=y - curve["ci95_low"].to_numpy(),
                visible=True,
            )
        else:
            error = None
        fig.add_trace(
            go.Scatter(
                x=curve["epoch"],
                y=y,
                mode="lines+markers",
                name=name,
                line=dict(color=color, width=1.8),
                error_y=error,
                hovertemplate=f"{name}, epoch %{{x}}: kNN %{{y:.1%}} ({queries} queries)<extra></extra>",
            )
        )
        start = curve["starting_weights"].iloc[0]
        if start == start:
            fig.add_trace(
                go.Scatter(
                    x=[1, max(1, len(curve))],
                    y=[start, start],
                    mode="lines",
                    name=f"{name}: starting weights {start:.1%}",
                    line=dict(color=color, dash="dot", width=1.3),
                    hoverinfo="skip",
                )
            )
    fig.update_xaxes(title="pre-training epoch", dtick=1)
    fig.update_yaxes(title="online kNN accuracy", tickformat=".0%")
    return style(fig, title or base, height=420)
