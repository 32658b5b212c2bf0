import torch

from raystudy.training.finetune import EpochCheckpoint


def test_epoch_checkpoint_round_trip(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    ck = EpochCheckpoint(tmp_path / "c.pt", every_s=0.0)
    assert ck.restore(model, opt) == (0, 0, [], 0.0)
    ck.maybe_save(model, opt, epoch=2, step=7, losses=[{"epoch": 2, "step": 6, "loss": 1.5, "lr": 0.1}], seconds=3.0)
    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.SGD(other.parameters(), lr=0.1, momentum=0.9)
    epoch, step, losses, seconds = EpochCheckpoint(tmp_path / "c.pt", 0.0).restore(other, other_opt)
    assert (epoch, step, seconds) == (3, 7, 3.0) and losses[0]["loss"] == 1.5
    assert torch.equal(other.weight, model.weight)
    assert other_opt.state_dict()["state"][0]["momentum_buffer"].equal(opt.state_dict()["state"][0]["momentum_buffer"])
    ck.remove()
    assert not (tmp_path / "c.pt").exists()


def test_checkpoint_not_written_before_interval(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    ck = EpochCheckpoint(tmp_path / "c.pt", every_s=3600)
    ck.maybe_save(model, opt, 0, 1, [], 0.1)
    assert not (tmp_path / "c.pt").exists()


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
    EpochCheckpoint(tmp_path / "c.pt", 0.0).maybe_save(four, opt, 0, 1, [], 1.0)
    nineteen = classifier(19)
    with pytest.raises(RuntimeError, match=r"size mismatch for head\.\S+"):
        EpochCheckpoint(tmp_path / "c.pt", 0.0).restore(nineteen, torch.optim.SGD(nineteen.parameters(), lr=0.1))
