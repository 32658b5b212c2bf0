"""Selection strategies: OA vs n per strategy, and labels saved at equal OA against random."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.config import display_name, order_models
from analysis.figures._common import PALETTE, no_data_figure, pct, style
from analysis.results import Results, resolve
from analysis.select import RANDOM, n_categories_of, set_label
from analysis.strategies import labels_saved_table, strategy_curves

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
    per model type and strategy; filled markers where the fold-paired difference is a verdict."""
    res = resolve(results, config=config, trials=trials)
    table = labels_saved_table(res.trials) if table is None else table
    if category_set is not None:
        table = table[table["category_set"] == category_set]
    base = "Labels saved at equal accuracy against random selection"
    data = table[table["labels_saved"].notna()]
    if data.empty:
        return no_data_figure(title or base, "no size where a strategy's measured curve reaches random's accuracy")
    cset = category_set or str(data["category_set"].iloc[0])
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
                customdata=list(
                    zip(g["n_equal"].round(0), g["mean_diff"] * 100, g["p_adjusted"], g["verdict"], strict=True)
                ),
                hovertemplate="random n=%{x}, strategy reaches its OA at n=%{customdata[0]}: %{y:+.0f} labels<br>"
                "paired diff at n=%{x}: %{customdata[1]:+.1f} pp, Holm-adjusted p=%{customdata[2]:.2g}<br>"
                "%{customdata[3]}<extra></extra>",
            )
        )
    fig.add_hline(y=0, line=dict(color="#888", dash="dot"))
    fig.update_xaxes(type="log", title_text="labeled images n of random selection")
    fig.update_yaxes(title_text="labels saved at random's OA (n \u2212 n_equal)")
    note = f" (random's OA {pct(data['random_mean'].min())} \u2026 {pct(data['random_mean'].max())})"
    return style(fig, title or f"{base} \u2014 {set_label(cset, n_categories_of(cset, res.trials))}{note}")
