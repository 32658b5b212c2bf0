"""Which trackers a study logs to, checked before anything trains, and the tracking of one sweep.

``tracking.mlflow`` without a ``uri`` logs to ``sqlite:///<run location>/mlflow.db``, which only a
local run folder on one node can hold: an object-store run location (nothing but the image cache
is written locally there) or a cluster of more than one node needs a tracking server
(``http://host:5000``). A tracker that is not installed is refused before Ray starts.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from raystudy.config import ConfigError, StudyConfig, TrackingConfig
from raystudy.errors import StudyInterrupted
from raystudy.storage import Location
from raystudy.tracking.callbacks import MlflowCallback, logger_callbacks
from raystudy.tracking.mlflow_runs import MlflowTracker

log = logging.getLogger("raystudy")

SERVER_SCHEMES = ("http://", "https://", "databricks")


def is_server(uri: str) -> bool:
    """True for a tracking server's URI (a database or a folder is local to one machine)."""
    return uri.startswith(SERVER_SCHEMES)


def mlflow_uri(cfg: StudyConfig, run: Location) -> str:
    """``tracking.mlflow.uri``, or the SQLite file of a local run folder."""
    given = cfg.tracking.mlflow.uri if cfg.tracking.mlflow else None
    if given:
        return given
    if not run.is_local:
        raise ConfigError(
            f"tracking.mlflow.uri: the run location {run.uri} is an object store, where nothing but the image "
            "cache is written locally, so it cannot hold MLflow's SQLite file; start an MLflow tracking server "
            "and pass --set tracking.mlflow.uri=http://HOST:5000"
        )
    return f"sqlite:///{run.local_path().resolve() / 'mlflow.db'}"


def check_installed(tracking: TrackingConfig) -> None:
    """One error naming every tracker asked for whose package is missing."""
    missing = [name for name in tracking.chosen() if importlib.util.find_spec(name) is None]
    if missing:
        extras = ",".join(missing)
        raise ConfigError(
            f"tracking.{' and tracking.'.join(missing)}: {' and '.join(missing)} not installed; "
            f"pip install -e '.[{extras}]', or leave the tracker out (--track / tracking:)"
        )


def aim_repo(cfg: StudyConfig, run: Location) -> str | None:
    """The Aim repository: ``tracking.aim.repo``, or ``<run folder>/aim``; None without Aim."""
    if cfg.tracking.aim is None:
        return None
    if cfg.tracking.aim.repo:
        return cfg.tracking.aim.repo
    if not run.is_local:
        raise ConfigError(
            f"tracking.aim.repo: the run location {run.uri} is an object store, which cannot hold an Aim "
            "repository; pass --set tracking.aim.repo=aim://HOST:53800 (an Aim server) or a local folder"
        )
    return str(run.local_path().resolve() / "aim")


def check_tracking(cfg: StudyConfig, run: Location) -> None:
    """Before Ray starts: the trackers are installed and the run location can hold their stores."""
    check_installed(cfg.tracking)
    if cfg.tracking.mlflow is not None:
        uri = mlflow_uri(cfg, run)
        if not run.is_local and not is_server(uri):
            raise ConfigError(
                f"tracking.mlflow.uri: {uri} is a store on this machine, but the run location {run.uri} is an "
                "object store, where nothing but the image cache is written locally; pass "
                "--set tracking.mlflow.uri=http://HOST:5000 (an MLflow tracking server)"
            )
    aim_repo(cfg, run)


def check_tracking_nodes(cfg: StudyConfig, run: Location, count_nodes: Callable[[], int]) -> None:
    """On a cluster of more than one node, MLflow needs a tracking server, not a local store
    (``count_nodes`` is asked only when MLflow is on)."""
    if cfg.tracking.mlflow is None:
        return
    nodes = count_nodes()
    if nodes < 2:
        return
    uri = mlflow_uri(cfg, run)
    if not is_server(uri):
        raise ConfigError(
            f"tracking.mlflow.uri: {uri} is a store on one machine, but this Ray cluster has {nodes} nodes; "
            "start an MLflow tracking server (mlflow server --host 0.0.0.0 --port 5000 "
            "--backend-store-uri sqlite:///mlflow.db) and pass --set tracking.mlflow.uri=http://HOST:5000"
        )


@dataclass
class Tracking:
    """The trackers of one sweep: MLflow (None when off) and the Tune callbacks for the Tuner."""

    mlflow: MlflowTracker | None = None
    callbacks: list = field(default_factory=list)

    def sync(self, pretraining: Iterable[str]) -> None:
        """Log what the store holds and MLflow lacks, then the report and numbers (at the study's end).

        A tracker that fails here is a warning: every result is in the store, and a rerun logs the rest.
        """
        if self.mlflow is None:
            return
        try:
            self.mlflow.log_all(pretraining)
            self.mlflow.log_artifacts()
        except Exception as err:  # noqa: BLE001 - the results are kept; the tracker is a copy of them
            log.warning(
                "tracking: MLflow at %s lacks some of the study's runs (%s); rerun the same command to log them",
                self.mlflow.uri,
                err,
            )


def mlflow_tracker(cfg: StudyConfig, run: Location, start: bool = True) -> MlflowTracker:
    """The study's MLflow runs (``tracking.mlflow`` set): a new experiment of a local store keeps its
    artifacts in ``<run folder>/mlartifacts``; a server's experiment in the server's artifact store.
    ``start``: see :class:`MlflowTracker`."""
    uri = mlflow_uri(cfg, run)
    artifacts = None if is_server(uri) else (run.local_path().resolve() / "mlartifacts").as_uri()
    return MlflowTracker(cfg, run, uri, artifacts, start)


def log_report(cfg: StudyConfig, run: Location) -> str | None:
    """After ``raystudy report``: the report and numbers on the study's MLflow run; returns a line
    saying so, or None when the study does not track to MLflow."""
    if cfg.tracking.mlflow is None:
        return None
    check_installed(cfg.tracking)
    try:
        tracker = mlflow_tracker(cfg, run, start=False)
    except LookupError as err:
        return f"not logged to MLflow: {err} (the study's next run creates it)"
    tracker.log_artifacts()
    return f"report and numbers logged to MLflow run {tracker.parent_id} ({tracker.uri})"


@contextmanager
def open_tracking(cfg: StudyConfig, run: Location) -> Iterator[Tracking]:
    """The trackers of a sweep; on the way out the study's MLflow run ends FINISHED, KILLED (SIGINT,
    SIGTERM) or FAILED, so none is left RUNNING."""
    tracker = mlflow_tracker(cfg, run) if cfg.tracking.mlflow is not None else None
    callbacks = [MlflowCallback(tracker)] if tracker is not None else []
    tracking = Tracking(tracker, callbacks + logger_callbacks(cfg, aim_repo(cfg, run)))
    status = "FAILED"
    try:
        yield tracking
        status = "FINISHED"
    except (StudyInterrupted, KeyboardInterrupt):
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            try:
                tracker.close(status)
            except Exception as err:  # noqa: BLE001 - never hide the study's own error behind the tracker's
                log.warning("tracking: could not end the MLflow run as %s (%s)", status, err)
