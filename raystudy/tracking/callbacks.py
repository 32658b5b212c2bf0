"""The Tune callbacks of tracking: one that logs each finished job to MLflow from the store, and Ray's
W&B and Aim logger callbacks with each trial named and grouped the way the study is built.

They go on the Tuner's ``RunConfig`` (Train V2's ``RunConfig`` refuses Tune logger callbacks). A W&B
run's group is the study (``tracking.wandb.group``) and its ``job_type`` the cell's configuration
without the fold, so W&B groups the folds of one configuration; an Aim run's experiment is the study
and its ``raystudy`` dict holds the cell's keys to group by.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune
from ray.air.integrations.wandb import WandbLoggerCallback
from ray.tune.logger.aim import AimLoggerCallback

from raystudy.config import StudyConfig
from raystudy.grid import Job
from raystudy.tracking.mlflow_runs import MlflowTracker
from raystudy.tracking.records import configuration

log = logging.getLogger("raystudy")


def job_fields(cfg: StudyConfig, job: Job) -> dict[str, Any]:
    """What a tracker groups a trial by: a cell's keys (and its configuration without the fold), or the run."""
    if job.cell is None:
        return {
            "kind": job.kind,
            "model": job.model,
            "arch": job.arch,
            "name": job.name,
            "config_hash": cfg.config_hash(),
        }
    fields = {
        **job.cell.keys(),
        "protocol": "ceiling" if job.cell.ceiling else cfg.grid.protocol,
        "config_hash": cfg.config_hash(),
    }
    return {"kind": "cell", "cell_id": job.cell.cell_id, "configuration": configuration(fields), **fields}


class MlflowCallback(tune.Callback):
    """Logs each finished job's MLflow run from the store as soon as its trial completes.

    A logging error is a warning: the results are in the store, and the sync at the study's end
    (or the next run's) logs what is missing.
    """

    def __init__(self, tracker: MlflowTracker) -> None:
        self.tracker = tracker

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        job: Job = trial.config["job"]
        try:
            if job.cell is not None:
                self.tracker.log_cell(job.cell.cell_id)
            else:
                self.tracker.log_pretraining(job.name or job.model)
        except Exception as err:  # noqa: BLE001 - the store holds the result; the end-of-study sync retries
            log.warning("tracking: %s not logged to MLflow yet (%s); the sync at the end retries", job.label, err)


class CellWandbCallback(WandbLoggerCallback):
    """Ray's W&B callback; each trial's run named after its job, its config the job's keys, its
    ``job_type`` the cell's configuration (the folds of one configuration share it)."""

    def __init__(self, study: StudyConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.study = study

    def _start_logging_actor(self, trial: Any, exclude_results: list[str], **wandb_init_kwargs: Any) -> None:
        job: Job = trial.config["job"]
        fields = job_fields(self.study, job)
        wandb_init_kwargs.update(
            name=job.label, config=fields, job_type=fields.get("configuration", job.kind), tags=[job.kind]
        )
        super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)


class CellAimCallback(AimLoggerCallback):
    """Ray's Aim callback; each trial's run named after its job, with the job's keys under ``raystudy``."""

    def __init__(self, study: StudyConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.study = study

    def _create_run(self, trial: Any) -> Any:
        run = super()._create_run(trial)
        job: Job = trial.config["job"]
        run.name = job.label
        run["raystudy"] = job_fields(self.study, job)
        return run


def logger_callbacks(cfg: StudyConfig, aim_repo: str | None) -> list[tune.Callback]:
    """Ray's W&B and Aim callbacks for what ``tracking`` asks (``aim_repo``: the Aim repository)."""
    out: list[tune.Callback] = []
    wandb = cfg.tracking.wandb
    if wandb is not None:
        out.append(
            CellWandbCallback(cfg, project=wandb.project or cfg.name, group=wandb.group or cfg.name, log_config=False)
        )
    if cfg.tracking.aim is not None:
        out.append(CellAimCallback(cfg, repo=aim_repo, experiment_name=cfg.name))
    return out
