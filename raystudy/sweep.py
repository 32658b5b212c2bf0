"""One study, end to end: data -> pretraining (Ray Train) -> grid (Ray Tune) -> Parquet -> report.

Rerunning the same command on the same run folder resumes: decoded images are
reused, existing encoders are not pretrained again, finished cells are not run
again (each trial also checks its own result first), failed cells are retried.
"""

from __future__ import annotations

import copy
import fcntl
import shutil
import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import ray
from ray import tune

from raystudy.config import ConfigError, StudyConfig, dump_config, load_config
from raystudy.data.loading import DataError
from raystudy.data.prepare import StudyData, prepare_data
from raystudy.grid import PlannedCell, grid_frame, plan_grid
from raystudy.results import has_result, read_table, write_table
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
    """One line per change: done/total, the cell, its accuracy and an estimate of the time left.

    The estimate weighs each cell by its work (train size, at least ``floor``), so it
    does not swing when the largest cells, which run first, finish.
    """

    def __init__(self, total: int, already: int, weights: dict[str, float]) -> None:
        self.total, self.done, self.start = total, already, time.time()
        self.weights = weights
        self.work_left = sum(weights.values())
        self.work_done = 0.0

    def _line(self, trial, what: str) -> None:
        elapsed = time.time() - self.start
        rate = elapsed / self.work_done if self.work_done else float("nan")
        left = f"~{rate * self.work_left:.0f}s left" if self.work_done else "estimating"
        print(f"[{self.done}/{self.total}] {trial.config['cell']['cell_id']} {what} | {elapsed:.0f}s, {left}", flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        cid = trial.config["cell"]["cell_id"]
        self.done += 1
        w = self.weights.get(cid, 0.0)
        self.work_done, self.work_left = self.work_done + w, self.work_left - w
        acc = (trial.last_result or {}).get("overall_accuracy")
        self._line(trial, f"done OA={acc:.3f}" if isinstance(acc, float) else "done")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._line(trial, "raised; retrying from its last checkpoint")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._line(trial, "FAILED after its retries (see raystudy status)")


def quiet_tune(verbose: bool) -> None:
    """One progress line per change instead of Tune's tables (kept with --verbose)."""
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def fit_resources(cfg: StudyConfig) -> StudyConfig:
    """Shrink per-trial and per-worker requests to what the Ray cluster has, with a warning.

    A preset written for GPU nodes runs unchanged on a CPU-only machine: GPU requests
    become 0 and CPU requests are capped at the largest node's CPU count.
    """
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((r.get("CPU", 0) for r in nodes), default=1) or 1
    has_gpu = any(r.get("GPU", 0) > 0 for r in nodes)
    f, p = cfg.finetune, cfg.pretrain
    changes = []
    if f.gpus_per_trial > 0 and not has_gpu:
        changes.append(f"finetune.gpus_per_trial {f.gpus_per_trial} -> 0 (no GPU in the cluster)")
        f.gpus_per_trial = 0.0
    if f.cpus_per_trial > max_cpu:
        changes.append(f"finetune.cpus_per_trial {f.cpus_per_trial} -> {max_cpu}")
        f.cpus_per_trial = float(max_cpu)
    if p.cpus_per_worker > max_cpu:
        changes.append(f"pretrain.cpus_per_worker {p.cpus_per_worker} -> {int(max_cpu)}")
        p.cpus_per_worker = int(max_cpu)
    total_cpu = sum(r.get("CPU", 0) for r in nodes)
    if not has_gpu and p.num_workers * p.cpus_per_worker > total_cpu:
        workers = max(1, int(total_cpu // p.cpus_per_worker // max(1, len(p.methods))))
        changes.append(f"pretrain.num_workers {p.num_workers} -> {workers} (CPU only)")
        p.num_workers = workers
    for change in changes:
        log.warning("resources: %s", change)
    return cfg


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


def error_line(error: BaseException) -> str:
    """The first line of the original exception (Ray wraps it in a RayTaskError)."""
    while getattr(error, "cause", None) is not None and error.cause is not error:
        error = error.cause
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}"[:500]


def _write_failed(cfg: StudyConfig, run_dir: Path, cell: dict, error: BaseException, config_hash: str) -> None:
    first = error_line(error)
    row = {
        "study": cfg.name,
        **cell,
        "seed": cfg.seed,
        "protocol": cfg.grid.protocol,
        "status": "failed",
        "message": first,
        "config_hash": config_hash,
        "finished_at": time.time(),
    }
    write_table(run_dir, "trials", cell["cell_id"], pd.DataFrame([row]))


def _injected_failure() -> tuple[str, int] | None:
    """RAYSTUDY_INJECT_FAILURE=<cell_id>@<epoch>: that trial raises once after the epoch (fault tests)."""
    spec = os.environ.get("RAYSTUDY_INJECT_FAILURE")
    if not spec:
        return None
    cell_id, _, epoch = spec.rpartition("@")
    return cell_id, int(epoch)


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
        image_ids=data.images.index["image_id"].to_numpy(),
        inject_failure=_injected_failure(),
        runnable_sizes={
            s: sorted({p.cell.train_size for p in runnable if p.cell.category_set == s}) for s in cfg.grid.sizes
        },
    )
    f = cfg.finetune
    floor = f.min_steps * f.batch_size
    weights = {p.cell.cell_id: float(max(len(p.split.train) * f.epochs, floor)) for p in pending}
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
            callbacks=[] if verbose else [ProgressLine(len(runnable), len(runnable) - len(pending), weights)],
            failure_config=tune.FailureConfig(max_failures=f.max_retries),
        ),
    )
    results = tuner.fit()
    for result in results:
        if result.error is not None:
            cell = result.config["cell"]
            if not has_result(run_dir, cell["cell_id"]):
                _write_failed(cfg, run_dir, cell, result.error, config_hash)


def run_probes(cfg: StudyConfig, run_dir: Path, data: StudyData, encoders: dict[str, Path]) -> None:
    """kNN and linear-probe accuracy of every pretrained encoder and of its starting point.

    Each probe is a Ray task with a trial's resources (a GPU where trials get one), on
    a fixed stratified 80/20 split of the first category set's labeled pool.
    """
    from raystudy.data.splits import derive_seed, kfold
    from raystudy.training.probes import probe_encoder

    done = set(read_table(run_dir, "probes")["model"])
    start = cfg.model.pretrain_init.get("moco")
    sources = {"pretrain_init" if start else "random_init": start, **{m: str(p) for m, p in encoders.items()}}
    todo = {m: p for m, p in sources.items() if m not in done}
    if not todo:
        return
    set_name = next(iter(cfg.grid.sizes))
    pool = data.pools[set_name]
    vals, _ = kfold(pool.labels, 5, derive_seed(cfg.seed, set_name, "probe"))
    test = np.sort(vals[0])
    train = np.setdiff1d(np.arange(len(pool.labels)), test)
    f = cfg.finetune
    task = ray.remote(probe_encoder).options(num_cpus=f.cpus_per_trial, num_gpus=f.gpus_per_trial)
    images_ref = ray.put(data.images.images)
    refs = {
        m: task.remote(cfg.to_dict(), p, images_ref, pool.indices[train], pool.labels[train], pool.indices[test], pool.labels[test], f.gpus_per_trial)
        for m, p in todo.items()
    }
    pretraining = read_table(run_dir, "pretraining")
    for m, ref in refs.items():
        scores = ray.get(ref)
        print(f"probe {m}: kNN {scores['knn_accuracy']:.3f}, linear {scores['linear_probe_accuracy']:.3f}", flush=True)
        row = {"model": m, "encoder": todo[m] or "random init", "category_set": set_name,
               "n_train": len(train), "n_test": len(test), **scores}
        write_table(run_dir, "probes", m, pd.DataFrame([row]))
        mine = pretraining[pretraining["model"] == m]
        if len(mine):
            write_table(run_dir, "pretraining", m, mine.assign(**scores))


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
        cfg = fit_resources(copy.deepcopy(cfg))
        needs_encoder = any(p.split is not None and p.cell.model != "baseline" and not has_result(run_dir, p.cell.cell_id) for p in planned)
        encoders: dict[str, Path] = {}
        if needs_encoder:
            t = time.time()
            pretrain_images = data.images.images[data.pretrain_indices]
            print(f"pretraining {', '.join(cfg.pretrain.methods)} on {len(pretrain_images)} unlabeled images", flush=True)
            encoders = run_pretraining(cfg, run_dir, pretrain_images)
            print(f"pretraining finished in {time.time() - t:.0f}s", flush=True)
        if cfg.pretrain.probe and encoders:
            run_probes(cfg, run_dir, data, encoders)
        run_grid(cfg, run_dir, data, planned, encoders, verbose)
        from analysis.report import build_report

        report = build_report(run_dir)
    print(f"study '{cfg.name}' finished in {time.time() - t0:.0f}s; results in {run_dir / 'results'}; report {report}", flush=True)
    return report


def search_study(cfg: StudyConfig, run_dir: Path) -> dict:
    """``raystudy search``: data, the search model's encoder if needed, then the search."""
    from raystudy.search import run_search

    run_dir = Path(run_dir).resolve()
    with run_lock(run_dir):
        data = prepare_data(cfg, run_dir / "cache")
        dump_config(cfg, run_dir / "config.yaml")
        quiet_tune(False)
        ensure_ray()
        cfg = fit_resources(copy.deepcopy(cfg))
        encoders: dict[str, Path] = {}
        pretrains_itself = any(k.startswith("pretrain.") for k in cfg.search.space)
        if cfg.search.model != "baseline" and not pretrains_itself:
            one = copy.deepcopy(cfg)
            one.pretrain.methods = [cfg.search.model]
            one.grid.models = [cfg.search.model]
            encoders = run_pretraining(one, run_dir, data.images.images[data.pretrain_indices])
        return run_search(cfg, run_dir, data, encoders)
