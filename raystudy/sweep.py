"""One study, end to end: data -> pretraining (Ray Train) -> grid (Ray Tune) -> Parquet -> report.

Rerunning the same command on the same run folder resumes: decoded images are
reused, existing encoders are not pretrained again, finished cells are not run
again (each trial also checks its own result first), failed cells are retried.
"""

from __future__ import annotations

import copy
import fcntl
import logging
import os
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Iterator

import pandas as pd
import ray

from raystudy.config import ConfigError, StudyConfig, dump_config, load_config
from raystudy.data.fit import DataFit
from raystudy.data.prepare import StudyData, prepare_data
from raystudy.errors import StudyLockedError
from raystudy.grid import (Cell, Job, PlannedCell, grid_frame, needs_encoder, plan_grid, pretrain_jobs,
                           selection_encoder)
from raystudy.registry import BASELINE
from raystudy.runfolder import check_run_folder, entries, removed_if_failing
from raystudy.resources import fit_resources
from raystudy.results import finished_cells, has_result, read_table, write_table
from raystudy.provenance import finish_run_info, start_run_info
from raystudy.training.budget import cell_budget
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


def write_status_row(cfg: StudyConfig, run_dir: Path, cell: Cell, status: str, message: str, config_hash: str) -> None:
    """The trials row of a cell that did not train to the end: skipped or failed."""
    row = {
        "study": cfg.name,
        **cell.keys(),
        "seed": cfg.seed,
        "protocol": cfg.grid.protocol,
        "status": status,
        "message": message,
        "config_hash": config_hash,
        "finished_at": time.time(),
    }
    write_table(run_dir, "trials", cell.cell_id, pd.DataFrame([row]))


def _write_skipped(cfg: StudyConfig, run_dir: Path, planned: list[PlannedCell], config_hash: str) -> None:
    done = finished_cells(run_dir)
    for p in planned:
        if p.split is None and p.cell.cell_id not in done:
            log.warning("skipped %s: %s", p.cell.cell_id, p.reason)
            write_status_row(cfg, run_dir, p.cell, "skipped", p.reason, config_hash)


def error_line(error: BaseException) -> str:
    """The first line of the original exception (Ray wraps it in a RayTaskError)."""
    while getattr(error, "cause", None) is not None and error.cause is not error:
        error = error.cause
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}"[:500]


def _write_failed(cfg: StudyConfig, run_dir: Path, cell: Cell, error: BaseException, config_hash: str) -> None:
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
        if result.error is None or not result.config:
            continue
        job: Job = result.config["job"]
        if job.cell is not None:
            if not has_result(run_dir, job.cell.cell_id):
                _write_failed(cfg, run_dir, job.cell, result.error, config_hash)
        else:
            log.error("%s failed: %s", job.label, error_line(result.error))
    for job in searcher.blocked:
        if job.cell is not None:
            failed = [name for name in job.requires if name in searcher.failed_pretraining] or list(job.requires)
            _write_failed(cfg, run_dir, job.cell, RuntimeError(f"pretraining of {', '.join(failed)} failed"), config_hash)


def attempted(run_dir: Path) -> set[str]:
    """Cells with a trial row of any status (done, skipped or failed)."""
    return set(read_table(run_dir, "trials")["cell_id"])


def plan_jobs(cfg: StudyConfig, run_dir: Path, planned: list[PlannedCell]) -> list[Job]:
    """Pending work in priority order: pretraining, probes, then cells largest first."""
    done = finished_cells(run_dir)  # one read of the trials table, not one per cell
    pending = [p for p in planned if p.split is not None and p.cell.cell_id not in done]
    needed = {name for p in pending for name in (needs_encoder(p.cell), selection_encoder(cfg, p.cell))}
    jobs = [j for j in pretrain_jobs(cfg) if j.name in needed and not encoder_path(run_dir, j.name).is_file()]
    if cfg.pretrain.probe:
        probed = set(read_table(run_dir, "probes")["model"])
        # the encoder pretraining starts from: the first method's init (or a random one)
        start = next((cfg.model.pretrain_weights(m) for m in cfg.model.pretrain_init), None)
        init = "pretrain_init" if start else "random_init"
        pretrained = [j for j in pretrain_jobs(cfg) if j.model in cfg.grid.models]
        if pretrained and init not in probed:
            jobs.append(Job("probe", init, cfg.model.arch, path=start, name=init))
        jobs += [
            Job("probe", j.model, j.arch, needs=j.name, path=str(encoder_path(run_dir, j.name)), name=j.name)
            for j in pretrained
            if j.name not in probed
        ]
    jobs += [
        Job("cell", p.cell.model, p.cell.arch, needs=needs_encoder(p.cell), cell=p.cell,
            selects_with=selection_encoder(cfg, p.cell))
        for p in pending  # planned largest first
    ]
    return jobs


def run_study(cfg: StudyConfig, run_dir: Path, verbose: bool = False, data_fit: DataFit | None = None,
              shrink: bool = False) -> Path:
    """Run (or resume) the whole study in ``run_dir``; returns the report's path.

    ``data_fit``: what ``--data`` decided (saved as ``data_fit.json`` for the report).
    ``shrink``: fit requests to the cluster's current nodes (always done on a local instance).
    """
    run_dir = Path(run_dir).resolve()
    t0 = time.time()
    check_run_folder(run_dir)
    before = entries(run_dir)
    with run_lock(run_dir), ExitStack() as stack:
        with removed_if_failing(run_dir, before):  # bad input: leave nothing behind
            check_resumable(cfg, run_dir)
            quiet_tune(verbose)
            ensure_ray()  # before the data: the autoscaler boots nodes while images decode
            run_cfg = stack.enter_context(fit_resources(copy.deepcopy(cfg), shrink))
            data = prepare_data(cfg, run_dir / "cache")
        dump_config(cfg, run_dir / "config.yaml")
        if data_fit is not None:
            data_fit.save(run_dir)
        info = start_run_info(run_dir, {"study": cfg.seed, "synthetic_data": cfg.data.synthetic.seed}, cfg.config_hash())
        write_table(run_dir, "dataset", "classes", data.dataset_table(cfg))
        planned = plan_grid(cfg, {s: pool.labels for s, pool in data.pools.items()})
        write_table(run_dir, "grid", "grid", grid_frame(planned))
        config_hash = cfg.config_hash()
        _write_skipped(cfg, run_dir, planned, config_hash)
        cfg = run_cfg
        jobs = plan_jobs(cfg, run_dir, planned)
        cells = [j for j in jobs if j.cell is not None]
        runnable = sum(p.split is not None for p in planned)
        pretrain = [j.name for j in jobs if j.kind == "pretrain"]
        print(
            f"grid: {runnable} cells to run, {runnable - len(cells)} already done, {len(cells)} pending"
            + (f"; pretraining {', '.join(pretrain)} on {len(data.pretrain_indices)} unlabeled images" if pretrain else ""),
            flush=True,
        )
        if jobs:
            images_ref = ray.put(data.images.images)
            context = build_context(cfg, run_dir, data, planned, images_ref, _injected_failure())
            weights = {  # images each cell trains on: the progress line's time estimate
                p.cell.cell_id: float(cell_budget(cfg.finetune, len(p.split.train),
                                                  cfg.grid.ceiling_epochs if p.cell.ceiling else None).images)
                for p in planned if p.split is not None
            }
            weights = {j.cell.cell_id: weights[j.cell.cell_id] for j in cells}
            progress = ProgressLine(runnable, runnable - len(cells), weights)
            for _ in range(2):  # a second pass only for cells lost without a result
                results, searcher = run_jobs(cfg, run_dir, context, jobs, progress, verbose)
                record_failures(cfg, run_dir, results, searcher, config_hash)
                # a trial can end with neither a result nor an error (its node vanished while
                # it reported): run such cells once more
                tried = attempted(run_dir)
                jobs = [j for j in plan_jobs(cfg, run_dir, planned) if j.cell is not None and j.cell.cell_id not in tried]
                if not jobs:
                    break
                log.warning("%d cell(s) ended without a result; running them again", len(jobs))
        from analysis.report import build_report

        finish_run_info(run_dir, info)
        report = build_report(run_dir)
    print(f"study '{cfg.name}' finished in {time.time() - t0:.0f}s; results in {run_dir / 'results'}; report {report}", flush=True)
    return report


def run_pretraining(cfg: StudyConfig, run_dir: Path, data: StudyData) -> dict[str, Path]:
    """Only the pretraining of ``cfg.pretrain.methods`` on ``grid.archs`` (search, benchmarks);
    returns encoder paths by run name."""
    jobs = [j for j in pretrain_jobs(cfg) if not encoder_path(run_dir, j.name).is_file()]
    if jobs:
        planned = plan_grid(cfg, {s: pool.labels for s, pool in data.pools.items()})
        context = build_context(cfg, run_dir, data, planned, ray.put(data.images.images))
        results, _ = run_jobs(cfg, run_dir, context, jobs, None)
        failed = [r for r in results if r.error is not None]
        if failed:
            raise RuntimeError(f"pretraining failed: {error_line(failed[0].error)}")
    return {j.name: encoder_path(run_dir, j.name) for j in pretrain_jobs(cfg)}


def search_study(cfg: StudyConfig, run_dir: Path, shrink: bool = False) -> dict:
    """``raystudy search``: data, the search model's encoder if needed, then the search."""
    from raystudy.search import run_search

    run_dir = Path(run_dir).resolve()
    check_run_folder(run_dir)
    before = entries(run_dir)
    with run_lock(run_dir), ExitStack() as stack:
        with removed_if_failing(run_dir, before):
            data = prepare_data(cfg, run_dir / "cache")
        dump_config(cfg, run_dir / "config.yaml")
        quiet_tune(False)
        ensure_ray()
        cfg = stack.enter_context(fit_resources(copy.deepcopy(cfg), shrink))
        encoders: dict[str, Path] = {}
        pretrains_itself = any(k.startswith("pretrain.") for k in cfg.search.space)
        if cfg.search.model != BASELINE and not pretrains_itself:
            one = copy.deepcopy(cfg)
            one.pretrain.methods = [cfg.search.model]
            one.grid.models = [cfg.search.model]
            one.grid.archs = [cfg.model.arch]
            encoders = run_pretraining(one, run_dir, data)
        return run_search(cfg, run_dir, data, encoders)
