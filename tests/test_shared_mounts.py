"""A run folder on a shared mount written from many nodes (issue 23 item 8): one file per event,
'lost' decided by name rather than by a listing that may be cached, and initial weights that
reach every trial through the object store, so a node that cannot see the driver's file (one
that joined later, another mount) still loads it."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
import time

import pandas as pd
import pytest
import torch

from raystudy.config import load_config
from raystudy.events import log_event, read_events
from raystudy.models import build_encoder, load_encoder_weights
from raystudy.storage import cached_sha256, provide


def _log_many(run: str, writer: int) -> None:
    for i in range(50):
        log_event(run, f"c{writer}", "start", i=i)


def test_events_from_concurrent_writers_are_one_file_each(tmp_path):
    """Four processes log 50 events each at once: 200 whole events, one file each, none appended."""
    procs = [multiprocessing.get_context("spawn").Process(target=_log_many, args=(str(tmp_path), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    events = read_events(tmp_path)
    assert len(events) == 200 and len(list((tmp_path / "logs" / "trials").glob("*.json"))) == 200
    assert not (tmp_path / "logs" / "trials.jsonl").exists()
    for w in range(4):
        assert sorted(e["i"] for e in events if e["cell_id"] == f"c{w}") == list(range(50))


def test_a_cell_is_lost_only_when_its_file_is_absent_by_name(tmp_path):
    """The listing may be stale on a network mount: a cell whose trial file appears while the
    sweep looks it up by name is not lost; one whose file never appears is, after a bounded wait."""
    from raystudy.results import write_table
    from raystudy.storage import as_location
    from raystudy.sweep import confirm_lost

    run = as_location(tmp_path)
    write_table(run, "trials", "c1", pd.DataFrame([{"cell_id": "c1", "status": "done"}]))
    assert confirm_lost(run, ["c1", "c2"], wait_s=0) == ["c2"]
    late = threading.Timer(0.7, write_table, (run, "trials", "c2", pd.DataFrame([{"cell_id": "c2", "status": "done"}])))
    late.start()
    t0 = time.monotonic()
    assert confirm_lost(run, ["c2", "c3"], wait_s=3) == ["c3"]
    late.join()
    assert 2.5 <= time.monotonic() - t0 < 10  # c3 was looked up for the whole wait, no longer


def _checkpoint(path, seed: int = 0):
    torch.manual_seed(seed)
    net, _ = build_encoder("resnet18", 1)
    torch.save({"state_dict": net.state_dict()}, path)
    return net


def test_provided_bytes_load_without_the_file(tmp_path):
    path = tmp_path / "init.pth"
    source = _checkpoint(path)
    data = path.read_bytes()
    path.unlink()  # this "node" cannot see the file
    with pytest.raises(FileNotFoundError):
        load_encoder_weights(build_encoder("resnet18", 1)[0], path)
    provide(path, data)
    net, _ = build_encoder("resnet18", 1)
    load_encoder_weights(net, path)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), source.state_dict().values(), strict=True))
    assert cached_sha256(path) == hashlib.sha256(data).hexdigest()


@pytest.mark.e2e
def test_trials_and_train_workers_load_initial_weights_the_driver_shipped(ray_instance, tmp_path, monkeypatch):
    """The driver ships model.pretrain_init / baseline_init, then the file is gone: pretraining's
    Train worker and every cell still start from it, and ``init`` records its SHA-256."""
    from raystudy import scheduler
    from raystudy.study import run_study

    path = tmp_path / "weights" / "init.pth"
    path.parent.mkdir()
    _checkpoint(path, seed=1)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    real = scheduler.ship_init_weights

    def ship_then_hide(cfg):
        refs = real(cfg)
        path.unlink()  # from here on only the object store holds the weights
        return refs

    monkeypatch.setattr(scheduler, "ship_init_weights", ship_then_hide)
    cfg = load_config(
        preset="smoke",
        overrides=[
            "grid.models=[moco,baseline]",
            "grid.sizes={4cat: [40]}",
            "pretrain.probe=false",
            f"model.baseline_init={path}",
            f"model.pretrain_init={{moco: {path}}}",
        ],
    )
    run_study(cfg, tmp_path / "run")
    assert not path.exists()
    trials = pd.read_parquet(tmp_path / "run" / "results" / "trials")
    assert len(trials) == 4 and (trials["status"] == "done").all()
    baseline = trials[trials["model"] == "baseline"]
    assert (baseline["init"] == f"{path} sha256:{digest}").all()
    pretraining = pd.read_parquet(tmp_path / "run" / "results" / "pretraining")
    assert len(pretraining) == 1


def test_a_trial_on_a_node_without_the_run_folder_says_so(tmp_path):
    """A node that joined after the start-up check and does not mount the folder: its trials stop
    with a message naming the node and the folder, not by writing results nobody reads."""
    from raystudy.data.problems import DataError
    from raystudy.runfolder import check_driver_token, write_driver_token

    token = write_driver_token(tmp_path)
    check_driver_token(tmp_path, token)  # the driver's folder: fine
    with pytest.raises(DataError, match=r"holds another driver token here"):
        check_driver_token(tmp_path, "another-run")
    (tmp_path / "logs" / ".driver-token").unlink()  # what a node with its own, empty disk sees
    with pytest.raises(DataError, match=r"does not see the run folder .* is absent here\): mount it"):
        check_driver_token(tmp_path, token)
    check_driver_token(tmp_path, None)  # an object-store run has no token: nothing to check


def test_a_search_sample_on_a_node_without_the_run_folder_says_so(tmp_path):
    """``raystudy search`` checks the driver token too, before its sample trains anything."""
    from raystudy.data.problems import DataError
    from raystudy.runfolder import write_driver_token
    from raystudy.search import search_trial

    token = write_driver_token(tmp_path)
    (tmp_path / "logs" / ".driver-token").unlink()  # this node's own, empty disk
    with pytest.raises(DataError, match=r"does not see the run folder"):
        search_trial({"values": {}}, {"run_dir": str(tmp_path), "driver_token": token})


def test_only_initial_weight_files_that_exist_are_shipped(tmp_path):
    """A configured but absent file (of a model the grid does not train) is not read on the driver:
    where it is loaded, it fails with the loader's own message."""
    from raystudy.training.shipped import init_weight_paths, ship_init_weights

    cfg = load_config(
        preset="smoke", overrides=["grid.models=[moco]", f"model.baseline_init={tmp_path / 'absent.pth'}"]
    )
    assert init_weight_paths(cfg) == [str(tmp_path / "absent.pth")]
    assert ship_init_weights(cfg) == {}
