"""Grid progress and the summary sentences the paper writes by hand, computed."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.config import display_name
from analysis.select import category_sets, done_trials, latest_trials, n_categories_of, set_label

CELL_COLUMNS = ["cell_id", "model", "category_set", "train_size", "fold", "state", "reason"]


def cell_states(grid: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Every planned cell with its state: done, skipped, failed or missing (no trials row yet).

    Cells that only appear in ``trials`` (no grid yet) are listed too.
    """
    latest = latest_trials(trials)
    by_cell = latest[latest["cell_id"].notna()].set_index("cell_id")
    rows = []
    seen: set[str] = set()
    for _, g in grid.iterrows():
        cell = str(g["cell_id"])
        seen.add(cell)
        base = {k: g[k] for k in ("model", "category_set", "train_size", "fold")}
        if str(g["planned"]) == "skipped":
            rows.append({"cell_id": cell, **base, "state": "skipped", "reason": g["reason"]})
        elif cell in by_cell.index:
            t = by_cell.loc[cell]
            state = str(t["status"]) if t["status"] in ("done", "skipped", "failed") else "done"
            rows.append({"cell_id": cell, **base, "state": state, "reason": t["message"]})
        else:
            rows.append({"cell_id": cell, **base, "state": "missing", "reason": None})
    for cell, t in by_cell.iterrows():
        if str(cell) not in seen:
            state = str(t["status"]) if t["status"] in ("done", "skipped", "failed") else "done"
            rows.append({"cell_id": str(cell), **{k: t[k] for k in ("model", "category_set", "train_size", "fold")},
                         "state": state, "reason": t["message"]})
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def grid_progress(grid: pd.DataFrame, trials: pd.DataFrame) -> dict[str, int]:
    """Counts of planned cells per state plus the total."""
    states = cell_states(grid, trials)
    out = {s: int((states["state"] == s).sum()) for s in ("done", "skipped", "failed", "missing")}
    out["total"] = int(len(states))
    return out


def _pp(x: float) -> str:
    return f"{100 * x:+.1f} percentage points"


def knee_sentences(doa: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    """Per category set: the knee size, the hours it saves and the accuracy it gives up."""
    out = []
    for cset in category_sets(doa):
        t = doa[doa["category_set"] == cset]
        first = t.iloc[0]
        label = set_label(cset, None if first["n_categories"] != first["n_categories"] else int(first["n_categories"]))
        cssl, ref = display_name(first["model"]), display_name(first["reference_model"])
        knee = t[t["is_knee"].astype(bool)]
        if knee.empty:
            out.append(f"{label}: not enough training-set sizes of {cssl} yet to locate the knee of the DOA curve.")
            continue
        k = knee.iloc[0]
        time = ("per-group labeling times" if k["time_model"] == "per_group"
                else f"{cfg['seconds_per_image']:g} s per image")
        out.append(
            f"{label}: the knee of the DOA curve of {cssl} is at n = {int(k['train_size']):,}; labeling "
            f"{int(k['train_size']):,} instead of {int(k['reference_size']):,} images saves "
            f"{k['time_saved_hours']:.1f} h ({time}) at the expense of {100 * k['doa']:.1f} % overall accuracy "
            f"relative to {ref} at n = {int(k['reference_size']):,} (OA {100 * k['reference_oa']:.1f} %)."
        )
    return out


def advantage_sentences(trials: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    """Average CSSL advantage over the reference at small sizes, and the comparison at the largest size."""
    done = done_trials(trials)
    cssl, ref = str(cfg["cssl_model"]), str(cfg["reference_model"])
    limit = int(cfg["advantage_max_size"])
    out = []
    for cset in category_sets(done):
        sub = done[done["category_set"] == cset]
        means = sub.groupby(["model", "train_size"])["overall_accuracy"].agg(["mean", "std", "count"])
        if cssl not in means.index.get_level_values(0) or ref not in means.index.get_level_values(0):
            continue
        a, b = means.loc[cssl], means.loc[ref]
        both = a.index.intersection(b.index)
        if len(both) == 0:
            continue
        label = set_label(cset, n_categories_of(cset, sub))
        small = [s for s in both if s <= limit]
        if small:
            diff = float(np.mean([a.loc[s, "mean"] - b.loc[s, "mean"] for s in small]))
            out.append(f"{label}: average advantage of {display_name(cssl)} over {display_name(ref)} at n \u2264 "
                       f"{limit:,}: {_pp(diff)} OA (mean over {len(small)} size{'s' if len(small) != 1 else ''}).")
        top = int(max(both))

        def desc(row: pd.Series) -> str:
            spread = f" \u00b1 {100 * row['std']:.1f} %" if row["count"] > 1 and row["std"] == row["std"] else ""
            return f"{100 * row['mean']:.1f} %{spread}"

        out.append(f"{label}: at n = {top:,}, {display_name(cssl)} reaches OA {desc(a.loc[top])} and "
                   f"{display_name(ref)} {desc(b.loc[top])} (mean \u00b1 std over folds).")
    return out


def generalization_sentences(trials: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    done = done_trials(trials, "generalization_accuracy")
    cssl, ref = str(cfg["cssl_model"]), str(cfg["reference_model"])
    out = []
    for cset in category_sets(done):
        sub = done[done["category_set"] == cset]
        m = sub.groupby(["model", "train_size"])["generalization_accuracy"].mean()
        if cssl not in m.index.get_level_values(0) or ref not in m.index.get_level_values(0):
            continue
        both = m.loc[cssl].index.intersection(m.loc[ref].index)
        if len(both) == 0:
            continue
        diff = float(np.mean([m.loc[(cssl, s)] - m.loc[(ref, s)] for s in both]))
        camp = ", ".join(sub["generalization_campaign"].dropna().astype(str).unique()) or "the unseen campaign"
        out.append(f"{set_label(cset, n_categories_of(cset, sub))}: on {camp}, {display_name(cssl)} differs from "
                   f"{display_name(ref)} by {_pp(diff)} on average over {len(both)} size{'s' if len(both) != 1 else ''}.")
    return out


FAR_EXTRAPOLATION = 100  # answers beyond this multiple of the largest size are not quoted as numbers


def answer_sentences(answers: pd.DataFrame) -> list[str]:
    """'How many labeled images to reach X % OA?' from the learning-curve fits."""
    out = []
    for (cset, model), g in answers.groupby(["category_set", "model"], sort=False):
        parts = []
        for _, r in g.iterrows():
            if r["n"] is None or r["n"] != r["n"]:
                parts.append(f"{100 * r['target']:.0f} %: not reached (asymptote a = {100 * r['a']:.1f} %)")
            elif r["n"] > FAR_EXTRAPOLATION * r["max_size"]:
                parts.append(
                    f"{100 * r['target']:.0f} %: out of reach of this study (the fit needs more than "
                    f"{FAR_EXTRAPOLATION}x the largest size {int(r['max_size']):,}; asymptote a = {100 * r['a']:.1f} %)"
                )
            else:
                ci = ""
                if r["low"] is not None and r["low"] == r["low"]:
                    hi = f"{r['high']:,.0f}" if r["high"] is not None and r["high"] == r["high"] else "\u221e"
                    ci = f" (95 % CI {r['low']:,.0f}\u2013{hi})"
                where = ""
                if r["n"] < r["min_size"]:
                    where = f", extrapolated below the smallest size {int(r['min_size']):,}"
                elif r["n"] > r["max_size"]:
                    where = f", extrapolated beyond the largest size {int(r['max_size']):,}"
                parts.append(f"{100 * r['target']:.0f} %: n \u2248 {r['n']:,.0f}{ci}{where}")
        out.append(f"{display_name(model)} ({cset}): " + "; ".join(parts) + ".")
    return out
