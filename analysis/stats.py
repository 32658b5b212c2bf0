"""Box statistics, paired CSSL-minus-baseline differences and learning-curve fits."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.multitest import multipletests

from analysis import curves
from analysis.select import ANY, RANDOM, archs_of, category_sets, done_trials, selection_of


def box_stats(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles (linear interpolation), min, max, mean and count."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) == 0:
        return {k: float("nan") for k in ("q1", "median", "q3", "min", "max", "mean")} | {"n": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {
        "q1": float(q1),
        "median": float(med),
        "q3": float(q3),
        "min": float(v.min()),
        "max": float(v.max()),
        "mean": float(v.mean()),
        "n": int(len(v)),
    }


def bootstrap_mean_ci(
    values: Sequence[float], n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float] | tuple[None, None]:
    """Percentile bootstrap CI of the mean; (None, None) for fewer than 2 values."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.percentile(means, [100 * alpha, 100 * (1 - alpha)])
    return float(lo), float(hi)


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | tuple[None, None]:
    """Student t interval of the mean: mean ± t(1 - alpha/2, n - 1) * s / sqrt(n); (None, None) below 2 values.

    Example:
        >>> lo, hi = t_interval([0.1, 0.05, 0.1])  # mean 0.0833, s = 0.0289, t(0.975, 2) = 4.303
        >>> round(lo, 4), round(hi, 4)
        (0.0116, 0.155)
    """
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return None, None
    half = float(stats.t.ppf(0.5 + level / 2, df=len(v) - 1)) * float(v.std(ddof=1)) / np.sqrt(len(v))
    return float(v.mean() - half), float(v.mean() + half)


MIN_BOOTSTRAP_PAIRS = 10  # below this many folds the percentile bootstrap is too narrow: Student t instead

# One threshold for every verdict, sentence and figure star: significant means p <= ALPHA, where
# p is the Holm-adjusted p of the declared family (:func:`holm`).
ALPHA = 0.05

METRIC_SHORT = {
    "overall_accuracy": "OA",
    "generalization_accuracy": "accuracy on the unseen campaign",
    "macro_f1": "macro F1",
}


def fold_correlation(
    protocol: str | None,
    k: int,
    n_train: float | None = None,
    n_validation: float | None = None,
    selection: str | None = RANDOM,
) -> float:
    """Expected correlation rho between two folds' paired differences, from how the folds overlap.

    ``paper`` (CV inside the n images; also any protocol not recorded, the grid's default): the
    Nadeau & Bengio (2003) heuristic rho = n_test / (n_test + n_train) = 1/k, i.e. their
    variance correction 1/k + n_test/n_train with n_test/n_train = 1/(k-1).

    ``holdout`` (the labeled pool of N images cut into k folds; fold f validates on its whole fold,
    N/k images, and trains on n images drawn from the other k-1 folds): validation sets are
    disjoint, so the only shared images are training images. Two folds' training pools share
    k-2 of their k-1 pool folds, and each of fold f's n images lies in the shared part with
    probability (k-2)/(k-1) and is then drawn by fold g with probability n / ((k-1) N/k). The
    expected shared fraction of two training sets is therefore

        s = (k-2)/(k-1) * min(1, n / ((k-1) n_val)),   with N/k = n_val (``trials.n_validation``).

    Writing a fold's difference as the mean of per-image contributions of its training images
    (plus independent validation and seed noise), the covariance of two folds is the shared
    fraction times the training part of the variance; taking the training part as all of it
    (an upper bound, so the test errs on the safe side) gives rho = s. A selection strategy other
    than random picks (nearly) the same images from overlapping pools, so it gets the pool bound
    s = (k-2)/(k-1); an unknown n_val gets that bound too. The generalization campaign is the
    same images for every fold; its claim is about these images (conditional on the campaign),
    so it adds no term. Never below 0.
    """
    k = int(k)
    if k < 2:
        return 0.0
    if protocol != "holdout":
        return 1.0 / k
    pool_share = (k - 2) / (k - 1)
    if selection not in (None, RANDOM) or not n_train or not n_validation or n_validation != n_validation:
        return pool_share
    return float(pool_share * min(1.0, float(n_train) / ((k - 1) * float(n_validation))))


def variance_factor(rho: float, n_pairs: int | np.ndarray) -> float | np.ndarray:
    """Var(mean of J fold differences) / s^2 when the differences are equicorrelated with rho.

    Var(mean) = sigma^2 (1 + (J-1) rho) / J and E[s^2] = sigma^2 (1 - rho), so the unbiased
    estimate of Var(mean) is s^2 (1/J + rho / (1 - rho)): Nadeau & Bengio's form (their
    rho/(1-rho) = n_test/n_train). rho = 0 gives the ordinary paired t (s^2 / J).
    """
    rho = min(max(float(rho), 0.0), 0.99)
    return 1.0 / np.asarray(n_pairs, dtype=float) + rho / (1.0 - rho)


def corrected_t_test(diffs: Any, rho: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Corrected resampled t test of mean difference 0 over the last axis (fold differences).

    t = mean / sqrt(variance_factor(rho, J) * s^2) on J - 1 degrees of freedom, two-sided p;
    vectorised over every leading axis (simulated studies, sizes). Fewer than 2 finite values
    or s = 0 give NaN. rho = 0 is ``scipy.stats.ttest_rel``.

    Example:
        >>> t, p = corrected_t_test([0.1, 0.05, 0.1], rho=0.0)  # mean 0.0833, s / sqrt(3) = 0.0167
        >>> round(float(t), 3), round(float(p), 4)
        (5.0, 0.0377)
    """
    d = np.asarray(diffs, dtype=float)
    n = np.sum(np.isfinite(d), axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(d, axis=-1)
        var = curves.fold_variance(d)  # equal differences: 0, not round-off (an infinite t)
        se = np.sqrt(variance_factor(rho, np.maximum(n, 1)) * var)
        t = np.where((n >= 2) & (se > 0), mean / se, np.nan)
        p = 2 * stats.t.sf(np.abs(t), df=np.maximum(n - 1, 1))
    return t, np.where(np.isfinite(t), p, np.nan)


def corrected_t_interval(
    diffs: Sequence[float], rho: float = 0.0, level: float = 0.95
) -> tuple[float, float] | tuple[None, None]:
    """mean ± t(1 - alpha/2, J - 1) * sqrt(variance_factor(rho, J)) * s: the interval that excludes 0
    exactly when :func:`corrected_t_test` gives p < 1 - level; (None, None) below 2 values."""
    v = np.asarray(diffs, dtype=float)
    if len(v) < 2:
        return None, None
    half = float(stats.t.ppf(0.5 + level / 2, df=len(v) - 1)) * float(
        np.sqrt(variance_factor(rho, len(v)) * v.var(ddof=1))
    )
    return float(v.mean() - half), float(v.mean() + half)


def holm(p: Any) -> np.ndarray:
    """Holm-adjusted p-values of one family, the last axis (``statsmodels``
    ``multipletests(method="holm")``; leading axes are independent families, e.g. simulated
    studies); NaN p-values (no test possible) stay NaN and do not count as members.

    ``multipletests`` runs ``gc.collect()`` on every Holm call (0.1-0.2 s with pandas and plotly
    loaded); the objects alive are frozen (``gc.freeze``) for the loop, which makes that a no-op.
    """
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    if p.size == 0:
        return out
    flat = p.reshape(-1, p.shape[-1]) if p.ndim else p.reshape(1, 1)
    res = out.reshape(flat.shape)
    gc.freeze()
    try:
        for row, dst in zip(flat, res, strict=True):
            ok = np.isfinite(row)
            if ok.any():
                dst[ok] = multipletests(row[ok], alpha=ALPHA, method="holm")[1]
    finally:
        gc.unfreeze()
    return res.reshape(p.shape)


def significant(p_adjusted: Any) -> np.ndarray:
    """The single rule of text, tables and figure stars: adjusted p <= :data:`ALPHA` (NaN: no)."""
    p = np.asarray(p_adjusted, dtype=float)
    return np.isfinite(p) & (p <= ALPHA)


def paired_accuracy_test(correct: Any, reference_correct: Any, level: float = 0.95) -> dict[str, float]:
    """Accuracy difference of two classifiers on the same images, with McNemar's test.

    ``correct`` / ``reference_correct``: (n,) booleans, image i classified right by each. The
    p-value is McNemar's (``statsmodels``; exact binomial below 25 discordant images, else
    chi-square with continuity correction); the interval is the Wald interval for a difference
    of paired proportions (Agresti, Categorical Data Analysis, sect. 11.1), whose coverage
    ``tests/test_calibration.py`` checks.

    Returns ``diff``, ``low``, ``high``, ``p_value``, ``discordant``, ``n``.

    Example:
        >>> r = paired_accuracy_test([True] * 60 + [False] * 40, [True] * 50 + [False] * 50)
        >>> round(r["diff"], 2), r["discordant"]
        (0.1, 10)
    """
    a, b = np.asarray(correct, dtype=bool), np.asarray(reference_correct, dtype=bool)
    n = len(a)
    if n == 0 or len(b) != n:
        return {"diff": np.nan, "low": np.nan, "high": np.nan, "p_value": np.nan, "discordant": 0, "n": n}
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    discordant = only_a + only_b
    table = [[int(np.sum(a & b)), only_a], [only_b, int(np.sum(~a & ~b))]]
    p_value = float(mcnemar(table, exact=discordant < 25, correction=True).pvalue) if discordant else 1.0
    diff = (only_a - only_b) / n
    half = stats.norm.ppf(0.5 + level / 2) * np.sqrt(max(discordant - (only_a - only_b) ** 2 / n, 0.0)) / n
    return {"diff": diff, "low": diff - half, "high": diff + half, "p_value": p_value, "discordant": discordant, "n": n}


def design_of(trials: pd.DataFrame) -> tuple[str, int]:
    """(protocol, k) of comparable trials: the ``protocol`` column (``paper`` when not recorded) and
    the fold count (distinct folds)."""
    protocol = "paper"
    if "protocol" in trials.columns and trials["protocol"].notna().any():
        protocol = str(trials["protocol"].dropna().astype(str).mode().iloc[0])
    k = int(trials["fold"].nunique()) if "fold" in trials.columns else 0
    return protocol, max(k, 1)


PAIRED_COLUMNS = [
    "arch",
    "category_set",
    "n_categories",
    "train_size",
    "model",
    "reference_model",
    "metric",
    "n_pairs",
    "mean_diff",
    "std_diff",
    "p_value",
    "p_uncorrected",
    "p_adjusted",
    "significant",
    "family",
    "family_size",
    "protocol",
    "k",
    "rho",
    "test",
    "ci_low",
    "ci_high",
    "ci_method",
    "folds",
    "diffs",
]


def paired_difference_table(
    trials: pd.DataFrame,
    model: str = "moco",
    reference_model: str = "baseline",
    metric: str = "overall_accuracy",
    test: str = "ttest",
    n_boot: int = 1000,
    seed: int = 0,
    selection: str | None = RANDOM,
    arch: Any = ANY,
) -> pd.DataFrame:
    """Per (arch, category_set, train_size): model minus reference, paired by fold, over comparable
    cells only (one arch, one selection strategy, no ceiling: :func:`analysis.select.comparable`).

    ``p_value`` is the corrected resampled t test (:func:`corrected_t_test`, correlation from
    :func:`fold_correlation` for the run's protocol and fold count; ``wilcoxon`` gives the
    uncorrected signed-rank p instead), NaN with fewer than 2 pairs; ``p_uncorrected`` is
    ``scipy.stats.ttest_rel``'s. ``p_adjusted`` is Holm over the declared family: every size of
    one (arch, category set) for this model pair and metric; ``family`` names it and
    ``significant`` is ``p_adjusted <= ALPHA``. The 95 % CI matches the test: the corrected
    t interval below :data:`MIN_BOOTSTRAP_PAIRS` pairs, else a seeded percentile bootstrap of the
    mean with its spread widened by the same variance factor (``ci_method`` says which).
    """
    rows = []
    archs = archs_of(trials) if arch is ANY else [arch]
    for a_name in archs:
        done = done_trials(trials, metric, selection=selection, arch=a_name)
        if done.empty:
            continue
        keys = ["category_set", "train_size", "fold"]
        a = done[done["model"] == model].groupby(keys, dropna=False)[metric].mean()
        b = done[done["model"] == reference_model].groupby(keys, dropna=False)[metric].mean()
        pairs = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").reset_index()
        if pairs.empty:
            continue
        ncat = done.groupby("category_set")["n_categories"].max()
        for (cset, size), g in pairs.groupby(["category_set", "train_size"], sort=True):
            g = g.sort_values("fold")
            diffs = (g["a"] - g["b"]).to_numpy(dtype=float)
            cells = done[(done["category_set"] == cset) & done["model"].isin([model, reference_model])]
            protocol, k = design_of(cells)
            here = cells[cells["train_size"] == size]
            n_val = pd.to_numeric(here.get("n_validation"), errors="coerce").mean() if "n_validation" in here else None
            strategy = (
                selection if selection is not None else (RANDOM if (selection_of(here) == RANDOM).all() else "other")
            )
            rho = fold_correlation(protocol, k, float(size), n_val, strategy)
            p, p_raw = np.nan, np.nan
            if len(diffs) >= 2:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    p_raw = float(corrected_t_test(diffs, 0.0)[1])
                    if test == "wilcoxon":
                        try:
                            p = float(stats.wilcoxon(g["a"], g["b"]).pvalue)
                        except ValueError:
                            p = np.nan
                    else:
                        p = float(corrected_t_test(diffs, rho)[1])
            method = "t" if len(diffs) < MIN_BOOTSTRAP_PAIRS else "bootstrap"
            if method == "t":
                lo, hi = corrected_t_interval(diffs, rho)
            else:
                lo, hi = bootstrap_mean_ci(diffs, n_boot=n_boot, seed=seed)
                widen = float(np.sqrt(variance_factor(rho, len(diffs)) * len(diffs)))
                lo, hi = diffs.mean() - widen * (diffs.mean() - lo), diffs.mean() + widen * (hi - diffs.mean())
            n = ncat.get(cset)
            rows.append(
                {
                    "arch": a_name,
                    "category_set": cset,
                    "n_categories": None if n is None or n != n else int(n),
                    "train_size": int(size),
                    "model": model,
                    "reference_model": reference_model,
                    "metric": metric,
                    "n_pairs": len(diffs),
                    "mean_diff": float(diffs.mean()),
                    "std_diff": float(diffs.std(ddof=1)) if len(diffs) > 1 else np.nan,
                    "p_value": p,
                    "p_uncorrected": p_raw,
                    "protocol": protocol,
                    "k": k,
                    "rho": rho,
                    "test": "wilcoxon" if test == "wilcoxon" else "corrected resampled t",
                    "ci_low": np.nan if lo is None else lo,
                    "ci_high": np.nan if hi is None else hi,
                    "ci_method": method,
                    "folds": [int(f) if f == f else None for f in g["fold"]],
                    "diffs": diffs.tolist(),
                }
            )
    if not rows:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    out = pd.DataFrame(rows)
    out["p_adjusted"], out["family_size"], out["family"] = np.nan, 0, ""
    for idx in out.groupby(["arch", "category_set"], dropna=False, sort=False).groups.values():
        sub = out.loc[idx]
        size = int(np.isfinite(sub["p_value"].to_numpy(dtype=float)).sum())
        out.loc[idx, "p_adjusted"] = holm(sub["p_value"])
        out.loc[idx, "family_size"] = size
        out.loc[idx, "family"] = family_text(sub.iloc[0], size)
    out["significant"] = significant(out["p_adjusted"])
    return out[PAIRED_COLUMNS]


def family_text(row: Any, size: int) -> str:
    """'4 sizes of 19cat, moco vs baseline, OA' (plus the arch when recorded): a Holm family."""
    arch = f" ({row['arch']})" if row["arch"] is not None and row["arch"] == row["arch"] else ""
    return (
        f"{size} size{'s' if size != 1 else ''} of {row['category_set']}{arch}, {row['model']} vs "
        f"{row['reference_model']}, {METRIC_SHORT.get(row['metric'], row['metric'])}"
    )


# ---------------------------------------------------------------- learning curves

BOUNDS = ((0.0, 0.0, 1e-3), (1.0, np.inf, 3.0))  # (a, b, c) lower and upper bounds of the fit
MIN_FIT_SIZES = 4  # fits on fewer training-set sizes are labelled unreliable
# A backtest refits without the largest size; a 3-parameter curve then needs 4 sizes for one
# residual degree of freedom, so below 5 sizes there is no backtest and no labels-needed number.
MIN_BACKTEST_SIZES = 5
QUOTE_LIMIT = 2.0  # labels needed are quoted up to this multiple of the largest measured size
# Widest 95 % band (over the measured sizes, in accuracy units) of a reliable fit. The
# ``analysis`` section may set ``max_band_width``; this is the default (10 pp).
MAX_BAND_WIDTH = 0.10
# A backtest passes when the curve fitted without the largest size predicts that size's mean
# within this many pp (``analysis.backtest_tolerance_pp``; README: "How far to trust the report").
BACKTEST_TOLERANCE_PP = 2.0


def power_law(n: Any, a: float, b: float, c: float) -> np.ndarray:
    """OA(n) = a - b * n^(-c)."""
    return a - b * np.power(np.asarray(n, dtype=float), -c)


def samples_to_reach(target: float, a: float, b: float, c: float, d: float = 0.0) -> float | None:
    """n with OA(n) = a - b (n + d)^-c = target, or None when the asymptote a does not exceed it."""
    if not a > target:
        return None
    if b <= 0 or c <= 0:
        return 1.0  # a flat curve above the target: any size will do
    return float(max((b / (a - target)) ** (1.0 / c) - d, 1.0))


@dataclass
class CurveFit:
    """A weighted learning-curve fit (:mod:`analysis.curves`) with its delta-method band."""

    a: float
    b: float
    c: float
    stderr: tuple[float, float, float]
    n_points: int
    sizes: tuple[int, ...]
    boot: np.ndarray  # kept for callers: always empty (the band is analytic since issue 21)
    best_mean: float | None = None  # highest mean over folds among the measured sizes
    d: float = 0.0
    family: str = curves.POWER_LAW
    fits: curves.Fits | None = None  # the one-study fit the band and answers come from
    backtest: dict[str, Any] | None = None  # :func:`backtest_fit`; None below MIN_BACKTEST_SIZES

    def predict(self, n: Any) -> np.ndarray:
        return np.asarray(self.a - self.b * np.power(np.asarray(n, dtype=float) + self.d, -self.c))

    def problems(self, max_band_width: float = MAX_BAND_WIDTH, best_mean: float | None = None) -> list[str]:
        """Why the fit cannot be trusted (empty when it can): b or c on a bound, fewer than
        :data:`MIN_FIT_SIZES` sizes, or a band wider than ``max_band_width`` at the largest measured
        size (where every quoted answer lies; the small sizes' honest band is wide by design).
        An asymptote a = 1 is a constrained estimate, not a problem; ``best_mean`` is not used
        (kept for callers): whether the curve predicts is the backtest's to say."""
        out = []
        if self.b <= 1e-9:
            out.append("b = 0 sits on its bound (a flat curve: no gain with more labels)")
        for value, lo, hi in ((self.c, *curves.C_BOUNDS),):
            if value <= lo * 1.001 or value >= hi * 0.999:
                out.append(f"c = {value:.3g} sits on its bound ({lo:g} \u2026 {hi:g})")
        if len(self.sizes) < MIN_FIT_SIZES:
            out.append(f"fitted on {len(self.sizes)} sizes (fewer than {MIN_FIT_SIZES})")
        band = self.band(np.asarray([max(self.sizes)], dtype=float))
        if band is None:
            out.append("no band")
        else:
            width = float(band[1][0] - band[0][0])
            if width > max_band_width:
                out.append(
                    f"95 % band {100 * width:.1f} pp wide at the largest size {max(self.sizes):,} "
                    f"(limit {100 * max_band_width:.0f} pp)"
                )
        return out

    def band(self, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise 95 % delta-method interval of the curve (:meth:`analysis.curves.Fits.band`)."""
        if self.fits is None:
            return None
        lo, hi = self.fits.band(np.atleast_1d(np.asarray(n, dtype=float)), level)
        return np.clip(lo[0], 0.0, 1.0), np.clip(hi[0], 0.0, 1.0)

    def samples_to_reach(self, target: float, level: float = 0.95) -> dict[str, Any]:
        """Images needed for OA = target with the inverted band up to :data:`QUOTE_LIMIT` x the
        largest size (``high`` None: beyond it)."""
        n = samples_to_reach(target, self.a, self.b, self.c, self.d)
        out: dict[str, Any] = {"target": target, "n": n, "reached": n is not None, "low": None, "high": None}
        if self.fits is not None:
            ans = self.fits.needed(target, QUOTE_LIMIT * max(self.sizes), level)
            out["low"] = float(ans["low"][0]) if np.isfinite(ans["low"][0]) else None
            out["high"] = float(ans["high"][0]) if np.isfinite(ans["high"][0]) else None
        return out


def _fold_matrix(xs: np.ndarray, ys: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sizes (m,) and fold values (1, m, k) from fold-level points (NaN where a fold is missing)."""
    sizes = np.unique(xs)
    labels = pd.unique(groups)
    vals = np.full((1, len(sizes), len(labels)), np.nan)
    for j, s in enumerate(sizes):
        for f, g in enumerate(labels):
            hit = ys[(xs == s) & (groups == g)]
            if len(hit):
                vals[0, j, f] = hit.mean()
    return sizes, vals


def mean_factors(rho: float | Sequence[float], k: np.ndarray) -> np.ndarray:
    """Per size, Var(fold mean) / s^2 (:func:`variance_factor`) for the sizes' fold counts ``k`` and
    fold correlation ``rho`` (one value, or one per size: under ``holdout`` it grows with n)."""
    rhos = np.broadcast_to(np.asarray(rho, dtype=float), np.shape(k))
    return np.array([variance_factor(float(r), int(max(kk, 1))) for r, kk in zip(rhos, k, strict=True)])


def backtest_fit(sizes: np.ndarray, values: np.ndarray, rho: float | Sequence[float]) -> dict[str, Any] | None:
    """:func:`analysis.curves.backtest` of one curve (fit without the largest size, predict it);
    None below :data:`MIN_BACKTEST_SIZES` sizes or with one fold per size (no spread to weigh it)."""
    k = np.sum(np.isfinite(values), axis=-1)[0]
    if len(sizes) < MIN_BACKTEST_SIZES or not (k >= 2).any():
        return None
    means, se, df = curves.standard_errors(sizes, values, mean_factors(rho, k))
    r = curves.backtest(sizes, means, se, df)
    return {key: (v[0].item() if hasattr(v[0], "item") else v[0]) for key, v in r.items()} | {
        "size": int(sizes[-1]),
        "from_size": int(sizes[-2]),
    }


def fit_learning_curve(
    n: Sequence[float],
    y: Sequence[float],
    groups: Sequence[Any] | None = None,
    n_boot: int = 0,
    seed: int = 0,
    rho: float | Sequence[float] = 0.0,
) -> CurveFit | None:
    """Weighted fit of OA(n) on fold-level points: per-size fold means weighted by their standard
    errors from a log-linear variance model, the family (a - b n^-c or a - b (n+d)^-c) by AICc
    (:mod:`analysis.curves`), plus the backtest (:func:`backtest_fit`). ``rho``: the folds'
    correlation (:func:`fold_correlation`; one value or one per size, ascending), widening a mean's
    SE by :func:`variance_factor`.
    Without ``groups`` (or with one fold) every point is its own fold of one size's spread.
    ``n_boot`` and ``seed`` are kept for callers; nothing is resampled. None with fewer than 3 sizes.
    """
    n_all = np.asarray(n, dtype=float)
    y_all = np.asarray(y, dtype=float)
    ok = np.isfinite(n_all) & np.isfinite(y_all) & (n_all > 0)
    xs, ys = n_all[ok], y_all[ok]
    if groups is None:  # no fold labels: the points of a size are its folds, in order
        groups_arr = np.asarray([int(np.sum(xs[:i] == x)) for i, x in enumerate(xs)], dtype=object)
    else:
        groups_arr = np.asarray(groups, dtype=object)[ok]
    if len(np.unique(xs)) < 3:
        return None
    sizes, values = _fold_matrix(xs, ys, groups_arr)
    k = np.sum(np.isfinite(values), axis=-1)[0]
    means, se, df = curves.standard_errors(sizes, values, mean_factors(rho, k))
    fits = curves.fit_curves(sizes, means, se, df)
    a, b, c, d = (float(v) for v in fits.params[0])
    with np.errstate(invalid="ignore"):
        sd = np.sqrt(np.maximum(np.diag(fits.cov[0]), 0.0))
    return CurveFit(
        a=a,
        b=b,
        c=c,
        stderr=(float(sd[0]), float(sd[1]), float(sd[2])),
        n_points=int(len(xs)),
        sizes=tuple(int(s) for s in sizes),
        boot=np.empty((0, 3)),
        d=d,
        family=str(fits.family[0]),
        fits=fits if (k >= 2).any() else None,  # one fold per size: no spread, so no band
        backtest=backtest_fit(sizes, values, rho),
    )


def fit_learning_curves(
    trials: pd.DataFrame,
    metric: str = "overall_accuracy",
    n_boot: int = 100,
    seed: int = 0,
    arch: Any = None,
) -> dict[tuple[str, str], CurveFit]:
    """One fit per (category_set, model) on the fold-level points of finished comparable trials
    of one backbone (``arch``; default the first recorded: backbones are never pooled), with the
    fold correlation of the run's protocol (:func:`fold_correlation`; random selection)."""
    done = done_trials(trials, metric, arch=arch if arch is not None else archs_of(trials)[0])
    fits: dict[tuple[str, str], CurveFit] = {}
    for cset in category_sets(done):
        sub = done[done["category_set"] == cset]
        for model, g in sub.groupby("model"):
            protocol, k = design_of(g)
            n_val = pd.to_numeric(g["n_validation"], errors="coerce").mean() if "n_validation" in g else None
            measured = g.loc[g[metric].notna() & (g["train_size"] > 0), "train_size"]
            rho = [fold_correlation(protocol, k, float(n), n_val) for n in sorted(measured.unique())]
            fit = fit_learning_curve(
                g["train_size"], g[metric], groups=g["fold"].fillna(-1).tolist(), n_boot=n_boot, seed=seed, rho=rho
            )
            if fit is not None:
                fit.best_mean = float(g.groupby("train_size")[metric].mean().max())
                fits[(cset, str(model))] = fit
    return fits


ANSWER_COLUMNS = [
    "category_set",
    "model",
    "target",
    "n",
    "low",
    "high",
    "reached",
    "a",
    "b",
    "c",
    "d",
    "family",
    "min_size",
    "max_size",
    "reliable",
    "problems",
    "backtest",
    "backtest_passed",
]

BACKTEST_COLUMNS = [
    "category_set",
    "model",
    "family",
    "from_size",
    "size",
    "predicted",
    "measured",
    "low",
    "high",
    "error_pp",
    "covered",
    "passed",
    "tolerance_pp",
]


def backtest_table(fits: dict[tuple[str, str], CurveFit], tolerance_pp: float) -> pd.DataFrame:
    """One row per curve with a backtest: fitted up to ``from_size``, predicted at ``size``
    (95 % prediction interval ``low``..``high``), measured there; passed: |error| <= tolerance."""
    rows = []
    for (cset, model), fit in fits.items():
        bt = fit.backtest
        if bt is None:
            continue
        err = 100 * (bt["measured"] - bt["predicted"])
        rows.append(
            {
                "category_set": cset,
                "model": model,
                "family": bt["family"],
                "from_size": bt["from_size"],
                "size": bt["size"],
                "predicted": bt["predicted"],
                "measured": bt["measured"],
                "low": max(bt["low"], 0.0),
                "high": min(bt["high"], 1.0),
                "error_pp": err,
                "covered": bool(bt["covered"]),
                "passed": bool(abs(err) <= tolerance_pp),
                "tolerance_pp": float(tolerance_pp),
            }
        )
    return pd.DataFrame(rows, columns=BACKTEST_COLUMNS)


def learning_curve_answers(
    fits: dict[tuple[str, str], CurveFit],
    targets: Sequence[float],
    max_band_width: float = MAX_BAND_WIDTH,
    tolerance_pp: float = BACKTEST_TOLERANCE_PP,
) -> pd.DataFrame:
    """For every fit and target: images needed (None = not reached) with the inverted-band interval.

    A number is given only for a reliable fit (:meth:`CurveFit.problems`) whose backtest passed
    (:func:`backtest_table`, ``tolerance_pp``); otherwise ``reliable`` is False, ``problems``
    says why and ``n``, ``low``, ``high`` are None. ``backtest`` describes the backtest.
    """
    rows = []
    tests = backtest_table(fits, tolerance_pp).set_index(["category_set", "model"])
    for (cset, model), fit in fits.items():
        problems = fit.problems(max_band_width, fit.best_mean)
        if (cset, model) in tests.index:
            bt = tests.loc[(cset, model)]
            passed = bool(bt["passed"])
            how = (
                f"backtest: fitted up to n = {int(bt['from_size']):,}, predicted OA {100 * bt['predicted']:.1f} % at "
                f"n = {int(bt['size']):,} (95 % prediction interval {100 * bt['low']:.1f}"
                f"\u2013{100 * bt['high']:.1f} %), "
                f"measured {100 * bt['measured']:.1f} % ({bt['error_pp']:+.1f} pp, tolerance "
                f"{tolerance_pp:g} pp: {'passed' if passed else 'failed'})"
            )
            if not passed:
                problems.append(how.replace("backtest:", "the backtest failed:"))
        else:
            passed = False
            if len(fit.sizes) < MIN_BACKTEST_SIZES:
                how = f"no backtest: {len(fit.sizes)} sizes, fewer than {MIN_BACKTEST_SIZES}"
                problems.append(
                    f"no backtest with {len(fit.sizes)} sizes (a labels-needed number needs at least "
                    f"{MIN_BACKTEST_SIZES} sizes: the fit without the largest keeps one degree of freedom)"
                )
            else:
                how = "no backtest: one fold per size"
                problems.append("no backtest with one fold per size (no fold spread to weigh the curve)")
        for t in targets:
            ans = (
                fit.samples_to_reach(float(t))
                if not problems
                else {"n": None, "low": None, "high": None, "reached": False}
            )
            rows.append(
                {
                    "category_set": cset,
                    "model": model,
                    "target": float(t),
                    "n": ans["n"],
                    "low": ans["low"],
                    "high": ans["high"],
                    "reached": ans["reached"],
                    "a": fit.a,
                    "b": fit.b,
                    "c": fit.c,
                    "d": fit.d,
                    "family": fit.family,
                    "min_size": min(fit.sizes),
                    "max_size": max(fit.sizes),
                    "reliable": not problems,
                    "problems": "; ".join(problems),
                    "backtest": how,
                    "backtest_passed": passed,
                }
            )
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)
