"""Helpers shared by the figure builders: 'no data' figures, the log2 size axis, boxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, overload

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.config import display_name, model_color
from analysis.stats import box_stats

FONT = dict(family="Helvetica, Arial, sans-serif", size=13)
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#393b79",
    "#ad494a",
    "#637939",
    "#8c6d31",
    "#843c39",
    "#7b4173",
    "#3182bd",
    "#e6550d",
    "#31a354",
    "#756bb1",
    "#636363",
    "#fd8d3c",
    "#74c476",
    "#9e9ac8",
)


def no_data_figure(title: str, note: str = "no data yet") -> go.Figure:
    """A small figure that only says why it is empty; ``layout.meta['no_data']`` holds the note."""
    fig = go.Figure()
    fig.add_annotation(
        text=note, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=16, color="#777")
    )
    fig.update_layout(
        title=title,
        height=220,
        xaxis_visible=False,
        yaxis_visible=False,
        meta={"no_data": note},
        font=FONT,
        template="plotly_white",
    )
    return fig


def is_no_data(fig: go.Figure) -> bool:
    meta = fig.layout.meta
    return isinstance(meta, dict) and "no_data" in meta


def no_data_note(fig: go.Figure) -> str:
    return str(fig.layout.meta["no_data"]) if is_no_data(fig) else ""


def style(fig: go.Figure, title: str, height: int = 520, **layout: Any) -> go.Figure:
    """Common layout: white template, title, legend on top, fixed height."""
    fig.update_layout(
        title=dict(text=title, x=0.0, xanchor="left", font=dict(size=16)),
        template="plotly_white",
        font=FONT,
        height=height,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0.0),
        margin=dict(l=70, r=30, t=110, b=70),
        **layout,
    )
    return fig


class SizeAxis:
    """Training-set sizes evenly spaced (log2 categories) on a numeric axis.

    Sizes sit at 0, 1, ..., k-1; any other n is placed by interpolating log2(n)
    between neighbours (linear extrapolation outside), so fitted curves and
    reference points line up with the boxes.
    """

    def __init__(self, sizes: Sequence[int]):
        self.sizes = sorted({int(s) for s in sizes})
        self._logs = np.log2(np.asarray(self.sizes, dtype=float))

    @overload
    def pos(self, n: float) -> float: ...
    @overload
    def pos(self, n: np.ndarray | pd.Series | Sequence[float]) -> np.ndarray: ...
    def pos(self, n: Any) -> np.ndarray | float:
        """Axis position of one size (a float) or of several (an array)."""
        x = np.log2(np.asarray(n, dtype=float))
        idx = np.arange(len(self.sizes), dtype=float)
        if len(self.sizes) == 1:
            out = x - self._logs[0]
        else:
            out = np.interp(x, self._logs, idx)
            lo_slope = 1.0 / (self._logs[1] - self._logs[0])
            hi_slope = 1.0 / (self._logs[-1] - self._logs[-2])
            out = np.where(x < self._logs[0], (x - self._logs[0]) * lo_slope, out)
            out = np.where(x > self._logs[-1], idx[-1] + (x - self._logs[-1]) * hi_slope, out)
        return float(out) if np.ndim(out) == 0 else out

    def axis(
        self, title: str = "Training set size n (log\u2082 spacing)", sizes: Sequence[int] | None = None
    ) -> dict[str, Any]:
        """Ticks at ``sizes`` (default: all), range over every size the axis knows."""
        shown = self.sizes if sizes is None else [s for s in self.sizes if s in set(sizes)]
        return dict(
            title=title,
            tickmode="array",
            tickvals=[self.pos(s) for s in shown],
            ticktext=[f"{s:,}".replace(",", "\u2009") for s in shown],
            zeroline=False,
            range=[self.pos(self.sizes[0]) - 0.6, self.pos(self.sizes[-1]) + 0.6],
            showgrid=False,
        )


def model_boxes(
    data: pd.DataFrame,
    metric: str,
    model: str,
    axis: SizeAxis,
    sizes: Sequence[int] | None = None,
    showlegend: bool = True,
    scale: float = 1.0,
) -> go.Box | None:
    """One precomputed Box trace for a model: a box per size (quartiles, min-max whiskers)."""
    sub = data[data["model"] == model]
    if sizes is not None:
        sub = sub[sub["train_size"].isin(list(sizes))]
    if sub.empty:
        return None
    rows = []
    for size, g in sub.groupby("train_size"):
        st = box_stats(g[metric].to_numpy(dtype=float) * scale)
        rows.append((int(size), st))
    rows.sort()
    folds = [int(s["n"]) for _, s in rows]
    return go.Box(
        x=[axis.pos(s) for s, _ in rows],
        q1=[s["q1"] for _, s in rows],
        median=[s["median"] for _, s in rows],
        q3=[s["q3"] for _, s in rows],
        lowerfence=[s["min"] for _, s in rows],
        upperfence=[s["max"] for _, s in rows],
        mean=[s["mean"] for _, s in rows],
        boxmean=False,
        name=display_name(model),
        legendgroup=str(model),
        showlegend=showlegend,
        marker_color=model_color(model),
        line=dict(width=1.5),
        fillcolor=fade(model_color(model)),
        boxpoints=False,
        hovertext=[f"n = {size}, {n} fold{'s' if n != 1 else ''}" for (size, _), n in zip(rows, folds, strict=True)],
        hoverinfo="y+text+name",
    )


def fade(hex_color: str, alpha: float = 0.35) -> str:
    """'#rrggbb' -> 'rgba(r,g,b,alpha)'."""
    h = hex_color.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def fmt_int(n: Any) -> str:
    return f"{int(round(float(n))):,}"


def pct(x: Any, digits: int = 1) -> str:
    return "n/a" if x is None or x != x else f"{100 * float(x):.{digits}f} %"
