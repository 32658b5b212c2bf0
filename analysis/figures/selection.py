"""Selection strategies: OA vs n per strategy, labels saved at equal OA against random, and the
images each strategy picked on the map of the embeddings it picked on."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.config import display_name, order_models
from analysis.figures._common import PALETTE, no_data_figure, pct, style
from analysis.figures.data import CATEGORY_PALETTE, category_points
from analysis.results import Results, resolve
from analysis.select import RANDOM, n_categories_of, set_label
from analysis.strategies import labels_saved_table, open_end_limit, strategy_curves

STRATEGY_ORDER = (RANDOM, "balanced", "coreset", "uncertainty", "typiclust", "probcover")


def strategy_color(strategy: str) -> str:
    """A fixed colour per strategy (random first, so it is the same in every figure)."""
    known = list(STRATEGY_ORDER)
    i = known.index(strategy) if strategy in known else len(known) + sum(map(ord, strategy)) % 3
    return PALETTE[i % len(PALETTE)]


def _ordered(strategies: Any) -> list[str]:
    found = set(map(str, strategies))
    return [s for s in STRATEGY_ORDER if s in found] + sorted(found - set(STRATEGY_ORDER))


def selection_curves(
    results: Results | None = None,
    *,
    trials: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    category_set: str | None = None,
    title: str | None = None,
) -> go.Figure:
    """OA vs n (log axis) per selection strategy: fold mean with fold std bars, one panel per model type."""
    res = resolve(results, config=config, trials=trials)
    curves = strategy_curves(res.trials)
    if category_set is not None:
        curves = curves[curves["category_set"] == category_set]
    base = "Overall accuracy per selection strategy"
    if curves.empty:
        return no_data_figure(title or base, "no data yet: no finished trials of several strategies")
    cset = category_set or str(curves["category_set"].iloc[0])
    models = order_models(curves["model"].unique())
    fig = make_subplots(rows=1, cols=len(models), shared_yaxes=True, subplot_titles=[display_name(m) for m in models])
    for col, model in enumerate(models, start=1):
        for strategy in _ordered(curves["selection"].unique()):
            c = curves[(curves["model"] == model) & (curves["selection"] == strategy)].sort_values("train_size")
            if c.empty:
                continue
            fig.add_trace(
                go.Scatter(
                    x=c["train_size"],
                    y=c["mean"],
                    mode="lines+markers",
                    name=strategy,
                    legendgroup=strategy,
                    showlegend=col == 1,
                    line=dict(color=strategy_color(strategy), dash="solid" if strategy == RANDOM else "dot"),
                    error_y=dict(type="data", array=c["std"].fillna(0), visible=True),
                    customdata=c[["std", "n_folds"]],
                    hovertemplate=f"{strategy}, n=%{{x}}: OA %{{y:.1%}} \u00b1 %{{customdata[0]:.1%}} "
                    "(%{customdata[1]} folds)<extra></extra>",
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(type="log", title_text="labeled images n", row=1, col=col)
    fig.update_yaxes(title_text="overall accuracy (fold mean \u00b1 std)", tickformat=".0%", row=1, col=1)
    chosen = res.selections[res.selections["category_set"] == cset]
    encoders = sorted(chosen["encoder"].dropna().astype(str).unique())
    on = f" (picked on the {', '.join(encoders)} encoder's embeddings)" if encoders else ""
    return style(fig, title or f"{base} \u2014 {set_label(cset, n_categories_of(cset, res.trials))}{on}")


def labels_saved(
    results: Results | None = None,
    *,
    trials: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    category_set: str | None = None,
    table: pd.DataFrame | None = None,
    title: str | None = None,
) -> go.Figure:
    """Labels saved at equal OA against random (random's n minus the strategy's interpolated n),
    per model type and strategy, with the 95 % interval of :func:`analysis.strategies.saved_interval`
    as bars (an open end is drawn to the limit of the measured sizes it passes: n minus the largest
    or the smallest measured n); filled markers where the fold-paired difference is a verdict."""
    res = resolve(results, config=config, trials=trials)
    table = labels_saved_table(res.trials) if table is None else table
    if category_set is not None:
        table = table[table["category_set"] == category_set]
    base = "Labels saved at equal accuracy against random selection"
    data = table[table["labels_saved"].notna()]
    if data.empty:
        return no_data_figure(title or base, "no size where a strategy's measured curve reaches random's accuracy")
    cset = category_set or str(data["category_set"].iloc[0])
    measured = strategy_curves(res.trials)
    measured = measured[measured["category_set"] == cset]["train_size"].to_numpy()

    def limits(g: pd.DataFrame, column: str) -> pd.Series:
        return pd.Series(
            [open_end_limit(float(v), float(n), measured) for v, n in zip(g[column], g["train_size"], strict=True)],
            index=g.index,
        )

    fig = go.Figure()
    for (model, strategy), g in data.groupby(["model", "selection"]):
        g = g.sort_values("train_size")
        claim = ~g["verdict"].str.startswith("no verdict")
        fig.add_trace(
            go.Scatter(
                x=g["train_size"],
                y=g["labels_saved"],
                mode="lines+markers",
                name=f"{strategy} \u2014 {display_name(model)}",
                line=dict(
                    color=strategy_color(strategy), dash="solid" if model == order_models(data["model"])[0] else "dash"
                ),
                marker=dict(size=10, symbol=["circle" if c else "circle-open" for c in claim]),
                error_y=dict(  # the 95 % interval; an open end is drawn to the measured limit it passes
                    type="data",
                    symmetric=False,
                    array=(limits(g, "saved_high") - g["labels_saved"]).clip(lower=0),
                    arrayminus=(g["labels_saved"] - limits(g, "saved_low")).clip(lower=0),
                    visible=True,
                ),
                customdata=list(
                    zip(
                        g["n_equal"].round(0),
                        g["mean_diff"] * 100,
                        g["p_adjusted"],
                        g["verdict"],
                        g["saved_ci"],
                        strict=True,
                    )
                ),
                hovertemplate="random n=%{x}, strategy reaches its OA at n=%{customdata[0]}: %{y:+.0f} labels "
                "(%{customdata[4]})<br>"
                "paired diff at n=%{x}: %{customdata[1]:+.1f} pp, Holm-adjusted p=%{customdata[2]:.2g}<br>"
                "%{customdata[3]}<extra></extra>",
            )
        )
    fig.add_hline(y=0, line=dict(color="#888", dash="dot"))
    fig.update_xaxes(type="log", title_text="labeled images n of random selection")
    fig.update_yaxes(title_text="labels saved at random's OA (n \u2212 n_equal)")
    note = f" (random's OA {pct(data['random_mean'].min())} \u2026 {pct(data['random_mean'].max())})"
    return style(fig, title or f"{base} \u2014 {set_label(cset, n_categories_of(cset, res.trials))}{note}")


def map_and_picks(
    selection_map: pd.DataFrame,
    selections: pd.DataFrame,
    category_set: str | None = None,
    train_size: int | None = None,
    fold: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """What :func:`selection_picks` draws: one map (``category_set``, default the first with a map; its
    first backbone and encoder) and the stored picks on that encoder at ``train_size`` and ``fold``
    (defaults: the smallest stored size, its first fold). Returns (map rows, pick rows, the choices:
    ``category_set``, ``arch``, ``encoder``, ``n``, ``fold``); empty frames where there is none."""
    smap = selection_map if category_set is None else selection_map[selection_map["category_set"] == category_set]
    if smap.empty:
        return smap, selections.iloc[:0], {}
    cset = category_set or str(smap["category_set"].iloc[0])
    arch = smap.loc[smap["category_set"] == cset, "arch"].iloc[0]
    smap = smap[(smap["category_set"] == cset) & (smap["arch"] == arch)]
    encoder = str(smap["encoder"].iloc[0])
    smap = smap[smap["encoder"] == encoder]
    picks = selections[
        (selections["category_set"] == cset)
        & (selections["arch"] == arch)
        & (selections["encoder"].astype(str) == encoder)
    ]
    n = int(train_size) if train_size is not None else (int(picks["train_size"].min()) if len(picks) else None)
    picks = picks[picks["train_size"] == n]
    f = int(fold) if fold is not None else (int(picks["fold"].min()) if len(picks) else 0)
    picks = picks[picks["fold"] == f]
    return smap, picks, {"category_set": cset, "arch": arch, "encoder": encoder, "n": n, "fold": f}


def selection_picks(
    results: Results | None = None,
    *,
    selections: pd.DataFrame | None = None,
    selection_map: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    category_set: str | None = None,
    train_size: int | None = None,
    fold: int | None = None,
    title: str | None = None,
) -> go.Figure:
    """The images each strategy picked at one n, on the 2-D t-SNE map of the embeddings it picked on.

    One panel per stored strategy (random's draw is not stored): the set's labeled pool in grey
    (``selection_map``: the selection encoder's fp32 embeddings, at most ``embeddings.max_points``
    images), the picks of (``category_set``, ``train_size``, ``fold``) on top, coloured by category.
    Defaults: the first set with a map, its smallest size with stored picks, the first fold, the
    map's first backbone. The title names the encoder that drove the selection.

    Example:
        >>> fig = selection_picks(load_results("runs/selection"), train_size=48)
    """
    res = resolve(results, config=config, selections=selections, selection_map=selection_map)
    base = "Images each strategy picked"
    smap, picks, where = map_and_picks(res.selection_map, res.selections, category_set, train_size, fold)
    if smap.empty:
        return no_data_figure(title or base, "no data yet: no selection map (a strategy other than random embeds)")
    cset, arch, encoder, n, f = where["category_set"], where["arch"], where["encoder"], where["n"], where["fold"]
    strategies = _ordered(picks["selection"].unique())
    if not strategies:
        at = "" if n is None else f" at n = {n}, fold {f}"
        return no_data_figure(title or base, f"no stored picks of {cset} on the {encoder} encoder{at} yet")
    cols = min(3, len(strategies))
    rows = -(-len(strategies) // cols)
    on_map = smap.set_index("image_id")[["x", "y"]]
    shown = {s: int(picks.loc[picks["selection"] == s, "image_id"].isin(on_map.index).sum()) for s in strategies}
    total = {s: int((picks["selection"] == s).sum()) for s in strategies}
    fig = make_subplots(
        rows=rows,
        cols=cols,
        subplot_titles=[
            f"{s}: {shown[s]} of {total[s]} picks" + (" on the map" if shown[s] < total[s] else "") for s in strategies
        ],
        horizontal_spacing=0.03,
        vertical_spacing=0.1,
    )
    cats = sorted(pd.unique(smap["category"].astype(str)))
    colors = {c: CATEGORY_PALETTE[i % len(CATEGORY_PALETTE)] for i, c in enumerate(cats)}
    legend: set[str] = set()
    for i, strategy in enumerate(strategies):
        row, col = i // cols + 1, i % cols + 1
        fig.add_trace(
            go.Scatter(
                x=smap["x"],
                y=smap["y"],
                mode="markers",
                name="labeled pool",
                legendgroup="pool",
                showlegend=i == 0,
                marker=dict(size=3, color="#c8c8c8"),
                hoverinfo="skip",
            ),
            row=row,
            col=col,
        )
        mine = picks[picks["selection"] == strategy].join(on_map, on="image_id", how="inner")
        for cat, g in mine.groupby(mine["category"].astype(str)):
            marker = dict(size=8, color=colors.get(cat, "#444"), line=dict(color="#222", width=1))
            fig.add_trace(category_points(g, cat, cat not in legend, marker, picked=True), row=row, col=col)
            legend.add(cat)
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False)
    label = set_label(cset, n_categories_of(cset, res.trials))
    style(
        fig,
        title
        or f"{base} at n = {n} (fold {f}), {label}<br><sup>on a t-SNE map of the {encoder} encoder's embeddings "
        f"({arch}), the ones the strategies picked on</sup>",
        height=int(160 + 330 * rows),
    )
    fig.update_layout(  # a legend of up to 19 categories: beside the panels, as in the t-SNE grid
        legend=dict(orientation="v", y=1, x=1.01, yanchor="top", xanchor="left", itemsizing="constant"),
        margin=dict(l=30, r=200, t=100, b=30),
    )
    fig.update_annotations(font_size=11)
    return fig
