"""ResNet backbones (paper Sect. 3.2) and loading of pre-trained encoder weights."""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models as tvm

from raystudy.storage import Location, as_location, cached_bytes, is_provided


def resnet18_w16(weights: None = None) -> nn.Module:
    """ResNet-18 for small images on a CPU: a quarter of the width, a light stem.

    The ResNet-18 layout (BasicBlock x [2, 2, 2, 2]) with 16-32-64-128 channels
    instead of 64-128-256-512, and a 3x3 stride-2 stem conv without the max-pool, so a
    32 px crop keeps a 16 x 16 map after the stem (the ImageNet stem would leave
    8 x 8 and 1 x 1 at the end). About 4x the training throughput of ResNet-18 at
    32 px on a CPU and no less accurate on the embedded data set; the demo and smoke
    presets use it. Not the paper's network (that is ResNet-50 at 224 px).

    Example:
        >>> net = resnet18_w16(); net.fc = nn.Identity()
        >>> net(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 128])
    """
    if weights is not None:
        raise ValueError("resnet18_w16 has no published weights")
    width = 16
    net = tvm.ResNet(tvm.resnet.BasicBlock, [2, 2, 2, 2])
    net.inplanes = width
    net.conv1 = nn.Conv2d(3, width, kernel_size=3, stride=2, padding=1, bias=False)
    net.bn1 = nn.BatchNorm2d(width)
    net.maxpool = nn.Identity()
    net.layer1 = net._make_layer(tvm.resnet.BasicBlock, width, 2)
    net.layer2 = net._make_layer(tvm.resnet.BasicBlock, width * 2, 2, stride=2)
    net.layer3 = net._make_layer(tvm.resnet.BasicBlock, width * 4, 2, stride=2)
    net.layer4 = net._make_layer(tvm.resnet.BasicBlock, width * 8, 2, stride=2)
    for m in net.modules():  # torchvision's initialisation, for the rebuilt layers
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return net


# arch -> (constructor, feature dim after global average pooling)
_ARCHS: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "resnet18": (tvm.resnet18, 512),
    "resnet34": (tvm.resnet34, 512),
    "resnet50": (tvm.resnet50, 2048),
    "resnet101": (tvm.resnet101, 2048),
    "resnet18_w16": (resnet18_w16, 128),
}
ARCHS: tuple[str, ...] = tuple(_ARCHS)

# Prefixes that wrap the backbone in common checkpoints, most specific first:
# MoCo v1/v2 (DDP), MoCo v3, solo-learn, raystudy MoCo/BYOL, raystudy Classifier, compile.
_PREFIXES: tuple[str, ...] = (
    "module.encoder_q.",
    "module.base_encoder.",
    "base_encoder.",
    "encoder_q.",
    "module.",
    "backbone.",
    "online_encoder.",
    "encoder.",
    "_orig_mod.",  # torch.compile
)
# Keys (after prefix stripping) that belong to a classifier / projector / predictor.
_HEAD_PREFIXES: tuple[str, ...] = ("fc.", "head.", "classifier.")
_HEAD_WORDS: tuple[str, ...] = ("projector", "predictor")
_STATE_KEYS: tuple[str, ...] = ("state_dict", "model", "encoder")


def build_encoder(arch: str = "resnet50", in_channels: int = 1) -> tuple[nn.Module, int]:
    """A randomly initialised torchvision ResNet without its classifier.

    ``fc`` is replaced by ``nn.Identity()`` so ``backbone(x)`` returns the pooled
    features (B, feature_dim); ``conv1`` is rebuilt for ``in_channels``.

    Args:
        arch: resnet18, resnet34 (feature_dim 512), resnet50 or resnet101 (2048).
        in_channels: 1 for grey images, 3 for RGB.

    Returns:
        (backbone: (B, in_channels, H, W) -> (B, feature_dim), feature_dim)

    Example:
        >>> net, dim = build_encoder("resnet18", in_channels=1)
        >>> net(torch.randn(2, 1, 32, 32)).shape  # torch.Size([2, 512])
    """
    if arch not in _ARCHS:
        raise ValueError(f"unknown encoder arch {arch!r}; allowed: {', '.join(_ARCHS)}")
    ctor, feature_dim = _ARCHS[arch]
    net = ctor(weights=None)
    if in_channels != net.conv1.in_channels:
        c = net.conv1
        net.conv1 = nn.Conv2d(in_channels, c.out_channels, c.kernel_size, c.stride, c.padding, bias=False)
        nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")  # as torchvision
    net.fc = nn.Identity()
    return net, feature_dim


def _unwrap(obj: object) -> dict[str, torch.Tensor]:
    """Descend into {'state_dict'|'model'|'encoder': ...} wrappers down to the tensors."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _STATE_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, Mapping):
        raise TypeError(type(obj).__name__)
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _strip_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep only the keys under the most specific known prefix, stripped; repeat.

    E.g. ``module.encoder_q.conv1.weight`` -> ``conv1.weight`` (``module.encoder_k.*``
    and ``module.queue`` are dropped), ``module.encoder.layer1...`` -> ``layer1...``.
    """
    while True:
        prefix = next((p for p in _PREFIXES if any(k.startswith(p) for k in sd)), None)
        if prefix is None:
            return sd
        sd = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _is_head_key(key: str) -> bool:
    return key.startswith(_HEAD_PREFIXES) or any(w in key for w in _HEAD_WORDS)


def _adapt_conv1(sd: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> None:
    """Sum RGB conv1 filters into one grey channel (or spread grey over RGB), in place."""
    key = "conv1.weight"
    if key not in sd or key not in target:
        return
    c_ckpt, c_enc = sd[key].shape[1], target[key].shape[1]
    if c_ckpt == 3 and c_enc == 1:
        sd[key] = sd[key].sum(dim=1, keepdim=True)  # (64, 1, 7, 7)
    elif c_ckpt == 1 and c_enc == 3:
        sd[key] = sd[key].repeat(1, 3, 1, 1) / 3.0  # (64, 3, 7, 7)


def _head(keys: list[str], n: int = 10) -> str:
    return f"{len(keys)} {keys[:n]}{' ...' if len(keys) > n else ''}"


def save_checkpoint(obj: Any, where: str | Path | Location) -> Location:
    """``torch.save`` of ``obj`` to a path or URI, atomically (written whole, then visible)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return as_location(where).write_bytes(buffer.getvalue())


def load_encoder_weights(encoder: nn.Module, path: str | Path | Location) -> None:
    """Load backbone weights from a checkpoint written by raystudy, MoCo, solo-learn, ...

    Accepts a bare state dict or one under ``state_dict`` / ``model`` / ``encoder``;
    strips wrapper prefixes (``module.encoder_q.``, ``backbone.``, ...), drops
    classifier/projector/predictor keys, and adapts a 3-channel ``conv1`` to a
    1-channel encoder (sum over channels) or the reverse (repeat / 3).

    Args:
        encoder: a backbone from :func:`build_encoder`, loaded in place.
        path: the checkpoint file, a path or a URI such as ``s3://bucket/ckpt.pth.tar``
            (``torch.load`` with ``weights_only=True``).

    Raises FileNotFoundError for a missing file and ValueError for a file that is not
    a weights-only checkpoint or whose keys/shapes do not match ``encoder``.

    Example:
        >>> net, _ = build_encoder("resnet50")
        >>> load_encoder_weights(net, "moco_v2_800ep_pretrain.pth.tar")
    """
    path = as_location(path)
    if not is_provided(path) and not path.is_file():
        raise FileNotFoundError(f"encoder checkpoint not found: {path}")
    try:
        obj = torch.load(io.BytesIO(cached_bytes(path)), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(
            f"refused to load {path.name}: it is not a weights-only checkpoint "
            f"(torch.load(weights_only=True) rejected it: {str(e).splitlines()[0]})"
        ) from e
    except (RuntimeError, EOFError, OSError) as e:
        raise ValueError(f"could not read checkpoint {path.name}: {e}") from e
    try:
        sd = _unwrap(obj)
    except TypeError as e:
        raise ValueError(f"checkpoint {path.name} holds a {e}, not a state dict") from e

    sd = {k: v for k, v in _strip_prefixes(sd).items() if not _is_head_key(k)}
    target = encoder.state_dict()
    _adapt_conv1(sd, target)

    # Old checkpoints lack BN `num_batches_tracked`; keep the encoder's own counter.
    for k, v in target.items():
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = v
    missing = sorted(set(target) - set(sd))
    unexpected = sorted(set(sd) - set(target))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(sd[k].shape)} vs encoder {tuple(target[k].shape)}"
        for k in set(sd) & set(target)
        if sd[k].shape != target[k].shape
    )
    if missing or unexpected or mismatched:
        raise ValueError(
            f"checkpoint {path.name} does not match the encoder: "
            f"missing keys: {_head(missing)}; unexpected keys: {_head(unexpected)}; "
            f"shape mismatches: {_head(mismatched)}"
        )
    encoder.load_state_dict(sd, strict=True)
