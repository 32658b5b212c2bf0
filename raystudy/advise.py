"""``raystudy advise``: which images of an unlabeled pile to label next, and the OA to expect.

From a finished run folder: its config, its selection encoder (``encoders/<selection.encoder>.pt``)
and its trials. The pool images are embedded with that encoder and ``budget`` of them are
chosen with a strategy of :mod:`raystudy.selection`:

- ``coreset``: k-center started from the study's labeled images (the first pick is the pool
  image farthest from everything already labeled);
- ``uncertainty``: a linear head fitted on the embeddings of the study's labeled images (the
  pool has no labels, so one round), the ``budget`` pool images with the smallest margin;
- ``random``: a seeded random order; ``balanced`` needs the pool's categories and is refused.

The expected OA at ``labeled + budget`` images comes from the learning curve fitted to the
study's trials of that strategy (``analysis.stats``), with its bootstrap interval, or "fit
unreliable" with the reasons when the fit cannot say.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.stats import MAX_BAND_WIDTH, fit_learning_curves
from raystudy.config import StudyConfig
from raystudy.data.loading import IMAGE_SUFFIXES, decode_all
from raystudy.data.prepare import prepare_data
from raystudy.data.problems import DataError
from raystudy.results import read_table
from raystudy.runfolder import cache_dir, read_saved_config
from raystudy.selection import EMBEDDING_STRATEGIES, STRATEGIES, l2_normalise, prediction_margin, select_coreset
from raystudy.storage import Location, as_location, reachable
from raystudy.training.probes import FrozenEncoder

ADVISABLE = tuple(s for s in STRATEGIES if s != "balanced")


@dataclass
class Advice:
    """What ``raystudy advise`` decided: the ranked paths and the expected accuracy."""

    strategy: str
    why_strategy: str
    paths: list[Path]
    category_set: str
    model: str
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


def study_trials(run_dir: Location, category_set: str, model: str) -> pd.DataFrame:
    """Finished trials of one set and model, ``selection`` filled (random where null)."""
    trials = read_table(run_dir, "trials")
    keep = (trials["status"] == "done") & (trials["category_set"] == category_set) & (trials["model"] == model)
    keep &= trials["protocol"] != "ceiling"
    out = trials[keep].copy()
    out["selection"] = out["selection"].where(out["selection"].notna(), "random")
    return out


def best_strategy(trials: pd.DataFrame) -> tuple[str, str]:
    """(strategy, why): the best mean OA at the largest size every advisable strategy ran; random if alone."""
    ran = [s for s in trials["selection"].unique() if s in ADVISABLE]
    if len(ran) <= 1:
        return "random", "the study ran one selection strategy"
    sizes = set.intersection(*(set(trials.loc[trials["selection"] == s, "train_size"]) for s in ran))
    if not sizes:
        return "random", "the study's strategies share no train size"
    n = max(sizes)
    means = trials[trials["train_size"] == n].groupby("selection")["overall_accuracy"].mean()[ran]
    best = str(means.idxmax())
    table = ", ".join(f"{s} {100 * v:.1f} %" for s, v in means.sort_values(ascending=False).items())
    return best, f"best mean OA at n = {n} in the study ({table})"


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
    run_dir: str | Path | Location, pool_dir: Path, budget: int, strategy: str | None = None, labeled: int | None = None
) -> Advice:
    """Rank ``budget`` images of ``pool_dir`` for labeling with the run's encoder and curves.

    Args:
        run_dir: a finished study's run folder or URI (config.yaml, encoders/, results/).
        pool_dir: a folder of unlabeled images (searched recursively).
        budget: how many images to label next.
        strategy: random, coreset or uncertainty; None: the best in the study (random if alone).
        labeled: images labeled so far; None: the study's largest train size of the set.

    Example:
        >>> advice = advise(Path("runs/demo"), Path("unlabeled"), 50)  # doctest: +SKIP
        >>> advice.paths[:2], advice.expected  # doctest: +SKIP
    """
    run_dir = reachable(run_dir)
    config = run_dir / "config.yaml"
    if not config.is_file():
        raise DataError(f"{run_dir} is not a raystudy run folder (no config.yaml); give the --out folder of a study")
    cfg = read_saved_config(config)
    paths = pool_images(Path(pool_dir))
    pool = decode_all(pd.DataFrame({"path": [str(p) for p in paths]}), cfg.data.image_size)  # (P, S, S) uint8
    if budget < 1 or budget > len(paths):
        raise DataError(f"--budget {budget}: choose 1 to {len(paths)} (the pool {pool_dir} holds {len(paths)} images)")
    cset = next(iter(cfg.grid.sizes))
    model = cfg.analysis.cssl_model if cfg.analysis.cssl_model in cfg.grid.models else cfg.grid.models[0]
    trials = study_trials(run_dir, cset, model)
    if strategy is None:
        strategy, why = best_strategy(trials)
    else:
        why = "chosen with --strategy"
    if strategy not in ADVISABLE:
        raise DataError(
            f"--strategy {strategy}: use one of {list(ADVISABLE)} (balanced needs the categories of "
            "the pool images, which an unlabeled pool does not have)"
        )
    done_sizes = sorted(set(trials["train_size"].astype(int)))
    labeled = labeled if labeled is not None else (done_sizes[-1] if done_sizes else 0)
    order = rank_pool(cfg, run_dir, pool, budget, strategy, cset)
    return Advice(
        strategy,
        why,
        [paths[i] for i in order],
        cset,
        model,
        labeled,
        expected_accuracy(trials, strategy, labeled + budget, cfg),
    )


def rank_pool(
    cfg: StudyConfig, run_dir: Location, pool: np.ndarray, budget: int, strategy: str, cset: str
) -> np.ndarray:
    """(budget,) positions into ``pool`` (the decoded pool images, (P, S, S) uint8) in labeling order."""
    if strategy not in EMBEDDING_STRATEGIES:
        return np.random.default_rng(cfg.seed).permutation(len(pool))[:budget]
    encoder = run_dir / "encoders" / f"{cfg.selection.encoder}.pt"
    if cfg.selection.encoder is None or not encoder.is_file():
        raise DataError(
            f"no selection encoder at {encoder}: finish the study first (rerun raystudy run with its "
            "config and --out), or use --strategy random"
        )
    data = prepare_data(cfg, cache_dir(run_dir))
    known = data.pools[cset]
    frozen = FrozenEncoder(cfg, str(encoder), cfg.model.arch, torch.device("cpu"))
    feats = frozen.embed(pool, np.arange(len(pool)))  # (P, D)
    labeled = frozen.embed(data.images.images, known.indices)  # (L, D)
    if strategy == "coreset":
        return select_coreset(feats, budget, cfg.seed, already=labeled)
    margin = prediction_margin(l2_normalise(labeled), known.labels, l2_normalise(feats), cfg.seed)
    return np.argsort(margin, kind="stable")[:budget]


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
