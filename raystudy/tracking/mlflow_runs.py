"""The study in MLflow: one parent run per study, a nested run per cell and per pretraining run.

Logged from the driver out of the result store (:mod:`raystudy.tracking.records`), each run in one
go (create, log, terminate), so no run is left RUNNING by a trial that dies. Runs are found again by
their tags: a rerun reopens the study's parent run and logs only what it lacks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

import pandas as pd

from raystudy.config import StudyConfig
from raystudy.results import read_result, read_table
from raystudy.storage import Location
from raystudy.tracking.records import (
    KEY_TAG,
    KIND_TAG,
    PROBE_METRICS,
    RunRecord,
    cell_record,
    pretraining_record,
    probe_metrics,
    study_params,
)

log = logging.getLogger("raystudy")

LOCATION_TAG = "raystudy.run_location"
ARTIFACTS = ("report.html", "numbers.csv")  # what the parent run gets from the run location, when there
_BATCH = 100  # MLflow takes at most 100 params or tags and 1000 metrics per log_batch call


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "\\'") + "'"


class MlflowTracker:
    """The study's runs in one MLflow experiment.

    Args:
        cfg: the study config (``tracking.mlflow`` set).
        run: the run location (its URI tags the parent run, which is how a rerun finds it).
        uri: the tracking URI (:func:`raystudy.tracking.setup.mlflow_uri`).
        artifact_location: where a new experiment keeps artifacts (None: the server's store).
        start: reopen the study's run (or start it); False: only find it (``raystudy report``),
            raising LookupError when there is none.
    """

    def __init__(
        self, cfg: StudyConfig, run: Location, uri: str, artifact_location: str | None, start: bool = True
    ) -> None:
        from mlflow.tracking import MlflowClient  # optional extra (pip install -e .[mlflow]): tracking.mlflow only

        self.cfg, self.run, self.uri = cfg, run, uri
        self.client = MlflowClient(tracking_uri=uri)
        tracking = cfg.tracking.mlflow
        name = (tracking.experiment if tracking else None) or cfg.name
        experiment = self.client.get_experiment_by_name(name)
        self.experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(name, artifact_location=artifact_location)
        )
        self.parent_id = self._parent(start)
        self.children = {
            r.data.tags.get(KEY_TAG): r for r in self._search(f"tags.mlflow.parentRunId = '{self.parent_id}'")
        }

    def _search(self, where: str) -> list[Any]:
        found, token = [], None
        while True:
            page = self.client.search_runs([self.experiment_id], where, max_results=1000, page_token=token)
            found += list(page)
            token = page.token
            if not token:
                return found

    def _parent(self, start: bool) -> str:
        """The study's run: the one of this run location (reopened when ``start``), else a new one."""
        where = f"tags.`{KIND_TAG}` = 'study' and tags.`{LOCATION_TAG}` = {_quoted(self.run.uri)}"
        earlier = self._search(where)
        if earlier:
            run_id = max(earlier, key=lambda r: r.info.start_time).info.run_id
            if start:
                self.client.update_run(run_id, status="RUNNING")
            return run_id
        if not start:
            raise LookupError(f"no MLflow run of the study at {self.run.uri} in {self.uri}")
        tags = {KIND_TAG: "study", LOCATION_TAG: self.run.uri, "config_hash": self.cfg.config_hash()}
        run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=self.cfg.name).info.run_id
        self._log(run_id, params=study_params(self.cfg))
        return run_id

    def _log(
        self,
        run_id: str,
        metrics: dict[str, float] | None = None,
        params: dict[str, str] | None = None,
        series: dict[str, list[tuple[int, float]]] | None = None,
    ) -> None:
        from mlflow.entities import Metric, Param  # optional extra: tracking.mlflow only

        now = int(time.time() * 1000)
        points = [Metric(k, v, now, 0) for k, v in (metrics or {}).items()]
        points += [Metric(k, v, now, step) for k, values in (series or {}).items() for step, v in values]
        for part in _chunks(points, 1000):
            self.client.log_batch(run_id, metrics=part)
        for chunk in _chunks([Param(k, v[:6000]) for k, v in (params or {}).items()], _BATCH):
            self.client.log_batch(run_id, params=chunk)

    def log_record(self, record: RunRecord) -> None:
        """One cell's or pretraining's run, unless a finished one exists (then only the metrics it lacks)."""
        old = self.children.get(record.key)
        if old is not None and old.info.status == "FINISHED" and record.failed is None:
            missing = {k: v for k, v in record.metrics.items() if k not in old.data.metrics}
            if missing:
                self._log(old.info.run_id, metrics=missing)
                old.data.metrics.update(missing)
            return
        if old is not None and old.info.status == "FAILED" and record.failed is not None:
            return  # this failure is logged already
        if old is not None:  # cut short by a killed driver, or a failure a rerun has since fixed
            self.client.delete_run(old.info.run_id)
        tags = {
            **record.tags,
            KIND_TAG: record.kind,
            KEY_TAG: record.key,
            "mlflow.parentRunId": self.parent_id,
            **({"error": record.failed[:5000]} if record.failed else {}),
        }
        run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=record.name).info.run_id
        self._log(run_id, record.metrics, record.params, record.series)
        self.client.set_terminated(run_id, "FAILED" if record.failed else "FINISHED")
        self.children[record.key] = self.client.get_run(run_id)

    def _log_rows(self, trials: pd.DataFrame) -> None:
        for _, row in trials[trials["status"].isin(["done", "failed"])].iterrows():
            self.log_record(cell_record(self.cfg, self.run, row))

    def log_cell(self, cell_id: str) -> None:
        """The run of one cell, once its row is in the store (done or failed)."""
        row = read_result(self.run, "trials", cell_id)
        if row is not None:
            self._log_rows(row)

    def log_cells(self) -> None:
        """The runs of every finished cell (done or failed), each at most once."""
        self._log_rows(read_table(self.run, "trials"))

    def log_pretraining(self, name: str) -> None:
        """The run of pretraining ``name`` with its probes, once it ended; an init probe goes on the parent."""
        record = pretraining_record(self.cfg, self.run, name)
        if record is not None:
            self.log_record(record)
            return
        metrics = probe_metrics(self.run, name)
        if metrics:
            self._log(self.parent_id, metrics={f"{name}.{k}": v for k, v in metrics.items() if k in PROBE_METRICS})

    def log_all(self, pretraining: Iterable[str]) -> None:
        """Everything of the store this experiment lacks: pretraining runs and their probes, then the cells."""
        for name in [*pretraining, "random_init", "pretrain_init"]:
            self.log_pretraining(name)
        self.log_cells()

    def log_artifacts(self) -> None:
        """The report and the fold-averaged numbers (``report.html``, ``numbers.csv``) on the parent run."""
        for name in ARTIFACTS:
            where = self.run / name
            if where.is_file():
                self.client.log_text(self.parent_id, where.read_text(), name)

    def close(self, status: str) -> None:
        """End the parent run: FINISHED, FAILED or KILLED."""
        self.client.set_terminated(self.parent_id, status)
