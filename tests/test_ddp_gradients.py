"""SimCLR under DDP: each rank's gradient, averaged the way DDP averages it, equals the
gradient of one process computing NT-Xent over the whole global batch (gloo, CPU)."""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raystudy.models.distributed import gather_no_grad, gather_with_grad, world_size
from raystudy.models.simclr import nt_xent

B, D_IN, D, T = 4, 6, 5, 0.2  # per-rank batch, input width, embedding width, temperature


def global_batch(world: int) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear]:
    """Two views (world * B, D_IN) and a projector, the same in every process."""
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(world * B, D_IN, generator=g), torch.randn(world * B, D_IN, generator=g)
    torch.manual_seed(1)
    return x1, x2, torch.nn.Linear(D_IN, D)


def one_process(world: int) -> tuple[float, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Loss, d loss / d x1, d x2 (world * B, D_IN) and d loss / d W over the whole global batch."""
    x1, x2, proj = global_batch(world)
    x1.requires_grad_(True)
    x2.requires_grad_(True)
    loss = nt_xent(proj(x1), proj(x2), T)
    loss.backward()
    return float(loss.detach()), x1.grad, x2.grad, proj.weight.grad


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(rank: int, world: int, port: int, out: dict) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        assert world_size() == world
        x1, x2, proj = global_batch(world)
        rows = slice(rank * B, (rank + 1) * B)  # this rank's slice of the global batch
        x1, x2 = x1[rows].clone().requires_grad_(True), x2[rows].clone().requires_grad_(True)
        loss = nt_xent(proj(x1), proj(x2), T)  # the mean over this rank's 2B anchors
        loss.backward()
        w = proj.weight.grad.clone()
        dist.all_reduce(w)  # what DDP does to a parameter's gradient: the mean over ranks
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        out[rank] = (
            float(mean_loss) / world,
            x1.grad / world,
            x2.grad / world,
            w / world,
            gather_no_grad(torch.full((2,), float(rank))).tolist(),
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("world", [2, 4])
def test_simclr_gradient_under_ddp_equals_one_process_over_the_global_batch(world):
    with mp.Manager() as manager:
        out = manager.dict()
        # forkserver: torch and the model code are imported once by the server, not by every rank
        # (seconds each); plain fork could deadlock in the OpenMP pool the test process already used
        mp.set_forkserver_preload(["torch", "raystudy.models.simclr", __name__])
        mp.start_processes(
            rank_main, args=(world, free_port(), out), nprocs=world, join=True, start_method="forkserver"
        )
        results = dict(out)
    loss, g1, g2, gw = one_process(world)
    errors = []
    for rank in range(world):
        r_loss, r_g1, r_g2, r_gw, gathered = results[rank]
        rows = slice(rank * B, (rank + 1) * B)
        assert r_loss == pytest.approx(loss, abs=1e-6)
        # rank r's inputs get d(sum of the ranks' losses)/dx = world * d(global loss)/dx; DDP's mean divides by world
        errors += [(r_g1 - g1[rows]).abs().max(), (r_g2 - g2[rows]).abs().max(), (r_gw - gw).abs().max()]
        assert gathered == [float(r) for r in range(world) for _ in range(2)]
    print(f"world {world}: max abs gradient error {max(float(e) for e in errors):.2e}")
    assert max(float(e) for e in errors) < 1e-5


def test_without_a_process_group_the_gathers_return_their_input():
    z = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(z) == (z, 0) and gather_no_grad(z) is z and world_size() == 1
