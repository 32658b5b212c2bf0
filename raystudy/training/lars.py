"""LARS (You et al., 2017), as in moco-v3 / solo-learn."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn


class LARS(torch.optim.Optimizer):
    """SGD with momentum and a layer-wise trust ratio.

    For each parameter w with gradient g (groups without ``lars_exclude``)::

        d = g + wd * w
        d = d * eta * ||w|| / (||g|| + wd * ||w|| + eps)   (ratio 1 if ||w|| or ||g|| is 0)
        buf = momentum * buf + d;  w -= lr * buf            (nesterov: d + momentum * buf)

    Groups with ``lars_exclude=True`` (biases, BN) skip both the trust ratio and the
    weight decay: plain SGD with momentum.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 0.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 1e-3,
        eps: float = 1e-8,
        nesterov: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            eta=eta,
            eps=eps,
            nesterov=nesterov,
            lars_exclude=False,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            wd, eta, eps = group["weight_decay"], group["eta"], group["eps"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                d_p = p.grad
                if not group["lars_exclude"]:
                    w_norm = torch.linalg.vector_norm(p)
                    g_norm = torch.linalg.vector_norm(d_p)
                    trust = eta * w_norm / (g_norm + wd * w_norm + eps)
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                    d_p = d_p.add(p, alpha=wd).mul_(ratio)
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(d_p)
                update = d_p.add(buf, alpha=group["momentum"]) if group["nesterov"] else buf
                p.add_(update, alpha=-group["lr"])
        return loss


def lars_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights (decay + adaptation) and biases/norm params (ndim <= 1, excluded).

    Frozen parameters (e.g. momentum targets) are left out; empty groups are dropped.
    """
    regular: list[torch.nn.Parameter] = []
    excluded: list[torch.nn.Parameter] = []
    for p in model.parameters():
        if p.requires_grad:
            (excluded if p.ndim <= 1 else regular).append(p)
    groups = [
        {"params": regular, "weight_decay": weight_decay, "lars_exclude": False},
        {"params": excluded, "weight_decay": 0.0, "lars_exclude": True},
    ]
    return [g for g in groups if g["params"]]
