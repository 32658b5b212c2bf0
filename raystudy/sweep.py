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
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import ray

from raystudy.config import ConfigError, StudyConfig, dump_config, load_config
from raystudy.data.loading import DataError
from raystudy.data.prepare import StudyData, prepare_data
from raystudy.errors import StudyLockedError
from raystudy.grid import PlannedCell, grid_frame, plan_grid
from raystudy.plan import cell_epochs
from raystudy.resources import fit_resources
from raystudy.results import finished_cells, has_result, read_table, write_table
from raystudy.scheduler import ProgressLine, build_context, encoder_path, run_jobs

log = logging.getLogger("raystudy")


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


def quiet_tune(verbose: bool) -> None:
    """One progress line per change instead of Tune's tables (kept with --verbose)."""
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def ensure_ray() -> None:
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False, log_to_driver=False)


def write_status_row(cfg: StudyConfig, run_dir: Path, cell: dict, status: str, message: str, config_hash: str) -> None:
    """The trials row of a cell that did not train to the end: skipped or failed."""
    row = {
        "study": cfg.name,
        **cell,
        "seed": cfg.seed,
        "protocol": cfg.grid.protocol,
        "status": status,
        "message": message,
        "config_hash": config_hash,
        "finished_at": time.time(),
    }
    write_table(run_dir, "trials", cell["cell_id"], pd.DataFrame([row]))


def _write_skipped(cfg: StudyConfig, run_dir: Path, planned: list[PlannedCell], config_hash: str) -> None:
    done = finished_cells(run_dir)
    for p in planned:
        if p.split is None and p.cell.cell_id not in done:
            log.warning("skipped %s: %s", p.cell.cell_id, p.reason)
            write_status_row(cfg, run_dir, p.cell.to_dict(), "skipped", p.reason, config_hash)


def error_line(error: BaseException) -> str:
    """The first line of the original exception (Ray wraps it in a RayTaskError)."""
    while getattr(error, "cause", None) is not None and error.cause is not error:
        error = error.cause
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}"[:500]


def _write_failed(cfg: StudyConfig, run_dir: Path, cell: dict, error: BaseException, config_hash: str) -> None:
    write_status_row(cfg, run_dir, cell, "failed", error_line(error), config_hash)


def _injected_failure() -> tuple[str, int] | None:
    """RAYSTUDY_INJECT_FAILURE=<cell_id>@<epoch>: that trial raises once after the epoch (fault tests)."""
    spec = os.environ.get("RAYSTUDY_INJECT_FAILURE")
    if not spec:
        return None
    cell_id, _, epoch = spec.rpartition("@")
    return cell_id, int(epoch)


def record_failures(cfg: StudyConfig, run_dir: Path, results: list, searcher, config_hash: str) -> None:
    """Failed cells get a 'failed' row with their error; cells of a failed pretraining too."""
    for result in results:
        job = result.config or {}
        if result.error is None:
            continue
        if job.get("kind") == "cell":
            if not has_result(run_dir, job["cell"]["cell_id"]):
                _write_failed(cfg, run_dir, job["cell"], result.error, config_hash)
        else:
            log.error("%s %s failed: %s", job.get("kind"), job.get("method") or job.get("model"), error_line(result.error))
    for job in searcher.blocked:
        if job["kind"] == "cell":
            _write_failed(cfg, run_dir, job["cell"], RuntimeError(f"pretraining of {job['needs']} failed"), config_hash)


def attempted(run_dir: Path) -> set[str]:
    """Cells with a trial row of any status (done, skipped or failed)."""
    return set(read_table(run_dir, "trials")["cell_id"])


def plan_jobs(cfg: StudyConfig, run_dir: Path, planned: list[PlannedCell]) -> list[dict]:
    """Pending work in priority order: pretraining, probes, then cells largest first."""
    done = finished_cells(run_dir)  # one read of the trials table, not one per cell
    pending = [p for p in planned if p.split is not None and p.cell.cell_id not in done]
    need = [m for m in cfg.pretrain.methods if any(p.cell.model == m for p in pending)]
    jobs: list[dict] = [
        {"kind": "pretrain", "method": m, "needs": None} for m in need if not encoder_path(run_dir, m).is_file()
    ]
    if cfg.pretrain.probe:
        probed = set(read_table(run_dir, "probes")["model"])
        start = cfg.model.pretrain_init.get("moco")
        init = "pretrain_init" if start else "random_init"
        models = [m for m in cfg.pretrain.methods if m in cfg.grid.models]
        if models and init not in probed:
            jobs.append({"kind": "probe", "model": init, "path": start, "needs": None})
        jobs += [
            {"kind": "probe", "model": m, "path": str(encoder_path(run_dir, m)), "needs": m}
            for m in models if m not in probed
        ]
    jobs += [
        {"kind": "cell", "cell": p.cell.to_dict(), "needs": None if p.cell.model == "baseline" else p.cell.model}
        for p in pending  # planned largest first
    ]
    return jobs


def run_study(cfg: StudyConfig, run_dir: Path, verbose: bool = False, shrink: bool = False) -> Path:
    """Run (or resume) the whole study in ``run_dir``; returns the report's path.

    ``shrink``: fit requests to the cluster's current nodes (always done on a local instance).
    """
    run_dir = Path(run_dir).resolve()
    t0 = time.time()
    fresh = not run_dir.exists()
    with run_lock(run_dir), ExitStack() as stack:
        try:
            check_resumable(cfg, run_dir)
            quiet_tune(verbose)
            ensure_ray()  # before the data: the autoscaler boots nodes while images decode
            run_cfg = stack.enter_context(fit_resources(copy.deepcopy(cfg), shrink))
            data = prepare_data(cfg, run_dir / "cache")
        except (ConfigError, DataError):
            if fresh:  # bad input: leave nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        dump_config(cfg, run_dir / "config.yaml")
        write_table(run_dir, "dataset", "classes", data.dataset_table(cfg))
        planned = plan_grid(cfg, {s: pool.labels for s, pool in data.pools.items()})
        write_table(run_dir, "grid", "grid", grid_frame(planned))
        config_hash = cfg.config_hash()
        _write_skipped(cfg, run_dir, planned, config_hash)
        cfg = run_cfg
        jobs = plan_jobs(cfg, run_dir, planned)
        cells = [j for j in jobs if j["kind"] == "cell"]
        runnable = sum(p.split is not None for p in planned)
        pretrain = [j["method"] for j in jobs if j["kind"] == "pretrain"]
        print(
            f"grid: {runnable} cells to run, {runnable - len(cells)} already done, {len(cells)} pending"
            + (f"; pretraining {', '.join(pretrain)} on {len(data.pretrain_indices)} unlabeled images" if pretrain else ""),
            flush=True,
        )
        if jobs:
            images_ref = ray.put(data.images.images)
            context = build_context(cfg, run_dir, data, planned, images_ref, _injected_failure())
            pending = {j["cell"]["cell_id"] for j in cells}
            trained = {p.cell.cell_id: len(p.split.train) for p in planned if p.cell.cell_id in pending}
            weights = {c: float(n * cell_epochs(cfg.finetune, n)) for c, n in trained.items()}
            progress = ProgressLine(runnable, runnable - len(cells), weights)
            for _ in range(2):  # a second pass only for cells lost without a result
                results, searcher = run_jobs(cfg, run_dir, context, jobs, progress, verbose)
                record_failures(cfg, run_dir, results, searcher, config_hash)
                # a trial can end with neither a result nor an error (its node vanished while
                # it reported): run such cells once more
                tried = attempted(run_dir)
                jobs = [j for j in plan_jobs(cfg, run_dir, planned) if j["kind"] == "cell" and j["cell"]["cell_id"] not in tried]
                if not jobs:
                    break
                log.warning("%d cell(s) ended without a result; running them again", len(jobs))
        from analysis.report import build_report

        report = build_report(run_dir)
    print(f"study '{cfg.name}' finished in {time.time() - t0:.0f}s; results in {run_dir / 'results'}; report {report}", flush=True)
    return report


def run_pretraining(cfg: StudyConfig, run_dir: Path, data: StudyData) -> dict[str, Path]:
    """Only the pretraining of ``cfg.pretrain.methods`` (search, benchmarks); returns encoder paths."""
    jobs = [{"kind": "pretrain", "method": m, "needs": None} for m in cfg.pretrain.methods if not encoder_path(run_dir, m).is_file()]
    if jobs:
        planned = plan_grid(cfg, {s: pool.labels for s, pool in data.pools.items()})
        context = build_context(cfg, run_dir, data, planned, ray.put(data.images.images))
        results, _ = run_jobs(cfg, run_dir, context, jobs, None)
        failed = [r for r in results if r.error is not None]
        if failed:
            raise RuntimeError(f"pretraining failed: {error_line(failed[0].error)}")
    return {m: encoder_path(run_dir, m) for m in cfg.pretrain.methods}


def search_study(cfg: StudyConfig, run_dir: Path, shrink: bool = False) -> dict:
    """``raystudy search``: data, the search model's encoder if needed, then the search."""
    from raystudy.search import run_search

    run_dir = Path(run_dir).resolve()
    with run_lock(run_dir), ExitStack() as stack:
        data = prepare_data(cfg, run_dir / "cache")
        dump_config(cfg, run_dir / "config.yaml")
        quiet_tune(False)
        ensure_ray()
        cfg = stack.enter_context(fit_resources(copy.deepcopy(cfg), shrink))
        encoders: dict[str, Path] = {}
        pretrains_itself = any(k.startswith("pretrain.") for k in cfg.search.space)
        if cfg.search.model != "baseline" and not pretrains_itself:
            one = copy.deepcopy(cfg)
            one.pretrain.methods = [cfg.search.model]
            one.grid.models = [cfg.search.model]
            encoders = run_pretraining(one, run_dir, data)
        return run_search(cfg, run_dir, data, encoders)
