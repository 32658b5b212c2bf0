"""A study as a user runs it: the sweep (:mod:`raystudy.sweep`), then the report (:mod:`analysis`).

The one place where the engine and the report meet, besides the command line: the engine
never imports :mod:`analysis`.
"""

from __future__ import annotations

from pathlib import Path

from analysis.report import build_report
from raystudy.config import StudyConfig
from raystudy.data.fit import DataFit
from raystudy.storage import Location
from raystudy.sweep import run_sweep


def run_study(
    cfg: StudyConfig,
    run_dir: str | Path | Location,
    verbose: bool = False,
    data_fit: DataFit | None = None,
    shrink: bool = False,
) -> Path | Location:
    """Run (or resume) the whole study at ``run_dir`` (a path or a URI) and build its report;
    returns the report's location (a Path on a local disk).

    Args:
        cfg: the study config.
        run_dir: the run location (``--out``).
        verbose: Ray Tune's own progress output too.
        data_fit: what ``--data`` decided (saved as ``data_fit.json`` for the report).
        shrink: fit requests to the cluster's current nodes (always done on a local instance).

    Raises :class:`~raystudy.errors.StudyInterrupted` on SIGINT / SIGTERM (state kept),
    :class:`~raystudy.errors.NothingToRun` when every cell is skipped,
    :class:`~raystudy.errors.StudyIncomplete` when cells end without a result.

    Example:
        >>> report = run_study(load_config(preset="smoke"), "runs/smoke")  # doctest: +SKIP
    """
    return run_sweep(cfg, run_dir, verbose=verbose, data_fit=data_fit, shrink=shrink, finish=build_report)
