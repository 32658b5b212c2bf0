"""Encoder quality without fine-tuning: kNN and linear-probe accuracy of a frozen encoder,
and 2-D t-SNE maps of encoder embeddings (Fig. 8)."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.manifold import TSNE
from sklearn.preprocessing import StandardScaler

from raystudy.config import StudyConfig
from raystudy.data.splits import derive_seed
from raystudy.models import build_encoder, load_encoder_weights
from raystudy.training.augment import EvalTransform
from raystudy.training.common import autocast, images_to_device, pick_device


@torch.no_grad()
def encode(
    encoder: torch.nn.Module,
    images: np.ndarray,
    rows: np.ndarray,
    transform,
    batch_size: int,
    device: torch.device,
    fp32: bool = False,
) -> np.ndarray:
    """Features (n, D) of ``images[rows]`` under the deterministic eval transform
    (bf16 autocast on a GPU unless ``fp32``)."""
    encoder.eval()
    out = []
    for i in range(0, len(rows), batch_size):
        x = images_to_device(images, rows[i : i + batch_size], device)  # (b,1,S,S)
        with nullcontext() if fp32 else autocast(device):
            out.append(encoder(transform(x)).float().cpu())
    return torch.cat(out).numpy() if out else np.empty((0, 0), dtype=np.float32)


def knn_accuracy(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
) -> float:
    """Weighted kNN on cosine similarity (Wu et al. 2018): vote weight exp(sim / T)."""
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    return float((knn_predict(train_x, train_y, test_x, k, temperature, n_classes) == test_y).mean())


def knn_predict(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    k: int = 20,
    temperature: float = 0.07,
    n_classes: int | None = None,
) -> np.ndarray:
    """(M,) predicted labels of the weighted kNN of :func:`knn_accuracy`."""
    train = F.normalize(torch.from_numpy(train_x).float(), dim=1)  # (N, D)
    test = F.normalize(torch.from_numpy(test_x).float(), dim=1)  # (M, D)
    k = min(k, len(train))
    sim, idx = (test @ train.T).topk(k, dim=1)  # (M, k)
    labels = torch.from_numpy(train_y)[idx]  # (M, k)
    n_classes = n_classes or int(train_y.max()) + 1
    votes = torch.zeros(len(test), n_classes).scatter_add_(1, labels, (sim / temperature).exp())  # (M, C)
    return votes.argmax(1).numpy()


def linear_probe_accuracy(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, seed: int = 0
) -> float:
    """Multinomial logistic regression on standardized frozen features."""
    return float((linear_probe_predict(train_x, train_y, test_x, seed) == test_y).mean())


def linear_probe_predict(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, seed: int = 0) -> np.ndarray:
    """(M,) predicted labels of the linear probe of :func:`linear_probe_accuracy`."""
    if len(np.unique(train_y)) < 2:
        return np.full(len(test_x), train_y[0])
    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000, C=1.0, random_state=seed)
    clf.fit(scaler.transform(train_x), train_y)
    return clf.predict(scaler.transform(test_x))


def tsne_2d(features: np.ndarray, seed: int = 0) -> np.ndarray:
    """(n, D) -> (n, 2) t-SNE map (PCA init, perplexity capped for small n)."""
    n = len(features)
    if n < 4:
        return np.zeros((n, 2))
    perplexity = float(min(30.0, (n - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
        features.astype(np.float32)
    )


class FrozenEncoder:
    """A backbone for embedding only: built for ``arch``, weights from a checkpoint (or as
    initialised), in eval mode on ``device``, with the study's deterministic eval transform.

    Args:
        cfg: the study config (channels, eval transform, eval batch size).
        encoder_path: an encoder checkpoint (path or URI); None keeps the initial weights.
        arch: the backbone (default ``cfg.model.arch``).
        device: where it embeds.
        fp32: embed in full precision (no autocast): what selections use, so near-ties do not
            depend on the device's bf16 rounding.

    Example:
        >>> encoder = "runs/demo/encoders/moco.pt"
        >>> frozen = FrozenEncoder(cfg, encoder, "resnet18_w16", torch.device("cpu"))  # doctest: +SKIP
        >>> frozen.embed(images, rows).shape  # (len(rows), D)  # doctest: +SKIP
    """

    def __init__(
        self, cfg: StudyConfig, encoder_path: str | None, arch: str | None, device: torch.device, fp32: bool = False
    ) -> None:
        m, aug = cfg.model, cfg.finetune.augment
        encoder, _ = build_encoder(arch or m.arch, m.in_channels)
        if encoder_path:
            load_encoder_weights(encoder, encoder_path)
        self.encoder = encoder.to(device)
        self.transform = EvalTransform(resize=aug.resize, crop_size=aug.crop_size, out_channels=m.in_channels)
        self.batch_size = cfg.finetune.eval_batch_size
        self.device = device
        self.fp32 = fp32

    def embed(self, images: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """(len(rows), D) features of ``images[rows]`` ((N, S, S) uint8)."""
        return encode(self.encoder, images, rows, self.transform, self.batch_size, self.device, self.fp32)


def probe_encoder(
    cfg: StudyConfig,
    encoder_path: str | None,
    images: np.ndarray,
    train_rows: np.ndarray,
    train_y: np.ndarray,
    test_rows: np.ndarray,
    test_y: np.ndarray,
    device_gpus: float = 0.0,
    arch: str | None = None,
) -> dict[str, Any]:
    """kNN and linear-probe accuracy of one frozen encoder (random init when no path), and each
    test image's prediction (``predictions``: probe kind -> (M,) labels, for paired tests).

    ``arch``: the backbone (default ``cfg.model.arch``).
    """
    torch.manual_seed(derive_seed(cfg.seed, "probe-init"))
    frozen = FrozenEncoder(cfg, encoder_path, arch, pick_device(device_gpus))
    train_x = frozen.embed(images, train_rows)
    test_x = frozen.embed(images, test_rows)
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    predictions = {
        "knn": knn_predict(train_x, train_y, test_x, k=cfg.pretrain.probe_knn_k, n_classes=n_classes),
        "linear": linear_probe_predict(train_x, train_y, test_x, seed=cfg.seed),
    }
    return {
        "knn_accuracy": float((predictions["knn"] == test_y).mean()),
        "linear_probe_accuracy": float((predictions["linear"] == test_y).mean()),
        "predictions": predictions,
    }
