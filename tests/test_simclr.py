"""SimCLR: NT-Xent against a hand computation, across DDP ranks, and one train step."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from raystudy.models import SimCLR, nt_xent

pytestmark = pytest.mark.usefixtures("one_thread")


def hand_nt_xent(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    """Loops over the 2B embeddings: -log(exp(s_pos / t) / sum_{k != i} exp(s_ik / t))."""
    z = [F.normalize(v, dim=0) for v in torch.cat([z1, z2])]
    b, total = len(z1), 0.0
    for i in range(2 * b):
        pos = (i + b) % (2 * b)
        denom = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * b) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[pos]) / t) / denom)
    return total / (2 * b)


def test_nt_xent_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)
    for t in (0.1, 0.5, 1.0):
        assert nt_xent(z1, z2, t).item() == pytest.approx(hand_nt_xent(z1, z2, t), rel=1e-5)
    # identical views, orthogonal samples: the positive wins by exp(1 / t) over 2B - 2 negatives at 0
    eye = torch.eye(4)
    t = 0.5
    expected = -math.log(math.exp(2.0) / (math.exp(2.0) + 6))
    assert nt_xent(eye, eye, t).item() == pytest.approx(expected, rel=1e-6)


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        g = torch.Generator().manual_seed(0)
        z1, z2 = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)  # the global batch
        mine = slice(2 * rank, 2 * rank + 2)
        a, b = z1[mine].clone().requires_grad_(), z2[mine].clone().requires_grad_()
        loss = nt_xent(a, b, 0.2)
        loss.backward()
        torch.save({"loss": loss.detach(), "grad": a.grad}, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_nt_xent_gathers_negatives_from_every_rank(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    # each rank's rows see the same 7 other embeddings as in one process: the mean of the ranks is the loss
    assert (0.5 * (r0["loss"] + r1["loss"])).item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-5)
    assert r0["grad"].abs().sum() > 0 and r1["grad"].abs().sum() > 0  # the local part keeps its gradient


def test_simclr_train_step_updates_the_encoder():
    torch.manual_seed(0)
    enc = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    model = SimCLR(enc, 8, proj_hidden_dim=16, proj_dim=4, temperature=0.2)
    before = [p.clone() for p in model.online_encoder.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(6, 1, 16, 16)
    out = model(x, x.flip(-1))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    opt.step()
    model.after_step(0, 1)  # no momentum encoder: nothing to do
    assert any(not torch.equal(a, b) for a, b in zip(before, model.online_encoder.parameters(), strict=True))
