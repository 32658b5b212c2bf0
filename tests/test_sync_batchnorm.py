"""``pretrain.sync_batchnorm``: SyncBatchNorm over the DDP workers (auto: on for SimCLR), the
transferred encoder still a plain backbone, and the config hash of existing studies unchanged."""

from __future__ import annotations

import pytest
import torch

from raystudy.config import load_config
from raystudy.models import build_encoder, load_encoder_weights
from raystudy.training.pretrain import build_method, sync_batchnorm

CUDA = torch.device("cuda")  # only named: the conversion moves nothing, so no GPU is needed here
CPU = torch.device("cpu")


def n_sync(model: torch.nn.Module) -> int:
    return sum(isinstance(m, torch.nn.SyncBatchNorm) for m in model.modules())


def smoke(*overrides: str):
    return load_config(preset="smoke", overrides=["model.arch=resnet18_w16", *overrides])


def test_the_smoke_study_keeps_its_config_hash():
    assert load_config(preset="smoke").config_hash() == "0f71b5acc534"  # computed before the option existed
    assert load_config(preset="smoke", overrides=["pretrain.sync_batchnorm=auto"]).config_hash() == "0f71b5acc534"
    hashes = {
        load_config(preset="smoke", overrides=[f"pretrain.sync_batchnorm={v}"]).config_hash() for v in ("true", "false")
    }
    assert len(hashes) == 2 and "0f71b5acc534" not in hashes


def test_auto_is_on_for_simclr_with_workers_on_gpus_only():
    cfg = smoke()
    assert cfg.pretrain.sync_batchnorm == "auto"
    converted = sync_batchnorm(cfg, build_method("simclr", cfg, 64, 16), world=2, device=CUDA)
    assert n_sync(converted.online_encoder) > 0 and n_sync(converted.projector) > 0
    assert n_sync(sync_batchnorm(cfg, build_method("moco", cfg, 64, 16), world=2, device=CUDA)) == 0  # shuffle BN
    assert n_sync(sync_batchnorm(cfg, build_method("simclr", cfg, 64, 16), world=1, device=CUDA)) == 0
    assert n_sync(sync_batchnorm(cfg, build_method("simclr", cfg, 64, 16), world=2, device=CPU)) == 0
    off = smoke("pretrain.sync_batchnorm=false")
    assert n_sync(sync_batchnorm(off, build_method("simclr", off, 64, 16), world=2, device=CUDA)) == 0
    on = smoke("pretrain.sync_batchnorm=true")
    assert n_sync(sync_batchnorm(on, build_method("byol", on, 64, 16), world=2, device=CUDA)) > 0
    with pytest.raises(ValueError, match="sync_batchnorm: true needs GPU workers"):
        sync_batchnorm(on, build_method("simclr", on, 64, 16), world=2, device=CPU)


def test_an_encoder_trained_with_sync_batchnorm_loads_into_a_plain_backbone(tmp_path):
    cfg = smoke()
    model = sync_batchnorm(cfg, build_method("simclr", cfg, 64, 16), world=2, device=CUDA)
    for m in model.modules():  # statistics that differ from a fresh backbone's
        if isinstance(m, torch.nn.SyncBatchNorm):
            m.running_mean.uniform_()
            m.num_batches_tracked.fill_(7)
    state = model.online_encoder.state_dict()
    plain, _ = build_encoder("resnet18_w16", cfg.model.in_channels)
    assert set(state) == set(plain.state_dict())  # the same keys as BatchNorm2d
    torch.save({"state_dict": state, "arch": "resnet18_w16", "method": "simclr"}, tmp_path / "simclr.pt")
    load_encoder_weights(plain, str(tmp_path / "simclr.pt"))
    assert not any(isinstance(m, torch.nn.SyncBatchNorm) for m in plain.modules())
    for key, value in plain.state_dict().items():
        assert torch.equal(value, state[key]), key
