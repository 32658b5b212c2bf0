"""Figs. 5 and 10: accuracy given up (DOA) versus labeling time saved, with the knee."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from analysis.config import display_name, model_color
from analysis.figures._common import fmt_int, no_data_figure, pct, style
from analysis.labeling import doa_table
from analysis.results import Results, resolve
from analysis.select import category_sets, set_label


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + len(word) + 1 > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


def doa_vs_time_saved(
    results: Results | None = None,
    *,
    trials: pd.DataFrame | None = None,
    per_class: pd.DataFrame | None = None,
    config: dict[str, Any] | None = None,
    category_set: str | None = None,
    table: pd.DataFrame | None = None,
    title: str | None = None,
    arch: Any = None,
) -> go.Figure:
    """DOA_n = ROA - OA_n (percentage points, fold std as error bars) against TS_n (hours), sizes as
    labels, the knee marked where it is reliable, else the reason there is none; one backbone
    (``arch``, default the first of the table)."""
    res = resolve(results, config=config, trials=trials, per_class=per_class)
    cfg = res.config
    if table is None:
        table = doa_table(res.trials, res.per_class, cfg, res.catalog)
    if "arch" in table.columns and table["arch"].notna().any():
        archs = sorted(table["arch"].dropna().astype(str).unique())
        table = table[table["arch"] == (arch if arch is not None else archs[0])]
    base = "Accuracy given up vs labeling time saved"
    sets = category_sets(table)
    if not sets or (category_set is not None and category_set not in sets):
        return no_data_figure(
            title or base,
            f"no data yet: needs finished trials of both "
            f"{display_name(cfg['cssl_model'])} and {display_name(cfg['reference_model'])}",
        )
    cset = category_set or sets[0]
    t = table[table["category_set"] == cset].sort_values("time_saved_hours").reset_index(drop=True)
    if len(t) < 2:
        return no_data_figure(
            title or base,
            f"no data yet: {display_name(cfg['cssl_model'])} has results for "
            f"only {len(t)} training-set size(s) of {cset}",
        )
    first = t.iloc[0]
    cssl, ref = display_name(first["model"]), display_name(first["reference_model"])
    color = model_color(first["model"])
    time_note = (
        "per-group labeling time: "
        f"{cfg['basic_seconds']:g} s per basic habit, {cfg['complex_seconds']:g} s per complex shape"
        if (t["time_model"] == "per_group").all()
        else f"{cfg['seconds_per_image']:g} s per image"
    )
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=t["time_saved_hours"],
            y=100 * t["doa"],
            mode="lines+markers+text",
            text=[fmt_int(n) for n in t["train_size"]],
            textposition="middle left",
            line=dict(color=color, width=1.5),
            marker=dict(size=9, color=color),
            name=f"{cssl} (mean over folds)",
            error_y=dict(type="data", array=100 * t["oa_std"].fillna(0).to_numpy(), thickness=1, width=4, color=color),
            customdata=t.reindex(columns=["train_size", "n_folds", "oa_mean", "knee_share"]).to_numpy(),
            hovertemplate=(
                "n = %{customdata[0]:,}<br>time saved %{x:.1f} h<br>DOA %{y:.2f} pp"
                "<br>OA %{customdata[2]:.1%} (%{customdata[1]} folds)"
                "<br>the knee in %{customdata[3]:.0%} of fold resamples<extra></extra>"
            ),
        )
    )
    knee = t[t["is_knee"].astype(bool)]
    if len(knee):
        k = knee.iloc[0]
        fig.add_trace(
            go.Scatter(
                x=[k["time_saved_hours"]],
                y=[100 * k["doa"]],
                mode="markers",
                name="knee (max distance to chord; monotone, steps above the fold spread)",
                marker=dict(symbol="star", size=18, color="#d62728", line=dict(width=1, color="black")),
                hoverinfo="skip",
            )
        )
        fig.add_annotation(
            x=k["time_saved_hours"],
            y=100 * k["doa"],
            ax=-90,
            ay=-70,
            showarrow=True,
            arrowhead=2,
            text=(
                f"knee: n = {fmt_int(k['train_size'])}<br>saves {k['time_saved_hours']:.1f} h<br>"
                f"gives up {100 * k['doa']:.1f} pp OA"
                + (
                    f"<br>the knee in {100 * k['knee_share']:.0f} % of fold resamples"
                    if pd.notna(k.get("knee_share"))
                    else ""
                )
            ),
            align="left",
            bgcolor="rgba(255,255,255,0.85)",
            bordercolor="#d62728",
        )
    else:
        note = str(first.get("knee_note") or "no reliable knee")
        fig.add_annotation(
            x=0.98,
            y=0.98,
            xref="paper",
            yref="paper",
            showarrow=False,
            align="right",
            text="<br>".join(_wrap(note, 60)),
            bgcolor="rgba(255,255,255,0.9)",
            bordercolor="#b22222",
            font=dict(size=12, color="#b22222"),
            xanchor="right",
            yanchor="top",
        )
    n_cat = first["n_categories"] if first["n_categories"] == first["n_categories"] else None
    style(
        fig,
        title
        or (
            f"{base} \u2014 {cssl}, {set_label(cset, n_cat)}<br><sup>reference: {ref} at "
            f"n = {fmt_int(first['reference_size'])} (OA {pct(first['reference_oa'])}); {time_note}</sup>"
        ),
        height=500,
    )
    fig.update_xaxes(title="Labeling time saved TS (hours)", rangemode="tozero")
    fig.update_yaxes(title="Decreased overall accuracy DOA (percentage points)", zeroline=True, zerolinecolor="#888")
    return fig
