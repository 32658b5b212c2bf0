"""Box statistics, paired CSSL-minus-baseline differences and learning-curve fits."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import optimize, stats

from analysis.select import category_sets, done_trials


def box_stats(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles (linear interpolation), min, max, mean and count."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) == 0:
        return {k: float("nan") for k in ("q1", "median", "q3", "min", "max", "mean")} | {"n": 0}
    q1, med, q3 = np.percentile(v, [25, 50, 75])
    return {"q1": float(q1), "median": float(med), "q3": float(q3), "min": float(v.min()),
            "max": float(v.max()), "mean": float(v.mean()), "n": int(len(v))}


def bootstrap_mean_ci(values: Sequence[float], n_boot: int = 1000, seed: int = 0,
                      level: float = 0.95) -> tuple[float, float] | tuple[None, None]:
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

PAIRED_COLUMNS = [
    "category_set", "n_categories", "train_size", "model", "reference_model", "n_pairs",
    "mean_diff", "std_diff", "p_value", "test", "ci_low", "ci_high", "ci_method", "folds", "diffs",
]


def paired_difference_table(
    trials: pd.DataFrame,
    model: str = "moco",
    reference_model: str = "baseline",
    metric: str = "overall_accuracy",
    test: str = "ttest",
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per (category_set, train_size): model minus reference, paired by fold.

    ``p_value`` comes from ``scipy.stats.ttest_rel`` (or ``wilcoxon``) and is NaN
    with fewer than 2 pairs; the 95 % CI is a Student t interval below
    :data:`MIN_BOOTSTRAP_PAIRS` pairs, else a seeded percentile bootstrap of the mean
    (``ci_method`` says which).
    """
    done = done_trials(trials, metric)
    if done.empty:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    keys = ["category_set", "train_size", "fold"]
    a = done[done["model"] == model].groupby(keys, dropna=False)[metric].mean()
    b = done[done["model"] == reference_model].groupby(keys, dropna=False)[metric].mean()
    pairs = pd.concat([a.rename("a"), b.rename("b")], axis=1, join="inner").reset_index()
    if pairs.empty:
        return pd.DataFrame(columns=PAIRED_COLUMNS)
    ncat = done.groupby("category_set")["n_categories"].max()
    rows = []
    for (cset, size), g in pairs.groupby(["category_set", "train_size"], sort=True):
        g = g.sort_values("fold")
        diffs = (g["a"] - g["b"]).to_numpy(dtype=float)
        p = np.nan
        if len(diffs) >= 2:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    if test == "wilcoxon":
                        p = float(stats.wilcoxon(g["a"], g["b"]).pvalue)
                    else:
                        p = float(stats.ttest_rel(g["a"], g["b"]).pvalue)
                except ValueError:
                    p = np.nan
        method = "t" if len(diffs) < MIN_BOOTSTRAP_PAIRS else "bootstrap"
        lo, hi = t_interval(diffs) if method == "t" else bootstrap_mean_ci(diffs, n_boot=n_boot, seed=seed)
        n = ncat.get(cset)
        rows.append({
            "category_set": cset, "n_categories": None if n is None or n != n else int(n),
            "train_size": int(size), "model": model, "reference_model": reference_model,
            "n_pairs": len(diffs), "mean_diff": float(diffs.mean()),
            "std_diff": float(diffs.std(ddof=1)) if len(diffs) > 1 else np.nan,
            "p_value": p, "test": "wilcoxon" if test == "wilcoxon" else "ttest_rel",
            "ci_low": np.nan if lo is None else lo, "ci_high": np.nan if hi is None else hi, "ci_method": method,
            "folds": [int(f) if f == f else None for f in g["fold"]], "diffs": diffs.tolist(),
        })
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


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
        for name, value, lo, hi in zip("abc", (self.a, self.b, self.c), *BOUNDS):
            # relative closeness (b's range spans decades): within 0.1 % of a bound, or b below 1e-6
            if value <= lo * 1.001 + (1e-6 if name == "b" else 1e-3 * (hi - lo) if lo == 0 else 0.0) \
                    or value >= hi * 0.999:
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
                power_law, n, y, p0=[a0, b0, c0],
                bounds=BOUNDS, maxfev=20000,
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
    n = np.asarray(n, dtype=float)
    y = np.asarray(y, dtype=float)
    ok = np.isfinite(n) & np.isfinite(y) & (n > 0)
    n, y = n[ok], y[ok]
    groups_arr = np.asarray(groups if groups is not None else np.zeros(len(ok)), dtype=object)[ok]
    if len(np.unique(n)) < 3:
        return None
    res = _curve_fit(n, y)
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
                idx = rng.integers(0, len(n), size=len(n))
            if len(np.unique(n[idx])) < 3:
                continue
            r = _curve_fit(n[idx], y[idx])
            if r is not None:
                boot.append(r[0])
    return CurveFit(
        a=float(p[0]), b=float(p[1]), c=float(p[2]), stderr=tuple(float(s) for s in se),
        n_points=int(len(n)), sizes=tuple(int(s) for s in sorted(np.unique(n))),
        boot=np.asarray(boot).reshape(-1, 3),
    )


def fit_learning_curves(
    trials: pd.DataFrame,
    metric: str = "overall_accuracy",
    n_boot: int = 100,
    seed: int = 0,
) -> dict[tuple[str, str], CurveFit]:
    """One fit per (category_set, model) on the fold-level points of finished trials."""
    done = done_trials(trials, metric)
    fits: dict[tuple[str, str], CurveFit] = {}
    for cset in category_sets(done):
        sub = done[done["category_set"] == cset]
        for model, g in sub.groupby("model"):
            fit = fit_learning_curve(g["train_size"], g[metric], groups=g["fold"].fillna(-1).tolist(),
                                     n_boot=n_boot, seed=seed)
            if fit is not None:
                fit.best_mean = float(g.groupby("train_size")[metric].mean().max())
                fits[(cset, str(model))] = fit
    return fits


ANSWER_COLUMNS = ["category_set", "model", "target", "n", "low", "high", "reached", "a", "b", "c",
                  "min_size", "max_size", "reliable", "problems"]


def learning_curve_answers(fits: dict[tuple[str, str], CurveFit], targets: Sequence[float],
                           max_band_width: float = MAX_BAND_WIDTH) -> pd.DataFrame:
    """For every fit and target: images needed (None = not reached) with a bootstrap interval.

    An unreliable fit (:meth:`CurveFit.problems`) gives ``reliable`` False, its reasons in
    ``problems`` and no number (``n``, ``low``, ``high`` None).
    """
    rows = []
    for (cset, model), fit in fits.items():
        problems = fit.problems(max_band_width, fit.best_mean)
        for t in targets:
            ans = fit.samples_to_reach(float(t)) if not problems else {"n": None, "low": None, "high": None,
                                                                       "reached": False}
            rows.append({"category_set": cset, "model": model, "target": float(t), "n": ans["n"],
                         "low": ans["low"], "high": ans["high"], "reached": ans["reached"],
                         "a": fit.a, "b": fit.b, "c": fit.c,
                         "min_size": min(fit.sizes), "max_size": max(fit.sizes),
                         "reliable": not problems, "problems": "; ".join(problems)})
    return pd.DataFrame(rows, columns=ANSWER_COLUMNS)
