"""Selection strategies against the random draw: OA per strategy and labels saved at equal OA.

"Labels saved" is the DOA-vs-time-saved idea (Figs. 5 and 10) applied to selection: for every
size n where random was measured, the size at which a strategy's mean curve reaches random's
mean OA (linear interpolation in log n between the strategy's measured sizes, never beyond
them) and the difference n - n_equal. The guards of the rest of the report hold: beside every
number stands the fold-paired t-test of the strategy minus random at the same n (the cells
share their validation fold, :mod:`raystudy.selection`): the corrected resampled t test of
:func:`analysis.stats.paired_difference_table` (fold correlation of the run's protocol, the pool
bound for a strategy other than random under ``holdout``), Holm-adjusted over the sizes of one
(category set, model, strategy) family. A verdict is given only when that adjusted p <= ALPHA, the
rule of the rest of the report. (The former second guard, |mean difference| > fold SD, could not
fail once p < 0.05 with k <= 6 folds and is gone.) Every backbone (``arch``) is compared on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.select import ANY, RANDOM, archs_of, done_trials, selection_of
from analysis.stats import ALPHA, paired_difference_table

P_CLAIM = ALPHA  # a verdict needs Holm-adjusted p <= P_CLAIM

CURVE_COLUMNS = ["arch", "category_set", "model", "selection", "train_size", "mean", "std", "n_folds"]
SAVED_COLUMNS = [
    "arch",
    "category_set",
    "model",
    "selection",
    "train_size",
    "random_mean",
    "n_equal",
    "labels_saved",
    "saved_share",
    "saved_low",
    "saved_high",
    "saved_ci",
    "mean_diff",
    "std_diff",
    "p_value",
    "p_adjusted",
    "family",
    "n_pairs",
    "verdict",
]


def strategy_trials(trials: pd.DataFrame, metric: str = "overall_accuracy", arch: Any = ANY) -> pd.DataFrame:
    """Finished trials of every strategy (``selection`` filled, ``random`` where null), of one
    backbone (``ANY``: every one)."""
    done = done_trials(trials, metric, selection=None, arch=arch)
    return done.assign(selection=selection_of(done)) if len(done) else done.assign(selection=pd.Series(dtype=object))


def compared_sets(trials: pd.DataFrame) -> list[str]:
    """Category sets with finished cells of random and at least one other strategy."""
    done = strategy_trials(trials)
    if done.empty:
        return []
    per_set = done.groupby("category_set")["selection"].agg(lambda s: set(s))
    return [str(c) for c, found in per_set.items() if RANDOM in found and len(found) > 1]


def strategy_curves(trials: pd.DataFrame, metric: str = "overall_accuracy", arch: Any = ANY) -> pd.DataFrame:
    """Mean and fold std of ``metric`` per (arch, set, model, strategy, size)."""
    done = strategy_trials(trials, metric, arch)
    if done.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    done = done.assign(arch=done["arch"].astype("object").fillna("")) if "arch" in done else done.assign(arch="")
    g = done.groupby(["arch", "category_set", "model", "selection", "train_size"])[metric]
    out = pd.concat([g.mean().rename("mean"), g.std(ddof=1).rename("std"), g.size().rename("n_folds")], axis=1)
    return out.reset_index()[CURVE_COLUMNS]


def size_at_accuracy(sizes: np.ndarray, means: np.ndarray, target: float) -> float | None:
    """The n at which a measured mean curve first reaches ``target`` (linear in log n between
    measured sizes); None when the curve never reaches it or starts above it already (beyond
    the measured sizes nothing is extrapolated).

    Example:
        >>> round(size_at_accuracy(np.array([32, 128]), np.array([0.5, 0.7]), 0.6))
        64
    """
    order = np.argsort(sizes)
    x, y = np.log(np.asarray(sizes, dtype=float)[order]), np.asarray(means, dtype=float)[order]
    if len(x) == 0 or y[0] > target:
        return None
    for i in range(len(x)):
        if y[i] >= target:
            if i == 0 or y[i] == y[i - 1]:
                return float(np.exp(x[i]))
            t = (target - y[i - 1]) / (y[i] - y[i - 1])
            return float(np.exp(x[i - 1] + t * (x[i] - x[i - 1])))
    return None


def saved_interval(
    sizes: np.ndarray, means: np.ndarray, n: float, ci_low: float, ci_high: float
) -> tuple[float, float]:
    """The 95 % interval of the labels saved at ``n``: the interval of the fold-paired difference
    d = strategy - random at ``n`` (``ci_low`` … ``ci_high``, the corrected t interval of the verdict)
    mapped through the strategy's measured mean curve (``sizes``, ``means``).

    Random's OA at ``n`` is the strategy's mean at ``n`` minus d, so the size at which the strategy
    reaches it, n_equal, runs over the sizes where its curve reaches its own mean at ``n`` minus each
    end of d's interval (:func:`size_at_accuracy`), and the labels saved over ``n - n_equal``. The
    strategy's curve is taken as measured: the interval carries the uncertainty of the difference
    at ``n``, which dominates with a few folds (its coverage on the `selection` preset's design is
    simulated in ``tests/test_calibration.py``). An end beyond the measured sizes is open: ``+inf``
    when the strategy's curve already starts above the target (more than ``n`` minus the smallest
    measured size), ``-inf`` when it never reaches it (less than ``n`` minus the largest); NaN
    both without a difference at ``n``.

    Example:
        >>> lo, hi = saved_interval(np.array([32, 64, 128]), np.array([0.5, 0.6, 0.7]), 64, 0.02, 0.08)
        >>> round(lo), round(hi)
        (8, 27)
    """
    order = np.argsort(sizes)
    x, y = np.asarray(sizes, dtype=float)[order], np.asarray(means, dtype=float)[order]
    at_n = y[x == float(n)]
    if not (len(at_n) and np.isfinite([ci_low, ci_high]).all()):
        return np.nan, np.nan
    ends = []
    for d in (ci_low, ci_high):  # the smaller difference saves fewer labels
        target = float(at_n[0]) - d
        n_eq = size_at_accuracy(x, y, target)
        if n_eq is None:  # below the curve's start: saves more than n - min; above its top: less than n - max
            ends.append(np.inf if target < y[0] else -np.inf)
        else:
            ends.append(float(n) - n_eq)
    return ends[0], ends[1]


def open_end_limit(value: float, n: float, sizes: Any) -> float:
    """Where an open end of :func:`saved_interval` passes the measured sizes (``n`` minus the smallest
    measured size for ``+inf``, minus the largest for ``-inf``); a finite end as it is."""
    measured = np.asarray(sizes, dtype=float)
    if np.isposinf(value):
        return float(n - measured.min())
    if np.isneginf(value):
        return float(n - measured.max())
    return float(value)


def saved_text(low: float, high: float, n: float, sizes: Any) -> str:
    """The interval of :func:`saved_interval` in words; an open end names the measured limit.

    Example:
        >>> saved_text(-np.inf, 12.0, 64, [32, 64, 128])
        '95 % CI less than -64 to +12 labels'
        >>> saved_text(np.inf, np.inf, 64, [32, 64, 128])
        '95 % CI more than +32 labels (beyond the measured sizes)'
    """
    if low != low or high != high:
        return ""

    def end(v: float) -> str:
        limit = open_end_limit(v, n, sizes)
        return f"{v:+.0f}" if np.isfinite(v) else f"{'more' if v > 0 else 'less'} than {limit:+.0f}"

    if not np.isfinite(low) and low == high:  # both ends on one side of the measured sizes
        return f"95 % CI {end(low)} labels (beyond the measured sizes)"
    return f"95 % CI {end(low)} to {end(high)} labels"


def verdict(saved: float | None, diff: float, p_adjusted: float, n_pairs: int) -> str:
    """A claim only where the strategy's paired difference has Holm-adjusted p <= ALPHA.

    Example:
        >>> verdict(-10.0, 0.01, 0.3, 5)
        'no verdict: not significant (Holm-adjusted p = 0.3)'
    """
    if n_pairs < 2:
        return "no verdict: fewer than 2 paired folds"
    if p_adjusted != p_adjusted or p_adjusted > P_CLAIM:
        return f"no verdict: not significant (Holm-adjusted p = {p_adjusted:.2g})"
    better = "better" if diff > 0 else "worse"
    if saved is None:
        return (
            f"{better} than random at this n (Holm-adjusted p = {p_adjusted:.2g}); "
            "labels saved outside the measured sizes"
        )
    cost = f"saves {saved:.0f} labels" if saved >= 0 else f"needs {-saved:.0f} more labels"
    return f"{better} than random (Holm-adjusted p = {p_adjusted:.2g}): {cost} for random's OA at this n"


def labels_saved_table(trials: pd.DataFrame, metric: str = "overall_accuracy") -> pd.DataFrame:
    """Per (arch, set, model, strategy other than random, size where both ran): labels saved at equal
    OA against random and the fold-paired difference at the same n (corrected t, Holm over the
    sizes of the (arch, set, model, strategy) family)."""
    rows = []
    for arch in archs_of(trials):
        done = strategy_trials(trials, metric, arch)
        curves = strategy_curves(trials, metric, arch)
        for cset in compared_sets(done):
            for (model, strategy), cur in curves[curves["category_set"] == cset].groupby(["model", "selection"]):
                if strategy == RANDOM:
                    continue
                ref = curves[
                    (curves["category_set"] == cset) & (curves["model"] == model) & (curves["selection"] == RANDOM)
                ]
                if ref.empty:
                    continue
                pair = done[
                    (done["category_set"] == cset)
                    & (done["model"] == model)
                    & done["selection"].isin([RANDOM, strategy])
                ]
                paired = paired_difference_table(
                    pair.assign(model=pair["selection"]),
                    model=strategy,
                    reference_model=RANDOM,
                    metric=metric,
                    selection=None,
                    arch=arch,
                )
                paired = paired.set_index("train_size")
                for r in ref.itertuples():
                    n_eq = size_at_accuracy(cur["train_size"].to_numpy(), cur["mean"].to_numpy(), r.mean)
                    saved = None if n_eq is None else float(r.train_size) - n_eq
                    p = paired.loc[r.train_size] if r.train_size in paired.index else None
                    diff, std = (float(p["mean_diff"]), float(p["std_diff"])) if p is not None else (np.nan, np.nan)
                    pval = float(p["p_value"]) if p is not None else np.nan
                    sizes, means = cur["train_size"].to_numpy(), cur["mean"].to_numpy()
                    low, high = (
                        saved_interval(sizes, means, r.train_size, float(p["ci_low"]), float(p["ci_high"]))
                        if p is not None
                        else (np.nan, np.nan)
                    )
                    padj = float(p["p_adjusted"]) if p is not None else np.nan
                    rows.append(
                        {
                            "arch": arch,
                            "category_set": cset,
                            "model": model,
                            "selection": strategy,
                            "train_size": int(r.train_size),
                            "random_mean": float(r.mean),
                            "n_equal": n_eq,
                            "labels_saved": saved,
                            "saved_share": None if saved is None else saved / float(r.train_size),
                            "saved_low": low,
                            "saved_high": high,
                            "saved_ci": saved_text(low, high, r.train_size, sizes) if p is not None else "",
                            "mean_diff": diff,
                            "std_diff": std,
                            "p_value": pval,
                            "p_adjusted": padj,
                            "family": p["family"] if p is not None else "",
                            "n_pairs": int(p["n_pairs"]) if p is not None else 0,
                            "verdict": (
                                verdict(saved, diff, padj, int(p["n_pairs"]))
                                if p is not None
                                else "no verdict: not run at this n"
                            ),
                        }
                    )
    return pd.DataFrame(rows, columns=SAVED_COLUMNS)


def selection_sentences(table: pd.DataFrame) -> list[str]:
    """One summary line per claim of :func:`labels_saved_table` (rows with a verdict), naming the
    Holm family; the backbone is named when the table has more than one."""
    out = []
    several = table["arch"].nunique(dropna=True) > 1 if len(table) else False
    for r in table.itertuples():
        if r.verdict.startswith("no verdict"):
            continue
        arch = f" ({r.arch})" if several and r.arch is not None else ""
        out.append(
            f"{r.category_set}{arch}, {r.model}, n = {r.train_size}: {r.selection} is {r.verdict} "
            f"({r.saved_ci}; {100 * r.mean_diff:+.1f} pp OA over {r.n_pairs} paired folds; Holm over {r.family})."
        )
    return out
