"""Grid progress and the summary sentences the paper writes by hand, computed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from analysis.config import display_name
from analysis.confusion import KAPPA_SLIGHT, fold_agreement
from analysis.labeling import KNEE_RESAMPLES
from analysis.select import (
    ANY,
    archs_of,
    category_sets,
    done_trials,
    latest_trials,
    n_categories_of,
    set_label,
)
from analysis.stats import ALPHA, QUOTE_LIMIT, paired_difference_table

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
            rows.append(
                {
                    "cell_id": str(cell),
                    **{k: t[k] for k in ("model", "category_set", "train_size", "fold")},
                    "state": state,
                    "reason": t["message"],
                }
            )
    return pd.DataFrame(rows, columns=CELL_COLUMNS)


def grid_progress(grid: pd.DataFrame, trials: pd.DataFrame) -> dict[str, int]:
    """Counts of planned cells per state plus the total."""
    states = cell_states(grid, trials)
    out = {s: int((states["state"] == s).sum()) for s in ("done", "skipped", "failed", "missing")}
    out["total"] = int(len(states))
    return out


def _pp(x: float) -> str:
    """A difference of accuracies in percentage points."""
    return f"{100 * x:+.1f} pp"


def p_text(p: float, n_pairs: int) -> str:
    """'Holm-adjusted p = 0.012', 'not significant, Holm-adjusted p = 0.090' or why there is no test
    (``p`` is the family-adjusted p; significant means p <= :data:`~analysis.stats.ALPHA`)."""
    if n_pairs < 2 or p != p:
        return "one fold, no test" if n_pairs < 2 else "no test possible"
    return f"Holm-adjusted p = {p:.3f}" if p <= ALPHA else f"not significant, Holm-adjusted p = {p:.3f}"


def arch_label(label: str, arch: Any, archs: list[Any]) -> str:
    """The set label, with the backbone when the run has more than one."""
    return f"{label}, {arch}" if len(archs) > 1 and arch is not None else label


def knee_sentences(doa: pd.DataFrame, cfg: dict[str, Any]) -> list[str]:
    """Per category set: the knee size, the hours it saves and the accuracy it gives up (in pp),
    or why there is no reliable knee."""
    out = []
    archs = list(pd.unique(doa["arch"])) if "arch" in doa.columns and len(doa) else [None]
    for arch in archs:
        none = arch is None or arch != arch
        mine = doa if "arch" not in doa.columns else doa[doa["arch"].isna()] if none else doa[doa["arch"] == arch]
        out += _knee_sentences(mine, cfg, arch, archs)
    return out


def noninferiority_sentence(label: str, t: pd.DataFrame) -> str | None:
    """The DOA claim with its interval: the smallest n from which on the DOA's upper 95 % bound is
    below the margin (sizes tested from the largest down, :func:`analysis.labeling.smallest_noninferior`)."""
    if "doa_high" not in t.columns or not t["doa_high"].notna().any():
        return None
    first = t.iloc[0]
    margin = 100 * float(first["doa_margin"])
    cssl, ref = display_name(first["model"]), display_name(first["reference_model"])
    against = f"{ref} at n = {int(first['reference_size']):,}"

    def ci(r: Any) -> str:
        return f"DOA {100 * r['doa']:+.1f} pp, 95 % CI {100 * r['doa_low']:+.1f} to {100 * r['doa_high']:+.1f} pp"

    n = first.get("smallest_noninferior")
    if n is None or n != n:
        top = t.loc[t["train_size"].idxmax()]
        return (
            f"{label}: no size of {cssl} is shown within {margin:g} pp of {against} (DOA upper 95 % bound "
            f"below {margin:g} pp); at the largest size n = {int(top['train_size']):,}: {ci(top)}."
        )
    r = t[t["train_size"] == int(n)].iloc[0]
    return (
        f"{label}: the smallest n at which {cssl} is within {margin:g} pp of {against} (DOA upper 95 % "
        f"bound below {margin:g} pp, at that size and every larger one; tested from the largest size down) is "
        f"n = {int(n):,}: {ci(r)}."
    )


def _knee_sentences(doa: pd.DataFrame, cfg: dict[str, Any], arch: Any, archs: list[Any]) -> list[str]:
    out = []
    for cset in category_sets(doa):
        t = doa[doa["category_set"] == cset]
        first = t.iloc[0]
        label = arch_label(
            set_label(cset, None if first["n_categories"] != first["n_categories"] else int(first["n_categories"])),
            arch,
            archs,
        )
        cssl, ref = display_name(first["model"]), display_name(first["reference_model"])
        claim = noninferiority_sentence(label, t)
        if claim:
            out.append(claim)
        knee = t[t["is_knee"].astype(bool)]
        if knee.empty:
            note = first.get("knee_note") or "no reliable knee"
            out.append(f"{label}: {note} ({cssl}, sizes {', '.join(f'{n:,}' for n in sorted(t['train_size']))}).")
            continue
        k = knee.iloc[0]
        time = (
            "per-group labeling times"
            if k["time_model"] == "per_group"
            else f"{cfg['seconds_per_image']:g} s per image"
        )
        out.append(
            f"{label}: the knee of the DOA curve of {cssl} is at n = {int(k['train_size']):,}{knee_position(t, k)}; "
            "labeling "
            f"{int(k['train_size']):,} instead of {int(k['reference_size']):,} images saves "
            f"{k['time_saved_hours']:.1f} h ({time}) " + knee_cost(k, ref)
        )
    return out


def knee_position(t: pd.DataFrame, k: Any) -> str:
    """How firm the knee's position is: its share of the fold resamples (``knee_share``) and the
    runner-up size's, in parentheses; empty without shares (one fold).

    Example: " (the knee in 53 % of 1,000 resamples of the folds; n = 1,024 in 41 %)"
    """
    if "knee_share" not in t or not np.isfinite(float(k["knee_share"])):
        return ""
    shares = pd.to_numeric(t["knee_share"], errors="coerce")
    text = f" (the knee in {100 * float(k['knee_share']):.0f} % of {KNEE_RESAMPLES:,} resamples of the folds"
    others = t.assign(share=shares)[t["train_size"] != k["train_size"]].sort_values("share", ascending=False)
    if len(others) and others["share"].iloc[0] > 0:
        text += f"; n = {int(others['train_size'].iloc[0]):,} in {100 * float(others['share'].iloc[0]):.0f} %"
    return text + ")"


def knee_cost(k: Any, ref: str) -> str:
    """What the knee gives up against the reference, with the DOA's 95 % interval and what that
    interval allows one to say (with 3 folds it spans several pp, so the point alone is no claim)."""
    doa, lo, hi = 100 * float(k["doa"]), k.get("doa_low"), k.get("doa_high")
    cost = (
        f"at the expense of {doa:.1f} pp overall accuracy relative to"
        if doa >= 0
        else f"and scores {-doa:.1f} pp above"
    )
    against = f"{cost} {ref} at n = {int(k['reference_size']):,} (OA {100 * k['reference_oa']:.1f} %"
    if lo is None or hi is None or lo != lo or hi != hi:  # a single fold: no interval
        return f"{against}; fold spread {100 * k['fold_spread']:.1f} pp; no interval with one fold)."
    lo, hi = 100 * float(lo), 100 * float(hi)
    if lo > 0:
        reading = "the interval confirms the loss"
    elif hi < 0:
        reading = "the interval confirms the gain"
    else:
        reading = "the interval spans both signs: no difference is shown"
    margin = k.get("doa_margin")
    if margin is not None and margin == margin:
        m = 100 * float(margin)
        reading += f"; within the {m:g} pp margin: " + ("yes" if hi < m else "not shown")
    return f"{against}; DOA {doa:+.1f} pp, 95 % CI {lo:+.1f} to {hi:+.1f} pp: {reading})."


def test_text(paired: pd.DataFrame) -> str:
    """How the p-values of a sentence were made: the test, the design it corrects for, the family."""
    r = paired.iloc[0]
    if str(r["test"]) == "wilcoxon":
        how = "Wilcoxon signed-rank test"
    else:
        how = (
            f"t test corrected for overlapping folds ({r['protocol']} protocol, {int(r['k'])} folds, "
            f"fold correlation {r['rho']:.2f}; Nadeau-Bengio variance factor)"
        )
    return f"{how}; significant: Holm-adjusted p \u2264 {ALPHA:g}"


def per_size_sentence(label: str, paired: pd.DataFrame, what: str) -> str:
    """One sentence per category set: the fold-paired difference at every size, each with its
    Holm-adjusted p-value; the verdict names the family the adjustment ran over."""
    parts = [
        f"n = {int(r['train_size']):,}: {_pp(r['mean_diff'])} ({p_text(r['p_adjusted'], int(r['n_pairs']))})"
        for _, r in paired.sort_values("train_size").iterrows()
    ]
    sig = paired[paired["significant"].astype(bool) & (paired["n_pairs"] >= 2)]
    family = paired["family"].iloc[0]

    def claim(rows: pd.DataFrame, word: str) -> str:
        sizes = ", ".join(f"{int(n):,}" for n in rows["train_size"])
        ps = ", ".join(f"{p:.3f}" for p in rows["p_adjusted"])
        return f"significantly {word} at n = {sizes} (Holm-adjusted p = {ps} over {family})"

    verdict = []
    if (sig["mean_diff"] > 0).any():
        verdict.append(claim(sig[sig["mean_diff"] > 0], "higher"))
    if (sig["mean_diff"] < 0).any():
        verdict.append(claim(sig[sig["mean_diff"] < 0], "lower"))
    if not verdict:
        verdict.append(f"no size with a significant difference (Holm-adjusted p \u2264 {ALPHA:g} over {family})")
    signs = {np.sign(d) for d in paired["mean_diff"] if d == d and d != 0}
    mixed = " The sign changes with the size, so no single average is quoted." if len(signs) > 1 else ""
    return (
        f"{label}: {what}, paired by fold, per size: "
        + "; ".join(parts)
        + ". Verdict: "
        + "; ".join(verdict)
        + "."
        + mixed
        + f" ({test_text(paired)}.)"
    )


def advantage_sentences(trials: pd.DataFrame, cfg: dict[str, Any], paired: pd.DataFrame | None = None) -> list[str]:
    """The fold-paired CSSL-minus-reference difference at every size up to ``advantage_max_size``
    (Holm-adjusted p-value beside each), and both models' OA at the largest size of the run; per
    backbone when the run has more than one (the sentence names it)."""
    cssl, ref = str(cfg["cssl_model"]), str(cfg["reference_model"])
    if paired is None:
        paired = paired_difference_table(trials, cssl, ref)
    limit = int(cfg["advantage_max_size"])
    out = []
    archs = archs_of(trials)
    for arch in archs:
        done = done_trials(trials, arch=arch)
        for cset in category_sets(done):
            sub = done[done["category_set"] == cset]
            means = sub.groupby(["model", "train_size"])["overall_accuracy"].agg(["mean", "std", "count"])
            if cssl not in means.index.get_level_values(0) or ref not in means.index.get_level_values(0):
                continue
            a, b = means.loc[cssl], means.loc[ref]
            both = a.index.intersection(b.index)
            if len(both) == 0:
                continue
            label = arch_label(set_label(cset, n_categories_of(cset, sub)), arch, archs)
            mine = paired[paired["arch"].isna()] if arch is None or arch != arch else paired[paired["arch"] == arch]
            pt = mine[(mine["category_set"] == cset) & (mine["train_size"] <= limit)]
            if len(pt):
                out.append(per_size_sentence(label, pt, f"{display_name(cssl)} minus {display_name(ref)} in OA"))
            top = int(max(both))

            def desc(row: pd.Series) -> str:
                spread = f" \u00b1 {100 * row['std']:.1f} pp" if row["count"] > 1 and row["std"] == row["std"] else ""
                return f"{100 * row['mean']:.1f} %{spread}"

            out.append(
                f"{label}: at n = {top:,} (the largest size of this run), {display_name(cssl)} reaches OA "
                f"{desc(a.loc[top])} and {display_name(ref)} {desc(b.loc[top])} (mean \u00b1 std over folds)."
            )
    return out


def generalization_sentences(
    trials: pd.DataFrame,
    cfg: dict[str, Any],
    campaign: Callable[[str], str] = str,
    confusion: pd.DataFrame | None = None,
) -> list[str]:
    """Per size and fold-paired, the CSSL-minus-reference accuracy on the unseen campaign, and
    which models agree with its true categories barely beyond chance (:func:`one_class_sentences`)."""
    cssl, ref = str(cfg["cssl_model"]), str(cfg["reference_model"])
    paired = paired_difference_table(trials, cssl, ref, metric="generalization_accuracy")
    out = []
    archs = archs_of(trials)
    for arch in archs:
        done = done_trials(trials, "generalization_accuracy", arch=arch)
        mine = paired[paired["arch"].isna()] if arch is None else paired[paired["arch"] == arch]
        for cset in category_sets(done):
            sub = done[done["category_set"] == cset]
            camps = [campaign(c) for c in sub["generalization_campaign"].dropna().astype(str).unique()]
            camp = ", ".join(camps) or "the unseen campaign"
            label = arch_label(set_label(cset, n_categories_of(cset, sub)), arch, archs)
            pt = mine[mine["category_set"] == cset]
            if len(pt):
                out.append(per_size_sentence(label, pt, f"on {camp}, {display_name(cssl)} minus {display_name(ref)}"))
            if confusion is not None and len(sub):
                out += one_class_sentences(confusion, cset, int(sub["train_size"].max()), label, camp, trials, arch)
    return out


def one_class_sentences(
    confusion: pd.DataFrame,
    category_set: str,
    size: int,
    label: str,
    where: str,
    trials: pd.DataFrame | None = None,
    arch: Any = ANY,
    split: str = "generalization",
) -> list[str]:
    """Models at ``size`` whose every fold agrees with the true categories of ``split`` barely
    beyond chance: each fold's Cohen's kappa has its one-sided upper bound below
    :data:`KAPPA_SLIGHT`, at level 1 - ALPHA / m (Bonferroni over the m models tested at that size). Requiring every
    fold is an intersection-union test: the claim's false-positive rate is at most ALPHA / m
    per model, so at most ALPHA over the family, without a correction over folds."""
    table = fold_agreement(confusion, category_set, split, trials, arch)
    table = table[table["train_size"] == size]
    models = sorted(table["model"].astype(str).unique())
    if not models:
        return []
    alpha = ALPHA / len(models)
    table = table.assign(kappa_high=table["kappa"] + stats.norm.ppf(1 - alpha) * table["kappa_se"])
    out = []
    for model in models:
        folds = table[table["model"].astype(str) == model]
        if not (folds["kappa_high"] < KAPPA_SLIGHT).all():
            continue  # NaN (one true category) compares False: no claim
        cat = folds["category"].mode().iloc[0]
        out.append(
            f"{label}: on {where} at n = {size:,}, every fold model of {display_name(model)} agrees with the "
            f"true categories barely beyond chance (Cohen's \u03ba {folds['kappa'].min():.2f}\u2013"
            f"{folds['kappa'].max():.2f}; each fold's one-sided upper {100 * (1 - alpha):.1f} % bound below "
            f"{KAPPA_SLIGHT:g}, Bonferroni over {len(models)} model(s)): it puts "
            f"{100 * folds['predicted_share'].min():.0f}\u2013{100 * folds['predicted_share'].max():.0f} % "
            f"of the images into {cat}, whose true share is {100 * folds['true_share'].mean():.0f} %."
        )
    return out


def fit_sentences(trials: pd.DataFrame) -> list[str]:
    """Where cells stopped before fitting their own training images (``trials.fitted`` False:
    training accuracy below ``finetune.fit_accuracy``), per set and size, and how the supervised
    ceiling ended. A measured fact of each cell, not an inference: no interval."""
    if trials is None or trials.empty or "fitted" not in trials.columns:
        return []
    out = []
    curve = done_trials(trials, "train_accuracy")
    for cset, in_set in curve.groupby("category_set", sort=True):
        parts = []
        for size, group in in_set.groupby("train_size", sort=True):
            missed = group[group["fitted"] == False]  # noqa: E712 (nulls: runs from before the column)
            if len(missed):
                acc = missed["train_accuracy"]
                parts.append(
                    f"n = {int(size):,} ({len(missed)} of {len(group)} cells, training accuracy "
                    f"{100 * acc.min():.0f}\u2013{100 * acc.max():.0f} %)"
                )
        if parts:
            out.append(
                f"{cset}: cells stopped before fitting their training images (below finetune.fit_accuracy) at "
                + "; ".join(parts)
                + ". Their fold dots are drawn hollow: there the curve measures models that trained too briefly."
            )
    for row in done_trials(trials, "train_accuracy", ceiling=True).itertuples():
        fitted = "fitted its training images" if row.fitted else "did not fit its training images"
        out.append(
            f"Supervised ceiling of {row.category_set} ({int(row.train_size):,} labeled images): {fitted} "
            f"(training accuracy {100 * row.train_accuracy:.1f} %, {int(row.steps):,} steps, stopped: "
            f"{row.stop_reason})" + ("." if row.fitted else "; it may lie below what all labels can reach.")
        )
    return out


def answer_sentences(answers: pd.DataFrame) -> list[str]:
    """'How many labeled images to reach X % OA?' from the learning-curve fits: a number only for a
    reliable curve whose backtest passed, and only up to ``QUOTE_LIMIT`` x the largest measured
    size ("more than N (beyond what this study measured)" past it); each sentence says its family
    and its backtest, and its backbone when ``answers`` has an ``arch`` column with several."""
    out = []
    several = "arch" in answers.columns and answers["arch"].nunique() > 1
    keys = ["arch", "category_set", "model"] if several else ["category_set", "model"]
    for _, g in answers.groupby(keys, sort=False):
        parts = []
        first = g.iloc[0]
        model, cset = first["model"], first["category_set"] + (f", {first['arch']}" if several else "")
        if "reliable" in g and not bool(first["reliable"]):
            out.append(
                f"{display_name(model)} ({cset}): fit unreliable ({first['problems']}); no number of "
                f"labeled images is derived from it."
            )
            continue
        cap = QUOTE_LIMIT * float(first["max_size"])
        for _, r in g.iterrows():
            if r["n"] is None or r["n"] != r["n"]:
                # the asymptote is an extrapolation far beyond the sizes measured: no claim past the cap
                parts.append(
                    f"{100 * r['target']:.0f} %: more than {cap:,.0f} (beyond what this study measured; the "
                    f"fitted curve levels off at a = {100 * r['a']:.1f} %, an extrapolation)"
                )
            elif r["n"] > cap:
                parts.append(f"{100 * r['target']:.0f} %: more than {cap:,.0f} (beyond what this study measured)")
            else:
                ci = ""
                if r["low"] is not None and r["low"] == r["low"]:
                    hi = (
                        f"{r['high']:,.0f}"
                        if r["high"] is not None and r["high"] == r["high"]
                        else f"more than {cap:,.0f}"
                    )
                    low = f"fewer than {int(r['min_size']):,}" if r["low"] < r["min_size"] else f"{r['low']:,.0f}"
                    ci = f" (95 % CI {low}\u2013{hi})"
                where = ""
                if r["n"] < r["min_size"]:
                    where = f", extrapolated below the smallest size {int(r['min_size']):,}"
                elif r["n"] > r["max_size"]:
                    where = f", extrapolated beyond the largest size {int(r['max_size']):,}"
                parts.append(f"{100 * r['target']:.0f} %: n \u2248 {r['n']:,.0f}{ci}{where}")
        family = f"{first['family']} fit" if "family" in g else "fit"
        backtest = f"; {first['backtest']}" if "backtest" in g and first["backtest"] == first["backtest"] else ""
        out.append(f"{display_name(model)} ({cset}): " + "; ".join(parts) + f" ({family}{backtest}).")
    return out
