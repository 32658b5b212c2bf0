"""Cell checkpoints: reported through Tune, restored from Tune or an earlier sweep, torn ones set aside."""

import shutil
from pathlib import Path

import torch

from raystudy.events import read_events
from raystudy.training.finetune import CellCheckpoint


class FolderReport:
    """A stand-in for ``tune.report`` outside Tune: persists each checkpoint the way Ray lays
    it out in the run location (``ray/<sweep>/<cell_id>/checkpoint_<k>``)."""

    def __init__(self, run_dir: Path, cell_id: str, sweep: str = "study-20260101-000000") -> None:
        self.folder, self.metrics, self.k = run_dir / "ray" / sweep / cell_id, [], 0

    def __call__(self, metrics, checkpoint=None) -> None:
        self.metrics.append(metrics)
        if checkpoint is not None:
            shutil.copytree(checkpoint.path, self.folder / f"checkpoint_{self.k:06d}")
            self.k += 1


def no_tune():
    return None


def trained_linear():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def test_cell_checkpoint_round_trip_through_an_earlier_sweep(tmp_path):
    model, opt = trained_linear()
    report = FolderReport(tmp_path, "c")
    ck = CellCheckpoint(tmp_path, "c", every_s=0.0, report=report, tune_checkpoint=no_tune)
    assert ck.restore(model, opt) == (0, 0, [], 0.0)
    saved = ck.save(
        {"epoch": 2, "loss": 1.5},
        model,
        opt,
        epoch=2,
        step=7,
        losses=[{"epoch": 2, "step": 6, "loss": 1.5, "lr": 0.1}],
        seconds=3.0,
    )
    assert saved and report.metrics == [{"epoch": 2, "loss": 1.5}]
    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    fresh = CellCheckpoint(tmp_path, "c", 0.0, tune_checkpoint=no_tune)  # the rerun: a new sweep, no Tune checkpoint
    epoch, step, losses, seconds = fresh.restore(other, other_opt)
    assert (epoch, step, seconds) == (3, 7, 3.0) and losses[0]["loss"] == 1.5
    assert torch.equal(other.weight, model.weight)
    assert other_opt.state_dict()["state"][0]["momentum_buffer"].equal(opt.state_dict()["state"][0]["momentum_buffer"])
    ck.remove()
    assert not list((tmp_path / "ray").rglob("checkpoint_*"))


def test_tune_checkpoint_comes_first(tmp_path):
    from ray import tune

    model, opt = trained_linear()
    FolderReport(tmp_path, "c")  # an older sweep's checkpoint of epoch 0
    CellCheckpoint(tmp_path, "c", 0.0, report=FolderReport(tmp_path, "c"), tune_checkpoint=no_tune).save(
        {}, model, opt, epoch=0, step=1, losses=[], seconds=1.0
    )
    retry = tmp_path / "retry"
    retry.mkdir()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": 4,
            "step": 9,
            "losses": [],
            "seconds": 2.0,
        },
        retry / "state.pt",
    )
    ck = CellCheckpoint(tmp_path, "c", 0.0, tune_checkpoint=lambda: tune.Checkpoint.from_directory(str(retry)))
    assert ck.restore(model, opt)[:2] == (5, 9)


def test_torn_checkpoint_is_set_aside_and_the_older_one_used(tmp_path):
    model, opt = trained_linear()
    report = FolderReport(tmp_path, "c")
    ck = CellCheckpoint(tmp_path, "c", 0.0, report=report, tune_checkpoint=no_tune)
    ck.save({}, model, opt, epoch=0, step=1, losses=[], seconds=1.0)
    ck.save({}, model, opt, epoch=1, step=2, losses=[], seconds=2.0)
    newest = report.folder / "checkpoint_000001"
    data = (newest / "state.pt").read_bytes()
    (newest / "state.pt").write_bytes(data[: len(data) // 3])  # a write cut by a crash
    epoch = CellCheckpoint(tmp_path, "c", 0.0, tune_checkpoint=no_tune).restore(model, opt)[0]
    assert epoch == 1  # the epoch-0 checkpoint, not a failure
    assert not newest.exists() and (report.folder / "checkpoint_000001.unreadable").is_dir()
    (report.folder / "checkpoint_000000" / "state.pt").write_bytes(b"garbage")
    assert CellCheckpoint(tmp_path, "c", 0.0, tune_checkpoint=no_tune).restore(model, opt) == (0, 0, [], 0.0)
    assert [e["event"] for e in read_events(tmp_path)].count("checkpoint_set_aside") == 2


def test_checkpoint_not_written_before_interval(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    report = FolderReport(tmp_path, "c")
    ck = CellCheckpoint(tmp_path, "c", every_s=3600, report=report, tune_checkpoint=no_tune)
    assert not ck.save({"epoch": 0}, model, opt, 0, 1, [], 0.1)
    assert report.metrics == [{"epoch": 0}] and not (tmp_path / "ray").exists()


def test_recalibrate_batchnorm_matches_data_statistics():
    import numpy as np

    from raystudy.training.finetune import recalibrate_batchnorm

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.BatchNorm1d(4))
    model[1].running_mean.fill_(100.0)  # stale statistics
    images = np.arange(10 * 2 * 2, dtype=np.uint8).reshape(10, 2, 2) * 3
    rows = np.arange(10)
    transform = lambda x: x.float()  # noqa: E731 - a one-line transform
    recalibrate_batchnorm(model, images, rows, transform, batch=5, device=torch.device("cpu"))
    expected = torch.from_numpy(images.reshape(10, 4).astype(np.float32)).mean(0)
    assert torch.allclose(model[1].running_mean, expected, atol=1e-4)
    assert not model.training and model[1].momentum == 0.1


def test_checkpoint_of_other_category_count_is_refused_with_keys(tmp_path):
    import pytest

    from raystudy.models import Classifier, build_encoder

    def classifier(n):
        enc, dim = build_encoder("resnet18", 1)
        return Classifier(enc, dim, n, hidden_dim=16)

    four = classifier(4)
    opt = torch.optim.SGD(four.parameters(), lr=0.1)
    CellCheckpoint(tmp_path, "c", 0.0, report=FolderReport(tmp_path, "c"), tune_checkpoint=no_tune).save(
        {}, four, opt, 0, 1, [], 1.0
    )
    nineteen = classifier(19)
    with pytest.raises(RuntimeError, match=r"size mismatch for head\.\S+"):
        CellCheckpoint(tmp_path, "c", 0.0, tune_checkpoint=no_tune).restore(
            nineteen, torch.optim.SGD(nineteen.parameters(), lr=0.1)
        )


# -- a read that fails is not a torn checkpoint; each candidate once; found by its marker ----------
def two_checkpoints(run_dir: Path, trial: str = "c"):
    """Checkpoints of epochs 0 and 1 of cell "c" in the trial folder ``trial``."""
    model, opt = trained_linear()
    report = FolderReport(run_dir, trial)
    ck = CellCheckpoint(run_dir, "c", 0.0, report=report, tune_checkpoint=no_tune)
    ck.save({}, model, opt, epoch=0, step=1, losses=[], seconds=1.0)
    ck.save({}, model, opt, epoch=1, step=2, losses=[], seconds=2.0)
    return model, opt, report.folder


def test_a_failed_read_propagates_and_sets_nothing_aside(tmp_path, monkeypatch):
    import pytest

    from raystudy.storage import Location

    model, opt, folder = two_checkpoints(tmp_path)
    read_bytes, failures = Location.read_bytes, []

    def flaky(self):  # one transient error of the store (S3 throttling, an NFS hiccup)
        if self.name == CellCheckpoint.STATE and not failures:
            failures.append(self.uri)
            raise OSError("AWS Error NETWORK_CONNECTION during GetObject operation")
        return read_bytes(self)

    monkeypatch.setattr(Location, "read_bytes", flaky)
    with pytest.raises(OSError, match="NETWORK_CONNECTION"):
        CellCheckpoint(tmp_path, "c", 0.0, tune_checkpoint=no_tune).restore(model, opt)
    assert failures and sorted(p.name for p in folder.iterdir()) == ["checkpoint_000000", "checkpoint_000001"]
    assert read_events(tmp_path) == []  # nothing set aside
    assert CellCheckpoint(tmp_path, "c", 0.0, tune_checkpoint=no_tune).restore(model, opt)[0] == 2  # Tune's retry


def test_a_torn_tune_checkpoint_is_tried_once_and_the_older_one_used(tmp_path):
    from ray import tune

    model, opt, folder = two_checkpoints(tmp_path)
    newest = folder / "checkpoint_000001"
    (newest / "state.pt").write_bytes((newest / "state.pt").read_bytes()[:100])  # torn
    ck = CellCheckpoint(tmp_path, "c", 0.0, tune_checkpoint=lambda: tune.Checkpoint.from_directory(str(newest)))
    assert [c.name for c in ck.candidates()] == ["checkpoint_000001", "checkpoint_000000"]  # Tune's is earlier()'s too
    assert ck.restore(model, opt)[0] == 1
    assert [e["event"] for e in read_events(tmp_path)].count("checkpoint_set_aside") == 1
    assert (folder / "checkpoint_000001.unreadable" / "state.pt").is_file()


def test_checkpoints_are_looked_up_in_the_cells_own_trial_folders_only(tmp_path, monkeypatch):
    """The study names each trial folder after its cell: a lookup lists the sweeps and this cell's
    folder in each, never every trial's (that grew with the cells squared over a study)."""
    from raystudy.storage import Location

    model, opt, folder = two_checkpoints(tmp_path)  # sweep study-20260101-000000, folder "c"
    later = FolderReport(tmp_path, "c", sweep="study-20260102-000000")  # a rerun's sweep
    CellCheckpoint(tmp_path, "c", 0.0, report=later, tune_checkpoint=no_tune).save(
        {}, model, opt, epoch=2, step=3, losses=[], seconds=3.0
    )
    stray = FolderReport(tmp_path, "c", sweep="study-20260103-000000")  # a folder named "c" holding cell d's
    CellCheckpoint(tmp_path, "d", 0.0, report=stray, tune_checkpoint=no_tune).save(
        {}, model, opt, epoch=5, step=9, losses=[], seconds=1.0
    )
    for i in range(50):  # other cells' trials: never listed
        FolderReport(tmp_path, f"other-{i}")(None, checkpoint=None)
        (tmp_path / "ray" / "study-20260101-000000" / f"other-{i}" / "checkpoint_000000").mkdir(parents=True)
    listed = []
    files_below = Location.files_below
    monkeypatch.setattr(Location, "files_below", lambda self: listed.append(self.name) or files_below(self))
    ck = CellCheckpoint(tmp_path, "c", 0.0, tune_checkpoint=no_tune)
    assert [(c.parent.parent.name, c.name) for c in ck.earlier()] == [
        ("study-20260102-000000", "checkpoint_000000"),  # newest sweep first
        ("study-20260101-000000", "checkpoint_000001"),
        ("study-20260101-000000", "checkpoint_000000"),
    ]  # cell d's checkpoint in a folder named "c" is not this cell's
    assert listed == ["c", "c", "c"]  # one listing per sweep, of this cell's folder
    assert ck.restore(model, opt)[0] == 3
    ck.remove()
    assert (stray.folder / "checkpoint_000000").is_dir()  # cell d's is not touched


def test_set_aside_on_an_object_store_copies_and_never_deletes(tmp_path, monkeypatch):
    import pyarrow.fs as pafs

    from raystudy.storage import Location

    model, opt, folder = two_checkpoints(tmp_path)
    (folder / "checkpoint_000001" / "state.pt").write_bytes(b"garbage")
    (tmp_path / "logs" / "trials").mkdir(parents=True)
    store = Location(pafs.LocalFileSystem(), str(tmp_path), scheme="s3")  # object-store code paths on a local disk
    assert CellCheckpoint(store, "c", 0.0, tune_checkpoint=no_tune).restore(model, opt)[0] == 1
    moved = folder / "checkpoint_000001.unreadable"
    assert sorted(p.name for p in moved.iterdir()) == ["raystudy-cell-c", "state.pt"]  # copied object by object
    assert not (folder / "checkpoint_000001").exists()
    # a copy that fails: the folder stays where it is, marked, and is passed over from then on
    (folder / "checkpoint_000000" / "state.pt").write_bytes(b"garbage")

    def fail(self, target):
        raise OSError("copy failed")

    monkeypatch.setattr(Location, "move_to", fail)
    assert CellCheckpoint(store, "c", 0.0, tune_checkpoint=no_tune).restore(model, opt) == (0, 0, [], 0.0)
    kept = folder / "checkpoint_000000"
    assert (kept / "state.pt").read_bytes() == b"garbage" and (kept / CellCheckpoint.UNREADABLE).is_file()
    assert CellCheckpoint(store, "c", 0.0, tune_checkpoint=no_tune).earlier() == []
    events = "".join(p.read_text() for p in (tmp_path / "logs" / "trials").iterdir())
    assert events.count("checkpoint_set_aside") == 2
