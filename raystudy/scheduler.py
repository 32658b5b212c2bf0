"""One Tune experiment for a whole study, released in dependency order.

Jobs are pretraining runs (each a Tune trial driving a TorchTrainer), encoder probes,
the advise embeddings, selections (one per (set, n, fold, strategy, arch), reported as
``{"selection": URI}`` like an encoder) and grid cells (plain function trials). A small
``Searcher`` hands Tune the next job whose prerequisite is met: pretraining first, baseline
cells as soon as the pretraining workers report that they hold their resources, the cells
and probes of a pretrained model as soon as its pretraining trial completes, largest cells
first.

Dependencies travel by reference: a pretraining trial's last result names the encoder
it wrote (``{"encoder": URI}``), Tune hands that result to the searcher, and the searcher
puts the URI into each dependent job (``Job.path``). Nothing polls a folder. Every wait
is bounded: a job whose encoder exists nowhere and whose pretraining is neither queued
nor running (it failed, or none is planned) is dropped with its reason and reported
failed; the rest of the sweep goes on. Jobs are typed (``grid.Job``); Tune's config of a
trial is ``{"kind": job.kind, "job": job}``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from ray import tune
from ray.tune.execution.placement_groups import resource_dict_to_pg_factory
from ray.tune.search import Searcher

from raystudy.config import StudyConfig
from raystudy.data.splits import derive_seed, kfold, online_probe_slice
from raystudy.grid import Job, pretrain_jobs
from raystudy.results import read_result, read_table, write_table
from raystudy.runfolder import check_driver_token, write_driver_token
from raystudy.storage import DISK_FULL_MESSAGE, Location, as_location
from raystudy.training.advise_pack import write_advise_pack
from raystudy.training.cell_split import select_and_store, stored_selections
from raystudy.training.finetune import FinetuneContext, finetune_trial
from raystudy.training.pretrain import (
    WORKERS_STARTED,
    encoder_location,
    epoch_line,
    pretrain_trial,
    unlearned_reason,
)
from raystudy.training.probes import probe_encoder
from raystudy.training.shipped import receive_init_weights, ship_init_weights

PRODUCERS = {"pretrain": "encoder", "select": "selection"}  # job kinds whose result others need: what it reports


class StudySearcher(Searcher):
    """Suggests the first job (in priority order) whose encoders (``Job.requires``), if any, are known.

    Args:
        jobs: the pending jobs in priority order.
        encoders: encoders that exist already (run name -> URI); pretraining trials add
            theirs when they complete.
        hold_s: once a pretraining job is handed out, no other job is released until its
            Train workers report that they hold their resources, or ``hold_s`` passed, so
            quick cells cannot take the slots the pretraining workers are about to ask for.
        stop: a callable that returns True once the study is interrupted (then nothing
            more is handed out).
        gate: run name -> why that finished pretraining did not learn (None: it did); once
            one did not, nothing more is handed out (:func:`pretraining_gate`).

    Example:
        >>> searcher = StudySearcher(plan_jobs(cfg, run, planned), existing_encoders(cfg, run))
    """

    def __init__(
        self,
        jobs: list[Job],
        encoders: dict[str, str] | None = None,
        hold_s: float = 120.0,
        stop=lambda: False,
        gate: Callable[[str], str | None] = lambda name: None,
    ) -> None:
        super().__init__()
        self.queue = list(jobs)
        self.gate = gate
        # pretraining runs that did not learn (run name -> why): nothing more is handed out
        self.unlearned = {n: why for n in (encoders or {}) if (why := gate(n)) is not None}
        self.encoders = {n: uri for n, uri in (encoders or {}).items() if n not in self.unlearned}
        self.hold_s, self.stop = hold_s, stop
        self.running: dict[str, Job] = {}
        self.launched: dict[str, float] = {}  # pretraining run name -> time handed out
        self.started: set[str] = set()  # pretraining runs whose workers hold their resources
        self.failed_pretraining: set[str] = set()
        self.failure_reasons: dict[str, str] = {}  # producer run name -> why it ended without its result
        self.blocked: list[tuple[Job, str]] = []  # (job, why it can never start)
        self.selection_names = {j.name for j in jobs if j.kind == "select"}
        self.recheck = True  # look for jobs that can never start at the next suggestion

    def _pretraining_starting(self) -> bool:
        now = time.time()
        return any(
            now - t < self.hold_s and m not in self.started | set(self.encoders) | self.failed_pretraining
            for m, t in self.launched.items()
        )

    def _why_never(self, job: Job, pending: Counter[str]) -> str | None:
        """Why ``job`` can never start (an encoder it requires will never come), else None.

        ``pending``: run names the queued or running producers (pretraining, selection) write.
        """
        for name in job.requires:
            if name in self.encoders or pending[name] > 0:
                continue
            if name in self.failed_pretraining:
                reason = self.failure_reasons.get(name)
                what = "selection" if name in self.selection_names else "pretraining of"
                return f"{what} {name} failed" + (f": {reason}" if reason else "")
            return (
                f"encoder {name} does not exist and no pretraining of it is queued or running; "
                "rerun the study to pretrain it"
            )
        return None

    def _drop_orphans(self) -> None:
        """Jobs whose encoder will never come are dropped now (bounded wait), with the reason.

        Checked at the start and after each producer ends (nothing else changes the answer),
        in one pass over the queue: not once per job and suggestion, which was quadratic.
        """
        if not self.recheck:
            return
        self.recheck = False
        pending = Counter(j.name for j in [*self.queue, *self.running.values()] if j.kind in PRODUCERS)
        dropped = True
        while dropped:  # a dropped producer orphans the jobs that wait for it
            dropped, keep = False, []
            for job in self.queue:
                why = self._why_never(job, pending)
                if why is None:
                    keep.append(job)
                    continue
                self.blocked.append((job, why))
                if job.kind in PRODUCERS:
                    pending[job.name] -= 1
                    dropped = True
            self.queue = keep

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.stop() or self.unlearned:
            return Searcher.FINISHED
        self._drop_orphans()
        hold = self._pretraining_starting()
        for i, job in enumerate(self.queue):
            ready = all(name in self.encoders for name in job.requires)
            if ready and not (hold and job.kind != "pretrain"):
                job = self.queue.pop(i)
                if job.requires:  # the references to the encoders it reads
                    job = dataclasses.replace(
                        job,
                        refs={n: self.encoders[n] for n in job.requires},
                        path=self.encoders[job.needs] if job.needs else job.path,
                    )
                self.running[trial_id] = job
                if job.kind == "pretrain":
                    self.launched[job.name] = time.time()
                return {"kind": job.kind, "job": job}
        return Searcher.FINISHED if not self.queue else None  # None: ask again later (a producer runs)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: a rerun plans its jobs again from the run folder (Tune's base class would
        log "save not implemented for Searcher" at every experiment checkpoint)."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see :meth:`save`)."""

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        job = self.running.get(trial_id)
        if job is not None and job.kind == "pretrain" and result.get(WORKERS_STARTED):
            self.started.add(job.name)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        job = self.running.pop(trial_id, None)
        if job is None or job.kind not in PRODUCERS:
            return
        self.recheck = True
        made = PRODUCERS[job.kind]
        why = self.gate(job.name) if job.kind == "pretrain" and not error else None
        if why is not None:
            self.unlearned[job.name] = why
            logging.getLogger("raystudy").error("%s; the study stops before its CSSL cells", why)
        elif not error and result and result.get(made):
            self.encoders[job.name] = str(result[made])
        else:  # an error, or stopped before its encoder existed
            self.failed_pretraining.add(job.name)
            if not error and result and result.get("failed"):
                self.failure_reasons[job.name] = str(result["failed"])


def job_resources(cfg: StudyConfig):
    """Pretraining trials hold no CPU (their TorchTrainer workers do); others a trial's share."""
    f = cfg.finetune
    pretrain = resource_dict_to_pg_factory({"cpu": 0, "memory": 1})
    trial = resource_dict_to_pg_factory({"cpu": f.cpus_per_trial, "gpu": f.gpus_per_trial})
    return lambda config: pretrain if config["kind"] == "pretrain" else trial


def study_trial(config: dict[str, Any], context: FinetuneContext) -> None:
    """The one trainable of the experiment: dispatch on the job's kind."""
    job: Job = config["job"]
    check_driver_token(context.run_dir, context.driver_token)  # a node added later must see the run folder
    receive_init_weights(context.init_weights)  # this node may not see the driver's initial-weight files
    if job.kind == "cell" and job.cell is not None:
        finetune_trial(job.cell, context, job.refs)
    elif job.kind == "pretrain" and context.pretrain_rows is not None:
        pretrain_trial(
            job,
            context.cfg,
            as_location(context.run_dir),
            context.images_ref,
            context.pretrain_rows,
            context.online_probe,
            context.init_weights,
        )
    elif job.kind == "probe":
        probe_trial(job, context)
    elif job.kind == "select" and job.chooses is not None:
        select_trial(job, context)
    elif job.kind == "embed" and job.needs is not None and job.path is not None:
        written = write_advise_pack(
            context.cfg,
            context.run_dir,
            context.pools,
            context.images(),
            context.image_ids,
            job.path,
            job.needs,
            job.arch,
        )
        tune.report({"done": 1, "advise_pack": ",".join(w.uri for w in written)})
    else:
        raise ValueError(f"job {job.label}: kind {job.kind!r} without what it needs (a cell, or the pretraining rows)")


def select_trial(job: Job, context: FinetuneContext) -> None:
    """Select and store the training images of one (set, n, fold, strategy, arch); reports
    ``{"selection": URI}``, which the searcher hands to the cells that train on them."""
    cell = job.chooses
    assert cell is not None  # study_trial dispatches only select jobs that carry their cell
    split = context.splits[(cell.category_set, cell.train_size, cell.fold)]
    where, n = select_and_store(
        context.cfg,
        context.run_dir,
        cell,
        context.pools[cell.category_set],
        split,
        context.images(),
        context.image_ids,
        job.refs or {},
    )
    tune.report({"done": 1, "selection": where.uri, "n_selected": n})


def probe_trial(job: Job, context: FinetuneContext) -> None:
    """kNN and linear-probe accuracy of one frozen encoder (a pretrained one, or the init)."""
    run_dir, split, name = as_location(context.run_dir), context.probe_split, job.name or job.model
    if split is None:
        raise ValueError(f"job {job.label}: the study context has no probe split")
    images = context.images()
    scores = probe_encoder(
        context.cfg,
        job.path,
        images,
        split["train_rows"],
        split["train_labels"],
        split["test_rows"],
        split["test_labels"],
        context.cfg.finetune.gpus_per_trial,
        job.arch,
    )
    predictions = scores.pop("predictions")
    row = {
        "model": name,
        "arch": job.arch,
        "encoder": job.path or "random init",
        "category_set": split["category_set"],
        "n_train": len(split["train_rows"]),
        "n_test": len(split["test_rows"]),
        **scores,
    }
    # each test image's prediction per probe: the report pairs an encoder with its starting weights
    write_table(
        run_dir,
        "probe_predictions",
        name,
        pd.concat(
            [
                pd.DataFrame(
                    {
                        "model": name,
                        "arch": job.arch,
                        "probe": kind,
                        "image_id": context.image_ids[split["test_rows"]],
                        "label": split["test_labels"],
                        "predicted": predicted,
                    }
                )
                for kind, predicted in predictions.items()
            ],
            ignore_index=True,
        ),
    )
    write_table(run_dir, "probes", name, pd.DataFrame([row]))
    pretraining = read_table(run_dir, "pretraining")
    mine = pretraining[(pretraining["model"] == job.model) & (pretraining["arch"] == job.arch)]
    if len(mine):
        write_table(run_dir, "pretraining", name, mine.assign(**scores))
    tune.report({"done": 1, **scores})


class ProgressLine(tune.Callback):
    """One line per change: done/total, the job, its accuracy and an estimate of the time left.

    The estimate weighs each cell by its work, so it does not swing when the largest
    cells, which run first, finish.
    """

    def __init__(self, total: int, already: int, weights: dict[str, float]) -> None:
        self.total, self.done, self.start = total, already, time.time()
        self.cells_since: float | None = None  # when the first cell started: the rate's clock
        self.weights = weights
        self.work_left = sum(weights.values())
        self.work_done = 0.0

    @staticmethod
    def name(trial) -> str:
        return trial.config["job"].label

    def _line(self, trial, what: str) -> None:
        now = time.time()
        rate = (now - self.cells_since) / self.work_done if self.work_done and self.cells_since else None
        left = f"~{rate * self.work_left:.0f}s left" if rate is not None else "estimating"
        print(f"[{self.done}/{self.total}] {self.name(trial)} {what} | {now - self.start:.0f}s, {left}", flush=True)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        if trial.config["kind"] == "cell" and self.cells_since is None:
            self.cells_since = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        """A pretraining epoch ended: one line (method, epoch, loss, images/s, time left)."""
        job: Job = trial.config["job"]
        if job.kind == "pretrain" and "seconds_left" in result:
            print(epoch_line(job.name, result), flush=True)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result or {}
        if trial.config["kind"] != "cell":
            if result.get("failed"):  # ended without its result (a worker group that never started)
                print(f"{self.name(trial)} failed: {result['failed']}", file=sys.stderr, flush=True)
                return
            scores = f" kNN={result['knn_accuracy']:.3f}" if "knn_accuracy" in result else ""
            print(f"{self.name(trial)} done{scores} | {time.time() - self.start:.0f}s", flush=True)
            return
        self.done += 1
        w = self.weights.get(self.name(trial), 0.0)
        self.work_done, self.work_left = self.work_done + w, self.work_left - w
        acc = result.get("overall_accuracy")
        self._line(trial, f"done OA={acc:.3f}" if isinstance(acc, float) else "done")

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        print(f"{self.name(trial)} raised; retrying from its last checkpoint", flush=True)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        print(f"{self.name(trial)} FAILED after its retries (see raystudy status)", flush=True)


class StopFlag(tune.Stopper):
    """Stops the whole experiment once :attr:`signum` is set (the driver got SIGINT / SIGTERM) or
    :attr:`disk_full` (a trial ran out of space: every other trial would too)."""

    def __init__(self) -> None:
        self.signum: int | None = None  # the signal that stopped the study
        self.disk_full: str | None = None  # the message of a trial's DiskFull
        self.in_tune = False  # a Tune experiment is running (it stops through stop_all)
        self.held = False  # ray.init runs: the interrupt is raised once it has returned

    def __call__(self, trial_id: str, result: dict) -> bool:
        return False

    def stop_all(self) -> bool:
        return self.signum is not None or self.disk_full is not None


class DiskFullWatch(tune.Callback):
    """Sets :attr:`StopFlag.disk_full` when a trial fails for a full disk, at its first error
    (before Tune retries it), so the study stops at once instead of failing cell after cell."""

    def __init__(self, stop: StopFlag) -> None:
        self.stop = stop

    def _check(self, trial) -> None:
        path = trial.error_file
        text = Path(path).read_text(errors="replace") if path and Path(path).is_file() else ""
        for line in text.splitlines()[::-1]:  # the newest error last
            if DISK_FULL_MESSAGE in line or "No space left on device" in line:
                self.stop.disk_full = re.sub(r"^\[Errno 28\] ", "", line.split("DiskFull: ", 1)[-1].strip())
                return

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        self._check(trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._check(trial)


def existing_encoders(cfg: StudyConfig, run_dir: str | Path | Location) -> dict[str, str]:
    """Encoders a previous run wrote (run name -> URI): read once when the sweep is planned."""
    found = {}
    for job in pretrain_jobs(cfg):
        where = encoder_location(run_dir, job.name)
        if where.is_file():
            found[job.name] = where.uri
    return found


def pretraining_gate(cfg: StudyConfig, run_dir: str | Path | Location) -> Callable[[str], str | None]:
    """The searcher's learned-encoder check: run name -> why its pretraining (its row of the
    ``pretraining`` table) did not learn, else None (:func:`raystudy.training.pretrain.unlearned_reason`)."""
    names = {j.name for j in pretrain_jobs(cfg)}

    def gate(name: str) -> str | None:
        row = read_result(run_dir, "pretraining", name) if name in names else None
        return None if row is None or row.empty else unlearned_reason(cfg, name, row.iloc[-1].to_dict())

    return gate


def tune_environment() -> None:
    """Tune settings the study relies on, where the user has not set them.

    - Tune keeps only one trial pending for a custom searcher; with short trials that serializes
      the sweep, so as many pending trials are allowed as Tune allows a grid.
    - Every cell keeps one checkpoint (``num_to_keep=1``), so Tune snapshots the experiment after
      each cell's checkpoint, by design, and warns "Experiment state snapshotting has been
      triggered multiple times" whenever cells end close together (the demo, twice per run). The
      warning is silenced; the one for a snapshot that is slow (over 30 s, e.g. a slow object
      store) is kept.
    """
    os.environ.setdefault("TUNE_MAX_PENDING_TRIALS_PG", "200")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def run_jobs(
    cfg: StudyConfig,
    run_dir: str | Path | Location,
    context: FinetuneContext,
    jobs: list[Job],
    progress: ProgressLine | None,
    verbose: bool = False,
    stop: StopFlag | None = None,
    callbacks: list[tune.Callback] | None = None,
) -> tuple[list, StudySearcher]:
    """Run the jobs as one Tune experiment; returns (Tune results, the searcher).

    ``callbacks``: more Tune callbacks for the Tuner's ``RunConfig`` (the trackers').
    """
    run = as_location(run_dir)
    stop = stop or StopFlag()
    searcher = StudySearcher(
        jobs, existing_encoders(cfg, run) | stored_selections(run), stop=stop.stop_all, gate=pretraining_gate(cfg, run)
    )
    tune_environment()
    # a trial's config holds a typed Job, which TensorBoard cannot log as a hyperparameter: no note per trial
    logging.getLogger("ray.tune.logger.tensorboardx").setLevel(logging.WARNING)
    trainable = tune.with_parameters(tune.with_resources(study_trial, job_resources(cfg)), context=context)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=len(jobs),
            max_concurrent_trials=cfg.finetune.max_concurrent_trials or None,
            trial_dirname_creator=ProgressLine.name,
            trial_name_creator=ProgressLine.name,
            reuse_actors=True,  # one worker process serves many trials: no per-trial import cost
        ),
        run_config=tune.RunConfig(
            name=f"study-{time.strftime('%Y%m%d-%H%M%S')}",  # cells resume from the store, not from Tune
            **(run / "ray").ray_storage(),
            verbose=2 if verbose else 0,
            callbacks=[*([] if verbose or progress is None else [progress]), DiskFullWatch(stop), *(callbacks or [])],
            failure_config=tune.FailureConfig(max_failures=cfg.finetune.max_retries),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),  # a cell's last epoch state
            stop=stop,
        ),
    )
    return list(tuner.fit()), searcher


def online_probe_rows(cfg: StudyConfig, data) -> dict[str, Any] | None:
    """Bank and query rows (with labels) of pretraining's online kNN, or None (logged why).

    Drawn from the pretraining campaigns' images outside the labeled and the generalization
    campaigns, so no cell trains, validates or tests on them; their labels serve this number only.
    """
    index = data.images.index
    cell_campaigns = [c for c in (cfg.data.labeled_campaign, cfg.data.generalization_campaign) if c is not None]
    rows = data.pretrain_indices
    rows = rows[~np.isin(index["campaign"].to_numpy()[rows], cell_campaigns)]
    labels = pd.factorize(index["category"].to_numpy()[rows])[0]
    picked = online_probe_slice(labels, cfg.pretrain.online_knn_images, derive_seed(cfg.seed, "online-probe"))
    if isinstance(picked, str):
        logging.getLogger("raystudy").info(picked)
        return None
    bank, query = picked
    return {
        "bank_rows": rows[bank],
        "bank_labels": labels[bank],
        "query_rows": rows[query],
        "query_labels": labels[query],
    }


def build_context(
    cfg: StudyConfig, run_dir: str | Path | Location, data, planned, images_ref, inject_failure=None
) -> FinetuneContext:
    """What every trial shares, put once in the object store."""

    runnable = [p for p in planned if p.split is not None]
    set_name = next(iter(cfg.grid.sizes))
    pool = data.pools[set_name]
    vals, _ = kfold(pool.labels, 5, derive_seed(cfg.seed, set_name, "probe"))
    test = np.sort(vals[0])
    train = np.setdiff1d(np.arange(len(pool.labels)), test)
    return FinetuneContext(
        cfg=cfg,
        config_hash=cfg.config_hash(),
        run_dir=as_location(run_dir).uri,
        images_ref=images_ref,
        pools=data.pools,
        generalization=data.generalization,
        splits={(p.cell.category_set, p.cell.train_size, p.cell.fold): p.split for p in runnable},
        image_ids=data.images.index["image_id"].to_numpy(),
        runnable_sizes={
            s: sorted({p.cell.train_size for p in runnable if p.cell.category_set == s and not p.cell.ceiling})
            for s in cfg.grid.sizes
        },
        inject_failure=inject_failure,
        pretrain_rows=data.pretrain_indices,
        online_probe=online_probe_rows(cfg, data),
        init_weights=ship_init_weights(cfg),
        driver_token=write_driver_token(run_dir),
        probe_split={
            "category_set": set_name,
            "train_rows": pool.indices[train],
            "train_labels": pool.labels[train],
            "test_rows": pool.indices[test],
            "test_labels": pool.labels[test],
        },
    )
