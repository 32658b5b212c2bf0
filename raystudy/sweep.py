"""One study, end to end: data -> pretraining (Ray Train) -> grid (Ray Tune) -> Parquet -> report.

Rerunning the same command on the same run folder resumes: decoded images are
reused, existing encoders are not pretrained again, finished cells are not run
again (each trial also checks its own result first), failed cells are retried.
"""

from __future__ import annotations

import fcntl
import shutil
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import ray
from ray import tune

from raystudy.config import ConfigError, StudyConfig, dump_config, load_config
from raystudy.data.loading import DataError
from raystudy.data.prepare import StudyData, prepare_data
from raystudy.grid import PlannedCell, grid_frame, plan_grid
from raystudy.results import has_result, write_table
from raystudy.training.finetune import FinetuneContext, finetune_trial
from raystudy.training.pretrain import run_pretraining

log = logging.getLogger("raystudy")


class StudyLockedError(RuntimeError):
    """Another driver is already running a study in this run folder."""


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock on the run folder for the driver's lifetime."""
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / ".lock", "w")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise StudyLockedError(
            f"run folder {run_dir} is in use by another raystudy driver; wait for it to finish "
            "or choose another folder with --out"
        ) from None
    try:
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def check_resumable(cfg: StudyConfig, run_dir: Path) -> None:
    """A run folder holds one study: refuse to mix results of a different config."""
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        return
    try:
        previous = load_config(saved)
    except ConfigError:
        return
    if previous.config_hash() != cfg.config_hash():
        raise ConfigError(
            f"run folder {run_dir} holds results of a different study config "
            f"(hash {previous.config_hash()} vs {cfg.config_hash()}); use another --out, "
            "or delete the folder to start over"
        )


class ProgressLine(tune.Callback):
    """One line per finished trial: done/total, the cell, its accuracy and the time left."""

    def __init__(self, total: int, already: int) -> None:
        self.total, self.done, self.start = total, already, time.time()
        self.run_now = 0

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.done += 1
        self.run_now += 1
        elapsed = time.time() - self.start
        left = (self.total - self.done) * elapsed / max(self.run_now, 1)
        acc = (trial.last_result or {}).get("overall_accuracy")
        acc_s = f" OA={acc:.3f}" if isinstance(acc, float) else ""
        print(
            f"[{self.done}/{self.total}] {trial.config['cell']['cell_id']} done{acc_s} "
            f"| elapsed {elapsed:.0f}s, ~{left:.0f}s left",
            flush=True,
        )

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print(f"[failed] {trial.config['cell']['cell_id']}: {str(trial.error_file or 'error')}", flush=True)


def quiet_tune(verbose: bool) -> None:
    """One progress line per change instead of Tune's tables (kept with --verbose)."""
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def ensure_ray() -> None:
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)


def _write_skipped(cfg: StudyConfig, run_dir: Path, planned: list[PlannedCell], config_hash: str) -> None:
    for p in planned:
        if p.split is not None or has_result(run_dir, p.cell.cell_id):
            continue
        log.warning("skipped %s: %s", p.cell.cell_id, p.reason)
        row = {
            "study": cfg.name,
            **p.cell.to_dict(),
            "seed": cfg.seed,
            "protocol": cfg.grid.protocol,
            "status": "skipped",
            "message": p.reason,
            "config_hash": config_hash,
            "finished_at": time.time(),
        }
        write_table(run_dir, "trials", p.cell.cell_id, pd.DataFrame([row]))


def _write_failed(cfg: StudyConfig, run_dir: Path, cell: dict, error: BaseException, config_hash: str) -> None:
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    row = {
        "study": cfg.name,
        **cell,
        "seed": cfg.seed,
        "protocol": cfg.grid.protocol,
        "status": "failed",
        "message": first[:500],
        "config_hash": config_hash,
        "finished_at": time.time(),
    }
    write_table(run_dir, "trials", cell["cell_id"], pd.DataFrame([row]))


def run_grid(cfg: StudyConfig, run_dir: Path, data: StudyData, planned: list[PlannedCell], encoders: dict[str, Path], verbose: bool) -> None:
    """Fine-tune every pending cell as one Tune experiment."""
    config_hash = cfg.config_hash()
    runnable = [p for p in planned if p.split is not None]
    pending = [p for p in runnable if not has_result(run_dir, p.cell.cell_id)]
    print(f"grid: {len(runnable)} cells to run, {len(runnable) - len(pending)} already done, {len(pending)} pending", flush=True)
    if not pending:
        return
    splits = {(p.cell.category_set, p.cell.train_size, p.cell.fold): p.split for p in runnable}
    context = FinetuneContext(
        cfg=cfg.to_dict(),
        config_hash=config_hash,
        run_dir=str(run_dir),
        images=data.images.images,
        pools=data.pools,
        generalization=data.generalization,
        splits=splits,
        encoders={m: str(p) for m, p in encoders.items()},
    )
    f = cfg.finetune
    trainable = tune.with_parameters(
        tune.with_resources(finetune_trial, {"cpu": f.cpus_per_trial, "gpu": f.gpus_per_trial}),
        context=context,
    )
    tuner = tune.Tuner(
        trainable,
        param_space={"cell": tune.grid_search([p.cell.to_dict() for p in pending])},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=f.max_concurrent_trials or None,
            trial_dirname_creator=lambda t: t.config["cell"]["cell_id"],
            trial_name_creator=lambda t: t.config["cell"]["cell_id"],
            reuse_actors=True,  # one worker process serves many trials: no per-trial import cost
        ),
        run_config=tune.RunConfig(
            name=f"grid-{time.strftime('%Y%m%d-%H%M%S')}",  # cells are resumed by the store, not by Tune
            storage_path=str(run_dir / "ray"),
            verbose=2 if verbose else 0,
            callbacks=[] if verbose else [ProgressLine(len(runnable), len(runnable) - len(pending))],
            failure_config=tune.FailureConfig(max_failures=1),
        ),
    )
    results = tuner.fit()
    for result in results:
        if result.error is not None:
            cell = result.config["cell"]
            if not has_result(run_dir, cell["cell_id"]):
                _write_failed(cfg, run_dir, cell, result.error, config_hash)


def run_study(cfg: StudyConfig, run_dir: Path, verbose: bool = False) -> Path:
    """Run (or resume) the whole study in ``run_dir``; returns the report's path."""
    run_dir = Path(run_dir).resolve()
    t0 = time.time()
    fresh = not run_dir.exists()
    with run_lock(run_dir):
        try:
            check_resumable(cfg, run_dir)
            data = prepare_data(cfg, run_dir / "cache")
        except (ConfigError, DataError):
            if fresh:  # bad input: leave nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        dump_config(cfg, run_dir / "config.yaml")
        write_table(run_dir, "dataset", "classes", data.dataset_table(cfg))
        planned = plan_grid(cfg, {s: pool.labels for s, pool in data.pools.items()})
        write_table(run_dir, "grid", "grid", grid_frame(planned))
        _write_skipped(cfg, run_dir, planned, cfg.config_hash())
        quiet_tune(verbose)
        ensure_ray()
        needs_encoder = any(p.split is not None and p.cell.model != "baseline" and not has_result(run_dir, p.cell.cell_id) for p in planned)
        encoders: dict[str, Path] = {}
        if needs_encoder:
            t = time.time()
            pretrain_images = data.images.images[data.pretrain_indices]
            print(f"pretraining {', '.join(cfg.pretrain.methods)} on {len(pretrain_images)} unlabeled images", flush=True)
            encoders = run_pretraining(cfg, run_dir, pretrain_images)
            print(f"pretraining finished in {time.time() - t:.0f}s", flush=True)
        run_grid(cfg, run_dir, data, planned, encoders, verbose)
        from analysis.report import build_report

        report = build_report(run_dir)
    print(f"study '{cfg.name}' finished in {time.time() - t0:.0f}s; results in {run_dir / 'results'}; report {report}", flush=True)
    return report
