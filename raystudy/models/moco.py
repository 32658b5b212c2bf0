"""MoCo (He et al., 2020) with a key queue and InfoNCE, paper Sect. 3.3, Eq. 1; config
section ``pretrain.moco``."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from raystudy.methods import MoCoConfig, ModelConfig
from raystudy.models.base import MomentumMethod
from raystudy.models.distributed import gather_no_grad, world_size
from raystudy.models.heads import ProjectionMLP


def info_nce(
    q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """InfoNCE (Eq. 1) with the positive at index 0; returns (loss, logits (B, 1 + K)).

    Args:
        q, k: (B, D) L2-normalised query / positive key.
        queue: (D, K) normalised negatives.
        temperature: softmax temperature T.

    Example:
        >>> loss, logits = info_nce(F.normalize(q, dim=1), F.normalize(k, dim=1), queue, 0.2)
    """
    l_pos = torch.einsum("bd,bd->b", q, k).unsqueeze(-1)  # (B, 1)
    l_neg = q @ queue  # (B, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (B, 1 + K)
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels), logits


def clip_queue_size(queue_size: int, n_images: int) -> int:
    """The number of negative keys MoCo keeps: the configured size, or the data set's size if smaller.

    MoCo's queue holds the keys of the most recent batches (65,536 in He et al. 2020, far
    fewer than ImageNet's 1.28 M images). A queue longer than the data set would hold
    several keys of the same image, so it is cut to ``n_images``; otherwise the
    configured size is kept. As in MoCo, keys of an image from earlier steps may still
    be in the queue when that image comes round again; at K < N they are few.

    Example:
        >>> clip_queue_size(65536, 33354)  # the paper's pretraining set
        33354
    """
    return max(1, min(queue_size, n_images))


class MoCo(MomentumMethod):
    """MoCo v2-style: online query branch, momentum key branch, a FIFO queue of keys.

    Each step: q = normalize(online_projector(online_encoder(view))), k likewise from the
    target branch under no_grad; loss = InfoNCE(q, k, queue) with temperature T. With
    ``symmetric=True`` the loss is the mean of InfoNCE(q1, k2) and InfoNCE(q2, k1) and the
    keys of both views are enqueued (2 x global batch per step); with ``symmetric=False``
    (the default of ``pretrain.moco.symmetric``) it is InfoNCE(q1, k2) and only k2 is
    enqueued (MoCo v2). The constructor's own default is True; studies pass the config's.
    Keys are all-gathered from every rank before entering the queue, so the queue is
    identical on all ranks. The queue is a ring buffer: any batch size, wrap-around.

    Batch-norm leak protection (the encoder has BN layers, so a query and its positive key
    computed from the same batch statistics let the model cheat, He et al. 2020 Sect. 3.3):

    - DDP, world_size > 1: MoCo's shuffle BN. The key batch is all-gathered, permuted with
      a permutation broadcast from rank 0, each rank forwards its slice of the shuffled
      batch through the target branch, and the keys are un-shuffled back (copied from
      facebookresearch/moco ``_batch_shuffle_ddp`` / ``_batch_unshuffle_ddp``). Needs the
      same per-rank batch size on every rank. Pointless if the caller converts to SyncBN.
    - single process: emulated. The batch is split into ``shuffle_bn_groups`` chunks; the
      query branch forwards each chunk of the original order separately, the key branch
      forwards each chunk of a random permutation separately and un-permutes. So a query
      and its positive key are normalised with statistics of different random subsets,
      as with shuffle BN across GPUs. Skipped when the batch is smaller than
      2 * shuffle_bn_groups (or ``shuffle_bn_groups <= 1``).

    Args:
        encoder: backbone (B, C, H, W) -> (B, feature_dim).
        feature_dim: width of the encoder output.
        proj_hidden_dim, proj_dim: projector widths; proj_layers: projector depth.
        queue_size: number of negative keys K; temperature: InfoNCE's T.
        shuffle_bn_groups: chunks of the single-process shuffle-BN emulation.
        symmetric: symmetrized loss (see above).
        momentum: the constant EMA momentum of the target branch.

    Example:
        >>> enc, dim = build_encoder("resnet18")
        >>> moco = MoCo(enc, dim, proj_hidden_dim=64, proj_dim=32, queue_size=64)
        >>> moco(torch.randn(8, 1, 32, 32), torch.randn(8, 1, 32, 32))["loss"]  # scalar
    """

    def __init__(
        self,
        encoder: nn.Module,
        feature_dim: int,
        proj_hidden_dim: int = 4096,
        proj_dim: int = 256,
        queue_size: int = 65536,
        temperature: float = 0.2,
        shuffle_bn_groups: int = 2,
        symmetric: bool = True,
        proj_layers: int = 2,  # the paper's "3-layer MLP": features -> hidden -> out
        momentum: float = 0.99,
    ) -> None:
        super().__init__(encoder, ProjectionMLP(feature_dim, proj_hidden_dim, proj_dim, proj_layers))
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self.temperature = temperature
        self.momentum = momentum
        self.shuffle_bn_groups = shuffle_bn_groups
        self.symmetric = symmetric
        self.register_buffer("queue", F.normalize(torch.randn(proj_dim, queue_size), dim=0))  # (D, K)
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @classmethod
    def from_config(
        cls,
        encoder: nn.Module,
        feature_dim: int,
        model: ModelConfig,
        section: MoCoConfig,
        n_images: int,
        global_batch: int,
    ) -> MoCo:
        return cls(
            encoder,
            feature_dim,
            proj_hidden_dim=model.proj_hidden_dim,
            proj_dim=model.proj_dim,
            queue_size=clip_queue_size(section.queue_size, n_images),
            temperature=section.temperature,
            symmetric=section.symmetric,
            momentum=section.momentum,
        )

    def momentum_at(self, step: int, total_steps: int) -> float:
        return self.momentum

    def no_learning_loss(self, global_batch: int) -> float:
        """ln(K + 1): InfoNCE when the positive scores like each of the K queue negatives."""
        return math.log(self.queue.shape[1] + 1)

    # -- branches ---------------------------------------------------------------------------
    def _use_groups(self, batch_size: int) -> bool:
        g = self.shuffle_bn_groups
        return world_size() == 1 and g > 1 and batch_size >= 2 * g

    def _online(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.online_projector(self.online_encoder(x)), dim=1)  # (b, D)

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.target_projector(self.target_encoder(x)), dim=1)  # (b, D)

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        if not self._use_groups(x.shape[0]):
            return self._online(x)
        return torch.cat([self._online(c) for c in x.tensor_split(self.shuffle_bn_groups)])  # (B, D)

    @torch.no_grad()
    def _keys(self, x: torch.Tensor) -> torch.Tensor:
        if world_size() > 1:
            x, idx_unshuffle = self._batch_shuffle_ddp(x)
            return self._batch_unshuffle_ddp(self._target(x), idx_unshuffle)
        if not self._use_groups(x.shape[0]):
            return self._target(x)
        perm = torch.randperm(x.shape[0], device=x.device)
        k = torch.cat([self._target(c) for c in x[perm].tensor_split(self.shuffle_bn_groups)])
        return k[torch.argsort(perm)]  # (B, D), original order

    # -- shuffle BN under DDP (facebookresearch/moco builder.py) -----------------------------
    @torch.no_grad()
    def _batch_shuffle_ddp(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch_size_this = x.shape[0]
        x_gather = gather_no_grad(x)  # (world * b, C, H, W)
        batch_size_all = x_gather.shape[0]
        num_ranks = batch_size_all // batch_size_this
        idx_shuffle = torch.randperm(batch_size_all, device=x.device)
        dist.broadcast(idx_shuffle, src=0)
        idx_unshuffle = torch.argsort(idx_shuffle)
        idx_this = idx_shuffle.view(num_ranks, -1)[dist.get_rank()]
        return x_gather[idx_this], idx_unshuffle

    @torch.no_grad()
    def _batch_unshuffle_ddp(self, x: torch.Tensor, idx_unshuffle: torch.Tensor) -> torch.Tensor:
        batch_size_this = x.shape[0]
        x_gather = gather_no_grad(x)  # (world * b, D)
        num_ranks = x_gather.shape[0] // batch_size_this
        idx_this = idx_unshuffle.view(num_ranks, -1)[dist.get_rank()]
        return x_gather[idx_this]

    # -- queue ------------------------------------------------------------------------------
    @torch.no_grad()
    def _dequeue_and_enqueue(self, keys: torch.Tensor) -> None:
        """Write keys (n, D) into the ring buffer at queue_ptr, wrapping around."""
        if world_size() > 1:
            keys = gather_no_grad(keys)
        size = self.queue.shape[1]
        n = keys.shape[0]
        ptr = int(self.queue_ptr)
        if n > size:  # only the newest `size` keys survive
            ptr = (ptr + n - size) % size
            keys, n = keys[-size:], size
        idx = (ptr + torch.arange(n, device=keys.device)) % size
        self.queue[:, idx] = keys.T.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + n) % size

    # -- loss -------------------------------------------------------------------------------
    def forward(self, view1: torch.Tensor, view2: torch.Tensor) -> dict[str, torch.Tensor]:
        queue = self.queue.clone().detach()  # (D, K); the buffer is written in-place below
        q1 = self._queries(view1)  # (B, D)
        k2 = self._keys(view2)  # (B, D)
        loss, logits = info_nce(q1, k2, queue, self.temperature)
        if self.symmetric:
            q2 = self._queries(view2)
            k1 = self._keys(view1)
            loss2, logits2 = info_nce(q2, k1, queue, self.temperature)
            loss = 0.5 * (loss + loss2)
            logits = torch.cat([logits, logits2])
            new_keys = torch.cat([k1, k2])
        else:
            new_keys = k2
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == 0).float().mean()
        self._dequeue_and_enqueue(new_keys)
        return {"loss": loss, "acc": acc}
