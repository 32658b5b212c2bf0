"""Cell checkpoints: reported through Tune, restored from Tune or an earlier sweep, torn ones set aside."""

import shutil
from pathlib import Path

import torch

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
    saved = ck.save({"epoch": 2, "loss": 1.5}, model, opt, epoch=2, step=7,
                    losses=[{"epoch": 2, "step": 6, "loss": 1.5, "lr": 0.1}], seconds=3.0)
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
        {}, model, opt, epoch=0, step=1, losses=[], seconds=1.0)
    retry = tmp_path / "retry"
    retry.mkdir()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 4, "step": 9,
                "losses": [], "seconds": 2.0}, retry / "state.pt")
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
    log = (tmp_path / "logs" / "trials.jsonl").read_text()
    assert log.count("checkpoint_set_aside") == 2


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
    images = (np.arange(10 * 2 * 2, dtype=np.uint8).reshape(10, 2, 2) * 3)
    rows = np.arange(10)
    transform = lambda x: x.float()  # noqa: E731
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
        {}, four, opt, 0, 1, [], 1.0)
    nineteen = classifier(19)
    with pytest.raises(RuntimeError, match=r"size mismatch for head\.\S+"):
        CellCheckpoint(tmp_path, "c", 0.0, tune_checkpoint=no_tune).restore(
            nineteen, torch.optim.SGD(nineteen.parameters(), lr=0.1))
