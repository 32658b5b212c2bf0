"""``raystudy advise``: which images of an unlabeled pile to label next, and the OA to expect.

From a finished run folder (a path or a URI) alone: its config, its selection encoder
(``encoders/<selection.encoder>.pt``), the encoder's stored embeddings of the study's labeled pool
(``advise/<set>-<encoder>.npz``, :mod:`raystudy.training.advise_pack`) and its trials. Neither the
study's data folder nor its initial-weight checkpoints are read, so it runs on another machine
than the cluster's. The pool images are embedded with that encoder (fp32) and ``budget`` of them
are chosen with a strategy of :mod:`raystudy.selection`:

- ``coreset``: k-center started from the study's labeled images (the first pick is the pool
  image farthest from everything already labeled);
- ``typiclust``: k-means on pool and labeled images together, the most typical pool image of
  each of the largest clusters holding the fewest labeled images;
- ``probcover``: greedy coverage of the pool's delta-balls, what the labeled images' balls
  cover counting as covered;
- ``uncertainty``: a linear head fitted on the embeddings of the study's labeled images (the
  pool has no labels, so one round), the ``budget`` pool images with the smallest margin;
- ``random``: a seeded random order; ``balanced`` needs the pool's categories and is refused.

Only cells of one backbone (``--arch``, default ``model.arch``) are read. The default strategy is
the one whose measured curve is best (the highest mean OA over the sizes every strategy ran),
with its fold-paired difference to random at each size (corrected 95 % interval, Holm-adjusted
p), or random when none beat it. The expected OA at ``labeled + budget`` images comes from the
learning curve fitted to the study's trials of that strategy (``analysis.stats``), with its
bootstrap interval, or "fit unreliable" with the reasons when the fit cannot say.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.stats import MAX_BAND_WIDTH, fit_learning_curves, paired_difference_table
from raystudy import registry
from raystudy.config import StudyConfig
from raystudy.data.loading import IMAGE_SUFFIXES, decode_all
from raystudy.data.problems import DataError
from raystudy.grid import run_name
from raystudy.results import read_table
from raystudy.runfolder import read_saved_config
from raystudy.selection import (
    l2_normalise,
    prediction_margin,
    random_argsort,
    select_coreset,
    select_probcover,
    select_typiclust,
)
from raystudy.storage import Location, as_location, reachable
from raystudy.training.advise_pack import read_advise_pack
from raystudy.training.probes import FrozenEncoder

# the strategies rank_pool ranks an unlabeled pool with, next to the study's labeled images: the
# built-in ones but balanced (it needs the pool's categories); a strategy registered for the grid
# (raystudy.registry.register_strategy) picks from a labeled pool and has no ranking here
ADVISABLE = ("random", "coreset", "uncertainty", "typiclust", "probcover")


@dataclass
class Advice:
    """What ``raystudy advise`` decided: the ranked paths and the expected accuracy."""

    strategy: str
    why_strategy: str
    paths: list[Path]
    category_set: str
    model: str
    arch: str
    labeled: int
    expected: str  # one line: OA with its interval, or "fit unreliable: ..."
    notes: list[str] = field(default_factory=list)


def pool_images(pool_dir: Path) -> list[Path]:
    """Every image file under ``pool_dir`` (recursively, hidden files skipped), sorted.

    Example:
        >>> pool_images(Path("unlabeled"))  # doctest: +SKIP
        [PosixPath('unlabeled/a/000.png'), PosixPath('unlabeled/b.tif')]
    """
    if not pool_dir.is_dir():
        raise DataError(f"--pool {pool_dir}: no such folder; give the folder holding the unlabeled images")
    found = sorted(
        p
        for p in pool_dir.rglob("*")
        if p.is_file()
        and p.suffix.lower() in IMAGE_SUFFIXES
        and not any(part.startswith(".") for part in p.relative_to(pool_dir).parts)
    )
    if not found:
        raise DataError(
            f"--pool {pool_dir}: no image files (PNG, JPEG or TIFF) found in it or below it; "
            "put the unlabeled images there"
        )
    return found


def study_trials(run_dir: Location, category_set: str, model: str, arch: str) -> pd.DataFrame:
    """Finished trials of one set, model and backbone, ``selection`` filled (random where null)."""
    trials = read_table(run_dir, "trials")
    trials["arch"] = trials["arch"].where(trials["arch"].notna(), arch)  # older runs: one arch
    keep = (trials["status"] == "done") & (trials["category_set"] == category_set) & (trials["model"] == model)
    keep &= (trials["protocol"] != "ceiling") & (trials["arch"] == arch)
    out = trials[keep].copy()
    out["selection"] = out["selection"].where(out["selection"].notna(), "random")
    return out


def best_strategy(trials: pd.DataFrame) -> tuple[str, str]:
    """(strategy, why): the strategy with the best measured curve (highest mean OA over the sizes
    every advisable strategy ran), with its paired difference to random; random when none beat it."""
    ran = [s for s in trials["selection"].unique() if s in ADVISABLE]
    if len(ran) <= 1:
        return "random", "the study ran one selection strategy"
    sizes = set.intersection(*(set(trials.loc[trials["selection"] == s, "train_size"]) for s in ran))
    if not sizes:
        return "random", "the study's strategies share no train size"
    shared = trials[trials["train_size"].isin(sizes) & trials["selection"].isin(ran)]
    curve = shared.groupby(["selection", "train_size"])["overall_accuracy"].mean().groupby("selection").mean()
    table = ", ".join(f"{s} {100 * v:.1f} %" for s, v in curve.sort_values(ascending=False).items())
    best = str(curve.idxmax())
    where = f"mean OA over n = {sorted(int(n) for n in sizes)}: {table}"
    if best == "random" or "random" not in ran:
        return best, f"none beat random ({where})" if best == "random" else f"the best measured curve ({where})"
    pair = shared[shared["selection"].isin(["random", best])]
    paired = paired_difference_table(
        pair.assign(model=pair["selection"]), model=best, reference_model="random", selection=None
    )
    per_size = "; ".join(
        f"n = {int(r.train_size)}: {100 * r.mean_diff:+.1f} pp (95 % CI {100 * r.ci_low:+.1f} \u2026 "
        f"{100 * r.ci_high:+.1f}, Holm-adjusted p = {r.p_adjusted:.2g})"
        for r in paired.itertuples()
    )
    significant = bool(paired["significant"].any()) if len(paired) else False
    verdict = "significantly better than random at some size" if significant else "not significantly better"
    return best, f"the best measured curve ({where}); vs random, fold-paired: {per_size}; {verdict}"


def expected_accuracy(trials: pd.DataFrame, strategy: str, n: int, cfg: StudyConfig) -> str:
    """The OA at ``n`` labels on the study's fitted curve of ``strategy`` with its 95 % band."""
    mine = trials[trials["selection"] == strategy].assign(selection="random")  # the fit reads random rows
    a = cfg.analysis
    fits = fit_learning_curves(mine, n_boot=max(a.curve_bootstrap, 20), seed=a.seed)
    if not fits:
        return f"fit unreliable: fewer than 3 train sizes of {strategy} selection in the study"
    fit = next(iter(fits.values()))
    problems = fit.problems(a.max_band_width or MAX_BAND_WIDTH, fit.best_mean)
    if problems:
        return "fit unreliable: " + "; ".join(problems)
    band = fit.band(np.array([float(n)]))
    where = "within" if n <= max(fit.sizes) else "beyond"
    interval = f" (95 % band {100 * band[0][0]:.1f} \u2013 {100 * band[1][0]:.1f} %)" if band is not None else ""
    return (
        f"expected OA at {n} labeled images: {100 * float(fit.predict(n)):.1f} %{interval}, from the curve "
        f"fitted to the study's {strategy} cells ({min(fit.sizes)} \u2026 {max(fit.sizes)} images; "
        f"{n} is {where} them)"
    )


def advise(
    run_dir: str | Path | Location,
    pool_dir: Path,
    budget: int,
    strategy: str | None = None,
    labeled: int | None = None,
    arch: str | None = None,
) -> Advice:
    """Rank ``budget`` images of ``pool_dir`` for labeling with the run's encoder and curves.

    Args:
        run_dir: a finished study's run folder or URI (config.yaml, encoders/, advise/, results/).
        pool_dir: a folder of unlabeled images (searched recursively).
        budget: how many images to label next.
        strategy: one of :data:`ADVISABLE`; None: the best measured in the study (random if alone).
        labeled: images labeled so far; None: the study's largest train size of the set.
        arch: the backbone whose cells and encoder are used; None: the study's ``model.arch``.

    Example:
        >>> advice = advise(Path("runs/demo"), Path("unlabeled"), 50)  # doctest: +SKIP
        >>> advice.paths[:2], advice.expected  # doctest: +SKIP
    """
    run_dir = reachable(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise DataError(f"{run_dir} is not a raystudy run folder (no config.yaml); give the --out folder of a study")
    cfg = read_saved_config(config)
    arch = arch or cfg.model.arch
    if arch not in cfg.grid.archs:
        raise DataError(f"--arch {arch}: the study ran {list(cfg.grid.archs)}; choose one of them")
    paths = pool_images(Path(pool_dir))
    pool = decode_all(pd.DataFrame({"path": [str(p) for p in paths]}), cfg.data.image_size)  # (P, S, S) uint8
    if budget < 1 or budget > len(paths):
        raise DataError(f"--budget {budget}: choose 1 to {len(paths)} (the pool {pool_dir} holds {len(paths)} images)")
    cset = next(iter(cfg.grid.sizes))
    model = cfg.analysis.cssl_model if cfg.analysis.cssl_model in cfg.grid.models else cfg.grid.models[0]
    trials = study_trials(run_dir, cset, model, arch)
    if strategy is None:
        strategy, why = best_strategy(trials)
    else:
        why = "chosen with --strategy"
    if strategy not in ADVISABLE:
        why = (
            "balanced needs the categories of the pool images, which an unlabeled pool does not have"
            if strategy == "balanced"
            else f"{strategy} is a strategy registered for the grid, which picks from a labeled pool"
            if strategy in registry.strategy_names()
            else f"there is no strategy {strategy}"
        )
        raise DataError(f"--strategy {strategy}: use one of {list(ADVISABLE)} ({why})")
    done_sizes = sorted(set(trials["train_size"].astype(int)))
    labeled = labeled if labeled is not None else (done_sizes[-1] if done_sizes else 0)
    order = rank_pool(cfg, run_dir, pool, budget, strategy, cset, arch)
    return Advice(
        strategy,
        why,
        [paths[i] for i in order],
        cset,
        model,
        arch,
        labeled,
        expected_accuracy(trials, strategy, labeled + budget, cfg),
    )


def rank_pool(
    cfg: StudyConfig, run_dir: Location, pool: np.ndarray, budget: int, strategy: str, cset: str, arch: str
) -> np.ndarray:
    """(budget,) positions into ``pool`` (the decoded pool images, (P, S, S) uint8) in labeling order."""
    rng = np.random.default_rng(cfg.seed)
    if strategy == "random":
        return rng.permutation(len(pool))[:budget]
    name = run_name(cfg.selection.encoder or "", arch, cfg.model.arch)
    encoder = run_dir / "encoders" / f"{name}.pt"
    if cfg.selection.encoder is None or not encoder.is_file():
        raise DataError(
            f"no selection encoder at {encoder}: finish the study first (rerun raystudy run with its "
            "config and --out), or use --strategy random"
        )
    try:
        known = read_advise_pack(run_dir, cset, name)  # the study's labeled pool, embedded by the study
    except FileNotFoundError as err:
        raise DataError(str(err)) from None
    with torch.no_grad():
        frozen = FrozenEncoder(cfg, encoder.uri, arch, torch.device("cpu"), fp32=True)
        feats = frozen.embed(pool, np.arange(len(pool)))  # (P, D)
    labeled = known["features"]  # (L, D)
    if strategy == "coreset":
        return select_coreset(feats, budget, cfg.seed, already=labeled)
    if strategy == "typiclust":
        return select_typiclust(feats, budget, cfg.seed, already=labeled)
    if strategy == "probcover":
        return select_probcover(feats, budget, cfg.seed, len(known["categories"]), already=labeled)
    margin = prediction_margin(l2_normalise(labeled), known["labels"], l2_normalise(feats), cfg.seed)
    return random_argsort(margin, rng)[:budget]


def check_advice_out(out: Path) -> None:
    """``--out`` must name a file to write (not a folder): checked before any ranking."""
    if Path(out).is_dir():
        raise DataError(f"--out {out} is a directory; give the CSV file to write, e.g. --out {Path(out) / 'a.csv'}")


def write_advice(advice: Advice, out: Path) -> Path:
    """``rank, path, strategy`` rows, written atomically (:meth:`raystudy.storage.Location.write_text`)."""
    text = io.StringIO(newline="")
    w = csv.writer(text)
    w.writerow(["rank", "path", "strategy"])
    for rank, path in enumerate(advice.paths, start=1):
        w.writerow([rank, str(path), advice.strategy])
    as_location(Path(out)).write_text(text.getvalue())
    return Path(out)
