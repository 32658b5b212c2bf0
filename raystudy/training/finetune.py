"""Downstream fine-tuning of one grid cell, as a plain Ray Tune function trainable.

A trial takes its cell (model type, backbone, category set, train size, fold) and
runs four phases, each a function a test can call:

1. :func:`setup_trial`: the idempotency check, the encoder from its initial weights
   (the pretrained encoder, or the baseline's init) plus the 3-layer MLP classifier
   (Sect. 3.4), the resume state, and the embeddings before and after pretraining;
2. :func:`train_trial`: SGD with the warmup-cosine schedule, epoch checkpoints reported
   to Tune (``tune.report(..., checkpoint=...)``) into the run location;
3. :func:`evaluate_trial`: the validation fold and, for the generalization category
   set, the whole unseen campaign;
4. :func:`write_trial`: the Parquet store; the trial row is written last and marks
   the cell done, so a rerun skips it (trials are idempotent).
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray
import torch
import torch.nn.functional as F
from ray import tune

from raystudy.config import StudyConfig
from raystudy.data.prepare import LabeledPool
from raystudy.data.splits import Split, derive_seed
from raystudy.events import log_event
from raystudy.grid import Cell, needs_encoder
from raystudy.metrics import Evaluation, evaluate
from raystudy.models import Classifier, build_encoder, load_encoder_weights
from raystudy.registry import BASELINE
from raystudy.results import has_result, write_table
from raystudy.storage import Location, as_location, cached_sha256, disk_full_error
from raystudy.training.augment import EvalTransform, FinetuneAugment
from raystudy.training.budget import ceiling_budget, cell_budget
from raystudy.training.cell_split import stored_split
from raystudy.training.common import autocast, images_to_device, pick_device, seed_everything
from raystudy.training.probes import encode, tsne_2d
from raystudy.training.schedules import scaled_lr, set_lr, warmup_cosine_lr


@dataclass
class FinetuneContext:
    """Everything a trial needs besides its cell; shared once through the object store."""

    cfg: StudyConfig
    config_hash: str
    run_dir: str
    images_ref: Any  # ObjectRef of the (N, S, S) uint8 array of every image of the study
    pools: dict[str, LabeledPool]
    generalization: LabeledPool | None
    splits: dict[tuple[str, int, int], Split]  # (set, size, fold) -> split
    image_ids: np.ndarray  # (N,) str, row i of ``images``
    runnable_sizes: dict[str, list[int]]  # category set -> sizes that are not skipped
    inject_failure: tuple[str, int, str] | None = None  # (cell_id, epoch, kind): raise once, for fault tests
    pretrain_rows: np.ndarray | None = None  # rows of the unlabeled pretraining pool
    probe_split: dict[str, Any] | None = None  # train/test rows and labels of the encoder probes
    online_probe: dict[str, Any] | None = None  # bank/query rows and labels of pretraining's online kNN
    init_weights: dict[str, Any] = field(default_factory=dict)  # URI -> ObjectRef of a shipped init file
    driver_token: str | None = None  # runfolder.write_driver_token: a trial checks it sees the driver's folder

    def images(self) -> np.ndarray:
        """The (N, S, S) uint8 images: a zero-copy view of the object store (or the array itself)."""
        ref = self.images_ref
        return ref if isinstance(ref, np.ndarray) else ray.get(ref)


log = logging.getLogger("raystudy")

FINAL_METRICS = ("overall_accuracy", "macro_f1", "generalization_accuracy", "train_accuracy", "steps")


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


@torch.no_grad()
def predict(model: torch.nn.Module, images: np.ndarray, rows: np.ndarray, transform, batch: int, device) -> np.ndarray:
    model.eval()
    preds = []
    for i in range(0, len(rows), batch):
        with autocast(device):
            logits = model(transform(images_to_device(images, rows[i : i + batch], device)))
        preds.append(logits.argmax(1).cpu().numpy())
    return np.concatenate(preds) if preds else np.empty(0, dtype=np.int64)


@torch.no_grad()
def recalibrate_batchnorm(
    model: torch.nn.Module, images: np.ndarray, rows: np.ndarray, transform, batch: int, device
) -> None:
    """Re-estimate BatchNorm running statistics on the training images (precise BN).

    A short fine-tuning run leaves running statistics that lag far behind the weights
    (and a pretrained encoder's come from augmented views); evaluating with them can
    fall below chance. One forward pass in train mode with a cumulative average fixes it.
    The average weighs every chunk alike, so the rows are cut into chunks of equal size (at
    most ``batch``, sizes differing by one): a short last chunk (16 of 272 images) would
    otherwise count as much as a full one, and its noisy statistics broke evaluation.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the pass
    model.train()
    for chunk in np.array_split(rows, max(1, math.ceil(len(rows) / batch))):
        if len(chunk) < 2:
            continue
        with autocast(device):
            model(transform(images_to_device(images, chunk, device)))
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum
    model.eval()


def initial_weights(
    cfg: StudyConfig, cell: Cell, encoders: dict[str, str], before_pretraining: bool = False
) -> str | None:
    """The checkpoint a cell's encoder starts from (None: random weights): its pretrained
    encoder, or the baseline's init. With ``before_pretraining`` it is the checkpoint
    pretraining started from (Fig. 8, first row)."""
    if cell.model == BASELINE:
        return cfg.model.baseline_weights()
    if before_pretraining:
        return cfg.model.pretrain_weights(cell.model)
    name = needs_encoder(cell)
    return encoders.get(name) if name is not None else None


def initial_encoder(cfg: StudyConfig, cell: Cell, encoders: dict[str, str], before_pretraining: bool = False):
    """The encoder a cell starts from (see :func:`initial_weights`) and its feature size."""
    m = cfg.model
    encoder, feature_dim = build_encoder(cell.arch or m.arch, m.in_channels)
    init = initial_weights(cfg, cell, encoders, before_pretraining)
    if init:
        load_encoder_weights(encoder, init)
    return encoder, feature_dim


def describe_init(path: str | None) -> str:
    """``random``, or ``<checkpoint path or URI> sha256:<hex>``: the ``init`` column of ``trials``."""
    if not path:
        return "random"
    return f"{path} sha256:{cached_sha256(path)}"


def build_classifier(cfg: StudyConfig, cell: Cell, n_classes: int, encoders: dict[str, str]) -> Classifier:
    encoder, feature_dim = initial_encoder(cfg, cell, encoders)
    return Classifier(encoder, feature_dim, n_classes, hidden_dim=cfg.model.classifier_hidden_dim)


def embedding_sizes(cfg: StudyConfig, runnable_sizes: dict[str, list[int]]) -> tuple[str, list[int]]:
    """The category set and train sizes whose fold-0 embeddings are mapped (Fig. 8)."""
    e = cfg.embeddings
    set_name = e.category_set or next(iter(cfg.grid.sizes))
    sizes = e.sizes or sorted(runnable_sizes.get(set_name, []), reverse=True)[:4]
    return set_name, list(sizes)


def wants_embeddings(cfg: StudyConfig, cell: Cell, runnable_sizes: dict[str, list[int]]) -> bool:
    set_name, sizes = embedding_sizes(cfg, runnable_sizes)
    return (
        cell.fold == 0
        and cell.model in cfg.embeddings.models
        and (cell.arch or cfg.model.arch) == cfg.model.arch
        and cell.category_set == set_name
        and cell.train_size in sizes
    )


def embedding_rows(
    keys: dict[str, Any], stage: str, feats: np.ndarray, image_ids: np.ndarray, categories: np.ndarray, seed: int
) -> pd.DataFrame:
    xy = tsne_2d(feats, seed)
    return pd.DataFrame(
        {"stage": stage, "image_id": image_ids, "category": categories, "x": xy[:, 0], "y": xy[:, 1]}
    ).assign(**keys)


def _long_rows(
    cell: dict[str, Any], split_name: str, ev: Evaluation, train_counts: np.ndarray | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
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


Report = Callable[..., None]  # tune.report: (metrics, checkpoint=None)


def _tune_checkpoint():
    """The checkpoint Tune restores this trial from (a retry inside the sweep), else None."""
    try:
        return tune.get_checkpoint()
    except RuntimeError:  # not inside a Tune trial (phases called on their own)
        return None


class UnreadableCheckpoint(Exception):
    """A checkpoint whose state is missing or cannot be deserialised (its cause is chained)."""


class CellCheckpoint:
    """A cell's end-of-epoch state, reported to Tune at most every ``every_s`` seconds.

    :meth:`save` hands the state to ``report(metrics, checkpoint=...)`` (``tune.report``),
    and Ray persists it into the run location (``RUN_DIR/ray/<sweep>/<trial>/checkpoint_*``,
    a local folder or an object store). Every checkpoint holds, besides its state, an empty
    marker file named after the cell (``raystudy-cell-<cell_id>``): that is how this class
    finds a cell's checkpoints, whatever Tune names the trial folder. :meth:`restore` takes
    Tune's checkpoint of this trial when Tune retries it, else the newest one an earlier
    sweep of the run left for the same cell (the rerun of an interrupted study); each
    checkpoint is tried once. A checkpoint whose state cannot be deserialised (a torn or
    corrupt file, a folder without its state) is set aside (renamed ``*.unreadable``, or on
    a store that cannot rename it, marked unreadable in place; logged, never deleted) and
    the next older one, or a fresh start, is used: a torn file never makes every retry fail.
    A read that fails (a network or NFS error) is raised: Tune retries the trial and the
    checkpoint stays. Small trials finish before the first save and pay nothing.

    Args:
        run_dir: the run location.
        cell_id: the cell.
        every_s: the least seconds between two saves (0: every epoch).
        report: ``tune.report``, or a stand-in outside Tune.
        tune_checkpoint: returns Tune's checkpoint of this trial (``tune.get_checkpoint``).
    """

    STATE = "state.pt"
    MARKER = "raystudy-cell-"  # + cell_id: an empty file in every checkpoint this class saves
    UNREADABLE = "raystudy-unreadable"  # in a checkpoint that could not be renamed when set aside

    def __init__(
        self,
        run_dir: str | Path | Location,
        cell_id: str,
        every_s: float,
        report: Report | None = None,
        tune_checkpoint: Callable[[], Any] = _tune_checkpoint,
    ) -> None:
        self.run, self.cell_id, self.every_s = as_location(run_dir), cell_id, every_s
        self.report, self.tune_checkpoint = report, tune_checkpoint
        self.last = time.time()

    def _folders(self) -> list[Location]:
        """This cell's checkpoint folders in every sweep, set-aside ones left out, newest first.

        The study names each trial folder after its cell (the Tuner's ``trial_dirname_creator``),
        so only ``RUN_DIR/ray/study-*/<cell_id>`` is listed: one listing of the run's sweeps and
        one of each sweep's folder for this cell, not of every trial (which grew with the cells
        squared over a study). A folder counts when it holds this cell's marker, or none at all
        (checkpoints saved before markers existed).
        """
        root = self.run / "ray"
        mine, found = self.MARKER + self.cell_id, []
        for sweep in root.glob("study-*"):
            trial = sweep / self.cell_id
            names: dict[str, set[str]] = {}  # checkpoint folder path -> the names of its files
            folders: dict[str, Location] = {}
            for file in trial.files_below():
                folder = file.parent
                parts = folder.path[len(trial.path) :].strip("/").split("/")  # ..., checkpoint
                if not fnmatch.fnmatch(folder.name, "checkpoint_*") or any(p.endswith(".unreadable") for p in parts):
                    continue
                names.setdefault(folder.path, set()).add(file.name)
                folders[folder.path] = folder
            found += [
                (sweep.name, folder)
                for path, folder in folders.items()
                if self.UNREADABLE not in names[path]
                and (mine in names[path] or not any(n.startswith(self.MARKER) for n in names[path]))
            ]
        return [folder for _, folder in sorted(found, key=lambda f: (f[0], f[1].name), reverse=True)]

    def earlier(self) -> list[Location]:
        """Checkpoint folders of this cell from earlier sweeps of the run (and this one), newest first."""
        return self._folders()

    def candidates(self) -> list[Location]:
        """Tune's checkpoint of this trial first, then :meth:`earlier`; each folder once."""
        out: list[Location] = []
        ck = self.tune_checkpoint()
        if ck is not None:
            out.append(
                as_location(ck.path)
                if ck.filesystem is None or ck.filesystem.type_name == "local"
                else Location(ck.filesystem, ck.path, self.run.scheme, self.run.query)
            )
        for folder in self.earlier():
            if all(folder.path != seen.path for seen in out):
                out.append(folder)
        return out

    def _load(self, folder: Location, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The state of ``folder``, loaded into model and optimizer.

        Raises:
            OSError: the read failed (not a missing file): the checkpoint may be fine.
            UnreadableCheckpoint: the state is missing or cannot be deserialised.
            RuntimeError: a checkpoint of another model (size mismatch): a config error.
        """
        import io
        import pickle
        import zipfile

        try:
            data = (folder / self.STATE).read_bytes()  # I/O errors propagate, but for a missing state
        except FileNotFoundError as err:  # a folder whose upload stopped before its state: torn
            raise UnreadableCheckpoint(f"no {self.STATE}: {err}") from err
        try:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
            model_state, optimizer_state = state["model"], state["optimizer"]
            int(state["epoch"]), int(state["step"]), list(state["losses"]), float(state["seconds"])
        except (pickle.UnpicklingError, EOFError, ValueError, RuntimeError, zipfile.BadZipFile, KeyError) as err:
            # what torch.load raises on a torn file (ValueError, RuntimeError "failed reading zip
            # archive", EOFError), a corrupt one (UnpicklingError) or a state without its keys
            raise UnreadableCheckpoint(f"{type(err).__name__}: {err}") from err
        try:
            model.load_state_dict(model_state)
            optimizer.load_state_dict(optimizer_state)
        except RuntimeError as err:
            if "size mismatch" in str(err):  # a checkpoint of another model: a config error, not a torn file
                raise
            raise UnreadableCheckpoint(f"{type(err).__name__}: {err}") from err
        except (KeyError, ValueError) as err:
            raise UnreadableCheckpoint(f"{type(err).__name__}: {err}") from err
        return state

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> tuple[int, int, list, float]:
        """(next epoch, step, losses so far, seconds spent so far); (0, 0, [], 0.0) for a fresh start.

        An OSError of a read propagates (Tune retries the trial; nothing is set aside).
        """
        for folder in self.candidates():
            try:
                state = self._load(folder, model, optimizer)
            except UnreadableCheckpoint as err:
                self.set_aside(folder, err.__cause__ or err)
                continue
            return int(state["epoch"]) + 1, int(state["step"]), list(state["losses"]), float(state["seconds"])
        return 0, 0, [], 0.0

    def set_aside(self, folder: Location, error: BaseException) -> None:
        """Rename an unreadable checkpoint (kept for inspection) and log it; never delete it.

        Where the folder cannot be renamed (a failed copy on an object store) it stays where
        it is with a marker file that makes :meth:`earlier` pass over it.
        """
        target = folder.parent / f"{folder.name}.unreadable"
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        try:
            folder.move_to(target)  # an object store copies object by object, then deletes the originals
            outcome, where = f"set aside as {target.name}", target.uri
        except OSError as move_error:
            where = folder.uri
            try:
                (folder / self.UNREADABLE).write_text(f"{type(error).__name__}: {reason}\n")
                outcome = f"left in place, marked unreadable (moving it failed: {move_error})"
            except OSError as mark_error:
                outcome = f"left in place (moving it failed: {move_error}; marking it failed: {mark_error})"
        log.warning(
            "%s: checkpoint %s cannot be loaded (%s); %s, the cell restarts without it",
            self.cell_id,
            folder,
            reason,
            outcome,
        )
        log_event(
            self.run,
            self.cell_id,
            "checkpoint_set_aside",
            checkpoint=folder.uri,
            error=type(error).__name__,
            kept_at=where,
        )

    def save(
        self, metrics: dict[str, Any], model, optimizer, epoch: int, step: int, losses: list, seconds: float
    ) -> bool:
        """Report ``metrics``, with the state when ``every_s`` has passed; True when a checkpoint went out."""
        due = time.time() - self.last >= self.every_s
        if self.report is None:
            return False
        if not due:
            self.report(metrics)
            return False
        with tempfile.TemporaryDirectory() as d:  # unique per attempt: two attempts never share a file
            torch.save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "epoch": epoch,
                    "step": step,
                    "losses": losses,
                    "seconds": seconds,
                },
                Path(d) / self.STATE,
            )
            (Path(d) / f"{self.MARKER}{self.cell_id}").touch()  # how earlier() knows it, whatever the trial's name
            self.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        self.last = time.time()
        return True

    def remove(self) -> None:
        """Delete this cell's checkpoints of every sweep, once its result is written (set-aside ones are kept)."""
        for folder in self._folders():
            folder.rmtree()


class CellTrainer:
    """Fine-tunes one cell's classifier epoch by epoch (Sect. 3.4 and 4.1).

    The encoder starts from the model type's initial weights; SGD with momentum and the
    warmup-cosine schedule per step, the learning rate scaled from the global batch; the
    training length is :func:`~raystudy.training.budget.cell_budget` (the same rule for
    every model type). The sample order and the augmentations of an epoch depend only on
    ``key`` (the cell's pair key: set, size, fold) and the epoch, so paired cells of
    different model types see the same batches, and a trial resumed from its checkpoint
    continues exactly where it stopped.
    """

    def __init__(
        self,
        cfg: StudyConfig,
        cell: Cell,
        encoders: dict[str, str],
        images: np.ndarray,
        train_rows: np.ndarray,
        train_labels: np.ndarray,
        n_classes: int,
        device: torch.device,
        key: str,
    ) -> None:
        f, in_ch = cfg.finetune, cfg.model.in_channels
        self.f, self.seed, self.key, self.device = f, cfg.seed, key, device
        self.images, self.train_rows, self.train_labels = images, train_rows, train_labels
        self.model = build_classifier(cfg, cell, n_classes, encoders).to(device)
        if device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        aug = f.augment
        self.train_tf = FinetuneAugment(
            resize=aug.resize,
            crop_size=aug.crop_size,
            crop_scale=(aug.crop_scale[0], aug.crop_scale[1]),
            flip_p=aug.flip_p,
            out_channels=in_ch,
        )
        self.eval_tf = EvalTransform(resize=aug.resize, crop_size=aug.crop_size, out_channels=in_ch)
        self.budget = (
            ceiling_budget(f, cfg.grid, cell.category_set, len(train_rows))
            if cell.ceiling
            else cell_budget(f, len(train_rows))
        )
        self.batch, self.epochs, self.total_steps = self.budget.batch, self.budget.epochs, self.budget.total_steps
        # the ceiling repeats its cosine cycle (``epochs`` long) until it fits, this many times at most
        self.max_cycles = cfg.grid.ceiling_max_cycles if cell.ceiling else 1
        self.stop_reason: str = self.budget.stop_reason
        self.warmup_steps = min(f.warmup_epochs * self.budget.steps_per_epoch, self.total_steps // 2)
        self.target_lr = scaled_lr(f.base_lr, self.batch)  # linear scaling from the global batch
        self.optimizer = torch.optim.SGD(
            self.model.parameters(), lr=self.target_lr, momentum=f.momentum, weight_decay=f.weight_decay
        )
        self.adjustment = (
            f.logit_adjustment_tau * log_prior(train_labels, n_classes).to(device)
            if f.logit_adjustment_tau > 0
            else None
        )
        self.generator = torch.Generator(device=device)
        self.step, self.spent = 0, 0.0
        self.losses: list[dict[str, float]] = []  # one row per step (step, loss, lr)

    def restore(self, checkpoint: CellCheckpoint) -> int:
        """Load the cell's last epoch checkpoint, if any; returns the epoch to start at."""
        start_epoch, self.step, self.losses, self.spent = checkpoint.restore(self.model, self.optimizer)
        return start_epoch

    def save(self, checkpoint: CellCheckpoint, metrics: dict[str, Any], epoch: int, seconds: float) -> bool:
        """Report the epoch's metrics, with the state when a checkpoint is due (True then)."""
        return checkpoint.save(metrics, self.model, self.optimizer, epoch, self.step, self.losses, self.spent + seconds)

    def micro_batches(self, batch: np.ndarray) -> list[np.ndarray]:
        """Split one step's batch into forward passes of at most ``micro_batch`` images, none of one image."""
        k = math.ceil(len(batch) / self.budget.micro_batch)
        while k > 1 and len(batch) // k < 2:  # BatchNorm needs two images per pass
            k -= 1
        return np.array_split(batch, k)

    def step_batches(self, order: np.ndarray) -> list[np.ndarray]:
        """One epoch's order cut into its ``steps_per_epoch`` optimizer steps, none of one image.

        Steps of equal size (at most ``batch`` images, sizes differing by one): a short last
        step (4 of 68 images) would normalise BatchNorm over a handful of images and take a
        full-rate step on them, which left such cells worse than smaller ones. A lone image
        (only in a cell of fewer than two images per step) takes the last image of the step
        before it; where there is none (a cell of one image), it is paired with itself.
        """
        batches = list(np.array_split(order, max(1, math.ceil(len(order) / self.batch))))
        if batches and len(batches[-1]) == 1:
            if len(batches) > 1 and len(batches[-2]) > 2:
                batches[-2], batches[-1] = batches[-2][:-1], np.concatenate([batches[-2][-1:], batches[-1]])
            else:
                batches[-1] = np.concatenate([order[-2:-1] if len(order) > 1 else batches[-1], batches[-1]])
        return batches

    def run_epoch(self, epoch: int) -> float:
        """One epoch of SGD (gradients accumulated over micro-batches); returns its mean loss."""
        self.model.train()
        rng = np.random.default_rng(derive_seed(self.seed, self.key, "order", epoch))
        self.generator.manual_seed(derive_seed(self.seed, self.key, "augment", epoch))
        order = epoch_order(self.train_labels, rng, self.f.balanced_sampling)
        epoch_loss = []
        for b in self.step_batches(order):  # steps_per_epoch steps, each of two images or more
            lr = self.lr_at(self.step)
            set_lr(self.optimizer, lr)
            self.optimizer.zero_grad(set_to_none=True)
            value = 0.0
            for mb in self.micro_batches(b):
                x = self.train_tf(
                    images_to_device(self.images, self.train_rows[mb], self.device), self.generator
                )  # (b,C,crop,crop)
                if self.device.type == "cuda":
                    x = x.contiguous(memory_format=torch.channels_last)
                y = torch.from_numpy(self.train_labels[mb]).to(self.device)
                with autocast(self.device):
                    logits = self.model(x).float()  # (b, n_classes)
                if self.adjustment is not None:  # train on logits + tau log prior; predict with raw logits
                    logits = logits + self.adjustment
                loss = F.cross_entropy(logits, y) * (len(mb) / len(b))  # the batch mean, summed over passes
                loss.backward()
                value += float(loss.detach())
            self.optimizer.step()
            self.losses.append({"epoch": epoch, "step": self.step, "loss": value, "lr": lr})
            epoch_loss.append(value)
            self.step += 1
        return float(np.mean(epoch_loss)) if epoch_loss else float("nan")

    def lr_at(self, step: int) -> float:
        """The learning rate of ``step``: warm-up and cosine over one cycle of ``total_steps``;
        a ceiling's later cycles restart the cosine without the warm-up (SGDR)."""
        cycle, within = divmod(step, self.total_steps)
        return warmup_cosine_lr(within, self.total_steps, self.warmup_steps if cycle == 0 else 0, self.target_lr)

    def cycle_end(self, epoch: int) -> int:
        """The epoch at which the cycle holding ``epoch`` ends (a finished cycle: ``epoch`` itself)."""
        return max(self.epochs, -(-epoch // self.epochs) * self.epochs)

    def another_cycle(self, epochs_done: int) -> bool:
        """After a finished cycle: train one more? Only a ceiling that has not fitted its training
        images (``finetune.fit_accuracy``) and has cycles left; sets ``stop_reason``."""
        if self.max_cycles <= 1:
            return False
        self.prepare_evaluation()
        predicted = predict(self.model, self.images, self.train_rows, self.eval_tf, self.f.eval_batch_size, self.device)
        accuracy = float(np.mean(predicted == self.train_labels))
        self.model.train()
        if accuracy >= self.f.fit_accuracy:
            self.stop_reason = "fitted"
            return False
        if epochs_done >= self.max_cycles * self.epochs:
            self.stop_reason = "max_cycles"
            return False
        return True

    def final_loss(self) -> float:
        """Mean training loss of the last epoch (NaN before the first step)."""
        if not self.losses:
            return float("nan")
        last = self.losses[-1]["epoch"]
        return float(np.mean([r["loss"] for r in self.losses if r["epoch"] == last]))

    def prepare_evaluation(self) -> None:
        """Re-estimate BatchNorm statistics on the training images (if configured); eval mode."""
        if self.f.recalibrate_bn:
            recalibrate_batchnorm(
                self.model, self.images, self.train_rows, self.eval_tf, self.f.eval_batch_size, self.device
            )
        self.model.eval()

    def evaluate(self, rows: np.ndarray, labels: np.ndarray, categories: list[str]) -> Evaluation:
        pred = predict(self.model, self.images, rows, self.eval_tf, self.f.eval_batch_size, self.device)
        return evaluate(labels, pred, categories)


@dataclass
class TrialSetup:
    """A cell ready to train: its data, its trainer (restored from its checkpoint) and the
    embeddings taken before training (Fig. 8)."""

    cell: Cell
    run_dir: Location
    node: str
    images: np.ndarray  # (N, S, S) uint8, every image of the study
    pool: LabeledPool
    split: Split
    trainer: CellTrainer
    checkpoint: CellCheckpoint
    start_epoch: int
    embed: bool  # this cell maps its embeddings (Fig. 8)
    encoders: dict[str, str]  # the encoders it reads (start, selection): run name -> URI
    embedding_rows: np.ndarray  # rows of ``images`` that are mapped
    embeddings: list[tuple[str, np.ndarray]] = field(default_factory=list)  # (stage, (n, D) features)

    @property
    def train_rows(self) -> np.ndarray:
        return self.pool.indices[self.split.train]

    @property
    def train_labels(self) -> np.ndarray:
        return self.pool.labels[self.split.train]

    @property
    def val_rows(self) -> np.ndarray:
        return self.pool.indices[self.split.validation]

    @property
    def val_labels(self) -> np.ndarray:
        return self.pool.labels[self.split.validation]


@dataclass
class TrialEvaluation:
    """What :func:`evaluate_trial` measured, as the rows of the result tables."""

    validation: Evaluation
    per_class: pd.DataFrame
    confusion: pd.DataFrame
    generalization_accuracy: float | None
    generalization_campaign: str | None
    embeddings: pd.DataFrame | None  # None: this cell maps no embeddings
    train_seconds: float
    train_accuracy: float  # OA on the cell's own training images (eval transform): did it learn them?


def setup_trial(
    cell: Cell, context: FinetuneContext, node: str = "", encoders: dict[str, str] | None = None
) -> TrialSetup | None:
    """Phase 1: everything before the first step; None when the cell's result exists.

    ``encoders``: run name -> URI of the encoders the cell reads (the one it starts from,
    the one its selection strategy embeds with; ``Job.refs``, which the scheduler took from
    the pretraining results). None or {} for a random-selection baseline cell.
    """
    run_dir = as_location(context.run_dir)
    if has_result(run_dir, cell.cell_id):
        return None
    cfg, f, cid = context.cfg, context.cfg.finetune, cell.cell_id
    log_event(run_dir, cid, "start", node=node)
    images = context.images()
    torch.set_num_threads(max(1, int(f.cpus_per_trial)))
    device = pick_device(f.gpus_per_trial)
    pool = context.pools[cell.category_set]
    split = context.splits[(cell.category_set, cell.train_size, cell.fold)]
    given = dict(encoders or {})
    missing = [n for n in (needs_encoder(cell),) if n and n not in given]
    if missing:
        raise RuntimeError(f"{cid}: no reference to encoder(s) {missing} (their pretraining did not report one)")
    if cell.selection != "random":  # the same validation fold, training images from the stored selection
        split = stored_split(run_dir, cell, split, pool, context.image_ids)
    seed_everything(derive_seed(cfg.seed, cell.pair_key))  # the same head init for every model of the pair
    checkpoint = CellCheckpoint(run_dir, cid, f.checkpoint_every_s)
    trainer = CellTrainer(
        cfg,
        cell,
        given,
        images,
        pool.indices[split.train],
        pool.labels[split.train],
        len(pool.categories),
        device,
        cell.pair_key,
    )
    start_epoch = trainer.restore(checkpoint)
    if start_epoch:
        log_event(run_dir, cid, "resume", node=node, epoch=start_epoch)
    embed = wants_embeddings(cfg, cell, context.runnable_sizes)
    setup = TrialSetup(
        cell,
        run_dir,
        node,
        images,
        pool,
        split,
        trainer,
        checkpoint,
        start_epoch,
        embed,
        given,
        pool.indices[split.validation][: cfg.embeddings.max_points],
    )
    if embed:
        for stage, before in (("before_pretraining", True), ("after_pretraining", False)):
            net, _ = initial_encoder(cfg, cell, given, before_pretraining=before)
            feats = encode(net.to(device), images, setup.embedding_rows, trainer.eval_tf, f.eval_batch_size, device)
            setup.embeddings.append((stage, feats))
    return setup


def train_trial(
    setup: TrialSetup,
    report: Report,
    inject_failure: tuple[str, int] | tuple[str, int, str] | None = None,
) -> float:
    """Phase 2: the remaining epochs; ``report`` (``tune.report``) gets each epoch's loss and,
    every ``finetune.checkpoint_every_s``, the epoch's state as a checkpoint.

    ``inject_failure`` = (cell_id, epoch[, kind]): raise once after that epoch's checkpoint (fault tests);
    kind ``disk_full`` raises the :class:`~raystudy.storage.DiskFull` a write to a full disk raises.
    Returns the training seconds, including those before a resume.
    """
    trainer, checkpoint, cid = setup.trainer, setup.checkpoint, setup.cell.cell_id
    checkpoint.report = report
    log_event(setup.run_dir, cid, "first_step", node=setup.node)
    t0 = time.time()
    start, end = setup.start_epoch, trainer.cycle_end(setup.start_epoch)
    while True:  # one cosine cycle; a ceiling that has not fitted its images trains another
        for epoch in range(start, end):
            epoch_loss = trainer.run_epoch(epoch)
            saved = trainer.save(checkpoint, {"epoch": epoch, "loss": epoch_loss}, epoch, time.time() - t0)
            if inject_failure is not None and tuple(inject_failure[:2]) == (cid, epoch) and saved:
                marker = setup.run_dir / "logs" / f"injected-{cid}"
                if not marker.exists():
                    marker.write_text("")
                    if inject_failure[2:] == ("disk_full",):
                        raise disk_full_error(marker.uri, OSError(errno.ENOSPC, "No space left on device"))
                    raise RuntimeError(f"injected failure in {cid} after epoch {epoch}")
        start = end
        if not trainer.another_cycle(end):
            break
        end += trainer.epochs
    log_event(
        setup.run_dir,
        cid,
        "last_step",
        node=setup.node,
        images=len(setup.train_rows) * (end - setup.start_epoch),
        seconds=time.time() - t0,
    )
    return trainer.spent + time.time() - t0


def evaluate_trial(setup: TrialSetup, context: FinetuneContext, train_seconds: float) -> TrialEvaluation:
    """Phase 3: validation fold, unseen campaign (generalization set) and the last embeddings."""
    cfg, trainer, cell, pool = context.cfg, setup.trainer, setup.cell, setup.pool
    keys = cell.keys()
    n_classes = len(pool.categories)
    trainer.prepare_evaluation()
    train_counts = np.bincount(setup.train_labels, minlength=n_classes)
    val_ev = trainer.evaluate(setup.val_rows, setup.val_labels, pool.categories)
    train_acc = trainer.evaluate(setup.train_rows, setup.train_labels, pool.categories).overall_accuracy
    per_class, confusion = _long_rows(keys, "validation", val_ev, train_counts)
    gen_acc, gen_campaign = None, None
    gen = context.generalization
    if gen is not None and cell.category_set == cfg.data.generalization_category_set:
        gen_ev = trainer.evaluate(gen.indices, gen.labels, gen.categories)
        gen_acc, gen_campaign = gen_ev.overall_accuracy, cfg.data.generalization_campaign
        pc, cm = _long_rows(keys, "generalization", gen_ev, train_counts)
        per_class, confusion = pd.concat([per_class, pc]), pd.concat([confusion, cm])
    embeddings = None
    if setup.embed:
        rows = setup.embedding_rows
        feats = encode(
            trainer.model.encoder, setup.images, rows, trainer.eval_tf, cfg.finetune.eval_batch_size, trainer.device
        )
        cats = np.array(pool.categories)[setup.val_labels[: len(rows)]]
        embeddings = pd.concat(
            [
                embedding_rows(keys, stage, x, context.image_ids[rows], cats, cfg.seed)
                for stage, x in setup.embeddings + [("after_finetuning", feats)]
            ],
            ignore_index=True,
        )
    return TrialEvaluation(val_ev, per_class, confusion, gen_acc, gen_campaign, embeddings, train_seconds, train_acc)


def write_trial(setup: TrialSetup, ev: TrialEvaluation, context: FinetuneContext) -> dict[str, Any]:
    """Phase 4: the cell's tables, the trial row last (it marks the cell done); returns the row."""
    cfg, cell, trainer, run_dir = context.cfg, setup.cell, setup.trainer, setup.run_dir
    cid = cell.cell_id
    if ev.embeddings is not None:
        write_table(run_dir, "embeddings", cid, ev.embeddings)
    write_table(run_dir, "per_class", cid, ev.per_class)
    write_table(run_dir, "confusion", cid, ev.confusion)
    write_table(
        run_dir,
        "losses",
        cid,
        pd.DataFrame(trainer.losses, columns=["epoch", "step", "loss", "lr"]).assign(
            run=cid,
            stage="finetune",
            model=cell.model,
            category_set=cell.category_set,
            train_size=cell.train_size,
            fold=cell.fold,
        ),
    )
    row = {
        "study": cfg.name,
        **cell.keys(),
        "seed": cfg.seed,
        "protocol": "ceiling" if cell.ceiling else cfg.grid.protocol,
        "status": "done",
        "message": "; ".join(setup.split.notes) or None,
        "overall_accuracy": ev.validation.overall_accuracy,
        "macro_f1": ev.validation.macro_f1,
        "generalization_accuracy": ev.generalization_accuracy,
        "generalization_campaign": ev.generalization_campaign,
        "n_train": len(setup.train_rows),
        "n_validation": len(setup.val_rows),
        "epochs": trainer.step // trainer.budget.steps_per_epoch,
        "steps": trainer.step,
        "batch_size": trainer.batch,
        "stop_reason": trainer.stop_reason,
        "train_loss": trainer.final_loss(),
        "train_accuracy": ev.train_accuracy,
        "fitted": bool(ev.train_accuracy >= cfg.finetune.fit_accuracy),
        "init": describe_init(initial_weights(cfg, cell, setup.encoders)),
        "train_seconds": ev.train_seconds,
        "device": str(trainer.device),
        "node": setup.node,
        "config_hash": context.config_hash,
        "finished_at": time.time(),
    }
    write_table(run_dir, "trials", cid, pd.DataFrame([row]))
    setup.checkpoint.remove()
    log_event(run_dir, cid, "finish", node=setup.node)
    return row


def finetune_trial(cell: Cell, context: FinetuneContext, encoders: dict[str, str] | None = None) -> None:
    """Fine-tune and evaluate one cell; a no-op when its result already exists.

    ``encoders``: run name -> URI of the encoders it reads (``Job.refs``).
    """
    setup = setup_trial(cell, context, node=ray.get_runtime_context().get_node_id(), encoders=encoders)
    if setup is None:
        tune.report({"done": 1, "reused": 1})
        return
    seconds = train_trial(setup, tune.report, context.inject_failure)
    evaluation = evaluate_trial(setup, context, seconds)
    row = write_trial(setup, evaluation, context)
    # the final numbers, for Tune's logger callbacks too (W&B, Aim: tracking)
    tune.report({"done": 1, **{k: row[k] for k in FINAL_METRICS if row[k] is not None}})
