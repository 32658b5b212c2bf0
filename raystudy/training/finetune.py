"""Downstream fine-tuning of one grid cell, as a plain Ray Tune function trainable.

A trial takes its cell (model type, category set, train size, fold), builds the
encoder from its initial weights (the pretrained MoCo / BYOL encoder, or the
baseline's init), adds the 3-layer MLP classifier (Sect. 3.4), trains it with SGD
and the warmup-cosine schedule, evaluates it on the validation fold and, for the
generalization category set, on the whole unseen campaign. Results are written
to the Parquet store; the trial row is written last and marks the cell done, so a
rerun skips it (trials are idempotent).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
import torch.nn.functional as F

from raystudy.data.prepare import LabeledPool
from raystudy.data.splits import Split, derive_seed
from raystudy.metrics import Evaluation, evaluate
from raystudy.models import Classifier, build_encoder, load_encoder_weights
from raystudy.results import has_result, write_table
from raystudy.training.augment import EvalTransform, FinetuneAugment
from raystudy.training.common import pick_device, seed_everything
from raystudy.training.probes import autocast, encode, tsne_2d
from raystudy.training.schedules import scaled_lr, set_lr, warmup_cosine_lr


@dataclass
class FinetuneContext:
    """Everything a trial needs besides its cell; shared once through the object store."""

    cfg: dict[str, Any]
    config_hash: str
    run_dir: str
    images_ref: Any  # ObjectRef of the (N, S, S) uint8 array of every image of the study
    pools: dict[str, LabeledPool]
    generalization: LabeledPool | None
    splits: dict[tuple[str, int, int], Split]  # (set, size, fold) -> split
    encoders: dict[str, str]  # model -> encoder checkpoint
    image_ids: np.ndarray  # (N,) str, row i of ``images``
    runnable_sizes: dict[str, list[int]]  # category set -> sizes that are not skipped
    inject_failure: tuple[str, int] | None = None  # (cell_id, epoch): raise once, for fault tests
    pretrain_rows: np.ndarray | None = None  # rows of the unlabeled pretraining pool
    probe_split: dict[str, np.ndarray] | None = None  # train/test rows and labels of the encoder probes


def log_event(run_dir: Path, cell_id: str, event: str, **fields: Any) -> None:
    """Append one line to RUN_DIR/logs/trials.jsonl: the audit log of trial executions."""
    path = run_dir / "logs" / "trials.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": time.time(), "cell_id": cell_id, "event": event, "pid": os.getpid(), **fields})
    with open(path, "a") as fh:  # O_APPEND: concurrent short writes do not interleave
        fh.write(line + "\n")


def epoch_order(labels: np.ndarray, rng: np.random.Generator, balanced: bool) -> np.ndarray:
    """One epoch's sample order: a permutation, or (balanced) draws with p ~ 1 / class count."""
    n = len(labels)
    if not balanced:
        return rng.permutation(n)
    counts = np.bincount(labels)
    p = 1.0 / counts[labels]
    return rng.choice(n, size=n, replace=True, p=p / p.sum())


def log_prior(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """log of the training class shares (unseen classes get a tiny share), for logit adjustment."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64) + 1e-3
    return torch.from_numpy(np.log(counts / counts.sum())).float()


def _to_device(images: np.ndarray, rows: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(images[rows]).unsqueeze(1).to(device, non_blocking=True)


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, rows: np.ndarray, transform, batch: int, device) -> np.ndarray:
    model.eval()
    preds = []
    for i in range(0, len(rows), batch):
        with autocast(device):
            logits = model(transform(_to_device(images, rows[i : i + batch], device)))
        preds.append(logits.argmax(1).cpu().numpy())
    return np.concatenate(preds) if preds else np.empty(0, dtype=np.int64)


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, images: np.ndarray, rows: np.ndarray, transform, batch: int, device) -> None:
    """Re-estimate BatchNorm running statistics on the training images (precise BN).

    A short fine-tuning run leaves running statistics that lag far behind the weights
    (and a pretrained encoder's come from augmented views); evaluating with them can
    fall below chance. One forward pass in train mode with a cumulative average fixes it.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the pass
    model.train()
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        if len(chunk) < 2:
            continue
        with autocast(device):
            model(transform(_to_device(images, chunk, device)))
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.eval()


def initial_encoder(cfg: dict[str, Any], model_type: str, encoders: dict[str, str], before_pretraining: bool = False):
    """The encoder a cell starts from: the pretrained one (moco / byol) or the baseline's init.

    With ``before_pretraining`` it is the encoder pretraining started from (Fig. 8, first row).
    """
    m = cfg["model"]
    encoder, feature_dim = build_encoder(m["arch"], m["in_channels"])
    if model_type == "baseline":
        init = m.get("baseline_init")
    elif before_pretraining:
        init = m["pretrain_init"].get(model_type)
    else:
        init = encoders.get(model_type)
    if init:
        load_encoder_weights(encoder, init)
    return encoder, feature_dim


def build_classifier(cfg: dict[str, Any], model_type: str, n_classes: int, encoders: dict[str, str]) -> Classifier:
    encoder, feature_dim = initial_encoder(cfg, model_type, encoders)
    return Classifier(encoder, feature_dim, n_classes, hidden_dim=cfg["model"]["classifier_hidden_dim"])


def embedding_sizes(cfg: dict[str, Any], runnable_sizes: dict[str, list[int]]) -> tuple[str, list[int]]:
    """The category set and train sizes whose fold-0 embeddings are mapped (Fig. 8)."""
    e = cfg["embeddings"]
    set_name = e["category_set"] or next(iter(cfg["grid"]["sizes"]))
    sizes = e["sizes"] or sorted(runnable_sizes.get(set_name, []), reverse=True)[:4]
    return set_name, list(sizes)


def wants_embeddings(cfg: dict[str, Any], cell: dict[str, Any], runnable_sizes: dict[str, list[int]]) -> bool:
    set_name, sizes = embedding_sizes(cfg, runnable_sizes)
    return (
        cell["fold"] == 0
        and cell["model"] in cfg["embeddings"]["models"]
        and cell["category_set"] == set_name
        and cell["train_size"] in sizes
    )


def embedding_rows(
    keys: dict[str, Any], stage: str, feats: np.ndarray, image_ids: np.ndarray, categories: np.ndarray, seed: int
) -> pd.DataFrame:
    xy = tsne_2d(feats, seed)
    return pd.DataFrame(
        {"stage": stage, "image_id": image_ids, "category": categories, "x": xy[:, 0], "y": xy[:, 1]}
    ).assign(**keys)


def _long_rows(cell: dict[str, Any], split_name: str, ev: Evaluation, train_counts: np.ndarray | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    per_class = ev.per_class.assign(
        split=split_name,
        train_count=train_counts if train_counts is not None else 0,
        **cell,
    )
    cats = list(ev.per_class["category"])
    n = len(cats)
    confusion = pd.DataFrame(
        {
            "true_category": np.repeat(cats, n),
            "predicted_category": np.tile(cats, n),
            "count": ev.confusion.reshape(-1),
        }
    ).assign(split=split_name, **cell)
    return per_class, confusion


class EpochCheckpoint:
    """A trial's own end-of-epoch checkpoint in the run folder, written at most every ``every_s``.

    Small trials finish before the first save and pay nothing; a long trial that is
    interrupted (Ctrl-C, a crash, a lost node) resumes from its last saved epoch.
    """

    def __init__(self, path: Path, every_s: float) -> None:
        self.path, self.every_s, self.last = path, every_s, time.time()

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, int, list, float]:
        """(next epoch, step, losses so far, seconds spent so far)."""
        if not self.path.is_file():
            return 0, 0, [], 0.0
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        return int(state["epoch"]) + 1, int(state["step"]), list(state["losses"]), float(state["seconds"])

    def maybe_save(self, model, optimizer, epoch: int, step: int, losses: list, seconds: float) -> None:
        if time.time() - self.last < self.every_s:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                 "step": step, "losses": losses, "seconds": seconds}
        torch.save(state, tmp)
        tmp.replace(self.path)
        self.last = time.time()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class CellTrainer:
    """Fine-tunes one cell's classifier epoch by epoch (Sect. 3.4 and 4.1).

    The encoder starts from the model type's initial weights; SGD with momentum and the
    warmup-cosine schedule per step; the sample order and the augmentations of an epoch
    depend only on the cell and the epoch, so a trial resumed from its checkpoint
    continues exactly where it stopped. Small train sizes run at least ``min_steps``.
    """

    def __init__(self, cfg, model_type: str, encoders: dict[str, str], images: np.ndarray,
                 train_rows: np.ndarray, train_labels: np.ndarray, n_classes: int,
                 device: torch.device, key: str) -> None:
        f, in_ch = cfg["finetune"], cfg["model"]["in_channels"]
        self.f, self.seed, self.key, self.device = f, cfg["seed"], key, device
        self.images, self.train_rows, self.train_labels = images, train_rows, train_labels
        self.model = build_classifier(cfg, model_type, n_classes, encoders).to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        aug = f["augment"]
        self.train_tf = FinetuneAugment(resize=aug["resize"], crop_size=aug["crop_size"],
                                        crop_scale=tuple(aug["crop_scale"]), flip_p=aug["flip_p"], out_channels=in_ch)
        self.eval_tf = EvalTransform(resize=aug["resize"], crop_size=aug["crop_size"], out_channels=in_ch)
        self.batch = min(f["batch_size"], len(train_rows))
        steps_per_epoch = math.ceil(len(train_rows) / self.batch)
        self.epochs = max(f["epochs"], math.ceil(f["min_steps"] / steps_per_epoch))
        self.total_steps = self.epochs * steps_per_epoch
        self.warmup_steps = min(f["warmup_epochs"] * steps_per_epoch, self.total_steps // 2)
        self.target_lr = scaled_lr(f["base_lr"], self.batch)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=self.target_lr,
                                         momentum=f["momentum"], weight_decay=f["weight_decay"])
        self.adjustment = (
            f["logit_adjustment_tau"] * log_prior(train_labels, n_classes).to(device)
            if f["logit_adjustment_tau"] > 0 else None
        )
        self.generator = torch.Generator(device=device)
        self.step, self.losses, self.spent = 0, [], 0.0

    def restore(self, checkpoint: EpochCheckpoint) -> int:
        """Load the cell's last epoch checkpoint, if any; returns the epoch to start at."""
        start_epoch, self.step, self.losses, self.spent = checkpoint.restore(self.model, self.optimizer)
        return start_epoch

    def save(self, checkpoint: EpochCheckpoint, epoch: int, seconds: float) -> None:
        checkpoint.maybe_save(self.model, self.optimizer, epoch, self.step, self.losses, self.spent + seconds)

    def run_epoch(self, epoch: int) -> float:
        """One epoch of SGD; returns its mean loss."""
        self.model.train()
        rng = np.random.default_rng(derive_seed(self.seed, self.key, "order", epoch))
        self.generator.manual_seed(derive_seed(self.seed, self.key, "augment", epoch))
        order = epoch_order(self.train_labels, rng, self.f["balanced_sampling"])
        epoch_loss = []
        for i in range(0, len(order), self.batch):
            b = order[i : i + self.batch]
            if len(b) < 2:  # BatchNorm needs two samples
                continue
            lr = warmup_cosine_lr(self.step, self.total_steps, self.warmup_steps, self.target_lr)
            set_lr(self.optimizer, lr)
            x = self.train_tf(_to_device(self.images, self.train_rows[b], self.device), self.generator)  # (B,C,crop,crop)
            if self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = torch.from_numpy(self.train_labels[b]).to(self.device)
            with autocast(self.device):
                logits = self.model(x).float()  # (B, n_classes)
            if self.adjustment is not None:  # train on logits + tau log prior; predict with raw logits
                logits = logits + self.adjustment
            loss = F.cross_entropy(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            value = float(loss.detach())
            self.losses.append({"epoch": epoch, "step": self.step, "loss": value, "lr": lr})
            epoch_loss.append(value)
            self.step += 1
        return float(np.mean(epoch_loss)) if epoch_loss else float("nan")

    def prepare_evaluation(self) -> None:
        """Re-estimate BatchNorm statistics on the training images (if configured); eval mode."""
        if self.f["recalibrate_bn"]:
            recalibrate_batchnorm(self.model, self.images, self.train_rows, self.eval_tf, self.f["eval_batch_size"], self.device)
        self.model.eval()

    def evaluate(self, rows: np.ndarray, labels: np.ndarray, categories: list[str]) -> Evaluation:
        pred = predict(self.model, self.images, rows, self.eval_tf, self.f["eval_batch_size"], self.device)
        return evaluate(labels, pred, categories)


def finetune_trial(config: dict[str, Any], context: FinetuneContext) -> None:
    """Fine-tune and evaluate one cell; a no-op when its result already exists."""
    from ray import tune

    cell = config["cell"]
    run_dir = Path(context.run_dir)
    if has_result(run_dir, cell["cell_id"]):
        tune.report({"done": 1, "reused": 1})
        return
    node = ray.get_runtime_context().get_node_id()
    log_event(run_dir, cell["cell_id"], "start", node=node)
    cfg, f = context.cfg, context.cfg["finetune"]
    images: np.ndarray = ray.get(context.images_ref)  # zero-copy view of the object store
    torch.set_num_threads(max(1, int(f["cpus_per_trial"])))
    seed_everything(derive_seed(cfg["seed"], cell["cell_id"]))
    device = pick_device(f["gpus_per_trial"])
    pool = context.pools[cell["category_set"]]
    split = context.splits[(cell["category_set"], cell["train_size"], cell["fold"])]
    train_rows, train_labels = pool.indices[split.train], pool.labels[split.train]
    val_rows, val_labels = pool.indices[split.validation], pool.labels[split.validation]
    n_classes = len(pool.categories)

    keys = {k: cell[k] for k in ("cell_id", "model", "category_set", "n_categories", "train_size", "fold")}
    cid = cell["cell_id"]
    checkpoint = EpochCheckpoint(run_dir / "checkpoints" / f"{cid}.pt", f["checkpoint_every_s"])
    trainer = CellTrainer(cfg, cell["model"], context.encoders, images, train_rows, train_labels, n_classes, device, cid)
    start_epoch = trainer.restore(checkpoint)
    if start_epoch:
        log_event(run_dir, cid, "resume", node=node, epoch=start_epoch)

    embed = wants_embeddings(cfg, cell, context.runnable_sizes)
    emb_rows = val_rows[: cfg["embeddings"]["max_points"]]
    embeddings = []
    if embed:
        for stage, before in (("before_pretraining", True), ("after_pretraining", False)):
            encoder, _ = initial_encoder(cfg, cell["model"], context.encoders, before_pretraining=before)
            feats = encode(encoder.to(device), images, emb_rows, trainer.eval_tf, f["eval_batch_size"], device)
            embeddings.append((stage, feats))

    log_event(run_dir, cid, "first_step", node=node)
    t0 = time.time()
    for epoch in range(start_epoch, trainer.epochs):
        epoch_loss = trainer.run_epoch(epoch)
        trainer.save(checkpoint, epoch, time.time() - t0)
        if context.inject_failure == (cid, epoch) and checkpoint.path.is_file():
            marker = checkpoint.path.with_suffix(".injected")
            if not marker.exists():
                marker.touch()
                raise RuntimeError(f"injected failure in {cid} after epoch {epoch}")
        tune.report({"epoch": epoch, "loss": epoch_loss})
    train_seconds = trainer.spent + time.time() - t0
    log_event(run_dir, cid, "last_step", node=node, images=len(train_rows) * (trainer.epochs - start_epoch), seconds=time.time() - t0)
    trainer.prepare_evaluation()
    train_counts = np.bincount(train_labels, minlength=n_classes)
    val_ev = trainer.evaluate(val_rows, val_labels, pool.categories)
    per_class, confusion = _long_rows(keys, "validation", val_ev, train_counts)
    gen_acc, gen_campaign = None, None
    gen = context.generalization
    if gen is not None and cell["category_set"] == cfg["data"]["generalization_category_set"]:
        gen_ev = trainer.evaluate(gen.indices, gen.labels, gen.categories)
        gen_acc, gen_campaign = gen_ev.overall_accuracy, cfg["data"]["generalization_campaign"]
        pc, cm = _long_rows(keys, "generalization", gen_ev, train_counts)
        per_class, confusion = pd.concat([per_class, pc]), pd.concat([confusion, cm])

    if embed:
        feats = encode(trainer.model.encoder, images, emb_rows, trainer.eval_tf, f["eval_batch_size"], device)
        embeddings.append(("after_finetuning", feats))
        cats = np.array(pool.categories)[pool.labels[split.validation][: len(emb_rows)]]
        frames = [
            embedding_rows(keys, stage, feats, context.image_ids[emb_rows], cats, cfg["seed"])
            for stage, feats in embeddings
        ]
        write_table(run_dir, "embeddings", cid, pd.concat(frames, ignore_index=True))
    write_table(run_dir, "per_class", cid, per_class)
    write_table(run_dir, "confusion", cid, confusion)
    write_table(
        run_dir,
        "losses",
        cid,
        pd.DataFrame(trainer.losses, columns=["epoch", "step", "loss", "lr"]).assign(
            run=cid, stage="finetune", model=cell["model"], category_set=cell["category_set"],
            train_size=cell["train_size"], fold=cell["fold"],
        ),
    )
    row = {
        "study": cfg["name"],
        **keys,
        "seed": cfg["seed"],
        "protocol": cfg["grid"]["protocol"],
        "status": "done",
        "message": "; ".join(split.notes) or None,
        "overall_accuracy": val_ev.overall_accuracy,
        "macro_f1": val_ev.macro_f1,
        "generalization_accuracy": gen_acc,
        "generalization_campaign": gen_campaign,
        "n_train": len(train_rows),
        "n_validation": len(val_rows),
        "epochs": trainer.epochs,
        "train_seconds": train_seconds,
        "device": str(device),
        "node": node,
        "config_hash": context.config_hash,
        "finished_at": time.time(),
    }
    write_table(run_dir, "trials", cid, pd.DataFrame([row]))
    checkpoint.remove()
    log_event(run_dir, cid, "finish", node=node)
    tune.report({"done": 1, "overall_accuracy": val_ev.overall_accuracy})
