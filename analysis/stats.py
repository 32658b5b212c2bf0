"""Box statistics, paired CSSL-minus-baseline differences and learning-curve fits."""

from __future__ import annotations

import gc
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests

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
        var = np.nanvar(d, axis=-1, ddof=1)
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

BOUNDS = ((0.0, 0.0, 1e-3), (1.0, 1e4, 3.0))  # (a, b, c) lower and upper bounds of the fit
MIN_FIT_SIZES = 4  # fits on fewer training-set sizes are labelled unreliable
# Widest 95 % bootstrap band (over the measured sizes, in accuracy units) of a reliable fit. The
# ``analysis`` section may set ``max_band_width``; this is the default (10 pp).
MAX_BAND_WIDTH = 0.10


def power_law(n: Any, a: float, b: float, c: float) -> np.ndarray:
    """OA(n) = a - b * n^(-c)."""
    return a - b * np.power(np.asarray(n, dtype=float), -c)


def samples_to_reach(target: float, a: float, b: float, c: float) -> float | None:
    """n with OA(n) = target, or None when the asymptote a does not exceed the target."""
    if not a > target:
        return None
    if b <= 0 or c <= 0:
        return 1.0  # a flat curve above the target: any size will do
    return float((b / (a - target)) ** (1.0 / c))


@dataclass
class CurveFit:
    """A fitted learning curve with parameter uncertainty and bootstrap refits."""

    a: float
    b: float
    c: float
    stderr: tuple[float, float, float]
    n_points: int
    sizes: tuple[int, ...]
    boot: np.ndarray  # (k, 3) parameters of refits on resampled folds; may be empty
    best_mean: float | None = None  # highest mean over folds among the measured sizes

    def predict(self, n: Any) -> np.ndarray:
        return power_law(n, self.a, self.b, self.c)

    def problems(self, max_band_width: float = MAX_BAND_WIDTH, best_mean: float | None = None) -> list[str]:
        """Why the fit cannot be trusted (empty when it can): a parameter on a bound, fewer than
        :data:`MIN_FIT_SIZES` sizes, no band or a band wider than ``max_band_width`` over the
        measured sizes, or an asymptote below the best measured mean ``best_mean``."""
        out = []
        for name, value, lo, hi in zip("abc", (self.a, self.b, self.c), *BOUNDS, strict=True):
            # relative closeness (b's range spans decades): within 0.1 % of a bound, or b below 1e-6
            if (
                value <= lo * 1.001 + (1e-6 if name == "b" else 1e-3 * (hi - lo) if lo == 0 else 0.0)
                or value >= hi * 0.999
            ):
                out.append(f"{name} = {value:.3g} sits on its bound ({lo:g} \u2026 {hi:g})")
        if len(self.sizes) < MIN_FIT_SIZES:
            out.append(f"fitted on {len(self.sizes)} sizes (fewer than {MIN_FIT_SIZES})")
        band = self.band(np.asarray(self.sizes, dtype=float))
        if band is None:
            out.append("no bootstrap band")
        else:
            width = float(np.max(band[1] - band[0]))
            if width > max_band_width:
                out.append(f"95 % band {100 * width:.1f} pp wide (limit {100 * max_band_width:.0f} pp)")
        if best_mean is not None and self.a < best_mean:
            out.append(f"asymptote {100 * self.a:.1f} % below the best measured mean {100 * best_mean:.1f} %")
        return out

    def band(self, n: Any, level: float = 0.95) -> tuple[np.ndarray, np.ndarray] | None:
        """Pointwise bootstrap interval of the curve, None without refits."""
        if len(self.boot) < 10:
            return None
        curves = np.stack([power_law(n, *p) for p in self.boot])
        alpha = 100 * (1 - level) / 2
        return np.percentile(curves, alpha, axis=0), np.percentile(curves, 100 - alpha, axis=0)

    def samples_to_reach(self, target: float, level: float = 0.95) -> dict[str, Any]:
        """Answer to "how many labeled images for OA = target?" with a bootstrap interval."""
        n = samples_to_reach(target, self.a, self.b, self.c)
        out: dict[str, Any] = {"target": target, "n": n, "reached": n is not None, "low": None, "high": None}
        if len(self.boot) >= 10:
            ns = np.array([samples_to_reach(target, *p) or np.inf for p in self.boot])
            alpha = 100 * (1 - level) / 2
            lo, hi = np.percentile(ns, [alpha, 100 - alpha], method="nearest")
            out["low"] = float(lo) if np.isfinite(lo) else None
            out["high"] = float(hi) if np.isfinite(hi) else None
            out["fraction_reached"] = float(np.isfinite(ns).mean())
        return out


def _curve_fit(n: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    a0 = min(float(np.max(y)) + 0.02, 1.0)
    c0 = 0.5
    b0 = max((a0 - float(np.min(y))) * float(np.min(n)) ** c0, 1e-3)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p, cov = optimize.curve_fit(
                power_law,
                n,
                y,
                p0=[a0, b0, c0],
                bounds=BOUNDS,
                maxfev=20000,
            )
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        return None
    return p, cov


def fit_learning_curve(
    n: Sequence[float],
    y: Sequence[float],
    groups: Sequence[Any] | None = None,
    n_boot: int = 0,
    seed: int = 0,
) -> CurveFit | None:
    """Fit OA(n) = a - b n^-c (bounds: 0<=a<=1, b>=0, 0<c<=3) on fold-level points.

    With ``n_boot`` > 0 the fit is repeated on resampled groups (folds), or on
    resampled points when there is a single group. None with fewer than 3 sizes.
    """
    n_all = np.asarray(n, dtype=float)
    y_all = np.asarray(y, dtype=float)
    ok = np.isfinite(n_all) & np.isfinite(y_all) & (n_all > 0)
    xs, ys = n_all[ok], y_all[ok]
    groups_arr = np.asarray(groups if groups is not None else np.zeros(len(ok)), dtype=object)[ok]
    if len(np.unique(xs)) < 3:
        return None
    res = _curve_fit(xs, ys)
    if res is None:
        return None
    p, cov = res
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.diag(cov)) if np.all(np.isfinite(cov)) else np.full(3, np.nan)
    boot = []
    if n_boot > 0:
        rng = np.random.default_rng(seed)
        labels = pd.unique(groups_arr)
        for _ in range(n_boot):
            if len(labels) >= 2:
                pick = rng.choice(len(labels), size=len(labels), replace=True)
                idx = np.concatenate([np.flatnonzero(groups_arr == labels[i]) for i in pick])
            else:
                idx = rng.integers(0, len(xs), size=len(xs))
            if len(np.unique(xs[idx])) < 3:
                continue
            r = _curve_fit(xs[idx], ys[idx])
            if r is not None:
                boot.append(r[0])
    return CurveFit(
        a=float(p[0]),
        b=float(p[1]),
        c=float(p[2]),
        stderr=(float(se[0]), float(se[1]), float(se[2])),
        n_points=int(len(xs)),
        sizes=tuple(int(s) for s in sorted(np.unique(xs))),
        boot=np.asarray(boot).reshape(-1, 3),
    )


def fit_learning_curves(
    trials: pd.DataFrame,
    metric: str = "overall_accuracy",
    n_boot: int = 100,
    seed: int = 0,
    arch: Any = None,
) -> dict[tuple[str, str], CurveFit]:
    """One fit per (category_set, model) on the fold-level points of finished comparable trials
    of one backbone (``arch``; default the first recorded: backbones are never pooled)."""
    done = done_trials(trials, metric, arch=arch if arch is not None else archs_of(trials)[0])
    fits: dict[tuple[str, str], CurveFit] = {}
    for cset in category_sets(done):
        sub = done[done["category_set"] == cset]
        for model, g in sub.groupby("model"):
            fit = fit_learning_curve(
                g["train_size"], g[metric], groups=g["fold"].fillna(-1).tolist(), n_boot=n_boot, seed=seed
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
    "min_size",
    "max_size",
    "reliable",
    "problems",
]


def learning_curve_answers(
    fits: dict[tuple[str, str], CurveFit], targets: Sequence[float], max_band_width: float = MAX_BAND_WIDTH
) -> pd.DataFrame:
    """For every fit and target: images needed (None = not reached) with a bootstrap interval.

    An unreliable fit (:meth:`CurveFit.problems`) gives ``reliable`` False, its reasons in
    ``problems`` and no number (``n``, ``low``, ``high`` None).
    """
    rows = []
    for (cset, model), fit in fits.items():
        problems = fit.problems(max_band_width, fit.best_mean)
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
                    "min_size": min(fit.sizes),
                    "max_size": max(fit.sizes),
                    "reliable": not problems,
                    "problems": "; ".join(problems),
                }
            )
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)
