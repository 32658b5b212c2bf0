"""Upstream self-supervised pretraining as a DDP run on Ray Train, for any registered method.

Each (method, backbone) is one Tune trial that launches a ``TorchTrainer`` (Ray's
documented Tune-drives-Train pattern), so methods run side by side. Workers read
the decoded images from the object store, augment whole batches on their device,
and rank 0 checkpoints every epoch; an interrupted run continues from its last
checkpoint, and a lost worker or node restarts the whole group from it (up to
``pretrain.max_failures`` times; the ``pretraining`` row counts the ``restarts``).
The online encoder is saved as ``RUN_DIR/encoders/<run name>.pt`` (through
:mod:`raystudy.storage`, so the run location may be an object store), and the trial's
last result names it (``{"encoder": URI}``): that reference is how the scheduler learns
that the cells of this method may start.
The loop knows no method by name: the registry builds the model
(``PretrainModel.from_config``) and the model updates itself after each step.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
from statsmodels.stats.proportion import proportion_confint

from raystudy import registry
from raystudy.config import PretrainConfig, StudyConfig
from raystudy.data.splits import derive_seed
from raystudy.grid import Job
from raystudy.models import build_encoder, load_encoder_weights
from raystudy.models.base import PretrainModel
from raystudy.models.encoders import save_checkpoint
from raystudy.resources import uses_gpu
from raystudy.results import write_table
from raystudy.storage import Location, as_location
from raystudy.training.augment import EvalTransform, PretrainAugment
from raystudy.training.budget import epoch_steps, method_min_steps, pretrain_epochs
from raystudy.training.common import augment_kwargs, autocast, images_to_device, pick_device, seed_everything
from raystudy.training.lars import LARS, lars_param_groups
from raystudy.training.probes import encode, knn_accuracy
from raystudy.training.schedules import scaled_lr, set_lr, warmup_cosine_lr
from raystudy.training.shipped import receive_init_weights

log = logging.getLogger("raystudy")

WORKERS_STARTED = "workers_started"  # the first report of a pretraining run: its workers hold their resources


def encoder_location(run_dir: str | Path | Location, name: str) -> Location:
    """Where the pretraining run ``name`` (``grid.run_name``: method on arch) writes its encoder."""
    return as_location(run_dir) / "encoders" / f"{name}.pt"


def build_method(
    method: str, cfg: StudyConfig, n_images: int, global_batch: int, arch: str | None = None
) -> PretrainModel:
    """The registered ``method`` around a fresh (or ``model.pretrain_init``) ``arch`` encoder."""
    spec = registry.get_method(method)
    encoder, feature_dim = build_encoder(arch or cfg.model.arch, cfg.model.in_channels)
    init = cfg.model.pretrain_weights(method)
    if init:
        load_encoder_weights(encoder, init)
    return spec.model_class().from_config(
        encoder, feature_dim, cfg.model, cfg.pretrain.section(method), n_images, global_batch
    )


def sync_batchnorm(cfg: StudyConfig, model: PretrainModel, world: int, device: torch.device) -> PretrainModel:
    """The model with SyncBatchNorm layers (statistics over every DDP worker) where wanted, else itself.

    ``pretrain.sync_batchnorm``: true / false, or ``auto``: the method's ``wants_sync_batchnorm``
    (SimCLR's). Never with one worker. SyncBatchNorm runs on GPUs only: on CPU workers ``auto``
    stays off and ``true`` is refused. The state-dict keys are those of BatchNorm, so the saved
    encoder loads into a plain ``build_encoder`` backbone.
    """
    setting = cfg.pretrain.sync_batchnorm
    wanted = type(model).wants_sync_batchnorm if setting == "auto" else bool(setting)
    if not wanted or world <= 1:
        return model
    if device.type != "cuda":
        if setting == "auto":
            return model
        raise ValueError(
            f"pretrain.sync_batchnorm: true needs GPU workers (SyncBatchNorm does not run on {device.type}); "
            "set it to auto or false"
        )
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def epoch_line(method: str, metrics: dict[str, Any]) -> str:
    """``pretrain moco epoch 3/100 loss 6.812 | kNN 0.71 (random init 0.64) | 412 img/s, ~1234s left``.

    One line per epoch; the kNN part only with an online probe (``online_knn``).
    """
    knn = (
        f" | kNN {metrics['online_knn']:.2f} (random init {metrics['online_knn_random_init']:.2f})"
        if metrics.get("online_knn") is not None
        else ""
    )
    return (
        f"pretrain {method} epoch {int(metrics['epoch']) + 1}/{int(metrics['epochs'])} "
        f"loss {metrics['loss']:.4f}{knn} | {metrics['images_per_s']:.0f} img/s, ~{metrics['seconds_left']:.0f}s left"
    )


def stop_early(cfg: StudyConfig, curve: list[float]) -> bool:
    """The pretraining stopping rule after ``len(curve)`` epochs (``curve``: the online kNN per
    epoch): stop once ``pretrain.min_epochs`` are done and the best value is ``pretrain.patience``
    or more epochs old. Never with ``patience`` 0 or without a curve.

    Example:
        >>> stop_early(cfg_with_patience_2, [0.40, 0.45, 0.44, 0.45])  # doctest: +SKIP
        True
    """
    p = cfg.pretrain
    if p.patience <= 0 or not curve or len(curve) < p.min_epochs:
        return False
    best = int(np.argmax(curve))  # the first epoch of the best value: ties do not count as gains
    return len(curve) - 1 - best >= p.patience


def agree(stop: bool, world: int, device: torch.device) -> bool:
    """Rank 0's decision (it alone measures the online kNN), the same on every rank."""
    if world <= 1 or not torch.distributed.is_initialized():
        return stop
    flag = torch.tensor([1.0 if stop else 0.0], device=device)
    torch.distributed.broadcast(flag, src=0)
    return bool(flag.item() > 0.5)


def online_knn(
    cfg: StudyConfig, encoder: torch.nn.Module, images: np.ndarray, probe: dict[str, Any], device: torch.device
) -> float:
    """kNN accuracy of ``encoder`` on the online probe (bank/query rows and labels, see
    :func:`raystudy.scheduler.online_probe_rows`) under the eval transform; leaves it in train mode."""
    transform = EvalTransform(
        resize=cfg.finetune.augment.resize, crop_size=cfg.finetune.augment.crop_size, out_channels=cfg.model.in_channels
    )
    batch = cfg.finetune.eval_batch_size
    bank = encode(encoder, images, np.asarray(probe["bank_rows"]), transform, batch, device)
    query = encode(encoder, images, np.asarray(probe["query_rows"]), transform, batch, device)
    encoder.train()
    return knn_accuracy(
        bank, np.asarray(probe["bank_labels"]), query, np.asarray(probe["query_labels"]), k=cfg.pretrain.probe_knn_k
    )


def unlearned_reason(cfg: StudyConfig, name: str, row: Mapping[str, Any]) -> str | None:
    """Why pretraining run ``name`` (its ``pretraining`` table row) did not learn, else None.

    It did not when its final online kNN is not above the starting weights' value (random init,
    or ``pretrain_init``) by ``pretrain.learn_margin_pp`` points; both values come with their
    Wilson 95 % intervals over the probe's queries. None as well without an online probe (no
    measurement, no verdict) and with ``pretrain.allow_unlearned``.

    Example:
        >>> unlearned_reason(cfg, "simclr", {"online_knn_final": 0.76, "online_knn_random_init": 0.86,
        ...                                "online_knn_queries": 128})  # doctest: +SKIP
        'pretraining of simclr did not beat its starting weights (online kNN 0.76 ...'
    """
    final, start = row.get("online_knn_final"), row.get("online_knn_random_init")
    queries = int(row.get("online_knn_queries") or 0)
    if cfg.pretrain.allow_unlearned or final is None or start is None or final != final or start != start:
        return None
    margin = cfg.pretrain.learn_margin_pp / 100.0
    if final - start >= margin:
        return None

    def with_ci(acc: float) -> str:
        if queries <= 0:
            return f"{acc:.2f}"
        low, high = proportion_confint(round(acc * queries), queries, alpha=0.05, method="wilson")
        return f"{acc:.2f} (95 % CI {low:.2f}\u2013{high:.2f})"

    return (
        f"pretraining of {name} did not beat its starting weights (online kNN {with_ci(final)} vs "
        f"{with_ci(start)} before the first step, on {queries} probe images; it must gain at least "
        f"{cfg.pretrain.learn_margin_pp:g} points, pretrain.learn_margin_pp): the grid's CSSL cells would "
        "measure an untrained encoder; continue anyway with --set pretrain.allow_unlearned=true, or train "
        "longer (pretrain.epochs) or change the augmentation (pretrain.augment)"
    )


def make_optimizer(cfg: StudyConfig, model: torch.nn.Module, lr: float) -> torch.optim.Optimizer:
    """LARS (BN and bias excluded from adaptation and decay) or SGD, momentum 0.9."""
    p = cfg.pretrain
    if p.optimizer == "lars":
        return LARS(lars_param_groups(model, p.weight_decay), lr=lr, momentum=0.9)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=p.weight_decay)


def with_min_steps(
    cfg: StudyConfig, n_images: int, world: int, log_it: bool = False, method: str | None = None
) -> StudyConfig:
    """``cfg`` with ``pretrain.epochs`` set by :func:`~raystudy.training.budget.pretrain_epochs`
    for ``method`` (raised until a run takes at least ``pretrain.min_steps`` steps, or the
    method section's own ``min_steps``); ``log_it``: say so.

    Example:
        >>> cfg.pretrain.epochs, cfg.pretrain.min_steps = 8, 744  # doctest: +SKIP
        >>> with_min_steps(cfg, 1500, 1).pretrain.epochs  # doctest: +SKIP
        17
    """
    p = cfg.pretrain
    steps_per_epoch = epoch_steps(n_images, p.batch_size_per_worker * world)
    epochs = pretrain_epochs(p, n_images, world, method)
    if epochs == p.epochs:
        return cfg
    if log_it:
        own = method is not None and method_min_steps(p, method) != p.min_steps
        log.info(
            "pretrain%s: %d epochs instead of %d: %d images make %d steps per epoch, and a run takes at least "
            "%s = %d steps",
            f" {method}" if method else "",
            epochs,
            p.epochs,
            n_images,
            steps_per_epoch,
            f"pretrain.{method}.min_steps" if own else "pretrain.min_steps",
            method_min_steps(p, method),
        )
    cfg = cfg.model_copy(deep=True)
    cfg.pretrain.epochs = epochs
    return cfg


@dataclass(frozen=True)
class PretrainSchedule:
    """The step budget and learning rate of one pretraining run (``pretrain.*`` over ``world`` workers)."""

    batch: int  # images per worker and step
    global_batch: int  # images per optimizer step over all workers
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int
    target_lr: float  # base_lr scaled by global batch / 256

    @classmethod
    def of(cls, cfg: StudyConfig, n_images: int, world: int) -> PretrainSchedule:
        p = cfg.pretrain
        global_batch = p.batch_size_per_worker * world
        steps_per_epoch = epoch_steps(n_images, global_batch)
        total_steps = steps_per_epoch * p.epochs
        return cls(
            batch=p.batch_size_per_worker,
            global_batch=global_batch,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            warmup_steps=min(steps_per_epoch * p.warmup_epochs, total_steps // 2),
            target_lr=scaled_lr(p.base_lr, global_batch),
        )


def train_epoch(
    model: torch.nn.Module,
    inner: PretrainModel,
    optimizer: torch.optim.Optimizer,
    augment: PretrainAugment,
    generator: torch.Generator,
    batches: Callable[[int], torch.Tensor],
    epoch: int,
    schedule: PretrainSchedule,
    method: str,
    losses: list[dict[str, Any]],
) -> list[float]:
    """One epoch of optimizer steps; ``batches(i)`` is step ``i``'s (B, 1, S, S) uint8 batch on the device.

    Appends one row per step to ``losses`` and returns this epoch's step losses.
    """
    model.train()
    device = next(inner.parameters()).device
    epoch_losses = []
    for i in range(schedule.steps_per_epoch):
        step = epoch * schedule.steps_per_epoch + i
        lr = warmup_cosine_lr(step, schedule.total_steps, schedule.warmup_steps, schedule.target_lr)
        set_lr(optimizer, lr)
        x = batches(i)
        view1, view2 = augment(x, generator), augment(x, generator)  # (B,C,crop,crop) each
        if device.type == "cuda":
            view1 = view1.contiguous(memory_format=torch.channels_last)
            view2 = view2.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            loss = model(view1, view2)["loss"].float()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        inner.after_step(step, schedule.total_steps)  # momentum encoders: EMA update
        value = float(loss.detach())
        if not math.isfinite(value):
            raise FloatingPointError(f"{method} pretraining loss became {value} at step {step}")
        losses.append({"epoch": epoch, "step": step, "loss": value, "lr": lr})
        epoch_losses.append(value)
    return epoch_losses


def run_pretrain_loop(
    cfg: StudyConfig,
    method: str,
    images: np.ndarray,
    device: torch.device,
    rank: int = 0,
    world: int = 1,
    resume: dict[str, Any] | None = None,
    wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
    on_epoch: Callable[[dict[str, Any], dict[str, Any]], None] | None = None,
    rows: np.ndarray | None = None,
    arch: str | None = None,
    online_probe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Pretrain one method on ``images[rows]`` ((N, S, S) uint8; all rows by default).

    ``online_probe``: bank/query rows and labels; rank 0 then measures the online encoder's
    kNN accuracy on it after every epoch (``metrics["online_knn"]``) next to the random-init
    value measured once before the first step (``online_knn_random_init``); the state keeps the
    curve (``state["online_knn"]``, one value per epoch).

    ``resume`` is a state given to ``on_epoch`` before; ``wrap`` wraps the model for
    DDP; ``on_epoch(metrics, state)`` runs after every epoch (checkpoint and report).
    The state holds the model, the optimizer, the epoch, the per-step losses and the
    online encoder (``state["encoder"]``, what fine-tuning transfers). ``arch``: the
    backbone (default ``cfg.model.arch``). Rank 0 logs one line per epoch.
    """
    arch = arch or cfg.model.arch
    rows = np.arange(len(images)) if rows is None else np.asarray(rows)
    n_images = len(rows)
    cfg = with_min_steps(cfg, n_images, world, log_it=rank == 0, method=method)
    p = cfg.pretrain
    schedule = PretrainSchedule.of(cfg, n_images, world)

    model = build_method(method, cfg, n_images, schedule.global_batch, arch).to(device)
    model = sync_batchnorm(cfg, model, world, device)  # before DDP wraps it (``wrap``)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg, model, schedule.target_lr)
    augment = PretrainAugment(**augment_kwargs(p.augment, cfg.model.in_channels))

    start_epoch, losses, knn_curve = 0, [], []
    probe = online_probe if rank == 0 else None
    knn_random_init = online_knn(cfg, model.online_encoder, images, probe, device) if probe and not resume else None
    if resume:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        start_epoch, losses = int(resume["epoch"]) + 1, list(resume["losses"])
        knn_curve, knn_random_init = list(resume.get("online_knn", [])), resume.get("online_knn_random_init")
    inner = model
    if wrap is not None:
        model = wrap(model)
    generator = torch.Generator(device=device)
    t0 = time.time()
    state: dict[str, Any] = {}
    if stop_early(cfg, knn_curve):  # resumed after the epoch that stopped it: nothing more to train
        start_epoch = p.epochs
    for epoch in range(start_epoch, p.epochs):
        order = np.random.default_rng(derive_seed(cfg.seed, method, "order", epoch)).permutation(n_images)
        shard = order[rank::world][: schedule.steps_per_epoch * schedule.batch]
        generator.manual_seed(derive_seed(cfg.seed, method, "augment", epoch, rank))

        def batches(i: int, shard: np.ndarray = shard) -> torch.Tensor:
            # the batch stays in its shuffled order: rows are stored by campaign and category,
            # and MoCo's one-process shuffle-BN forwards the queries in groups of the batch order
            return images_to_device(images, rows[shard[i * schedule.batch : (i + 1) * schedule.batch]], device)

        epoch_start = time.time()
        epoch_losses = train_epoch(
            model, inner, optimizer, augment, generator, batches, epoch, schedule, method, losses
        )
        if probe:
            knn_curve.append(online_knn(cfg, inner.online_encoder, images, probe, device))
        now = time.time()
        metrics = {
            "epoch": epoch,
            "epochs": p.epochs,
            "loss": float(np.mean(epoch_losses)),
            "seconds": now - t0,
            "images_per_s": schedule.steps_per_epoch * schedule.global_batch / (now - epoch_start),
            "device": device.type,  # the CPU where Ray gave a GPU that torch cannot use
            "seconds_left": (now - t0) / (epoch + 1 - start_epoch) * (p.epochs - epoch - 1),
            "no_learning_loss": inner.no_learning_loss(schedule.global_batch),  # None: no such level
            "online_knn": knn_curve[-1] if probe else None,
            "online_knn_random_init": knn_random_init,
        }
        if rank == 0:
            log.info(epoch_line(method if arch == cfg.model.arch else f"{method}-{arch}", metrics))
        state = {
            "model": inner.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "losses": losses,
            "online_knn": knn_curve,
            "online_knn_random_init": knn_random_init,
            "encoder": {"state_dict": inner.online_encoder.state_dict(), "arch": arch, "method": method},
        }
        stopped = agree(stop_early(cfg, knn_curve) if probe else False, world, device)
        metrics["stop_reason"] = state["stop_reason"] = "patience" if stopped else "epochs"
        if on_epoch is not None:
            on_epoch(metrics, state)
        if stopped:
            if rank == 0:
                log.info(
                    "pretrain %s stopped after epoch %d of %d: online kNN best %.2f at epoch %d, not improved "
                    "for %d epochs (pretrain.patience)",
                    method,
                    epoch + 1,
                    p.epochs,
                    max(knn_curve),
                    int(np.argmax(knn_curve)) + 1,
                    p.patience,
                )
            break
    return state


def pretrain_worker_loop(loop_config: dict[str, Any]) -> None:
    """Runs on every Ray Train worker: the loop above with DDP, checkpoints and reports."""
    import ray.train
    import ray.train.torch

    cfg: StudyConfig = loop_config["cfg"]
    job: Job = loop_config["job"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(cfg.pretrain.cpus_per_worker)))
    seed_everything(cfg.seed + rank)
    receive_init_weights(loop_config.get("init_weights"))  # pretrain_init, wherever this worker runs
    images: np.ndarray = ray.get(loop_config["images_ref"])  # (N, S, S) uint8, zero-copy
    rows = loop_config["rows"]  # the unlabeled pretraining pool
    ray.train.report({WORKERS_STARTED: 1})  # every rank: the scheduler releases other jobs after this
    resume, carried = None, {"restarts": 0}
    checkpoint = ray.train.get_checkpoint()  # the last one reported: after a lost worker or a rerun
    if checkpoint:
        with checkpoint.as_directory() as d:
            resume = torch.load(Path(d) / "state.pt", map_location="cpu", weights_only=True)
            resume["losses"] = json.loads((Path(d) / "losses.json").read_text())  # steps 0..epoch, once each
            before = json.loads((Path(d) / "metrics.json").read_text()).get("restarts", 0)
            resume.update(json.loads((Path(d) / "online_knn.json").read_text()))
        carried = {"restarts": int(before) + 1, "resumed_from_epoch": int(resume["epoch"])}
        if rank == 0:
            log.warning("pretrain %s: resumed from epoch %d checkpoint", job.name, resume["epoch"])

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        metrics = {**metrics, **carried}  # every later checkpoint says how this run got here
        if rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save({k: state[k] for k in ("model", "optimizer", "epoch")}, Path(d) / "state.pt")
            torch.save(state["encoder"], Path(d) / "encoder.pt")
            (Path(d) / "losses.json").write_text(json.dumps(state["losses"]))
            (Path(d) / "metrics.json").write_text(json.dumps(metrics))
            knn = {k: state[k] for k in ("online_knn", "online_knn_random_init")}
            (Path(d) / "online_knn.json").write_text(json.dumps(knn))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    wrap = (lambda m: ray.train.torch.prepare_model(m, move_to_device=False)) if world > 1 else None
    device = ray.train.torch.get_device()
    if device.type == "cuda" and not torch.cuda.is_available():  # a GPU Ray counts that torch cannot use
        device = pick_device(1.0)  # the CPU, with a warning
    run_pretrain_loop(
        cfg,
        job.model,
        images,
        device,
        rank,
        world,
        resume,
        wrap,
        report,
        rows,
        job.arch,
        loop_config.get("online_probe"),
    )


def process_group_backend(use_gpu: bool, num_workers: int) -> str:
    """NCCL for a group of GPU workers; gloo otherwise. A single worker communicates with nobody,
    so gloo serves it on any node, a GPU that Ray only counts (``ray start --num-gpus=1`` on a
    machine without CUDA, where NCCL cannot start) included."""
    return "nccl" if use_gpu and num_workers > 1 else "gloo"


def never_started(p: PretrainConfig, use_gpu: bool, err: Exception) -> str:
    """Why a pretraining run ended on a Ray Train controller error (its worker group never started,
    the usual case), and what to change."""
    failure = getattr(err, "controller_failure", err)
    timeout = os.environ.get("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
    each = f"{{CPU: {p.cpus_per_worker}{', GPU: 1' if use_gpu else ''}}}"
    first = str(failure).split(". ")[0].splitlines()[0].rstrip(".") if str(failure) else "no message"
    what = (
        f"did not start in pretrain.start_attempts = {p.start_attempts} attempts of "
        f"RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S = {timeout} s"
        if "Startup" in type(failure).__name__
        else "was stopped by Ray Train's controller"
    )
    return (
        f"its worker group of {p.num_workers} x {each} {what} ({type(failure).__name__}: {first}); free or "
        "add what it asks for, or lower pretrain.num_workers / pretrain.cpus_per_worker, then rerun"
    )


def pretrain_trial(
    job: Job,
    cfg: StudyConfig,
    run_dir: Location,
    images_ref: Any,
    rows: np.ndarray,
    online_probe: dict[str, Any] | None = None,
    init_weights: dict[str, Any] | None = None,
) -> None:
    """A Tune trial that drives one TorchTrainer run (stable run name per method and arch,
    so an interrupted run continues from its last checkpoint). ``online_probe``: see
    :func:`run_pretrain_loop`; the ``pretraining`` row keeps its per-epoch curve;
    ``init_weights``: the shipped initial-weight files (:mod:`raystudy.training.shipped`)."""
    from ray.train import CheckpointConfig, ControllerError, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    p, method, name = cfg.pretrain, job.model, job.name
    encoder = encoder_location(run_dir, name)
    if encoder.is_file():
        ray.tune.report({"done": True, "skipped_existing": True, "encoder": encoder.uri})
        return
    use_gpu = uses_gpu(cfg, torch.cuda.is_available() or bool(ray.cluster_resources().get("GPU")))
    t0 = time.time()
    trainer = TorchTrainer(
        pretrain_worker_loop,
        train_loop_config={
            "cfg": cfg,
            "job": job,
            "images_ref": images_ref,
            "rows": rows,
            "online_probe": online_probe,
            "init_weights": init_weights or {},
        },
        torch_config=TorchConfig(backend=process_group_backend(use_gpu, p.num_workers)),
        scaling_config=ScalingConfig(
            num_workers=p.num_workers,
            use_gpu=use_gpu,
            resources_per_worker={"CPU": p.cpus_per_worker, **({"GPU": 1} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=f"pretrain-{name}",
            **(run_dir / "ray").ray_storage(),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            # a lost worker or node restarts the whole group, which resumes from the last checkpoint
            failure_config=FailureConfig(
                # Train's default limit, -1, retries a group that can never start forever
                max_failures=p.max_failures,
                controller_failure_limit=p.start_attempts - 1,
            ),
            callbacks=[TuneReportCallback()],
        ),
    )
    try:
        result = trainer.fit()
    except ControllerError as err:  # the group never started (pretrain.start_attempts): a Tune retry waits as long
        why = never_started(p, use_gpu, err)
        log.error("pretrain %s: %s", name, why)
        ray.tune.report({"done": True, "failed": why})  # no encoder: the cells waiting on it fail at once
        return
    with result.checkpoint.as_directory() as d:
        losses = pd.DataFrame(json.loads((Path(d) / "losses.json").read_text()))
        last_metrics = json.loads((Path(d) / "metrics.json").read_text())
        encoder_state = torch.load(Path(d) / "encoder.pt", map_location="cpu", weights_only=True)
        knn = json.loads((Path(d) / "online_knn.json").read_text())
    write_table(
        run_dir,
        "losses",
        f"pretrain-{name}",
        losses.assign(run=f"pretrain-{name}", stage="pretrain", model=method),
    )
    write_table(
        run_dir,
        "pretraining",
        name,
        pd.DataFrame(
            [
                {
                    "model": method,
                    "arch": job.arch,
                    "epochs": int(last_metrics["epoch"]) + 1,  # trained; pretrain.epochs at most
                    "stop_reason": last_metrics.get("stop_reason", "epochs"),
                    "n_images": len(rows),
                    "batch_size": p.batch_size_per_worker * p.num_workers,
                    "world_size": p.num_workers,
                    "seconds": time.time() - t0,
                    "final_loss": float(losses["loss"].iloc[-1]),
                    "device": last_metrics.get("device", "cuda" if use_gpu else "cpu"),
                    "images_per_s": last_metrics["images_per_s"],
                    "no_learning_loss": last_metrics.get("no_learning_loss"),
                    "restarts": last_metrics.get("restarts", 0),
                    "resumed_from_epoch": last_metrics.get("resumed_from_epoch"),
                    "online_knn_random_init": knn["online_knn_random_init"],
                    "online_knn_final": knn["online_knn"][-1] if knn["online_knn"] else None,
                    "online_knn_curve": json.dumps(knn["online_knn"]),  # one value per epoch
                    "online_knn_images": sum(len(online_probe[k]) for k in ("bank_rows", "query_rows"))
                    if online_probe
                    else 0,
                    "online_knn_queries": len(online_probe["query_rows"]) if online_probe else 0,
                }
            ]
        ),
    )
    save_checkpoint(encoder_state, encoder)  # atomic: written whole, then visible
    ray.tune.report({"done": True, "final_loss": float(losses["loss"].iloc[-1]), "encoder": encoder.uri})
