"""The storage layer: one API over a local folder and an object store (a local S3 API)."""

from __future__ import annotations

import pickle

import pandas as pd
import pytest
import yaml

from raystudy.config import ConfigError, dump_config, load_config
from raystudy.events import log_event, read_events
from raystudy.results import finished_cells, has_result, read_table, write_table
from raystudy.storage import Location, as_location, is_uri


def s3_uri(endpoint: str, key: str) -> str:
    return f"s3://raystudy/{key}?endpoint_override={endpoint}&scheme=http"


def test_uri_or_path():
    assert is_uri("s3://b/k") and is_uri("gs://b/k") and not is_uri("runs/demo") and not is_uri("file:///tmp/x")
    local = as_location("runs/demo")
    assert local.is_local and local.path.endswith("/runs/demo") and (local / "a").name == "a"


def test_local_write_is_atomic_and_leaves_no_temporary(tmp_path, monkeypatch):
    from raystudy import storage

    target = as_location(tmp_path) / "config.yaml"
    target.write_text("first")

    def fail(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "fsync", fail)
    with pytest.raises(OSError):
        target.write_text("second, cut short")
    assert target.read_text() == "first"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no temporary left


def test_saved_config_is_written_atomically(tmp_path, monkeypatch):
    from raystudy import storage

    cfg = load_config(preset="smoke")
    dump_config(cfg, tmp_path / "config.yaml")
    monkeypatch.setattr(storage.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "disk full")))
    with pytest.raises(OSError):
        dump_config(load_config(preset="demo"), tmp_path / "config.yaml")
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["name"] == "smoke"


def test_torn_saved_config_is_refused_with_a_message(tmp_path):
    from raystudy.sweep import check_resumable

    cfg = load_config(preset="smoke")
    dump_config(cfg, tmp_path / "config.yaml")
    text = (tmp_path / "config.yaml").read_text()
    (tmp_path / "config.yaml").write_text(text[: len(text) // 2] + "\n  - [unclosed")
    with pytest.raises(
        ConfigError, match=r"config\.yaml \(the config this run folder was started with\) cannot be read"
    ):
        check_resumable(cfg, tmp_path)
    (tmp_path / "config.yaml").write_text("grid: {folds: many}\n")  # parses, but is no study config
    with pytest.raises(ConfigError, match="cannot tell whether the results there belong to this study"):
        check_resumable(cfg, tmp_path)


def test_s3_location_reads_writes_lists_and_pickles(s3_server):
    endpoint, _ = s3_server
    run = Location.from_uri(s3_uri(endpoint, "unit/run"))
    assert not run.is_local and run.uri == s3_uri(endpoint, "unit/run")
    (run / "a" / "x.txt").write_text("hello")
    (run / "a" / "y.bin").write_bytes(b"\x00\x01")
    assert (run / "a" / "x.txt").read_text() == "hello" and (run / "a").is_dir()
    assert [c.name for c in (run / "a").glob("*.txt")] == ["x.txt"]
    assert (run / "missing").iterdir() == [] and not (run / "missing.txt").exists()
    clone = pickle.loads(pickle.dumps(run / "a"))  # what a Ray task receives
    assert [c.name for c in clone.iterdir()] == ["x.txt", "y.bin"]
    (run / "a" / "x.txt").move_to(run / "a" / "z.txt")
    assert not (run / "a" / "x.txt").exists() and (run / "a" / "z.txt").read_text() == "hello"
    (run / "a").rmtree()
    assert not (run / "a").exists()


def test_results_and_events_on_s3(s3_server):
    endpoint, _ = s3_server
    run = s3_uri(endpoint, "unit/results")
    write_table(run, "trials", "c1", pd.DataFrame([{"cell_id": "c1", "status": "done", "overall_accuracy": 0.5}]))
    write_table(run, "trials", "c2", pd.DataFrame([{"cell_id": "c2", "status": "failed"}]))
    assert finished_cells(run) == {"c1"} and has_result(run, "c1") and not has_result(run, "c2")
    assert read_table(run, "trials").set_index("cell_id").loc["c1", "overall_accuracy"] == 0.5
    log_event(run, "c1", "start")
    log_event(run, "c1", "finish")
    assert [e["event"] for e in read_events(run)] == ["start", "finish"]
    assert len((as_location(run) / "logs" / "trials").glob("*.json")) == 2  # one object per event


def test_initial_weights_are_read_through_the_storage_layer(s3_server):
    import torch

    from raystudy.models import build_encoder, load_encoder_weights
    from raystudy.models.encoders import save_checkpoint

    endpoint, _ = s3_server
    net, _ = build_encoder("resnet18_w16", 1)
    where = save_checkpoint({"state_dict": net.state_dict()}, s3_uri(endpoint, "weights/enc.pt"))
    other, _ = build_encoder("resnet18_w16", 1)
    load_encoder_weights(other, where.uri)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), other.state_dict().values(), strict=True))
    with pytest.raises(FileNotFoundError, match="encoder checkpoint not found"):
        load_encoder_weights(other, s3_uri(endpoint, "weights/missing.pt"))


def test_a_local_run_folder_unseen_by_a_node_stops_the_study(ray_instance, s3_server, tmp_path, monkeypatch):
    """Every alive node reads a token the driver wrote into the run folder; a node that
    cannot (a local folder on a multi-node cluster) stops the study before anything runs."""
    from raystudy import runfolder
    from raystudy.data.problems import DataError

    run = as_location(tmp_path)
    token = run / ".visible-test"
    token.write_text("abc")
    assert runfolder.nodes_missing(run, token, "abc") == []  # this node sees it (a real task on it)
    assert len(runfolder.nodes_missing(run, token, "another driver's token")) == 1

    alive = ray_instance.nodes()
    monkeypatch.setattr(
        ray_instance, "nodes", lambda: alive + [{**alive[0], "NodeID": "f" * 56, "NodeManagerAddress": "10.0.0.7"}]
    )
    monkeypatch.setattr(runfolder, "nodes_missing", lambda run, token_path, token: ["10.0.0.7"])
    with pytest.raises(DataError, match=r"node\(s\) 10\.0\.0\.7 cannot see.*s3://"):
        runfolder.check_visible_to_nodes(run)
    assert not list(tmp_path.glob(".visible-*-*"))  # its token is removed
    monkeypatch.undo()
    runfolder.check_visible_to_nodes(run)  # one node: nothing to check
    runfolder.check_visible_to_nodes(s3_uri(s3_server[0], "visible"))  # an object store is seen everywhere


def test_an_unreachable_location_is_a_clear_error(capsys):
    from raystudy.cli import main

    assert main(["status", "s3://bucket/run?endpoint_override=127.0.0.1:9&scheme=http"]) == 2
    err = capsys.readouterr().err
    assert "raystudy: error: s3://bucket/run" in err and "cannot be reached" in err and "Traceback" not in err
