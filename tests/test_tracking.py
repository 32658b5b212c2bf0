"""Experiment tracking: the ``tracking:`` section, its refusals, Ray's W&B and Aim callbacks grouped
by the study's cells (no network), and MLflow end to end (a local SQLite store and a real
``mlflow server``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from raystudy.config import ConfigError, load_config
from raystudy.errors import StudyInterrupted
from raystudy.grid import Cell, Job
from raystudy.storage import as_location

mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny is a test extra: pip install -e .[test]")

SHRUNK = ["grid.sizes={4cat: [40]}", "grid.models=[moco, baseline]"]  # 4 cells and one pretraining


def test_tracking_is_off_by_default_and_never_changes_the_hash():
    plain = load_config(preset="smoke")
    assert plain.tracking.chosen() == []
    tracked = load_config(preset="smoke", overrides=["tracking.mlflow.uri=http://127.0.0.1:5000"])
    tracked.tracking.turn_on("wandb")
    assert tracked.tracking.chosen() == ["mlflow", "wandb"]
    assert tracked.config_hash() == plain.config_hash() == "0f71b5acc534"


def test_a_store_the_run_cannot_hold_is_refused(tmp_path):
    from raystudy.tracking.setup import check_tracking, check_tracking_nodes, mlflow_uri

    cfg = load_config(preset="smoke", overrides=["tracking.mlflow={}"])
    local = as_location(tmp_path / "run")
    assert mlflow_uri(cfg, local) == f"sqlite:///{(tmp_path / 'run' / 'mlflow.db').resolve()}"
    check_tracking_nodes(cfg, local, lambda: 1)
    with pytest.raises(ConfigError, match=r"tracking.mlflow.uri: .* 3 nodes.*http://HOST:5000"):
        check_tracking_nodes(cfg, local, lambda: 3)
    with pytest.raises(ConfigError, match=r"tracking.mlflow.uri: the run location s3://bucket/run is an object"):
        check_tracking(cfg, SimpleNamespace(is_local=False, uri="s3://bucket/run"))  # an object store's Location
    served = load_config(preset="smoke", overrides=["tracking.mlflow.uri=http://10.0.0.1:5000"])
    check_tracking_nodes(served, local, lambda: 3)


def test_a_tracker_that_is_not_installed_is_one_error(monkeypatch, tmp_path):
    import importlib.util

    from raystudy.tracking import setup

    real = importlib.util.find_spec
    monkeypatch.setattr(setup.importlib.util, "find_spec", lambda name: None if name == "aim" else real(name))
    cfg = load_config(preset="smoke", overrides=["tracking.aim={}", "tracking.mlflow={}"])
    with pytest.raises(ConfigError, match=r"tracking.aim: aim not installed; pip install -e '.\[aim\]'"):
        setup.check_tracking(cfg, as_location(tmp_path))


class CellTrial:
    """A stand-in for a Tune trial of one cell: what Ray's logger callbacks read (hashed by identity, as Trial is)."""

    trial_id, experiment_dir_name, evaluated_params = "t1", "study-1", {}
    local_experiment_path, path = "/tmp/unused", "/tmp/unused/t1"

    def __init__(self) -> None:
        cell = Cell("moco", "4cat", 4, 40, 1, arch="resnet18", default_arch="resnet18")
        self.config = {"kind": "cell", "job": Job("cell", "moco", "resnet18", cell=cell)}

    def get_ray_actor_ip(self) -> None:
        return None

    def init_local_path(self) -> None:
        return None


def test_wandb_runs_are_grouped_by_study_and_configuration(monkeypatch):
    import ray.air.integrations.wandb as ray_wandb
    from ray.air.integrations.wandb import WandbLoggerCallback

    from raystudy.tracking.callbacks import CellWandbCallback, logger_callbacks

    monkeypatch.setenv("WANDB_MODE", "offline")
    # wandb is an optional extra that CI does not install: Ray's callback only checks that the module is there
    monkeypatch.setattr(ray_wandb, "wandb", SimpleNamespace(__name__="wandb"))
    for name in ("Image", "Video", "WBValue"):  # wandb's media types, which Ray's config cleaning checks against
        monkeypatch.setattr(ray_wandb, name, type(name, (), {}), raising=False)
    started: dict = {}
    monkeypatch.setattr(  # Ray's own logging actor (which would start wandb) is replaced by a recorder
        WandbLoggerCallback, "_start_logging_actor", lambda self, trial, exclude, **kw: started.update(kw)
    )
    cfg = load_config(preset="smoke", overrides=["tracking.wandb.project=ice"])
    (callback,) = logger_callbacks(cfg, None)
    assert isinstance(callback, CellWandbCallback) and callback.project == "ice" and callback.group == "smoke"
    callback.setup()
    callback.log_trial_start(CellTrial())
    assert started["project"] == "ice" and started["group"] == "smoke"
    assert started["name"] == "moco-4cat-n40-f1"
    assert started["job_type"] == "moco/resnet18/4cat/40/random/paper"  # the folds of one configuration share it
    assert started["config"]["fold"] == 1 and started["config"]["config_hash"] == cfg.config_hash()


def test_aim_runs_carry_the_cell_keys(monkeypatch, tmp_path):
    import ray.tune.logger.aim as ray_aim

    from raystudy.tracking.callbacks import CellAimCallback, logger_callbacks

    class FakeRun(dict):  # aim's Run: created with the repo and experiment, keyed like a dict
        def __init__(self, **kwargs):
            super().__init__()
            self.kwargs, self.name = kwargs, None

    monkeypatch.setattr(ray_aim, "Run", FakeRun)  # aim itself does not install beside this stack (see pyproject)
    cfg = load_config(preset="smoke", overrides=["tracking.aim={}"])
    (callback,) = logger_callbacks(cfg, str(tmp_path / "aim"))
    assert isinstance(callback, CellAimCallback)
    trial = CellTrial()
    callback.log_trial_start(trial)
    run = callback._trial_to_run[trial]
    assert run.kwargs == {"repo": str(tmp_path / "aim"), "experiment": "smoke"}
    assert run.name == "moco-4cat-n40-f1"
    assert run["raystudy"]["category_set"] == "4cat" and run["raystudy"]["configuration"].endswith("/paper")


def test_an_interrupted_study_leaves_no_run_running(tmp_path):
    from raystudy.tracking.setup import open_tracking

    cfg = load_config(preset="smoke", overrides=["tracking.mlflow={}"])
    run = as_location(tmp_path / "run")
    with pytest.raises(StudyInterrupted), open_tracking(cfg, run):
        raise StudyInterrupted(2)
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    (parent,) = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
    assert parent.info.status == "KILLED" and parent.data.tags["raystudy.kind"] == "study"


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on a free loopback port: SQLite backend, artifacts proxied into a folder."""
    root = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'server.db'}", "--artifacts-destination", str(root / "art")]
    proc = subprocess.Popen(
        command, stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT, start_new_session=True
    )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=5) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
        yield uri, root
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it started, nothing else
        proc.wait(timeout=60)


def study_runs(uri: str):
    """Every active run of the ``smoke`` experiment at ``uri``, through ``mlflow.search_runs``."""
    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["smoke"])


def check_study_runs(uri: str, run: Path) -> str:
    """One parent, one child per finished cell with its tags and final metrics, a pretraining run per
    method with its loss per epoch; returns the parent's run id."""
    import pandas as pd

    runs = study_runs(uri)
    kind = runs["tags.raystudy.kind"]
    (parent,) = runs.loc[kind == "study", "run_id"]
    assert (runs.loc[kind != "study", "tags.mlflow.parentRunId"] == parent).all()
    trials = pd.read_parquet(run / "results" / "trials")
    done = trials[trials["status"] == "done"].set_index("cell_id")
    cells = runs[kind == "cell"].set_index("tags.cell_id")
    assert sorted(cells.index) == sorted(done.index) and (cells["status"] == "FINISHED").all()
    for cell_id, row in done.iterrows():
        logged = cells.loc[cell_id]
        assert logged["tags.fold"] == str(row["fold"]) and logged["tags.config_hash"] == row["config_hash"]
        assert logged["tags.category_set"] == row["category_set"] and logged["tags.model"] == row["model"]
        assert logged["metrics.overall_accuracy"] == pytest.approx(row["overall_accuracy"])
        assert logged["metrics.macro_f1"] == pytest.approx(row["macro_f1"])
        assert logged["metrics.steps"] == row["steps"]
        history = mlflow.MlflowClient(uri).get_metric_history(logged["run_id"], "train_loss")
        assert sorted(m.step for m in history) == list(range(row["epochs"]))
    pretraining = runs[kind == "pretrain"].set_index("tags.model")
    assert sorted(pretraining.index) == ["moco"]
    loss = mlflow.MlflowClient(uri).get_metric_history(pretraining.loc["moco", "run_id"], "loss")
    assert [m.step for m in loss] == list(range(load_config(preset="smoke").pretrain.epochs))
    assert pretraining.loc["moco", "metrics.knn_accuracy"] > 0
    artifacts = {a.path for a in mlflow.MlflowClient(uri).list_artifacts(parent)}
    assert {"report.html", "numbers.csv"} <= artifacts
    return parent


@pytest.mark.e2e
def test_a_study_in_mlflow_local_store_then_a_tracking_server(ray_instance, mlflow_server, tmp_path, capsys):
    from raystudy.cli import main
    from raystudy.study import run_study

    run = tmp_path / "run"
    local = load_config(preset="smoke", overrides=[*SHRUNK, "tracking.mlflow={}"])
    run_study(local, run)  # logs each job as it ends to sqlite:///<run>/mlflow.db
    sqlite = f"sqlite:///{run.resolve() / 'mlflow.db'}"
    parent = check_study_runs(sqlite, run)
    assert study_runs(sqlite).set_index("run_id").loc[parent, "status"] == "FINISHED"
    before = len(study_runs(sqlite))
    run_study(local, run)  # the rerun finds every cell done: no run logged twice
    assert len(study_runs(sqlite)) == before and check_study_runs(sqlite, run) == parent
    assert main(["report", str(run)]) == 0 and f"logged to MLflow run {parent}" in capsys.readouterr().out

    uri, root = mlflow_server
    served = load_config(preset="smoke", overrides=[*SHRUNK, f"tracking.mlflow.uri={uri}"])
    local_files = sorted(p for p in run.rglob("*") if "mlartifacts" in p.parts)
    run_study(served, run)  # the same study against the server: everything the store holds, logged there
    parent = check_study_runs(uri, run)
    assert study_runs(uri)["artifact_uri"].str.startswith("mlflow-artifacts:").all()  # the server's store
    assert (root / "art").is_dir() and any(p.name == "report.html" for p in (root / "art").rglob("*"))
    assert sorted(p for p in run.rglob("*") if "mlartifacts" in p.parts) == local_files  # nothing new locally
