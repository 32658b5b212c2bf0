"""Faults and bad input tried as a hostile user would (issue 23, items 5, 11 and 12): each ends in one
message naming the file or key, exit 2 (130 / 143 for a signal), nothing half-written, no secret echoed."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
from own_data import make_folder

from raystudy import storage, sweep
from raystudy.catalog import Catalog
from raystudy.cli import main
from raystudy.config import ConfigError, dump_config, load_config
from raystudy.data.loading import scan_folder
from raystudy.data.problems import DataError
from raystudy.data.synthetic import MARKER_NAME
from raystudy.errors import StudyInterrupted, StudyLockedError
from raystudy.provenance import collect
from raystudy.results import read_table, results_dir, write_table
from raystudy.runfolder import lock_file, run_lock
from raystudy.storage import DiskFull, LocationError, as_location

SECRET = "wJalrXUtnFEMIsecretK7MDENG"


def one_error(capsys, argv: list[str]) -> str:
    """Run the CLI: exit 2 and exactly one ``raystudy: error:`` line, no traceback; returns stderr."""
    code = main(argv)
    captured = capsys.readouterr()
    err = captured.err
    assert code == 2, err
    assert "Traceback" not in err and err.count("raystudy: error:") == 1, err
    return err + captured.out


# -- interrupts -------------------------------------------------------------------------------
def test_an_interrupt_is_no_ordinary_error_and_no_report_figure_swallows_it():
    from analysis.report import _safe

    assert issubclass(StudyInterrupted, BaseException) and not issubclass(StudyInterrupted, Exception)

    def interrupted_figure():
        raise StudyInterrupted(15)

    with pytest.raises(StudyInterrupted) as caught:
        _safe(interrupted_figure, "a figure")
    assert caught.value.exit_code == 143


# -- the results store ----------------------------------------------------------------------------
def test_a_torn_result_file_is_named_by_status_not_an_arrow_traceback(tmp_path, capsys):
    run = tmp_path / "run"
    row = {"cell_id": "moco-4cat-n40-f0", "status": "done", "overall_accuracy": 0.5}
    part = write_table(run, "trials", "moco-4cat-n40-f0", pd.DataFrame([row])).local_path()
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])  # torn: half its length
    with pytest.raises(DataError, match="moco-4cat-n40-f0.parquet is not a readable result file"):
        read_table(run, "trials")
    err = one_error(capsys, ["status", str(run)])
    assert str(part) in err and "delete it, then rerun" in err and "ArrowInvalid" not in err


def test_the_report_says_which_torn_file_it_leaves_out(tmp_path, caplog):
    from analysis.results import read_table as report_table

    run = tmp_path / "run"
    for cell in ("a", "b"):
        write_table(run, "trials", cell, pd.DataFrame([{"cell_id": cell, "status": "done"}]))
    torn = results_dir(run).local_path() / "trials" / "b.parquet"
    torn.write_bytes(b"PAR1 torn")
    with caplog.at_level(logging.WARNING, logger="raystudy"):
        trials = report_table(run, "trials")
    assert list(trials["cell_id"]) == ["a"]
    assert f"the report leaves out {torn}" in caplog.text


# -- config ---------------------------------------------------------------------------------------
def test_duplicated_train_sizes_are_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"--set grid\.sizes\.4cat: \[40, 40\] lists the train size\(s\) \[40\]"):
        load_config(preset="smoke", overrides=["grid.sizes={4cat: [40, 40]}"])


def test_errors_from_set_name_the_set_key_not_the_preset_file():
    with pytest.raises(ConfigError) as caught:
        load_config(preset="smoke", overrides=["finetune.epochs=-3"])
    assert "--set finetune.epochs: must be >= 1" in str(caught.value)
    assert "smoke.yaml" not in str(caught.value)
    with pytest.raises(ConfigError, match=r"--set unknown config key\(s\) finetune\.nosuch"):
        load_config(preset="smoke", overrides=["finetune.nosuch=1"])


def test_an_empty_yaml_file_is_refused(tmp_path):
    empty = tmp_path / "study.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match=r"study\.yaml is empty"):
        load_config(path=empty)


def test_a_directory_given_to_config_is_reported_as_a_directory(tmp_path, capsys):
    err = one_error(capsys, ["run", "--config", str(tmp_path), "--out", str(tmp_path / "run")])
    assert f"config file {tmp_path} is a directory" in err
    assert not (tmp_path / "run").exists()


# -- run locations --------------------------------------------------------------------------------
def test_an_object_store_uri_with_one_slash_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(LocationError, match="two slashes"):
        as_location("s3:/x")
    err = one_error(capsys, ["run", "--preset", "smoke", "--out", "s3:/x"])
    assert "s3:/x: a URI needs two slashes" in err
    assert list(tmp_path.iterdir()) == []  # no local folder ./s3:/x


def test_a_refused_second_driver_keeps_the_first_drivers_pid(tmp_path):
    run = tmp_path / "run"
    with run_lock(run):
        with pytest.raises(StudyLockedError), run_lock(run):
            pass
        assert lock_file(run).read_text() == str(os.getpid())


# -- data -----------------------------------------------------------------------------------------
def test_an_unreadable_category_folder_is_named(tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data", {"": {"column": 2, "plate": 2}})
    locked, iterdir = root / "plate", Path.iterdir

    def no_permission(self):
        if self == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", no_permission)  # as chmod 000 does for a non-root user
    with pytest.raises(DataError) as caught:
        scan_folder(root, Catalog())
    message = str(caught.value)
    assert "1 folder(s) that cannot be read" in message and f"{locked} (Permission denied)" in message
    assert "chmod" in message and "without images" not in message


def test_data_problems_are_reported_before_ray_starts(tmp_path, monkeypatch, capsys):
    def no_ray(cfg):
        raise AssertionError("Ray was started before the data were checked")

    monkeypatch.setattr(sweep, "ensure_ray", no_ray)
    err = one_error(capsys, ["run", "--preset", "smoke", "--data", str(tmp_path / "nowhere"), "--out", "x"])
    assert f"--data {tmp_path / 'nowhere'} does not exist" in err
    data = make_folder(tmp_path / "data", {"": {"column": 2}})
    (data / "plate").mkdir()  # a category folder without images
    err = one_error(capsys, ["run", "--preset", "smoke", "--data", str(data), "--out", str(tmp_path / "run")])
    assert "category folder(s) without images" in err and str(data / "plate") in err
    assert not (tmp_path / "run").exists()


def test_nothing_to_run_leaves_nothing_behind(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sweep, "ensure_ray", lambda cfg: None)  # nothing here needs Ray
    monkeypatch.setattr(sweep, "check_visible_to_nodes", lambda run: None)
    monkeypatch.setattr(sweep, "fit_resources", lambda cfg, shrink: contextlib.nullcontext(cfg))
    run = tmp_path / "run"
    argv = ["run", "--preset", "smoke", "--out", str(run), "--set", "grid.sizes={19cat: [5000], 4cat: [5000]}"]
    err = one_error(capsys, argv)
    assert "nothing to run: all 12 cells of study 'smoke' are skipped" in err
    assert not run.exists()


def test_the_embedded_data_sets_marker_is_not_reported_but_other_hidden_files_are(tmp_path, caplog):
    root = make_folder(tmp_path / "data", {"": {"column": 2, "plate": 2}})
    (root / MARKER_NAME).write_text("{}")
    with caplog.at_level(logging.WARNING, logger="raystudy"):
        scan_folder(root, Catalog(), own_files=frozenset({MARKER_NAME}))
    assert "hidden" not in caplog.text
    (root / ".notes").write_text("mine")
    with caplog.at_level(logging.WARNING, logger="raystudy"):
        scan_folder(root, Catalog(), own_files=frozenset({MARKER_NAME}))
    assert "hidden file(s) or folder(s), ignored" in caplog.text and ".notes" in caplog.text
    assert MARKER_NAME not in caplog.text


# -- advise ---------------------------------------------------------------------------------------
def advised_run(tmp_path: Path, config_text: str | None = None) -> Path:
    run = tmp_path / "run"
    (run / "results").mkdir(parents=True)
    if config_text is None:
        dump_config(load_config(preset="smoke"), as_location(run / "config.yaml"))
    else:
        (run / "config.yaml").write_text(config_text)
    return run


def test_advise_out_a_directory_is_refused_before_ranking(tmp_path, capsys):
    run, pool = advised_run(tmp_path), make_folder(tmp_path / "pool", {"": {"a": 2}})
    err = one_error(capsys, ["advise", str(run), "--pool", str(pool), "--budget", "1", "--out", str(tmp_path)])
    assert f"--out {tmp_path} is a directory" in err


def test_advise_on_a_torn_config_names_the_file(tmp_path, capsys):
    run, pool = (
        advised_run(tmp_path, "name: smoke\ngrid: {sizes: [1,\n"),
        make_folder(tmp_path / "pool", {"": {"a": 2}}),
    )
    err = one_error(
        capsys, ["advise", str(run), "--pool", str(pool), "--budget", "1", "--out", str(tmp_path / "l.csv")]
    )
    assert f"{run / 'config.yaml'} (the config this run folder was started with) cannot be read" in err


def test_advise_does_not_rank_text_files_named_png(tmp_path, capsys):
    run, pool = advised_run(tmp_path), make_folder(tmp_path / "pool", {"": {"a": 2}})
    fake = pool / "a" / "notes.png"
    fake.write_text("not an image")
    out = tmp_path / "labels.csv"
    err = one_error(capsys, ["advise", str(run), "--pool", str(pool), "--budget", "1", "--out", str(out)])
    assert f"{fake} (not a readable PNG, JPEG or TIFF image)" in err
    assert not out.exists()


# -- a full disk ----------------------------------------------------------------------------------
def test_a_full_disk_stops_with_the_location_and_free_space_and_keeps_the_old_report(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    write_table(run, "trials", "a", pd.DataFrame([{"cell_id": "a", "status": "done"}]))
    (run / "report.html").write_text("the previous report")

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(storage, "os", types.SimpleNamespace(**{**vars(os), "replace": no_space}))
    with pytest.raises(DiskFull) as caught:
        as_location(run / "x.txt").write_text("x")
    assert caught.value.errno == errno.ENOSPC
    err = one_error(capsys, ["report", str(run)])
    assert f"no space left on the device holding {run}" in err and "MiB free" in err
    assert (run / "report.html").read_text() == "the previous report"
    assert [p.name for p in run.iterdir() if p.name.endswith(".tmp")] == []  # nothing half-written


# -- credentials in a URI --------------------------------------------------------------------------
def test_credentials_in_a_uri_are_refused_and_never_echoed(s3_server, tmp_path, monkeypatch, capsys):
    import pyarrow.fs as pafs

    endpoint, _ = s3_server
    monkeypatch.chdir(tmp_path)
    uri = f"s3://AKIAEXAMPLE:{SECRET}@raystudy/secret-run?endpoint_override={endpoint}&scheme=http"
    for argv in (
        ["run", "--preset", "smoke", "--out", uri],
        ["run", "--preset", "smoke", "--out", str(tmp_path / "run"), "--set", f"model.baseline_init={uri}/w.pt"],
        ["status", uri],
    ):
        err = one_error(capsys, argv)
        assert SECRET not in err and "AKIAEXAMPLE" not in err
        assert "s3://***@raystudy/secret-run" in err and "AWS_ACCESS_KEY_ID" in err
    assert list(tmp_path.iterdir()) == []  # no run folder, no file of the run
    fs = pafs.S3FileSystem(endpoint_override=endpoint, scheme="http")
    assert fs.get_file_info(pafs.FileSelector("raystudy/secret-run", allow_not_found=True)) == []
    monkeypatch.setattr(sys, "argv", ["scaling.py", "--out", uri])
    assert SECRET not in collect({"study": 0}, "abc")["command"]  # run_info.json's record of argv


# -- a one-GPU workstation ------------------------------------------------------------------------
def test_a_one_gpu_instance_caps_pretraining_workers_with_one_warning(monkeypatch, caplog):
    import ray

    from raystudy.resources import shrink_to_cluster

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}}])
    overrides = ["pretrain.num_workers=4", "pretrain.use_gpu=true", "pretrain.cpus_per_worker=2"]
    cfg = load_config(preset="smoke", overrides=overrides)
    with caplog.at_level(logging.WARNING, logger="raystudy"):
        shrunk = shrink_to_cluster(cfg)
    assert shrunk.pretrain.num_workers == 1
    warnings = [r.getMessage() for r in caplog.records if "pretrain.num_workers" in r.getMessage()]
    assert len(warnings) == 1 and "pretrain.num_workers 4 -> 1" in warnings[0] and "GPU" in warnings[0]


def test_a_gpu_request_on_an_instance_without_one_fails_at_once(monkeypatch):
    import ray

    from raystudy.resources import ResourceError, shrink_to_cluster

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 8.0}}])
    cfg = load_config(preset="smoke", overrides=["pretrain.use_gpu=true"])
    with pytest.raises(ResourceError, match=r"GPU: 1.*no node type holds one"):
        shrink_to_cluster(cfg)


def test_a_cluster_without_an_autoscaler_config_is_fitted_to_its_live_nodes(monkeypatch, caplog):
    """``ray start --head --num-gpus=1`` and ``RAY_ADDRESS=auto``: the driver did not start the
    instance and no autoscaler config is in the GCS; the live nodes are all there is."""
    import ray

    from raystudy import resources
    from raystudy.training.pretrain import process_group_backend

    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0, "GPU": 1.0}}])
    monkeypatch.setattr(resources, "started_here", lambda: False)
    monkeypatch.setattr(resources, "autoscaler_node_types", lambda: None)
    overrides = ["pretrain.num_workers=2", "pretrain.use_gpu=true"]
    with caplog.at_level(logging.WARNING, logger="raystudy"):
        with resources.fit_resources(load_config(preset="smoke", overrides=overrides)) as cfg:
            assert cfg.pretrain.num_workers == 1
    said = [r.getMessage() for r in caplog.records]
    assert any("no autoscaler config" in m and "RAYSTUDY_AUTOSCALER_CONFIG" in m for m in said)
    assert any("pretrain.num_workers 2 -> 1" in m for m in said)
    # what can never start fails at once, naming where the node types came from
    overrides = ["pretrain.use_gpu=true"]
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True, "Resources": {"CPU": 2.0}}])
    with pytest.raises(resources.ResourceError, match=r"no autoscaler config is visible"):
        with resources.fit_resources(load_config(preset="smoke", overrides=overrides)):
            pass
    # one GPU worker (Ray's GPU may be one torch cannot use) talks to nobody: gloo; a GPU group: NCCL
    assert process_group_backend(True, 1) == "gloo" and process_group_backend(True, 4) == "nccl"
    assert process_group_backend(False, 4) == "gloo"


def test_a_worker_group_that_never_starts_fails_after_a_finite_number_of_start_ups(tmp_path, monkeypatch):
    import ray
    import ray.train.torch
    import ray.tune.integration.ray_train

    from raystudy.grid import pretrain_jobs
    from raystudy.training import pretrain

    seen = {}

    class NeverStarts:  # records the run config the study hands Ray Train, then stops the trial
        def __init__(self, *args, run_config, **kwargs):
            seen["failure"] = run_config.failure_config

        def fit(self):
            raise RuntimeError("the worker group never started")

    monkeypatch.setattr(ray.train.torch, "TorchTrainer", NeverStarts)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(ray.tune.integration.ray_train, "TuneReportCallback", ray.train.UserCallback)  # no Tune here
    cfg = load_config(preset="smoke")
    with pytest.raises(RuntimeError, match="never started"):
        pretrain.pretrain_trial(pretrain_jobs(cfg)[0], cfg, as_location(tmp_path), None, None)
    limit = seen["failure"].controller_failure_limit
    assert limit == cfg.pretrain.start_attempts - 1 and 0 <= limit < 100  # Train's default, -1, never ends


# -- noise ----------------------------------------------------------------------------------------
def test_the_study_searcher_saves_without_tunes_not_implemented_warning(tmp_path, caplog):
    from raystudy.scheduler import StudySearcher

    with caplog.at_level(logging.WARNING):
        StudySearcher([]).save_to_dir(str(tmp_path))
    assert "save not implemented" not in caplog.text
    assert list(tmp_path.iterdir()) == []  # nothing to save: a rerun plans again from the run folder


def test_a_local_instance_is_sized_for_the_studys_worker_processes(monkeypatch):
    import ray

    calls = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    cfg = load_config(preset="demo", overrides=["pretrain.num_workers=2"])
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep.ensure_ray(cfg)
    expected = calls[0]["_system_config"]["worker_maximum_startup_concurrency"]
    assert expected >= len(cfg.pretrain.methods) * (2 + 2)  # each run: 2 Train workers, its trial, its controller
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    sweep.ensure_ray(cfg)
    assert "_system_config" not in calls[1]  # a cluster's raylets are configured where they start


def test_a_ray_address_where_no_instance_answers_is_one_config_error(monkeypatch):
    import ray

    from raystudy import sweep

    def no_instance(**kwargs):
        raise ConnectionError("Could not find any running Ray instance.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", no_instance)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    with pytest.raises(ConfigError, match=r"RAY_ADDRESS=auto: no Ray instance answers there.*unset RAY_ADDRESS"):
        sweep.ensure_ray(load_config(preset="smoke"))


def test_a_train_controller_error_names_what_the_group_asked_for():
    from raystudy.training.pretrain import never_started

    class WorkerGroupStartupTimeoutError(Exception):  # Ray Train's name (raystudy matches on it)
        pass

    p = load_config(preset="smoke", overrides=["pretrain.num_workers=2", "pretrain.start_attempts=3"]).pretrain
    why = never_started(p, True, WorkerGroupStartupTimeoutError("timed out after 2.0 seconds. Potential causes"))
    assert why.startswith("its worker group of 2 x {CPU: 1, GPU: 1} did not start in pretrain.start_attempts = 3")
    assert "(WorkerGroupStartupTimeoutError: timed out after 2.0 seconds)" in why
    assert "was stopped by Ray Train's controller (RuntimeError: lost)" in never_started(p, False, RuntimeError("lost"))


def test_tunes_snapshot_warning_is_silenced_but_its_slow_snapshot_warning_kept(monkeypatch):
    """Each cell keeps one checkpoint, so Tune snapshots the experiment after every cell's checkpoint
    and warned "Experiment state snapshotting has been triggered multiple times" twice per demo run:
    noise (issue 23 item 11). The warning for a snapshot slower than 30 s stays."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    from raystudy.scheduler import tune_environment

    for name in ("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "TUNE_MAX_PENDING_TRIALS_PG"):
        monkeypatch.setenv(name, "1")  # recorded, so the test leaves the environment as it found it
        monkeypatch.delenv(name)
    assert _ExperimentCheckpointManager(storage=None, checkpoint_period=10)._excessive_sync_threshold == 5.0
    tune_environment()
    manager = _ExperimentCheckpointManager(storage=None, checkpoint_period=10)  # the driver's, built by the Tuner
    assert manager._excessive_sync_threshold == 0.0  # Tune's own "set it to 0 to completely suppress"
    assert manager._slow_sync_threshold == 30.0
    monkeypatch.setenv("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "2")
    tune_environment()
    assert _ExperimentCheckpointManager(storage=None, checkpoint_period=10)._excessive_sync_threshold == 2.0
