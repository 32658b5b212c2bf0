"""Weighted learning-curve fits, vectorised over simulated studies (numpy/scipy only).

A curve is fitted to the per-size fold means ``ybar_j`` with standard errors ``se_j`` from a
variance model of the fold values (:func:`standard_errors`), by weighted least squares
(chi^2 = sum ((ybar_j - f(n_j)) / se_j)^2). Two families, one 4-vector of parameters each:

- ``power law``: f(n) = a - b n^-c (d = 0 fixed, 3 parameters);
- ``power law with offset``: f(n) = a - b (n + d)^-c (4 parameters; Hoiem et al.'s and
  Viering & Loog's extended power law), eligible only with at least 6 sizes.

The family of each curve is the one with the smaller AICc, chi^2 + 2p + 2p(p+1)/(m-p-1), m sizes
(the 4-parameter family needs m - p - 1 >= 1 so that AICc is finite). Bounds: 0 <= a <= 1,
b >= 0, 1e-3 <= c <= 3, 0 <= d <= 4 n_max. For fixed (c, d) the curve is linear in (a, b), so
the fit is exact in (a, b) on a grid of (c, d) and refined by golden-section search (variable
projection): no starting values, no local minima in (a, b), and every simulated study at once.

Intervals: the delta method on the weighted fit (Bates & Watts 1988, ch. 2): Var f(n) =
g(n)' C g(n), C = (J' W J)^-1 with the modelled standard errors taken as known up to the
variance model's own uncertainty: Student t on its effective degrees of freedom
(:func:`standard_errors`). Scaling C by chi^2 / (m - p) as well was measured to over-cover
(0.97-0.99 at 3 folds); a misfit is the backtest's to catch, not the band's.
"Labels needed for X" is the inverse of that band (the calibration interval of Draper & Smith,
ch. 3.2): the n where the upper band reaches X to the n where the lower band does. It covers
the true n exactly when the band covers the true curve at the true n, so its coverage is the
band's (tests/test_calibration.py measures both).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

POWER_LAW = "power law"
OFFSET = "power law with offset"
FAMILIES = (POWER_LAW, OFFSET)
N_PARAMS = {POWER_LAW: 3, OFFSET: 4}
MIN_OFFSET_SIZES = 6  # the 4-parameter family needs m - 5 >= 1 for a finite AICc
C_BOUNDS = (1e-3, 3.0)
D_MAX = 4.0  # d <= D_MAX * the largest size
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
# Fold variances at or below this are zero: three equal accuracies give ~1e-32 from round-off, not
# 0, and a log or a ratio of that is a spread of 1e-16 pp (a zero-width band, an infinite t). An SD
# of 1e-6 is one image in a million, below any accuracy's resolution.
ZERO_VARIANCE = 1e-12


def fold_variance(values: Any, axis: int = -1) -> np.ndarray:
    """The sample variance (ddof 1, NaN ignored) over ``axis``, with round-off below
    :data:`ZERO_VARIANCE` set to 0 (``np.nanvar`` of equal floats is not always 0)."""
    var = np.nanvar(np.asarray(values, dtype=float), axis=axis, ddof=1)
    return np.where(var <= ZERO_VARIANCE, 0.0, var)


def curve(n: Any, params: np.ndarray) -> np.ndarray:
    """f(n) = a - b (n + d)^-c for parameters (..., 4) and sizes n (broadcast: params[..., None])."""
    p = np.asarray(params, dtype=float)
    a, b, c, d = (p[..., i, None] for i in range(4))
    return a - b * np.power(np.asarray(n, dtype=float) + d, -c)


def jacobian(n: Any, params: np.ndarray) -> np.ndarray:
    """df/d(a, b, c, d) at sizes n: (..., len(n), 4)."""
    p = np.asarray(params, dtype=float)
    a, b, c, d = (p[..., i, None] for i in range(4))
    u = np.asarray(n, dtype=float) + d
    x = np.power(u, -c)
    ones = np.ones_like(x * a)
    return np.stack([ones, -x, b * x * np.log(u), b * c * x / u], axis=-1)


def standard_errors(
    sizes: np.ndarray, values: np.ndarray, factor: np.ndarray | float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-size means, their standard errors and the effective df of the variance model.

    Args:
        sizes: (m,) training-set sizes.
        values: (S, m, k) fold values (NaN: missing fold).
        factor: Var(mean of k folds) / s^2 per size, :func:`analysis.stats.variance_factor`
            (1/k for independent folds; more for the protocols' overlapping folds).

    The variance model is log-linear, log s^2(n) = alpha + beta log n, fitted by least squares to
    the per-size fold variances (each on k - 1 df) after removing the bias of a log chi^2,
    E log(s^2 / sigma^2) = digamma(nu/2) - log(nu/2). Why: with 3 folds a per-size SD has 2 df
    (its own SE is ~70 %), so it cannot weight its size by itself; the fold spread falls like a
    power of n (5-10x over a study's sizes), so one pooled variance would give the small sizes too
    much weight and the large ones too little; two parameters over all sizes are stable. Sizes with
    zero fold variance are left out of the regression. Its effective df (Satterthwaite: 2 /
    Var(log sigma^2-hat) of the level, trigamma(nu/2) / m) is 2 m / trigamma(nu/2); it sets the
    band's t quantile.
    """
    v = np.asarray(values, dtype=float)
    n = np.asarray(sizes, dtype=float)
    k = np.sum(np.isfinite(v), axis=-1)  # (S, m)
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a size with one fold: no variance, NaN
        means = np.nanmean(v, axis=-1)
        var = np.where(k >= 2, fold_variance(v), np.nan)
    nu = np.maximum(np.nanmedian(k, axis=-1) - 1, 1.0)  # (S,)
    bias = special.digamma(nu / 2) - np.log(nu / 2)
    ok = np.isfinite(var) & (var > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(ok, np.log(np.where(ok, var, 1.0)) - bias[:, None], 0.0)
    x = np.log(n)[None, :] * ok
    cnt = ok.sum(axis=1)
    xm = np.where(cnt > 0, x.sum(1) / np.maximum(cnt, 1), 0.0)
    zm = np.where(cnt > 0, z.sum(1) / np.maximum(cnt, 1), 0.0)
    sxx = (((x - xm[:, None]) ** 2) * ok).sum(1)
    slope = np.where(
        (cnt >= 3) & (sxx > 0), (((x - xm[:, None]) * (z - zm[:, None])) * ok).sum(1) / np.where(sxx > 0, sxx, 1), 0.0
    )
    log_var = zm[:, None] + slope[:, None] * (np.log(n)[None, :] - xm[:, None])
    sigma2 = np.where(cnt[:, None] > 0, np.exp(log_var), 1e-12)  # no spread at all: equal weights
    se = np.sqrt(sigma2 * np.asarray(factor, dtype=float))
    df = float(np.median(2 * np.maximum(cnt, 1) / special.polygamma(1, nu / 2)))
    return means, se, df


def _from_sums(
    sw: np.ndarray, sx: np.ndarray, sy: np.ndarray, sxx: np.ndarray, sxy: np.ndarray, syy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Weighted least squares of y = a - b x with 0 <= a <= 1, b >= 0 from the weighted sums
    (sum w, w x, w y, w x^2, w x y, w y^2): (a, b, chi^2). A binding box constraint is met on
    its face (a = 1 with b from the 1-parameter fit, or b = 0)."""
    xm, ym = sx / sw, sy / sw
    cxx, cxy, cyy = sxx - sx * xm, sxy - sx * ym, syy - sy * ym
    b = -np.where(cxx > 0, cxy / np.where(cxx > 0, cxx, 1.0), 0.0)
    a = ym + b * xm
    chi2 = cyy - b * b * cxx
    top = a > 1.0  # asymptote on its bound: a = 1; 1 - y = b x, b = sum w (1-y) x / sum w x^2
    s1x, s11 = sx - sxy, sw - 2 * sy + syy
    b_top = np.maximum(s1x / np.maximum(sxx, 1e-300), 0.0)
    chi_top = s11 - 2 * b_top * s1x + b_top**2 * sxx
    flat = b < 0  # no gain with n: b = 0, a = the weighted mean
    a = np.where(top, 1.0, np.where(flat, np.clip(ym, 0.0, 1.0), a))
    chi2 = np.where(top, chi_top, np.where(flat, cyy, chi2))
    b = np.where(top, b_top, np.where(flat, 0.0, b))
    return np.clip(a, 0.0, 1.0), b, np.maximum(chi2, 0.0)


def _profile(n: np.ndarray, y: np.ndarray, w: np.ndarray, c: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, ...]:
    """(a, b, chi^2) per study at its own (c, d), all of shape (S,)."""
    x = np.power(n[None, :] + d[:, None], -c[:, None])
    wy = w * y
    return _from_sums(w.sum(1), (w * x).sum(1), wy.sum(1), (w * x * x).sum(1), (wy * x).sum(1), (wy * y).sum(1))


def _profile_grid(n: np.ndarray, y: np.ndarray, w: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """chi^2 (S, G) of every study at every grid point (c_g, d_g): matrix products, no (S, G, m)."""
    x = np.power(n[None, :] + d[:, None], -c[:, None])  # (G, m)
    wy = w * y
    ones = np.ones(len(x))
    return _from_sums(
        w.sum(1)[:, None] * ones,
        w @ x.T,
        wy.sum(1)[:, None] * ones,
        w @ (x * x).T,
        wy @ x.T,
        (wy * y).sum(1)[:, None] * ones,
    )[2]


def _golden(f: Any, lo: np.ndarray, hi: np.ndarray, steps: int = 28) -> np.ndarray:
    """Vectorised golden-section minimum of f over [lo, hi] (one interval per study)."""
    x1, x2 = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    f1, f2 = f(x1), f(x2)
    for _ in range(steps):
        left = f1 < f2
        hi, lo = np.where(left, x2, hi), np.where(left, lo, x1)
        x2n, x1n = np.where(left, x1, lo + _GOLDEN * (hi - lo)), np.where(left, hi - _GOLDEN * (hi - lo), x2)
        fn = f(np.where(left, x1n, x2n))
        f2, f1 = np.where(left, f1, fn), np.where(left, fn, f2)
        x1, x2 = x1n, x2n
    return (lo + hi) / 2


def fit_family(family: str, sizes: np.ndarray, means: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares parameters (S, 4) and chi^2 (S,) of one family, every study at once."""
    n = np.asarray(sizes, dtype=float)
    y, w = np.asarray(means, dtype=float), 1.0 / np.asarray(se, dtype=float) ** 2
    cg = np.geomspace(*C_BOUNDS, 90)
    dg = np.zeros(1) if family == POWER_LAW else np.concatenate([[0.0], np.geomspace(n.min() / 8, D_MAX * n.max(), 15)])
    cc, dd = (g.ravel() for g in np.meshgrid(cg, dg, indexing="ij"))
    best = np.argmin(_profile_grid(n, y, w, cc, dd), axis=1)
    ic, id_ = np.unravel_index(best, (len(cg), len(dg)))
    c, d = cg[ic], dg[id_]

    def chi_c(cv: np.ndarray) -> np.ndarray:
        return _profile(n, y, w, cv, d)[2]

    def chi_d(dv: np.ndarray) -> np.ndarray:
        return _profile(n, y, w, c, dv)[2]

    rounds = 1 if family == POWER_LAW else 2
    for _ in range(rounds):
        c = _golden(chi_c, cg[np.maximum(ic - 1, 0)], cg[np.minimum(ic + 1, len(cg) - 1)])
        if family == OFFSET:
            d = _golden(chi_d, dg[np.maximum(id_ - 1, 0)], dg[np.minimum(id_ + 1, len(dg) - 1)])
    a, b, chi2 = _profile(n, y, w, c, d)
    return np.stack([a, b, c, d], axis=-1), chi2


@dataclass
class Fits:
    """Fitted curves of S studies: parameters (S, 4), covariance (S, 4, 4), family per study."""

    sizes: np.ndarray
    means: np.ndarray
    se: np.ndarray
    params: np.ndarray
    cov: np.ndarray
    chi2: np.ndarray
    family: np.ndarray  # (S,) of FAMILIES
    df: float  # t degrees of freedom of the band

    def predict(self, n: Any) -> np.ndarray:
        return curve(n, self.params)

    def band(self, n: Any, level: float = 0.95, extra_var: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Pointwise delta-method interval of the curve (plus ``extra_var``: a new measurement's)."""
        g = jacobian(n, self.params)
        var = np.einsum("...ni,...ij,...nj->...n", g, self.cov, g) + extra_var
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * np.sqrt(np.maximum(var, 0.0))
        f = self.predict(n)
        return f - half, f + half

    def needed(self, target: Any, cap: float, level: float = 0.95) -> dict[str, np.ndarray]:
        """Images needed for ``target`` (S,): point n (NaN: the asymptote does not exceed it) and
        the inverted band [low, high] on a log grid up to ``cap`` (NaN high: beyond ``cap``)."""
        t = np.asarray(target, dtype=float) + np.zeros(len(self.params))
        a, b, c, d = self.params.T
        with np.errstate(divide="ignore", invalid="ignore"):
            point = np.where(a > t, np.where(b > 0, (b / (a - t)) ** (1.0 / c) - d, 1.0), np.nan)
        grid = np.geomspace(1.0, cap, 400)
        lo_band, hi_band = self.band(grid, level)

        def first(reached: np.ndarray, curve_: np.ndarray) -> np.ndarray:
            i = np.argmax(reached, axis=1)
            any_ = reached.any(axis=1)
            rows = np.arange(len(i))
            j = np.maximum(i - 1, 0)
            y0, y1 = curve_[rows, j], curve_[rows, i]
            frac = np.where((i > 0) & (y1 != y0), (t - y0) / np.where(y1 != y0, y1 - y0, 1.0), 0.0)
            logn = np.log(grid[j]) + np.clip(frac, 0, 1) * (np.log(grid[i]) - np.log(grid[j]))
            return np.where(any_, np.exp(logn), np.nan)

        return {
            "n": np.where(point >= 1.0, point, np.where(np.isfinite(point), 1.0, np.nan)),
            "low": first(hi_band >= t[:, None], hi_band),
            "high": first(lo_band >= t[:, None], lo_band),
        }


def fit_curves(
    sizes: np.ndarray, means: np.ndarray, se: np.ndarray, df: float, families: tuple[str, ...] = FAMILIES
) -> Fits:
    """Both families where eligible, the one with the smaller AICc per study, its covariance."""
    n = np.asarray(sizes, dtype=float)
    m = len(n)
    chosen = None
    for fam in families:
        p = N_PARAMS[fam]
        if fam == OFFSET and m < MIN_OFFSET_SIZES:
            continue
        params, chi2 = fit_family(fam, n, means, se)
        aicc = chi2 + 2 * p + (2 * p * (p + 1) / (m - p - 1) if m - p - 1 > 0 else 0.0)
        if chosen is None:
            chosen = (params, chi2, aicc, np.full(len(chi2), fam, dtype=object))
        else:
            better = aicc < chosen[2]
            chosen = (
                np.where(better[:, None], params, chosen[0]),
                np.where(better, chi2, chosen[1]),
                np.where(better, aicc, chosen[2]),
                np.where(better, fam, chosen[3]),
            )
    assert chosen is not None  # POWER_LAW is always eligible
    params, chi2, _, family = chosen
    free = np.where((family == OFFSET)[:, None], 1.0, np.array([1.0, 1.0, 1.0, 0.0]))  # d fixed at 0
    g = jacobian(n, params) * free[:, None, :]
    w = 1.0 / np.asarray(se, dtype=float) ** 2
    info = np.einsum("sni,sn,snj->sij", g, w, g)
    cov = np.linalg.pinv(info, hermitian=True)
    return Fits(n, np.asarray(means), np.asarray(se), params, cov, chi2, family, df)


def backtest(
    sizes: np.ndarray, means: np.ndarray, se: np.ndarray, df: float, level: float = 0.95
) -> dict[str, np.ndarray]:
    """Fit without the largest size and predict it: predicted, measured, the prediction interval
    (the curve's band plus the measured mean's own variance) and whether it covered."""
    n = np.asarray(sizes, dtype=float)
    fits = fit_curves(n[:-1], means[:, :-1], se[:, :-1], df)
    lo, hi = fits.band(n[-1:], level, extra_var=se[:, -1:] ** 2)
    pred = fits.predict(n[-1:])[:, 0]
    measured = np.asarray(means)[:, -1]
    return {
        "predicted": pred,
        "measured": measured,
        "low": lo[:, 0],
        "high": hi[:, 0],
        "covered": (lo[:, 0] <= measured) & (measured <= hi[:, 0]),
        "family": fits.family,
    }
