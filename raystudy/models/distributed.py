"""The collectives the contrastive methods use under DDP, in one place.

``gather_no_grad`` is MoCo's ``concat_all_gather`` (keys for the queue, shuffle BN);
``gather_with_grad`` is SimCLR's all-gather of the embeddings, whose backward sums the
gradient over ranks (as SimCLR's own code, solo-learn and lightly do): the negatives an
embedding is for the anchors of other ranks send their gradient back to the rank that
computed it. Without an initialised process group (one process) both return their input.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    """Ranks of the default process group; 1 without one."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    """This process's rank in the default process group; 0 without one."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) on each rank -> (world * B, ...) on every rank, rank order; no gradient.

    Example:
        >>> keys = gather_no_grad(k)  # (B, D) per rank -> (world * B, D)
    """
    if world_size() == 1:
        return x
    gathered = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(gathered, x.contiguous())
    return torch.cat(gathered, dim=0)


concat_all_gather = gather_no_grad  # facebookresearch/moco's name for it


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: all_reduce (sum) of the gathered gradient, this rank's slice."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # (n, ...) -> (world * n, ...)
        ctx.n, ctx.rank = x.shape[0], dist.get_rank()
        gathered = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, x.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # (world * n, ...) -> (n, ...)
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)  # every rank's loss depends on this rank's rows
        return grad[ctx.rank * ctx.n : (ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(n, D) on each rank -> ((world * n, D) in rank order, offset of this rank's rows), with gradient.

    The backward of the gathered tensor sums over ranks, so rank r's ``x`` receives
    d(sum over ranks of their losses)/dx: with each rank's loss the mean over its own
    anchors and DDP averaging the parameter gradients over ranks, the step is that of
    the loss over the whole global batch (every anchor, every negative). Needs the same
    ``n`` on every rank. Without an initialised process group it returns (x, 0).

    Example:
        >>> z_all, offset = gather_with_grad(z)  # z_all[offset : offset + len(z)] equals z
    """
    if world_size() == 1:
        return x, 0
    return _GatherWithGrad.apply(x), rank() * x.shape[0]
