"""Data figures: class distribution (Fig. 1), t-SNE grid (Fig. 8) and F1 versus class share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots
from scipy import stats

from analysis.config import display_name, model_color, order_models
from analysis.figures._common import fmt_int, no_data_figure, style
from analysis.results import Results, resolve
from analysis.select import archs_of, category_sets, comparable, n_categories_of, set_label

# Kelly's 20 colours of maximum contrast (white and black left out): distinct for 19 categories.
CATEGORY_PALETTE = (
    "#F3C300",
    "#875692",
    "#F38400",
    "#A1CAF1",
    "#BE0032",
    "#C2B280",
    "#848482",
    "#008856",
    "#E68FAC",
    "#0067A5",
    "#F99379",
    "#604E97",
    "#F6A600",
    "#B3446C",
    "#DCD300",
    "#882D17",
    "#8DB600",
    "#654522",
    "#E25822",
    "#2B3D26",
)
ROLE_PRIORITY = ("labeled", "generalization", "pretrain")
CAMPAIGN_COLORS = ("#e6b400", "#e377c2", "#1f77b4", "#2ca02c", "#9467bd", "#8c564b")
STAGE_ORDER = ("before_pretraining", "after_pretraining", "after_finetuning")
STAGE_NAMES = {
    "before_pretraining": "before pre-training",
    "after_pretraining": "after pre-training (Unsup)",
    "after_finetuning": "after fine-tuning (Semisup)",
}


def class_distribution(
    results: Results | None = None,
    *,
    dataset: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    title: str | None = None,
) -> go.Figure:
    """Fig. 1: images per category for every campaign, sorted by the first labeled campaign."""
    res = resolve(results, config=config, dataset=dataset)
    df = res.dataset[res.dataset["count"].notna() & res.dataset["category"].notna()]
    base = "Class distribution per campaign"
    if df.empty:
        return no_data_figure(title or base, "no data yet: no dataset table")
    campaigns = list(pd.unique(df["campaign"].astype(str)))
    chosen = []
    for camp in campaigns:
        sub = df[df["campaign"].astype(str) == camp]
        roles = list(pd.unique(sub["role"].astype(str)))
        role = next((r for r in ROLE_PRIORITY if r in roles), roles[0])
        chosen.append((camp, role, sub[sub["role"].astype(str) == role].groupby("category")["count"].sum()))
    # Paper order: labeled campaign(s), pre-training-only campaigns, then the unseen one(s).
    rank = {"labeled": 0, "pretrain": 1, "generalization": 2}
    chosen.sort(key=lambda c: rank.get(c[1], 3))
    labeled = next((c for c in chosen if c[1] == "labeled"), chosen[0])
    totals = pd.concat([c[2] for c in chosen], axis=1).fillna(0).sum(axis=1)
    first = labeled[2].reindex(totals.index).fillna(-1)
    order = sorted(totals.index, key=lambda c: (-first[c], -totals[c], c))
    fig = go.Figure()
    for i, (camp, role, counts) in enumerate(chosen):
        counts = counts.reindex(order)
        total = counts.sum()
        fig.add_trace(
            go.Bar(
                y=order,
                x=counts.fillna(0),
                orientation="h",
                name=f"{res.campaign(camp)} ({role}, {fmt_int(total)} images)",
                marker_color=CAMPAIGN_COLORS[i % len(CAMPAIGN_COLORS)],
                customdata=(counts / total).fillna(0),
                hovertemplate="%{y}: %{x:,} images (%{customdata:.1%})<extra>" + res.campaign(camp) + "</extra>",
            )
        )
    style(
        fig,
        title or f"{base} (sorted by {res.campaign(labeled[0])})",
        height=int(160 + 18 * len(order) * max(1.0, len(chosen) / 1.5)),
        barmode="group",
        bargap=0.25,
    )
    fig.update_yaxes(categoryorder="array", categoryarray=order[::-1], title=None)
    fig.update_xaxes(title="Number of images")
    return fig


def category_points(
    points: pd.DataFrame, category: str, showlegend: bool, marker: dict[str, Any], picked: bool = False
) -> go.Scatter:
    """The map points (``x``, ``y``, ``image_id``) of one category, in the legend group of the category;
    ``picked``: the hover also names the pick's ``rank``."""
    extra = " (picked #%{customdata[1]})" if picked else ""
    return go.Scatter(
        x=points["x"],
        y=points["y"],
        mode="markers",
        name=category,
        legendgroup=category,
        showlegend=showlegend,
        marker=marker,
        customdata=points[["image_id", "rank"] if picked else ["image_id"]].astype(str).to_numpy(),
        hovertemplate="%{customdata[0]}" + extra + "<extra>" + category + "</extra>",
    )


def tsne_grid(
    results: Results | None = None,
    *,
    embeddings: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    model: str | None = None,
    max_points: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """Fig. 8: 2-D embeddings, rows = stages, columns = training sizes (largest first), colour = category."""
    res = resolve(results, config=config, embeddings=embeddings)
    emb = res.embeddings[res.embeddings["x"].notna() & res.embeddings["y"].notna()]
    base = "t-SNE of encoder embeddings"
    if emb.empty:
        return no_data_figure(title or base, "no data yet: the embeddings table is absent or empty")
    models: list[str | None] = list(order_models(emb["model"].dropna().astype(str))) or [None]
    model = model or (str(res.config["cssl_model"]) if str(res.config["cssl_model"]) in models else models[0])
    if model is not None:
        emb = emb[emb["model"].astype(str) == model]
    max_points = int(max_points or res.config["tsne_max_points"])
    stages = [s for s in STAGE_ORDER if (emb["stage"] == s).any()]
    stages += sorted(set(emb["stage"].dropna().astype(str)) - set(stages))
    sizes = sorted(emb["train_size"].dropna().astype(int).unique(), reverse=True) or [None]
    cats = list(pd.unique(emb["category"].astype(str)))
    colors = {c: CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)] for i, c in enumerate(sorted(cats))}
    rank = {c: i for i, c in enumerate(sorted(cats))}
    letters = "abcdefghijklmnopqrstuvwxyz"
    titles, panels = [], []
    for r, stage in enumerate(stages):
        for c, size in enumerate(sizes):
            sub = emb[emb["stage"] == stage]
            if size is not None:
                sub = sub[(sub["train_size"] == size) | sub["train_size"].isna()]
            k = r * len(sizes) + c
            titles.append(
                f"({letters[k % 26]}) {STAGE_NAMES.get(stage, stage)}"
                + (f"<br>n = {fmt_int(size)}" if size is not None else "")  # two lines: fits a narrow panel
            )
            panels.append((r + 1, c + 1, sub))
    fig = make_subplots(
        rows=len(stages), cols=len(sizes), subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.08
    )
    shown: set[str] = set()
    rng = np.random.default_rng(int(res.config["seed"]))
    for row, col, sub in panels:
        if len(sub) > max_points:
            sub = sub.iloc[np.sort(rng.choice(len(sub), size=max_points, replace=False))]
        for cat in sorted(pd.unique(sub["category"].astype(str))):
            g = sub[sub["category"].astype(str) == cat]
            trace = category_points(g, cat, cat not in shown, dict(size=4, color=colors[cat], opacity=0.75))
            fig.add_trace(trace.update(legendrank=rank[cat]), row=row, col=col)
            shown.add(cat)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    style(fig, title or f"{base} \u2014 {display_name(model)}", height=int(150 + 290 * len(stages)))
    fig.update_layout(
        legend=dict(orientation="v", y=1, x=1.01, yanchor="top", xanchor="left", itemsizing="constant"),
        margin=dict(l=30, r=200, t=100, b=30),
    )
    fig.update_annotations(font_size=11)
    return fig


def f1_vs_share(
    results: Results | None = None,
    *,
    per_class: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    category_set: str | None = None,
    models: Sequence[str] | None = None,
    train_size: int | None = None,
    split: str = "validation",
    title: str | None = None,
    arch: Any = None,
) -> go.Figure:
    """Per-category F1 (mean over folds) against the category's share of the training subset, of one
    backbone (``arch``; default the first recorded) and comparable cells only."""
    res = resolve(results, config=config, per_class=per_class)
    pc = comparable(
        res.per_class, res.trials, arch=arch if arch is not None else archs_of(res.trials, res.per_class)[0]
    )
    pc = pc[(pc["split"] == split) & pc["f1"].notna() & pc["train_count"].notna()]
    base = "Per-category F1 vs share of the training set"
    sets = category_sets(pc)
    if not sets or (category_set is not None and category_set not in sets):
        return no_data_figure(title or base, "no data yet: no per-class scores with training counts")
    cset = category_set or sets[0]
    pc = pc[pc["category_set"] == cset].copy()
    if train_size is not None:
        pc = pc[pc["train_size"] == train_size]
    total = pc.groupby("cell_id")["train_count"].transform("sum")
    pc["share"] = pc["train_count"] / total.where(total > 0)
    agg = pc.groupby(["model", "train_size", "category"], as_index=False).agg(
        share=("share", "mean"), f1=("f1", "mean"), folds=("fold", "nunique")
    )
    agg = agg[agg["share"] > 0]
    models = [m for m in (models or order_models(agg["model"])) if (agg["model"] == m).any()]
    if agg.empty or not models:
        return no_data_figure(title or base, "no data yet: no categories with training images")
    fig = go.Figure()
    for m in models:
        g = agg[agg["model"] == m]
        rho = stats.spearmanr(g["share"], g["f1"]).statistic if len(g) > 2 and g["f1"].nunique() > 1 else float("nan")
        fig.add_trace(
            go.Scatter(
                x=100 * g["share"],
                y=g["f1"],
                mode="markers",
                name=f"{display_name(m)} (Spearman \u03c1 = {rho:.2f})",
                marker=dict(color=model_color(m), size=7, opacity=0.7, line=dict(width=0.5, color="white")),
                customdata=np.stack([g["category"].astype(str), g["train_size"], g["folds"]], axis=-1),
                hovertemplate=(
                    "%{customdata[0]}<br>n = %{customdata[1]}, share %{x:.2f} %<br>F1 %{y:.2f} "
                    "(%{customdata[2]} folds)<extra>" + display_name(m) + "</extra>"
                ),
            )
        )
    sizes = "all sizes" if train_size is None else f"n = {fmt_int(train_size)}"
    style(fig, title or f"{base} \u2014 {set_label(cset, n_categories_of(cset, pc))}, {split} set, {sizes}", height=480)
    ticks = [0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100]
    fig.update_xaxes(
        title="share of the category in the training subset (%, log scale)",
        type="log",
        tickvals=ticks,
        ticktext=[f"{t:g} %" for t in ticks],
    )
    fig.update_yaxes(title="F1 score", range=[-0.03, 1.03])
    return fig
