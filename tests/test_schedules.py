"""Learning-rate / momentum schedules and the LARS optimizer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from raystudy.models.base import byol_momentum
from raystudy.training.lars import LARS, lars_param_groups
from raystudy.training.schedules import scaled_lr, set_lr, warmup_cosine_lr


def test_scaled_lr() -> None:
    assert scaled_lr(0.3, 256) == pytest.approx(0.3)
    assert scaled_lr(0.3, 64) == pytest.approx(0.075)
    assert scaled_lr(1.0, 1024) == pytest.approx(4.0)


def test_warmup_cosine_lr_endpoints_and_monotone() -> None:
    total, warm, target = 100, 10, 0.01
    assert warmup_cosine_lr(0, total, warm, target) == pytest.approx(1e-5)
    assert warmup_cosine_lr(warm, total, warm, target) == pytest.approx(target)
    assert warmup_cosine_lr(total, total, warm, target) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine_lr(total + 5, total, warm, target) == pytest.approx(0.0, abs=1e-12)
    assert warmup_cosine_lr(5, total, warm, target) == pytest.approx(1e-5 + (target - 1e-5) * 0.5)
    mid = warm + (total - warm) // 2
    assert warmup_cosine_lr(mid, total, warm, target) == pytest.approx(target / 2)
    lrs = [warmup_cosine_lr(s, total, warm, target) for s in range(total + 1)]
    assert all(a < b for a, b in zip(lrs[:warm], lrs[1 : warm + 1], strict=True))  # warm-up increases
    assert all(a > b for a, b in zip(lrs[warm:total], lrs[warm + 1 : total + 1], strict=True))  # cosine decreases
    assert warmup_cosine_lr(0, total, 0, target) == pytest.approx(target)  # no warm-up


def test_byol_momentum() -> None:
    assert byol_momentum(0, 100) == pytest.approx(0.99)
    assert byol_momentum(100, 100) == pytest.approx(1.0)
    assert byol_momentum(50, 100) == pytest.approx(0.995)
    ms = [byol_momentum(s, 100, base=0.996) for s in range(101)]
    assert ms[0] == pytest.approx(0.996)
    assert all(a < b for a, b in zip(ms, ms[1:], strict=False))


def test_set_lr() -> None:
    p = nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [p]}, {"params": [nn.Parameter(torch.zeros(1))], "lr_scale": 0.1}], lr=1.0)
    set_lr(opt, 0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.5, 0.05])


def _toy() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


def test_lars_param_groups() -> None:
    model = _toy()
    frozen = nn.Linear(2, 2)
    frozen.requires_grad_(False)
    model.append(frozen)
    groups = lars_param_groups(model, weight_decay=1e-4)
    assert len(groups) == 2
    reg, exc = groups
    assert reg["lars_exclude"] is False and reg["weight_decay"] == 1e-4
    assert [tuple(p.shape) for p in reg["params"]] == [(2, 3)]  # Linear weight only
    assert exc["lars_exclude"] is True and exc["weight_decay"] == 0.0
    assert [tuple(p.shape) for p in exc["params"]] == [(2,), (2,), (2,)]  # linear bias, BN weight/bias


def test_lars_step_matches_hand_computation() -> None:
    model = _toy()
    lr, mom, wd, eta = 0.1, 0.9, 0.01, 0.02
    opt = LARS(lars_param_groups(model, wd), lr=lr, momentum=mom, eta=eta)
    params = list(model.parameters())  # linear.weight, linear.bias, bn.weight, bn.bias
    before = [p.detach().clone() for p in params]
    grads = [torch.randn_like(p) for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()

    # adapted weight: d = (g + wd w) * eta ||w|| / (||g|| + wd ||w||); w -= lr * d (empty momentum)
    w, g = before[0], grads[0]
    ratio = eta * w.norm() / (g.norm() + wd * w.norm())
    d_w = (g + wd * w) * ratio
    assert torch.allclose(params[0], w - lr * d_w, atol=1e-6)
    # excluded: plain SGD, no decay, no trust ratio
    for p, b, g in zip(params[1:], before[1:], grads[1:], strict=True):
        assert torch.allclose(p, b - lr * g, atol=1e-7)

    # second step: momentum buffer accumulates
    w1 = params[0].detach().clone()
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    opt.step()
    ratio1 = eta * w1.norm() / (grads[0].norm() + wd * w1.norm())
    buf = mom * d_w + (grads[0] + wd * w1) * ratio1
    assert torch.allclose(params[0], w1 - lr * buf, atol=1e-6)
    b1 = before[1] - lr * grads[1]
    assert torch.allclose(params[1], b1 - lr * (mom * grads[1] + grads[1]), atol=1e-6)


def test_lars_zero_weight_falls_back_to_sgd() -> None:
    p = nn.Parameter(torch.zeros(2, 2))
    opt = LARS([{"params": [p], "weight_decay": 0.5}], lr=1.0, momentum=0.0, eta=0.001)
    p.grad = torch.ones(2, 2)
    opt.step()
    assert torch.allclose(p, -torch.ones(2, 2))  # ||w|| = 0: trust ratio 1


def test_lars_trains_a_toy_problem() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    opt = LARS(lars_param_groups(model, 0.0), lr=1.0, eta=0.02)
    first = None
    for _ in range(200):
        loss = ((model(x) - y) ** 2).mean()
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert math.isfinite(loss.item()) and loss.item() < 0.1 * first
