"""One study's sweep: data -> pretraining (Ray Train) -> grid (Ray Tune) -> Parquet (the report is
built by the layer above: :mod:`raystudy.study`).

Rerunning the same command on the same run folder resumes: decoded images are
reused, existing encoders are not pretrained again, finished cells are not run
again (each trial also checks its own result first), failed cells are retried.
"""

from __future__ import annotations

import copy
import errno
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from raystudy.config import ConfigError, StudyConfig, dump_config, grid_growth, training_differences
from raystudy.data.fit import DataFit
from raystudy.data.prepare import StudyData, check_inputs, prepare_data
from raystudy.data.problems import DataError
from raystudy.errors import NothingToRun, PretrainingUnlearned, StudyIncomplete, StudyInterrupted
from raystudy.grid import (
    Cell,
    Job,
    PlannedCell,
    grid_frame,
    needs_encoder,
    plan_grid,
    pretrain_jobs,
    run_name,
    selection_encoder,
    selection_job,
)
from raystudy.provenance import finish_run_info, start_run_info
from raystudy.registry import BASELINE
from raystudy.resources import fit_resources
from raystudy.results import finished_cells, has_result, read_result, read_table, write_table
from raystudy.runfolder import (
    cache_dir,
    check_run_folder,
    check_visible_to_nodes,
    entries,
    read_saved_config,
    removed_if_failing,
    run_lock,
)
from raystudy.scheduler import ProgressLine, StopFlag, build_context, existing_encoders, run_jobs
from raystudy.search import run_search
from raystudy.storage import DiskFull, Location, as_location
from raystudy.tracking.setup import Tracking, check_tracking, check_tracking_nodes, open_tracking
from raystudy.training.advise_pack import pack_location
from raystudy.training.budget import ceiling_budget, cell_budget
from raystudy.training.cell_split import stored_selections
from raystudy.training.pretrain import encoder_location

log = logging.getLogger("raystudy")


def check_resumable(cfg: StudyConfig, run_dir: str | Path | Location) -> None:
    """A run location holds one study: refuse to mix results of a different config.

    A config that only adds grid axis values (sizes, models, archs, selection strategies:
    :data:`~raystudy.config.GRID_AXES`) to the saved one is the same study grown: accepted,
    and only its new cells run (a cell's identity is what trains it, not the whole grid).

    A saved ``config.yaml`` that cannot be read is refused too: without it raystudy cannot
    tell whether the results there belong to this study.
    """
    saved = as_location(run_dir) / "config.yaml"
    if not saved.is_file():
        return
    previous = read_saved_config(saved)
    if previous.config_hash() == cfg.config_hash():
        return
    where = as_location(run_dir).uri
    keys = training_differences(previous, cfg)
    if keys:
        raise ConfigError(
            f"run folder {where} holds results of a different study config (hash {previous.config_hash()} vs "
            f"{cfg.config_hash()}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''} differ, and they change "
            "how a cell trains; use another --out, or delete the folder to start over (sizes, models, archs and "
            "selection strategies may be added to a finished study)"
        )
    added, dropped = grid_growth(previous, cfg)
    if dropped:
        raise ConfigError(
            f"run folder {where} holds a grid with {', '.join(dropped)}, which this config drops; a run folder "
            "only grows (its results stay in the report): put them back, or use another --out"
        )
    print(f"grown study: adds {', '.join(added)}; only the new cells run, finished cells are kept", flush=True)


DATA_FINGERPRINT = "data_fingerprint.json"


def check_same_data(run_dir: str | Path | Location, data: StudyData) -> None:
    """A run location holds the results of one set of images: refuse others under the same config.

    The fingerprint (:meth:`~raystudy.data.prepare.StudyData.fingerprint`) is saved when the
    study starts; images added, removed, relabeled or rewritten since then would mix results of
    two data sets in one report. A run folder of an earlier version (no fingerprint) is accepted.
    """
    saved = as_location(run_dir) / DATA_FINGERPRINT
    if not saved.is_file():
        return
    before, now = json.loads(saved.read_text()), data.fingerprint()
    if before.get("hash") == now["hash"]:
        return

    def counts(f: dict[str, Any]) -> str:
        return ", ".join(f"{c} {n}" for c, n in (f.get("per_campaign") or {}).items())

    raise DataError(
        f"the images of this study changed since run folder {as_location(run_dir).uri} was started "
        f"({before.get('images')} images then: {counts(before)}; {now['images']} now: {counts(now)}; or files "
        "renamed, relabeled or rewritten): their results would be mixed in one report; restore the images, "
        "or use another --out for the new ones"
    )


def quiet_tune(verbose: bool) -> None:
    """One progress line per change instead of Tune's tables (kept with --verbose)."""
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def startup_concurrency(cfg: StudyConfig) -> int:
    """Worker processes a study starts at once on a local instance: one per concurrent cell, and per
    pretraining run its Train workers, its Tune trial and its Train controller (0-CPU actors that Ray's
    default, the CPU count, does not foresee: the raylet then warns that it started "4x the maximum
    expected startup concurrency")."""
    cpus = os.cpu_count() or 1
    cells = cfg.finetune.max_concurrent_trials or max(1, int(cpus // max(cfg.finetune.cpus_per_trial, 0.01)))
    pretraining = len(cfg.pretrain.methods) * (cfg.pretrain.num_workers + 2)
    return max(cpus, cells + pretraining)


def ensure_ray(cfg: StudyConfig) -> None:
    """Connect to ``RAY_ADDRESS``, or start a local instance sized for the study's worker processes."""
    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS")
    local = address in (None, "", "local")  # _system_config only applies to an instance started here
    try:
        ray.init(
            address=address,
            include_dashboard=False,
            log_to_driver=False,
            **({"_system_config": {"worker_maximum_startup_concurrency": startup_concurrency(cfg)}} if local else {}),
        )
    except ConnectionError as err:  # RAY_ADDRESS names no running instance
        raise ConfigError(
            f"RAY_ADDRESS={address}: no Ray instance answers there ({err}); start one (ray start --head, or "
            "ray up cluster.yaml) or unset RAY_ADDRESS to run on a local instance started for this study"
        ) from None


def write_status_row(
    cfg: StudyConfig, run_dir: Location, cell: Cell, status: str, message: str, config_hash: str
) -> None:
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


def _write_skipped(cfg: StudyConfig, run_dir: Location, planned: list[PlannedCell], config_hash: str) -> None:
    """A trials row for each cell skipped now that has no row yet (a done or skipped row stays)."""
    trials = read_table(run_dir, "trials")
    recorded = set(trials.loc[trials["status"].isin(["done", "skipped"]), "cell_id"]) if len(trials) else set()
    for p in planned:
        if p.split is None:
            log.warning("skipped %s: %s", p.cell.cell_id, p.reason)
            if p.cell.cell_id not in recorded:
                write_status_row(cfg, run_dir, p.cell, "skipped", p.reason or "", config_hash)


def error_line(error: BaseException) -> str:
    """The first line of the original exception (Ray wraps it in a RayTaskError)."""
    while (cause := getattr(error, "cause", None)) is not None and cause is not error:
        error = cause
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}"[:500]


def _write_failed(cfg: StudyConfig, run_dir: Location, cell: Cell, error: BaseException, config_hash: str) -> None:
    write_status_row(cfg, run_dir, cell, "failed", error_line(error), config_hash)


def _injected_failure() -> tuple[str, int, str] | None:
    """RAYSTUDY_INJECT_FAILURE=<cell_id>@<epoch>[@disk_full]: that trial raises once after the epoch
    (fault tests; ``disk_full``: the DiskFull of a full disk instead of a RuntimeError)."""
    spec = os.environ.get("RAYSTUDY_INJECT_FAILURE")
    if not spec:
        return None
    cell_id, epoch, *kind = spec.split("@")
    return cell_id, int(epoch), kind[0] if kind else "error"


def record_failures(
    cfg: StudyConfig, run_dir: Location, results: list, searcher, config_hash: str, interrupted: bool = False
) -> None:
    """Failed cells get a 'failed' row with their error; so do cells whose encoder never came.

    After an interrupt nothing is marked failed: stopped trials and the cells waiting for a
    stopped pretraining simply have no result yet, and the rerun runs them.
    """
    if interrupted:
        return
    for result in results:
        if result.error is None or not result.config:
            continue
        job: Job = result.config["job"]
        if job.cell is not None:
            if not has_result(run_dir, job.cell.cell_id):
                _write_failed(cfg, run_dir, job.cell, result.error, config_hash)
        else:
            log.error("%s failed: %s", job.label, error_line(result.error))
    for job, reason in searcher.blocked:
        if job.cell is not None:
            _write_failed(cfg, run_dir, job.cell, RuntimeError(reason), config_hash)
        else:
            log.error("%s not run: %s", job.label, reason)


def attempted(run_dir: Location) -> set[str]:
    """Cells with a trial row of any status (done, skipped or failed)."""
    return set(read_table(run_dir, "trials")["cell_id"])


def plan_jobs(cfg: StudyConfig, run_dir: str | Path | Location, planned: list[PlannedCell]) -> list[Job]:
    """Pending work in priority order: pretraining, probes, the advise embeddings, the
    selections (one per key, not yet stored), then cells largest first.

    Only what some pending cell (or a selection still to compute) needs is pretrained; probes
    run for encoders that exist or whose pretraining is planned here (never one that nothing
    will write).
    """
    done = finished_cells(run_dir)  # one read of the trials table, not one per cell
    pending = [p for p in planned if p.split is not None and p.cell.cell_id not in done]
    stored = stored_selections(run_dir)
    needed = {needs_encoder(p.cell) for p in pending} | {
        selection_encoder(cfg, p.cell) for p in pending if p.cell.selection_key not in stored
    }
    existing = existing_encoders(cfg, run_dir)
    jobs = [j for j in pretrain_jobs(cfg) if j.name in needed and j.name not in existing]
    if cfg.pretrain.probe and pending:
        probed = set(read_table(run_dir, "probes")["model"])
        # the encoder pretraining starts from: the first method's init (or a random one)
        start = next((cfg.model.pretrain_weights(m) for m in cfg.model.pretrain_init), None)
        init = "pretrain_init" if start else "random_init"
        coming = {j.name for j in jobs} | set(existing)
        pretrained = [j for j in pretrain_jobs(cfg) if j.model in cfg.grid.models and j.name in coming]
        for arch in dict.fromkeys(j.arch for j in pretrained):  # the starting weights on each backbone
            own = arch == cfg.model.arch  # pretrain_init names weights of the study's own backbone
            reference = init if own else run_name("random_init", arch, cfg.model.arch)
            if reference not in probed:
                model = init if own else "random_init"
                jobs.append(Job("probe", model, arch, path=start if own else None, name=reference))
        jobs += [Job("probe", j.model, j.arch, needs=j.name, name=j.name) for j in pretrained if j.name not in probed]
    jobs += advise_pack_jobs(cfg, run_dir, {j.name for j in jobs if j.kind == "pretrain"} | set(existing))
    jobs += selection_jobs(cfg, run_dir, [p.cell for p in pending])
    jobs += [
        Job(
            "cell",
            p.cell.model,
            p.cell.arch,
            needs=needs_encoder(p.cell),
            cell=p.cell,
            selected_by=None if p.cell.selection == "random" else p.cell.selection_key,
        )
        for p in pending  # planned largest first
    ]
    return jobs


def advise_pack_jobs(cfg: StudyConfig, run_dir: str | Path | Location, coming: set[str]) -> list[Job]:
    """Per arch, the job that stores the selection encoder's embeddings of the labeled pools for
    ``raystudy advise`` (:mod:`raystudy.training.advise_pack`), unless stored or the encoder never comes."""
    if cfg.selection.encoder is None:
        return []
    jobs = []
    for arch in cfg.grid.archs:
        name = run_name(cfg.selection.encoder, arch, cfg.model.arch)
        stored = all(pack_location(run_dir, s, name).is_file() for s in cfg.grid.sizes)
        if name in coming and not stored:
            jobs.append(Job("embed", cfg.selection.encoder, arch, needs=name, name=f"advise-{name}"))
    return jobs


def selection_jobs(cfg: StudyConfig, run_dir: str | Path | Location, cells: list[Cell]) -> list[Job]:
    """One selection job per (set, n, fold, strategy, arch) of ``cells`` other than random
    whose images are not stored yet (a resumed study reads the stored ones)."""
    stored = stored_selections(run_dir)
    first: dict[str, Cell] = {}
    for c in cells:
        if c.selection != "random" and c.selection_key not in stored:
            first.setdefault(c.selection_key, c)
    return [selection_job(cfg, c) for c in first.values()]


SIGNAL_NAMES: dict[int, str] = {signal.SIGINT: "SIGINT (Ctrl-C)", signal.SIGTERM: "SIGTERM"}


@contextmanager
def interrupts(stop: StopFlag) -> Iterator[Callable[[], None]]:
    """SIGINT / SIGTERM stop the study within seconds, keeping every finished result.

    The first signal sets ``stop`` (Tune then stops every trial and returns) or, outside
    Tune, raises :class:`StudyInterrupted` at once; a second signal exits immediately
    (exit status 128 + signal number). Ray Tune's own SIGINT handler is turned off so that
    it cannot swallow the first Ctrl-C. Yields ``arm``, which installs the handlers again:
    call it after ``ray.init``, whose core worker installs its own SIGTERM handler (it
    aborts the process).
    """

    def handler(signum: int, frame) -> None:
        if stop.signum is not None:
            print(f"raystudy: {SIGNAL_NAMES.get(signum, signum)} again: stopping at once", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        stop.signum = signum
        print(
            f"raystudy: {SIGNAL_NAMES.get(signum, signum)} received: stopping the trials; finished results are "
            "kept (press Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )
        if not stop.in_tune and not stop.held:
            raise StudyInterrupted(signum)

    def arm() -> None:
        for s in SIGNAL_NAMES:
            signal.signal(s, handler)

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    previous = {s: signal.getsignal(s) for s in SIGNAL_NAMES}
    arm()
    try:
        yield arm
    finally:
        if stop.signum is None:
            for s, h in previous.items():
                signal.signal(s, h)
        else:  # interrupted: a second signal during the cleanup (Ray's shutdown) still stops at once
            arm()


@contextmanager
def interrupt_after(stop: StopFlag) -> Iterator[None]:
    """Hold the first signal's :class:`StudyInterrupted` until the block has ended, then raise it.

    For ``ray.init``: raised inside it, the interrupt leaves a half-connected driver, and the
    process then dies of a segmentation fault at exit (exit 139 instead of 130). A second
    signal still stops at once.
    """
    stop.held = True
    try:
        yield
    finally:
        stop.held = False
    if stop.signum is not None:
        raise StudyInterrupted(stop.signum)


LOST_RECHECK_S = 3.0  # how long a cell missing from the listing is looked up by name before it is lost


def pending_cells(run_dir: Location, planned: list[PlannedCell]) -> list[str]:
    """Runnable cells without any trial row (not done, not failed)."""
    tried = attempted(run_dir)
    return [p.cell.cell_id for p in planned if p.split is not None and p.cell.cell_id not in tried]


def confirm_lost(run_dir: Location, candidates: list[str], wait_s: float = LOST_RECHECK_S) -> list[str]:
    """The ``candidates`` (cells the table's listing shows without a row) whose trial file is still
    absent when looked up by its name, re-checked every 0.5 s for at most ``wait_s``: a network
    mount may serve a cached directory listing that misses a file another node wrote moments ago,
    and a cell must not run twice for that."""
    deadline = time.monotonic() + wait_s
    missing = list(candidates)
    while True:
        missing = [c for c in missing if read_result(run_dir, "trials", c) is None]
        if not missing or time.monotonic() >= deadline:
            return missing
        time.sleep(0.5)


def lost_jobs(cfg: StudyConfig, run: Location, planned: list[PlannedCell], lost: set[str]) -> list[Job]:
    """The second pass: the lost cells, and the pretraining of any encoder they need that is missing."""
    planned_jobs = plan_jobs(cfg, run, planned)
    cells = [j for j in planned_jobs if j.cell is not None and j.cell.cell_id in lost]
    keys = {j.selected_by for j in cells}
    selects = [j for j in planned_jobs if j.kind == "select" and j.name in keys]
    needed = {name for j in cells + selects for name in j.requires}
    return [j for j in planned_jobs if j.kind == "pretrain" and j.name in needed] + selects + cells


Finish = Callable[[Location], "Path | Location"]  # run location -> the report (built by the layer above)


def run_sweep(
    cfg: StudyConfig,
    run_dir: str | Path | Location,
    verbose: bool = False,
    data_fit: DataFit | None = None,
    shrink: bool = False,
    finish: Finish | None = None,
) -> Path | Location:
    """Run (or resume) the whole study at ``run_dir`` (a path or a URI).

    ``data_fit``: what ``--data`` decided (saved as ``data_fit.json`` for the report).
    ``shrink``: fit requests to the cluster's current nodes (always done on a local instance).
    ``finish``: called with the run location once every pass is over, still under the run's
    lock and signal handlers (the report: see :func:`raystudy.study.run_study`); its result is
    returned, else the run location.

    Raises :class:`StudyInterrupted` on SIGINT / SIGTERM (state kept), :class:`NothingToRun`
    when every cell is skipped, :class:`StudyIncomplete` when cells end without a result.
    """
    run = as_location(run_dir)
    t0 = time.time()
    stop = StopFlag()
    check_run_folder(run)
    before = entries(run)
    with interrupts(stop) as arm_interrupts, run_lock(run), ExitStack() as stack:
        with removed_if_failing(run, before):  # bad input, nothing to run: leave nothing behind
            check_resumable(cfg, run)
            check_tracking(cfg, run)  # before Ray: a tracker that is not installed, a store the run cannot hold
            check_inputs(cfg, cache_dir(run))  # before Ray starts: a missing folder costs no start-up
            quiet_tune(verbose)
            with interrupt_after(stop):
                ensure_ray(cfg)  # before decoding: the autoscaler boots nodes while images decode
                arm_interrupts()
            check_visible_to_nodes(run)
            check_tracking_nodes(cfg, run, lambda: len([n for n in ray.nodes() if n.get("Alive")]))
            run_cfg = stack.enter_context(fit_resources(copy.deepcopy(cfg), shrink))
            data = prepare_data(cfg, cache_dir(run))
            check_same_data(run, data)
            planned = plan_grid(cfg, {s: pool.labels for s, pool in data.pools.items()})
            runnable = sum(p.split is not None for p in planned)
            if runnable == 0:
                reasons = sorted({p.reason for p in planned if p.reason})
                raise NothingToRun(
                    f"nothing to run: all {len(planned)} cells of study '{cfg.name}' are skipped ("
                    + "; ".join(reasons[:3])
                    + "); lower grid.sizes"
                )
        info = record_plan(cfg, run, data, data_fit, planned)
        config_hash = cfg.config_hash()  # of the study as configured, before resources were fitted
        cfg = run_cfg
        tracking = stack.enter_context(open_tracking(cfg, run))
        jobs = plan_jobs(cfg, run, planned)
        cells = [j for j in jobs if j.cell is not None]
        pretrain = [j.name for j in jobs if j.kind == "pretrain"]
        print(
            f"grid: {runnable} cells to run, {runnable - len(cells)} already done, {len(cells)} pending"
            + (
                f"; pretraining {', '.join(pretrain)} on {len(data.pretrain_indices)} unlabeled images"
                if pretrain
                else ""
            ),
            flush=True,
        )
        if jobs:
            progress = ProgressLine(runnable, runnable - len(cells), cell_weights(cfg, planned, cells))
            run_passes(cfg, run, data, planned, jobs, progress, verbose, stop, config_hash, tracking)
        finish_run_info(run, info)
        result = finish(run) if finish is not None else run
        tracking.sync(j.name for j in pretrain_jobs(cfg))
        lost = confirm_lost(run, pending_cells(run, planned), wait_s=0)  # run_passes waited already
        if lost:
            raise StudyIncomplete(
                f"{len(lost)} cell(s) ended without a result after two passes: "
                + ", ".join(lost[:10])
                + (" ..." if len(lost) > 10 else "")
                + f"; rerun the same command to run them (report so far: {result})"
            )
    print(
        f"study '{cfg.name}' finished in {time.time() - t0:.0f}s; results in {run / 'results'}; report {result}",
        flush=True,
    )
    return result


def record_plan(
    cfg: StudyConfig, run: Location, data: StudyData, data_fit: DataFit | None, planned: list[PlannedCell]
) -> dict:
    """Write what this run is (config, data fit, run info, data set table, the planned grid with its
    skipped cells); returns the run info."""
    dump_config(cfg, run / "config.yaml")
    (run / DATA_FINGERPRINT).write_text(json.dumps(data.fingerprint(), indent=2))
    if data_fit is not None:
        data_fit.save(run)
    info = start_run_info(run, {"study": cfg.seed, "synthetic_data": cfg.data.synthetic.seed}, cfg.config_hash())
    write_table(run, "dataset", "classes", data.dataset_table(cfg))
    write_table(run, "grid", "grid", grid_frame(planned))
    _write_skipped(cfg, run, planned, cfg.config_hash())
    return info


def cell_weights(cfg: StudyConfig, planned: list[PlannedCell], cells: list[Job]) -> dict[str, float]:
    """Images each pending cell trains on: the progress line's time estimate."""
    weights = {
        p.cell.cell_id: float(
            (
                ceiling_budget(cfg.finetune, cfg.grid, p.cell.category_set, len(p.split.train))
                if p.cell.ceiling
                else cell_budget(cfg.finetune, len(p.split.train))
            ).images
        )
        for p in planned
        if p.split is not None
    }
    return {j.cell.cell_id: weights[j.cell.cell_id] for j in cells if j.cell is not None}


def run_passes(
    cfg: StudyConfig,
    run: Location,
    data: StudyData,
    planned: list[PlannedCell],
    jobs: list[Job],
    progress: ProgressLine,
    verbose: bool,
    stop: StopFlag,
    config_hash: str,
    tracking: Tracking | None = None,
) -> None:
    """Run the jobs on Ray Tune, then once more only the cells lost without a result (a trial can
    end with neither a result nor an error when its node vanished while it reported).

    ``tracking``: its Tune callbacks log each job as it ends."""
    context = build_context(cfg, run, data, planned, ray.put(data.images.images), _injected_failure())
    for attempt in range(2):
        stop.in_tune = True
        try:
            callbacks = tracking.callbacks if tracking is not None else None
            results, searcher = run_jobs(cfg, run, context, jobs, progress, verbose, stop, callbacks)
        finally:
            stop.in_tune = False
        stopped = stop.signum is not None or stop.disk_full is not None  # stopped cells are no failures
        record_failures(cfg, run, results, searcher, config_hash, interrupted=stopped)
        if stop.signum is not None:
            raise StudyInterrupted(stop.signum)
        if stop.disk_full is not None:  # finished cells are kept; the rerun resumes once there is space
            raise DiskFull(errno.ENOSPC, stop.disk_full)
        if searcher.unlearned:  # finished cells are kept; the rerun continues where this stopped
            raise PretrainingUnlearned("; ".join(searcher.unlearned.values()))
        lost = set(confirm_lost(run, pending_cells(run, planned)))
        if not lost:
            return
        if attempt == 0:
            log.warning("%d cell(s) ended without a result; running them again", len(lost))
        jobs = lost_jobs(cfg, run, planned, lost)


def run_pretraining(cfg: StudyConfig, run_dir: str | Path | Location, data: StudyData) -> dict[str, str]:
    """Only the pretraining of ``cfg.pretrain.methods`` on ``grid.archs`` (search, benchmarks);
    returns encoder URIs by run name."""
    run = as_location(run_dir)
    existing = existing_encoders(cfg, run)
    jobs = [j for j in pretrain_jobs(cfg) if j.name not in existing]
    if jobs:
        planned = plan_grid(cfg, {s: pool.labels for s, pool in data.pools.items()})
        context = build_context(cfg, run, data, planned, ray.put(data.images.images))
        results, _ = run_jobs(cfg, run, context, jobs, None)
        failed = [r for r in results if r.error is not None]
        if failed:
            raise RuntimeError(f"pretraining failed: {error_line(failed[0].error)}")
    return {j.name: encoder_location(run, j.name).uri for j in pretrain_jobs(cfg)}


def search_study(cfg: StudyConfig, run_dir: str | Path | Location, shrink: bool = False) -> dict:
    """``raystudy search``: data, the search model's encoder if needed, then the search."""
    run = as_location(run_dir)
    check_run_folder(run)
    before = entries(run)
    with run_lock(run), ExitStack() as stack:
        with removed_if_failing(run, before):
            data = prepare_data(cfg, cache_dir(run))
        dump_config(cfg, run / "config.yaml")
        quiet_tune(False)
        ensure_ray(cfg)
        cfg = stack.enter_context(fit_resources(copy.deepcopy(cfg), shrink))
        encoders: dict[str, str] = {}
        pretrains_itself = any(k.startswith("pretrain.") for k in cfg.search.space)
        if cfg.search.model != BASELINE and not pretrains_itself:
            one = copy.deepcopy(cfg)
            one.pretrain.methods = [cfg.search.model]
            one.grid.models = [cfg.search.model]
            one.grid.archs = [cfg.model.arch]
            encoders = run_pretraining(one, run, data)
        return run_search(cfg, run, data, encoders)
