"""Encoders, heads, weight loading, MoCo and BYOL (tiny: resnet18, 32 px, batch 8)."""

from __future__ import annotations

import math
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from raystudy.models import (
    BYOL,
    Classifier,
    ClassifierMLP,
    MoCo,
    ProjectionMLP,
    build_encoder,
    byol_loss,
    clip_queue_size,
    info_nce,
    load_encoder_weights,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_encoder() -> tuple[nn.Module, int]:
    """Conv-BN-ReLU-pool: a BN-carrying stand-in for a ResNet in the fast unit tests."""
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    return net, 8


class Opaque:  # a non-tensor object a weights-only load must refuse
    def __init__(self) -> None:
        self.payload = "not a tensor"


# -- encoders / heads ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "arch,dim", [("resnet18", 512), ("resnet34", 512), ("resnet50", 2048), ("resnet101", 2048), ("resnet18_w16", 128)]
)
def test_build_encoder_feature_dim(arch: str, dim: int) -> None:
    net, feature_dim = build_encoder(arch, in_channels=1)
    assert feature_dim == dim
    assert isinstance(net.fc, nn.Identity)
    assert net.conv1.in_channels == 1
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 32, 32)).shape == (2, dim)


def test_build_encoder_rgb_and_unknown_arch() -> None:
    net, _ = build_encoder("resnet18", in_channels=3)
    assert net.conv1.weight.shape == (64, 3, 7, 7)
    with pytest.raises(ValueError, match="resnet18.*resnet101"):
        build_encoder("vgg16")


def test_resnet18_w16_is_a_quarter_width_resnet18_with_a_light_stem() -> None:
    net, dim = build_encoder("resnet18_w16", in_channels=1)
    assert net.conv1.weight.shape == (16, 1, 3, 3) and net.conv1.stride == (2, 2)
    assert isinstance(net.maxpool, nn.Identity)
    assert [len(getattr(net, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert [getattr(net, f"layer{i}")[0].conv1.out_channels for i in range(1, 5)] == [16, 32, 64, 128]
    feats = net.layer1(net.maxpool(net.relu(net.bn1(net.conv1(torch.randn(2, 1, 32, 32))))))
    assert feats.shape[-2:] == (16, 16)  # a 32 px crop keeps a 16 x 16 map after the stem


def test_config_arch_names_match_the_encoders() -> None:
    from typing import get_args

    from raystudy.config import Arch
    from raystudy.models.encoders import ARCHS

    assert set(get_args(Arch)) == set(ARCHS)


def test_heads_and_classifier() -> None:
    proj = ProjectionMLP(8, hidden_dim=16, out_dim=4, num_layers=3)
    assert sum(isinstance(m, nn.Linear) for m in proj.modules()) == 3
    assert sum(isinstance(m, nn.BatchNorm1d) for m in proj.modules()) == 2
    pred = ProjectionMLP(4, hidden_dim=16, out_dim=4, num_layers=2)
    assert sum(isinstance(m, nn.Linear) for m in pred.modules()) == 2
    head = ClassifierMLP(8, num_classes=5, hidden_dim=16, dropout=0.1, num_layers=3)
    assert sum(isinstance(m, nn.Linear) for m in head.modules()) == 3
    assert head(torch.randn(4, 8)).shape == (4, 5)
    enc, dim = tiny_encoder()
    clf = Classifier(enc, dim, num_classes=5, hidden_dim=16, num_layers=3)
    x = torch.randn(4, 1, 16, 16)
    assert clf(x).shape == (4, 5)
    assert clf.embed(x).shape == (4, dim)


def test_projector_and_classifier_follow_the_papers_three_layer_mlp() -> None:
    """Sect. 3.2: input (pooled features) -> hidden 4096 -> output 256, i.e. two Linear layers;
    Sect. 3.4: the classifier is the same kind of MLP with one output per category."""
    enc, dim = tiny_encoder()
    moco = MoCo(enc, dim, proj_hidden_dim=4096, proj_dim=256, queue_size=8)
    linears = [m for m in moco.online_projector.modules() if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(dim, 4096), (4096, 256)]
    byol = BYOL(tiny_encoder()[0], dim, proj_hidden_dim=4096, proj_dim=256, pred_hidden_dim=4096)
    linears = [m for m in byol.online_projector.modules() if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(dim, 4096), (4096, 256)]
    head = Classifier(tiny_encoder()[0], dim, num_classes=19, hidden_dim=512).head
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(dim, 512), (512, 19)]


# -- load_encoder_weights ----------------------------------------------------------------------
def _assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def r18_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(0)
    return build_encoder("resnet18")[0], build_encoder("resnet18")[0]


def test_load_roundtrip_raystudy_state_dict(tmp_path, r18_pair) -> None:
    src, dst = r18_pair
    path = tmp_path / "enc.pt"
    torch.save(src.state_dict(), path)
    load_encoder_weights(dst, path)
    _assert_same(src, dst)


def test_load_moco_prefixed(tmp_path, r18_pair) -> None:
    src, dst = r18_pair
    sd = {f"module.encoder_q.{k}": v for k, v in src.state_dict().items()}
    sd.update({f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in src.state_dict().items()})
    sd["module.encoder_q.fc.0.weight"] = torch.randn(2048, 512)  # MoCo v2 MLP head
    sd["module.queue"] = torch.randn(128, 16)
    sd["module.queue_ptr"] = torch.zeros(1, dtype=torch.long)
    path = tmp_path / "moco.pth.tar"
    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": sd}, path)
    load_encoder_weights(dst, path)
    _assert_same(src, dst)
    src.eval(), dst.eval()
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))  # same encoder outputs as the weights it was made from


def test_load_backbone_prefixed_and_raystudy_method(tmp_path, r18_pair) -> None:
    src, dst = r18_pair
    sd = {f"backbone.{k}": v for k, v in src.state_dict().items()}
    sd["projector.0.weight"] = torch.randn(4, 512)
    sd["momentum_backbone.conv1.weight"] = torch.zeros(64, 1, 7, 7)
    path = tmp_path / "solo.ckpt"
    torch.save({"state_dict": sd}, path)
    load_encoder_weights(dst, path)
    _assert_same(src, dst)
    # a whole raystudy BYOL state dict: online encoder kept, the rest dropped
    byol = BYOL(src, 512, proj_hidden_dim=16, proj_dim=8, pred_hidden_dim=16)
    torch.save({"model": byol.state_dict()}, path)
    fresh = build_encoder("resnet18")[0]
    load_encoder_weights(fresh, path)
    _assert_same(src, fresh)


def test_load_conv1_channel_adaptation(tmp_path) -> None:
    rgb, _ = build_encoder("resnet18", in_channels=3)
    grey, _ = build_encoder("resnet18", in_channels=1)
    path = tmp_path / "rgb.pt"
    torch.save(rgb.state_dict(), path)
    load_encoder_weights(grey, path)
    assert torch.allclose(grey.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    assert torch.equal(grey.layer4[1].conv2.weight, rgb.layer4[1].conv2.weight)
    torch.save(grey.state_dict(), path)
    rgb2, _ = build_encoder("resnet18", in_channels=3)
    load_encoder_weights(rgb2, path)
    assert torch.allclose(rgb2.conv1.weight, grey.conv1.weight.repeat(1, 3, 1, 1) / 3)


def test_load_refuses_wrong_architecture(tmp_path, r18_pair) -> None:
    _, dst = r18_pair
    r34, _ = build_encoder("resnet34")
    path = tmp_path / "r34_weights.pt"
    torch.save(r34.state_dict(), path)
    with pytest.raises(ValueError) as err:
        load_encoder_weights(dst, path)
    msg = str(err.value)
    assert "r34_weights.pt" in msg and "missing keys" in msg and "unexpected keys" in msg
    assert "unexpected keys: 96 ['layer1.2." in msg  # resnet34 has 3 blocks in layer1, resnet18 two
    assert "missing keys: 0 []" in msg
    tiny, _ = tiny_encoder()  # both missing and unexpected keys
    with pytest.raises(ValueError, match=r"missing keys: 5 \['0\.weight'.*unexpected keys: \d+ \['bn1\.bias'"):
        load_encoder_weights(tiny, path)


def test_load_refuses_shape_mismatch(tmp_path) -> None:
    enc, _ = tiny_encoder()
    sd = enc.state_dict()
    sd["0.weight"] = torch.randn(8, 1, 5, 5)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"bad\.pt.*0\.weight"):
        load_encoder_weights(enc, path)


def test_load_refuses_pickle_with_objects(tmp_path, r18_pair) -> None:
    _, dst = r18_pair
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": dst.state_dict(), "extra": Opaque()}, path)
    with pytest.raises(ValueError, match=r"evil\.pt.*not a weights-only checkpoint"):
        load_encoder_weights(dst, path)


def test_load_missing_file(tmp_path, r18_pair) -> None:
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        load_encoder_weights(r18_pair[1], tmp_path / "nope.pt")


# -- MoCo --------------------------------------------------------------------------------------
def test_info_nce_hand_computed() -> None:
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[0.6, 0.8]])
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # (D=2, K=2): keys e_x and e_y
    t = 0.5
    loss, logits = info_nce(q, k, queue, t)
    assert torch.allclose(logits, torch.tensor([[1.2, 2.0, 0.0]]))
    expected = -math.log(math.exp(1.2) / (math.exp(1.2) + math.exp(2.0) + math.exp(0.0)))
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_info_nce_perfect_positives_lower() -> None:
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(16, 32, generator=g), dim=1)
    queue = F.normalize(torch.randn(32, 64, generator=g), dim=0)
    rand_k = F.normalize(torch.randn(16, 32, generator=g), dim=1)
    perfect, _ = info_nce(q, q, queue, 0.2)
    random, _ = info_nce(q, rand_k, queue, 0.2)
    assert perfect < random


def test_clip_queue_size() -> None:
    assert clip_queue_size(65536, 33354) == 33354  # the paper's queue is longer than its 33,354 images
    assert clip_queue_size(1000, 33354) == 1000  # the configured size is kept otherwise
    assert clip_queue_size(1024, 1024) == 1024
    assert clip_queue_size(65536, 100) == 100


def test_queue_ring_buffer_wraps() -> None:
    enc, dim = tiny_encoder()
    m = MoCo(enc, dim, proj_hidden_dim=16, proj_dim=4, queue_size=5)
    keys = [torch.full((3, 4), float(i)) for i in (1, 2, 3)]
    m._dequeue_and_enqueue(keys[0])
    assert int(m.queue_ptr) == 3
    m._dequeue_and_enqueue(keys[1])  # slots 3, 4, 0
    assert int(m.queue_ptr) == 1
    assert m.queue[0].tolist() == [2.0, 1.0, 1.0, 2.0, 2.0]
    m._dequeue_and_enqueue(keys[2])  # slots 1, 2, 3
    assert int(m.queue_ptr) == 4
    assert m.queue[0].tolist() == [2.0, 3.0, 3.0, 3.0, 2.0]
    m._dequeue_and_enqueue(torch.arange(7.0).view(7, 1).expand(7, 4))  # larger than the queue
    assert int(m.queue_ptr) == 1  # (4 + 7) % 5
    assert sorted(m.queue[0].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]  # newest 5 survive


def test_moco_enqueues_normalized_keys() -> None:
    torch.manual_seed(0)
    enc, dim = tiny_encoder()
    m = MoCo(enc, dim, proj_hidden_dim=16, proj_dim=4, queue_size=12, symmetric=False)
    before = m.queue.clone()
    out = m(torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16))
    assert set(out) >= {"loss", "acc"} and 0.0 <= out["acc"].item() <= 1.0
    assert int(m.queue_ptr) == 8
    assert torch.allclose(m.queue.norm(dim=0), torch.ones(12), atol=1e-5)
    assert not torch.equal(m.queue[:, :8], before[:, :8]) and torch.equal(m.queue[:, 8:], before[:, 8:])
    m(torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16))
    assert int(m.queue_ptr) == 4  # wrapped
    sym = MoCo(tiny_encoder()[0], dim, proj_hidden_dim=16, proj_dim=4, queue_size=40)
    sym(torch.randn(8, 1, 16, 16), torch.randn(8, 1, 16, 16))
    assert int(sym.queue_ptr) == 16  # both views' keys


def test_moco_shuffle_bn_emulation() -> None:
    torch.manual_seed(0)
    enc, dim = tiny_encoder()
    m = MoCo(enc, dim, proj_hidden_dim=16, proj_dim=4, queue_size=16, shuffle_bn_groups=2)
    x = torch.randn(8, 1, 16, 16)
    q = m._queries(x)
    assert torch.allclose(q[:4], m._online(x[:4]), atol=1e-6)  # per-chunk BN statistics
    assert not torch.allclose(q[:4], m._online(x)[:4], atol=1e-4)
    torch.manual_seed(1)
    k = m._keys(x)
    torch.manual_seed(1)
    perm = torch.randperm(8)
    ks = torch.cat([m._target(c) for c in x[perm].tensor_split(2)])
    assert torch.allclose(k, ks[torch.argsort(perm)], atol=1e-6)
    assert torch.allclose(m._queries(x[:3]), m._online(x[:3]), atol=1e-6)  # too small: no split


def _train_step(model, m: float) -> dict[str, torch.Tensor]:
    """One forward/backward/SGD step, then the EMA; checks Eq. 3 exactly."""
    g = torch.Generator().manual_seed(0)
    v1, v2 = torch.randn(8, 1, 32, 32, generator=g), torch.randn(8, 1, 32, 32, generator=g)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    online_before = [p.detach().clone() for p in model.online_encoder.parameters()]
    target_before = [p.detach().clone() for p in model.target_encoder.parameters()]
    out = model(v1, v2)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    out["loss"].backward()
    assert all(p.grad is None for p in model.target_encoder.parameters())
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(online_before, model.online_encoder.parameters(), strict=True))
    model.update_momentum(m)
    for t_old, q_new, t_new in zip(
        target_before, model.online_encoder.parameters(), model.target_encoder.parameters(), strict=True
    ):
        assert torch.allclose(t_new, m * t_old + (1 - m) * q_new.detach(), rtol=0, atol=1e-6)
    for b_q, b_k in zip(model.online_encoder.buffers(), model.target_encoder.buffers(), strict=True):
        assert torch.equal(b_q, b_k)
    return out


def test_momentum_update_formula_exact() -> None:
    enc, dim = tiny_encoder()
    m = BYOL(enc, dim, proj_hidden_dim=16, proj_dim=4, pred_hidden_dim=16)
    with torch.no_grad():
        for p in m.online_encoder.parameters():
            p.add_(1.0)
    old = [p.clone() for p in m.target_projector.parameters()] + [p.clone() for p in m.target_encoder.parameters()]
    new_q = [p.clone() for p in m.online_projector.parameters()] + [p.clone() for p in m.online_encoder.parameters()]
    m.update_momentum(0.9)
    new = list(m.target_projector.parameters()) + list(m.target_encoder.parameters())
    for o, q, n in zip(old, new_q, new, strict=True):
        assert torch.allclose(n, 0.9 * o + 0.1 * q, rtol=0, atol=1e-7)
    assert len(m.momentum_pairs) == 2
    m.update_momentum(0.0)  # m = 0 copies the online weights
    for q, n in zip(new_q, new, strict=True):
        assert torch.equal(q, n)


def test_moco_resnet18_train_step() -> None:
    torch.manual_seed(0)
    enc, dim = build_encoder("resnet18")
    model = MoCo(enc, dim, proj_hidden_dim=64, proj_dim=32, queue_size=clip_queue_size(32, 40))
    out = _train_step(model, 0.99)
    assert 0.0 <= out["acc"].item() <= 1.0


def test_byol_loss_values() -> None:
    p = torch.randn(5, 8)
    z = torch.randn(5, 8)
    assert byol_loss(p, p).item() == pytest.approx(0.0, abs=1e-6)
    assert byol_loss(p, -p).item() == pytest.approx(4.0, abs=1e-6)
    assert byol_loss(p, 3 * p).item() == pytest.approx(0.0, abs=1e-6)  # scale invariant
    assert torch.allclose(byol_loss(p, z), byol_loss(z, p))


def test_byol_resnet18_train_step() -> None:
    torch.manual_seed(0)
    enc, dim = build_encoder("resnet18")
    model = BYOL(enc, dim, proj_hidden_dim=64, proj_dim=32, pred_hidden_dim=64)
    assert all(p.requires_grad for p in model.online_predictor.parameters())
    out = _train_step(model, 0.99)
    assert 0.0 <= out["loss"].item() <= 8.0


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)  # forked child: no inherited OpenMP pool, no oversubscription
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same weights on every rank
        enc, dim = tiny_encoder()
        m = MoCo(enc, dim, proj_hidden_dim=16, proj_dim=4, queue_size=32)
        x = torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(100 + rank))
        m.eval()  # BN on running statistics: shuffle + unshuffle must be invisible
        assert torch.allclose(m._keys(x), m._target(x), atol=1e-6)
        m.train()
        torch.manual_seed(rank)  # rank-local random states: the permutation is broadcast from rank 0
        out = m(x, x.flip(-1))
        torch.save({"queue": m.queue, "ptr": m.queue_ptr, "loss": out["loss"].detach()}, f"{out_dir}/{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_moco_ddp_shuffle_bn_and_gathered_queue(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: no re-import of torch in the children (spawn costs seconds)
    mp.start_processes(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True, start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert torch.equal(r0["queue"], r1["queue"])  # keys gathered from every rank
    assert int(r0["ptr"]) == 16  # 2 ranks x 2 views x 4 keys
    assert torch.isfinite(r0["loss"]) and torch.isfinite(r1["loss"])
    assert torch.allclose(r0["queue"].norm(dim=0), torch.ones(32), atol=1e-5)


def test_pickle_with_executable_content_is_refused(tmp_path) -> None:
    import os
    import pickle

    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"state_dict": Exploit()}, fh)
    encoder, _ = build_encoder("resnet18", 1)
    with pytest.raises(ValueError, match="evil.pt"):
        load_encoder_weights(encoder, path)
    assert not marker.exists()  # nothing was executed
