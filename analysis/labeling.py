"""Labeling time, time saved, the knee of a curve and the DOA table (Figs. 5 and 10)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

import numpy as np
import pandas as pd
from scipy.stats import t as stats_t

from analysis.config import DEFAULTS, merge_analysis_config
from analysis.select import ANY, archs_of, category_sets, comparable, done_trials
from analysis.stats import design_of, fold_correlation, variance_factor
from raystudy.catalog import Catalog

KNEE_RESAMPLES = 1000  # fold resamples behind ``knee_share``


@overload
def labeling_hours(n: float, seconds_per_image: float = ...) -> float: ...
@overload
def labeling_hours(n: np.ndarray, seconds_per_image: float = ...) -> np.ndarray: ...
def labeling_hours(n: float | np.ndarray, seconds_per_image: float = 33.0) -> float | np.ndarray:
    """Hours needed to label ``n`` images at a constant time per image."""
    if np.ndim(n) == 0:
        return float(n) * seconds_per_image / 3600.0
    return np.asarray(n, dtype=float) * seconds_per_image / 3600.0


def time_saved_hours(n: float | np.ndarray, reference_n: float, seconds_per_image: float = 33.0) -> float | np.ndarray:
    """TS_n = T(reference_n) - T(n), Eq. (12) of the paper, in hours."""
    return labeling_hours(reference_n, seconds_per_image) - labeling_hours(n, seconds_per_image)


def labeling_hours_per_group(
    counts: Mapping[str, float],
    basic_seconds: float = 6.0,
    complex_seconds: float = 60.0,
    catalog: Catalog | None = None,
) -> float:
    """Hours to label a subset with ``counts`` images per category (basic habits are quicker)."""
    catalog = catalog or Catalog()
    seconds = sum(
        float(c) * (basic_seconds if catalog.is_basic(cat) else complex_seconds) for cat, c in counts.items() if c == c
    )
    return seconds / 3600.0


def time_saved_hours_per_group(
    counts: Mapping[str, float],
    reference_counts: Mapping[str, float],
    basic_seconds: float = 6.0,
    complex_seconds: float = 60.0,
    catalog: Catalog | None = None,
) -> float:
    """Per-group variant of :func:`time_saved_hours`."""
    return labeling_hours_per_group(reference_counts, basic_seconds, complex_seconds, catalog) - (
        labeling_hours_per_group(counts, basic_seconds, complex_seconds, catalog)
    )


def find_knee(x: Any, y: Any) -> int | None:
    """Index (into the given arrays) of the point farthest from the chord joining the ends.

    Both axes are scaled to [0, 1] first (Kneedle-style), so units do not matter.
    Returns None for fewer than 3 points, a flat axis or a straight line.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.flatnonzero(np.isfinite(x) & np.isfinite(y))
    if len(ok) < 3:
        return None
    order = ok[np.argsort(x[ok], kind="stable")]
    xs, ys = x[order], y[order]
    if np.ptp(xs) == 0 or np.ptp(ys) == 0:
        return None
    xn = (xs - xs.min()) / np.ptp(xs)
    yn = (ys - ys.min()) / np.ptp(ys)
    dx, dy = xn[-1] - xn[0], yn[-1] - yn[0]
    dist = np.abs(dx * (yn - yn[0]) - dy * (xn - xn[0])) / np.hypot(dx, dy)
    best = int(np.argmax(dist))
    if dist[best] < 1e-9:
        return None
    return int(order[best])


def knee_shares(x: Any, reference_folds: Any, folds: Any, resamples: int = KNEE_RESAMPLES, seed: int = 0) -> np.ndarray:
    """How often each size is the knee when the folds are resampled: the share of ``resamples``
    bootstrap draws of the fold indices (with replacement, the same draw at every size, the reference
    paired by fold) whose DOA curve has its :func:`find_knee` at that size.

    Args:
        x: (m,) the time saved of each size (the knee's x axis, kept fixed).
        reference_folds: (k,) the reference's OA per fold at its largest size.
        folds: (m, k) the model's OA per size and fold (the same fold order).

    Returns (m,) shares (summing to at most 1: a draw may have no knee); NaN with fewer than 2 folds.

    Example:
        >>> shares = knee_shares([9, 6, 3, 0], [0.9, 0.92], [[0.6, 0.62], [0.8, 0.81], [0.84, 0.86], [0.9, 0.9]])
        >>> int(np.argmax(shares))
        1
    """
    y = np.asarray(folds, dtype=float)
    ref = np.asarray(reference_folds, dtype=float)
    m, k = y.shape
    if k < 2 or len(ref) != k:
        return np.full(m, np.nan)
    draws = np.random.default_rng(seed).integers(0, k, size=(resamples, k))  # (B, k) fold indices
    doa = ref[draws].mean(axis=1)[:, None] - y[:, draws].mean(axis=2).T  # (B, m)
    counts = np.zeros(m)
    for curve in doa:
        knee = find_knee(x, curve)
        if knee is not None:
            counts[knee] += 1
    return counts / resamples


def cell_hours(
    per_class: pd.DataFrame,
    cfg: Mapping[str, Any],
    catalog: Catalog | None = None,
    trials: pd.DataFrame | None = None,
    arch: Any = ANY,
) -> pd.DataFrame:
    """Per-group labeling hours of each comparable cell's training subset (from ``train_count``;
    one arch, the random draw, no ceiling cell: :func:`analysis.select.comparable`)."""
    cols = ["cell_id", "model", "category_set", "train_size", "fold", "hours"]
    per_class = comparable(per_class, trials, arch=arch)
    if per_class is None or per_class.empty or per_class["train_count"].notna().sum() == 0:
        return pd.DataFrame(columns=cols)
    # train_count is repeated for every split: keep one row per cell and category.
    df = per_class[per_class["train_count"].notna()].sort_values("split", na_position="last")
    df = df.drop_duplicates(["cell_id", "category"])
    rows = []
    for (cell, model, cset, size, fold), g in df.groupby(
        ["cell_id", "model", "category_set", "train_size", "fold"], dropna=False
    ):
        counts = dict(zip(g["category"].astype(str), g["train_count"].astype(float), strict=True))
        hours = labeling_hours_per_group(counts, cfg["basic_seconds"], cfg["complex_seconds"], catalog)
        rows.append((cell, model, cset, size, fold, hours))
    return pd.DataFrame(rows, columns=cols)


def _hours_lookup(hours: pd.DataFrame, model: str, cset: str) -> dict[int, float]:
    sub = hours[(hours["model"] == model) & (hours["category_set"] == cset)]
    if sub.empty:
        return {}
    return {int(k): float(v) for k, v in sub.groupby("train_size")["hours"].mean().items() if k == k}


DOA_COLUMNS = [
    "arch",
    "category_set",
    "n_categories",
    "model",
    "train_size",
    "n_folds",
    "oa_mean",
    "oa_std",
    "reference_model",
    "reference_size",
    "reference_oa",
    "doa",
    "labeling_hours",
    "reference_hours",
    "time_saved_hours",
    "time_model",
    "is_knee",
    "fold_spread",
    "knee_note",
    "doa_low",
    "doa_high",
    "doa_margin",
    "noninferior",
    "smallest_noninferior",
    "knee_share",
]

# Non-inferiority margin of the DOA claim, in percentage points: the ``analysis`` section may set
# ``doa_margin_pp`` (raystudy's AnalysisConfig key of the same name; this is its default).
DOA_MARGIN_PP = float(DEFAULTS["doa_margin_pp"])


def doa_interval(
    ref_values: Any, values: Any, rho_ref: float, rho: float, level: float = 0.95
) -> tuple[float, float, float]:
    """(DOA, low, high): the reference's mean minus the model's mean with a two-sided ``level``
    interval. Each mean's variance is its fold variance times the overlap factor of
    :func:`analysis.stats.variance_factor` (the folds of one size share images); the two sizes are
    not paired (other images), so the variances add and the degrees of freedom are
    Welch-Satterthwaite's. NaN bounds with fewer than 2 folds on a side."""
    a, b = np.asarray(ref_values, dtype=float), np.asarray(values, dtype=float)
    doa = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return doa, np.nan, np.nan
    va = float(variance_factor(rho_ref, len(a))) * float(a.var(ddof=1))
    vb = float(variance_factor(rho, len(b))) * float(b.var(ddof=1))
    if va + vb == 0:
        return doa, doa, doa
    df = (va + vb) ** 2 / ((va**2 / (len(a) - 1) if va else 0.0) + (vb**2 / (len(b) - 1) if vb else 0.0))
    half = float(stats_t.ppf(0.5 + level / 2, df)) * float(np.sqrt(va + vb))
    return doa, doa - half, doa + half


def smallest_noninferior(sizes: Any, high: Any, margin: float) -> int | None:
    """The smallest n from which on every larger size has its DOA upper bound below ``margin``.

    The sizes are tested from the largest down and the sequence stops at the first failure
    (fixed-sequence testing: each test at the full 5 % with no adjustment, the family-wise error
    still 5 %); None when the largest size already fails.

    Example:
        >>> smallest_noninferior([128, 256, 512, 1024], [0.09, 0.01, 0.03, 0.005], 0.02)
        1024
    """
    order = np.argsort(np.asarray(sizes, dtype=float))[::-1]
    best = None
    for i in order:
        h = float(np.asarray(high, dtype=float)[i])
        if not h < margin:
            break
        best = int(np.asarray(sizes)[i])
    return best


NO_KNEE = "no reliable knee: differences within fold spread"


def knee_problem(sizes: Any, oa_mean: Any, oa_std: Any, knee_size: int | None) -> str | None:
    """Why the knee of a DOA curve is not reliable, or None when it is.

    The fold spread is the pooled standard deviation over folds (sqrt of the mean
    variance over sizes). The curve must be monotone within noise (the mean OA never
    falls by more than the fold spread from a size to the next larger one) and every
    step on the steep side of the knee (from each smaller size to the next, up to the
    knee) must exceed the fold spread.
    """
    order = np.argsort(np.asarray(sizes, dtype=float))
    n = np.asarray(sizes, dtype=float)[order].astype(int)
    m = np.asarray(oa_mean, dtype=float)[order]
    sd = np.asarray(oa_std, dtype=float)[order]
    if len(n) < 3:
        return f"no reliable knee: only {len(n)} training-set size{'s' if len(n) != 1 else ''} (at least 3 needed)"
    if not np.all(np.isfinite(sd)):
        return "no reliable knee: a size has a single fold, so no fold spread to judge the differences"
    spread = float(np.sqrt(np.mean(sd**2)))
    steps = np.diff(m)
    for i, step in enumerate(steps):
        if step < -spread:
            return (
                f"no reliable knee: the DOA curve is not monotone (mean OA falls by {100 * -step:.1f} pp "
                f"from n = {n[i]:,} to n = {n[i + 1]:,}, more than the fold spread {100 * spread:.1f} pp)"
            )
    if knee_size is None:
        return "no reliable knee: the DOA curve has no corner"
    k = int(np.flatnonzero(n == knee_size)[0])
    small = [(n[i], n[i + 1], steps[i]) for i in range(k) if steps[i] <= spread]
    if k == 0 or small:
        a, b, step = small[0] if small else (n[0], n[1], steps[0])
        return (
            f"{NO_KNEE} (mean OA gains {100 * step:.1f} pp from n = {a:,} to n = {b:,}; "
            f"fold spread {100 * spread:.1f} pp)"
        )
    return None


def doa_table(
    trials: pd.DataFrame,
    per_class: pd.DataFrame | None = None,
    cfg: Mapping[str, Any] | None = None,
    catalog: Catalog | None = None,
) -> pd.DataFrame:
    """DOA_n = ROA - OA_n of the CSSL model and TS_n per size, per category set.

    ROA is the reference model's mean OA at its largest size; TS uses the labeling
    time model of ``cfg`` ('constant' or 'per_group', which falls back to constant
    per size when ``per_class.train_count`` is missing). ``is_knee`` marks the knee
    where :func:`knee_problem` finds it reliable; ``knee_note`` says why not otherwise;
    ``knee_share`` is how often each size is the knee under resampling of the folds
    (:func:`knee_shares`), the knee position's uncertainty.
    """
    cfg = merge_analysis_config(dict(cfg or {}))
    ref_model, cssl = str(cfg["reference_model"]), str(cfg["cssl_model"])
    spi = float(cfg["seconds_per_image"])
    per_group = cfg["labeling_time_model"] == "per_group"
    out = []
    for arch in archs_of(trials):
        out += _doa_frames(trials, per_class, cfg, catalog, arch, per_group, ref_model, cssl, spi)
    if not out:
        return pd.DataFrame(columns=DOA_COLUMNS)
    return pd.concat(out, ignore_index=True)


def _doa_frames(
    trials: pd.DataFrame,
    per_class: pd.DataFrame | None,
    cfg: Mapping[str, Any],
    catalog: Catalog | None,
    arch: Any,
    per_group: bool,
    ref_model: str,
    cssl: str,
    spi: float,
) -> list[pd.DataFrame]:
    """:func:`doa_table`'s frames of one backbone, one per category set."""
    done = done_trials(trials, arch=arch)
    if done.empty:
        return []
    hours = (
        cell_hours(per_class, cfg, catalog, trials, arch)
        if per_group and per_class is not None
        else pd.DataFrame(columns=["model", "category_set", "train_size", "hours"])
    )
    margin = float(cfg.get("doa_margin_pp", DOA_MARGIN_PP)) / 100.0

    def rho_of(cells: pd.DataFrame, size: int) -> float:
        protocol, k = design_of(cells)
        here = cells[cells["train_size"] == size]
        n_val = pd.to_numeric(here["n_validation"], errors="coerce").mean() if "n_validation" in here else None
        return fold_correlation(protocol, k, float(size), n_val)

    out = []
    for cset in category_sets(done):
        sub = done[done["category_set"] == cset]
        ref, mine = sub[sub["model"] == ref_model], sub[sub["model"] == cssl]
        if ref.empty or mine.empty:
            continue
        ref_size = int(ref["train_size"].max())
        ref_values = ref.loc[ref["train_size"] == ref_size, "overall_accuracy"]
        roa = float(ref_values.mean())
        mine_hours = _hours_lookup(hours, cssl, cset)
        ref_hours_group = _hours_lookup(hours, ref_model, cset).get(ref_size)
        stats = mine.groupby("train_size")["overall_accuracy"].agg(["count", "mean", "std"])
        n_cat = pd.to_numeric(sub["n_categories"], errors="coerce").max()
        table = []
        for size, row in stats.iterrows():
            size = int(size)
            if per_group and size in mine_hours and ref_hours_group is not None:
                t_n, t_ref, model_used = mine_hours[size], ref_hours_group, "per_group"
            else:
                t_n, t_ref, model_used = labeling_hours(size, spi), labeling_hours(ref_size, spi), "constant"
            table.append(
                {
                    "arch": arch,
                    "category_set": cset,
                    "n_categories": None if n_cat != n_cat else int(n_cat),
                    "model": cssl,
                    "train_size": size,
                    "n_folds": int(row["count"]),
                    "oa_mean": float(row["mean"]),
                    "oa_std": float(row["std"]) if row["std"] == row["std"] else np.nan,
                    "reference_model": ref_model,
                    "reference_size": ref_size,
                    "reference_oa": roa,
                    "doa": roa - float(row["mean"]),
                    "labeling_hours": t_n,
                    "reference_hours": t_ref,
                    "time_saved_hours": t_ref - t_n,
                    "time_model": model_used,
                    "is_knee": False,
                    "fold_spread": np.nan,
                    "knee_note": None,
                }
            )
            folds = mine.loc[mine["train_size"] == size, "overall_accuracy"]
            _, lo, hi = doa_interval(ref_values, folds, rho_of(ref, ref_size), rho_of(mine, size))
            table[-1].update({"doa_low": lo, "doa_high": hi, "doa_margin": margin})
        frame = pd.DataFrame(table, columns=DOA_COLUMNS)
        frame["noninferior"] = frame["doa_high"] < margin
        frame["smallest_noninferior"] = smallest_noninferior(frame["train_size"], frame["doa_high"], margin)
        knee = find_knee(frame["time_saved_hours"], frame["doa"])
        by_fold = mine.pivot_table(index="train_size", columns="fold", values="overall_accuracy")
        ref_by_fold = ref[ref["train_size"] == ref_size].groupby("fold")["overall_accuracy"].mean()
        paired = [f for f in by_fold.columns if f in ref_by_fold.index and by_fold[f].notna().all()]
        frame["knee_share"] = knee_shares(
            frame["time_saved_hours"].to_numpy(dtype=float),
            ref_by_fold[paired].to_numpy(),
            by_fold.loc[frame["train_size"], paired].to_numpy(),
        )
        sd = frame["oa_std"].to_numpy(dtype=float)
        frame["fold_spread"] = float(np.sqrt(np.mean(sd**2))) if np.all(np.isfinite(sd)) else np.nan
        note = knee_problem(
            frame["train_size"], frame["oa_mean"], sd, None if knee is None else int(frame.loc[knee, "train_size"])
        )
        frame["knee_note"] = note
        if knee is not None and note is None:
            frame.loc[knee, "is_knee"] = True
        out.append(frame)
    return out
