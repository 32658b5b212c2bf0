"""Issue 11's method rules: the stopping rule, the global batch with accumulation, seeds paired
across model types, the supervised-ceiling cells, the recorded initialisation, and pretraining
batches kept in their shuffled order."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from raystudy.config import load_config
from raystudy.grid import Cell, plan_grid
from raystudy.training import finetune, pretrain
from raystudy.training.budget import ceiling_budget, cell_budget, step_budget
from raystudy.training.finetune import CellTrainer, describe_init

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the stopping rule ---------------------------------------------------------------------------
def test_step_budget_by_hand():
    # 43 images, batch 32: 2 steps per epoch; 30 epochs = 60 steps < 200 -> 100 epochs
    b = step_budget(43, epochs=30, batch_size=32, min_steps=200)
    assert (b.batch, b.steps_per_epoch, b.epochs, b.total_steps, b.stop_reason) == (32, 2, 100, 200, "min_steps")
    # 683 images: 22 steps per epoch x 30 epochs = 660 >= 200: the epochs decide
    b = step_budget(683, epochs=30, batch_size=32, min_steps=200)
    assert (b.steps_per_epoch, b.epochs, b.total_steps, b.stop_reason) == (22, 30, 660, "epochs")
    # a cap of 500 steps: 500 // 22 = 22 epochs
    b = step_budget(683, epochs=30, batch_size=32, min_steps=200, max_steps=500)
    assert (b.epochs, b.total_steps, b.stop_reason) == (22, 484, "max_steps")
    # fewer images than the batch: one step per epoch with all of them
    b = step_budget(20, epochs=3, batch_size=256, micro_batch_size=64)
    assert (b.batch, b.micro_batch, b.steps_per_epoch, b.epochs) == (20, 20, 1, 3)
    b = step_budget(1000, epochs=1, batch_size=256, micro_batch_size=64)
    assert (b.batch, b.micro_batch, b.steps_per_epoch) == (256, 64, 4)


def test_same_rule_for_every_model_type():
    cfg = load_config(preset="demo")
    for n in (43, 171, 683):
        budgets = {m: cell_budget(cfg.finetune, n) for m in cfg.grid.models}
        assert len(set(budgets.values())) == 1


# -- a tiny study on random images, no Ray ---------------------------------------------------------
def tiny(*overrides: str):
    cfg = load_config(
        preset="smoke",
        overrides=[
            "model.arch=resnet18_w16",
            "model.classifier_hidden_dim=16",
            "finetune.epochs=2",
            "finetune.batch_size=8",
            "finetune.augment={resize: 24, crop_size: 16}",
            "finetune.eval_batch_size=16",
            *overrides,
        ],
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(40, 24, 24), dtype=np.uint8)  # (N, S, S)
    labels = np.arange(40) % 4
    return cfg, images, labels


def record_batches(monkeypatch) -> list[np.ndarray]:
    seen: list[np.ndarray] = []
    real = finetune.images_to_device

    def spy(images, rows, device):
        seen.append(np.array(rows))
        return real(images, rows, device)

    monkeypatch.setattr(finetune, "images_to_device", spy)
    return seen


def test_gradient_accumulation_splits_the_global_batch(monkeypatch):
    cfg, images, labels = tiny("finetune.micro_batch_size=3")
    cell = Cell("baseline", "4cat", 4, 30, 0, "resnet18_w16", "resnet18_w16")
    rows = np.arange(20)
    trainer = CellTrainer(cfg, cell, {}, images, rows, labels[rows], 4, torch.device("cpu"), cell.pair_key)
    seen = record_batches(monkeypatch)
    trainer.run_epoch(0)
    # 20 images, batch 8: steps of 7, 7 and 6 images; passes of at most 3, none of one image
    assert trainer.step == 3
    assert [len(r) for r in seen] == [3, 2, 2, 3, 2, 2, 3, 3]
    assert sorted(np.concatenate(seen)) == list(range(20))
    assert all(len(mb) >= 2 for mb in trainer.micro_batches(np.arange(5)))


def test_paired_cells_see_the_same_batches_and_augmentations(monkeypatch):
    """Data order and augmentation draws come from (set, size, fold), not from the model type."""
    cfg, images, labels = tiny()
    rows = np.arange(24)
    draws = {}
    for model in ("baseline", "moco"):
        cell = Cell(model, "4cat", 4, 36, 1, "resnet18_w16", "resnet18_w16")
        trainer = CellTrainer(cfg, cell, {}, images, rows, labels[rows], 4, torch.device("cpu"), cell.pair_key)
        seen = record_batches(monkeypatch)
        views = []
        real_tf = trainer.train_tf
        trainer.train_tf = lambda x, g, tf=real_tf, out=views: out.append(tf(x, g)) or out[-1]
        trainer.run_epoch(0)
        draws[model] = (np.concatenate(seen), torch.cat(views))
    assert Cell("baseline", "4cat", 4, 36, 1).pair_key == Cell("moco", "4cat", 4, 36, 1).pair_key
    assert np.array_equal(draws["baseline"][0], draws["moco"][0])
    assert torch.equal(draws["baseline"][1], draws["moco"][1])
    other = Cell("moco", "4cat", 4, 36, 2)  # another fold: other dice
    assert other.pair_key != Cell("moco", "4cat", 4, 36, 1).pair_key


# -- ceiling cells --------------------------------------------------------------------------------
def test_ceiling_cells_train_on_the_whole_pool_for_longer():
    cfg = load_config(preset="smoke", overrides=["grid.ceiling_epochs=7"])
    labels = {"19cat": np.arange(480) % 19, "4cat": np.arange(200) % 4}
    planned = plan_grid(cfg, labels)
    ceilings = [p for p in planned if p.cell.ceiling]
    assert [(p.cell.category_set, p.cell.train_size, p.cell.model) for p in ceilings] == [
        ("19cat", 480, "baseline"),
        ("4cat", 200, "baseline"),
    ]
    assert ceilings[0].cell.cell_id == "baseline-19cat-ceiling"
    split = ceilings[1].split
    assert len(split.train) + len(split.validation) == 200 and len(split.validation) == 100  # fold 0 of 2
    budget = ceiling_budget(cfg.finetune, cfg.grid, "4cat", len(split.train))
    longest = max(cell_budget(cfg.finetune, n).total_steps for n in cfg.grid.sizes["4cat"] if n <= len(split.train))
    assert budget.epochs >= 7 and budget.total_steps >= longest  # never shorter than a point of its curve
    assert not any(p.cell.ceiling for p in plan_grid(load_config(preset="smoke"), labels))
    # holdout: the whole training pool of fold 0, validated on the fold every fold-0 cell uses
    holdout = plan_grid(
        load_config(
            preset="smoke", overrides=["grid.ceiling_epochs=7", "grid.protocol=holdout", "grid.sizes={4cat: [40]}"]
        ),
        labels,
    )
    ceiling = next(p for p in holdout if p.cell.ceiling)
    cell = next(p for p in holdout if p.cell.fold == 0 and not p.cell.ceiling)
    assert np.array_equal(ceiling.split.validation, cell.split.validation)
    assert ceiling.cell.train_size == len(ceiling.split.train) == 200 - len(cell.split.validation)
    assert not set(ceiling.split.train) & set(ceiling.split.validation)


def ceiling_trainer(*overrides: str) -> CellTrainer:
    cfg, images, labels = tiny("grid.ceiling_epochs=2", "grid.sizes={4cat: [8]}", "finetune.min_steps=0", *overrides)
    cell = Cell("baseline", "4cat", 4, 40, 0, "resnet18_w16", "resnet18_w16", ceiling=True)
    rows = np.arange(40)
    return CellTrainer(cfg, cell, {}, images, rows, labels[rows], 4, torch.device("cpu"), cell.pair_key)


def test_the_ceiling_restarts_its_cosine_until_it_fits(monkeypatch):
    """A cycle is ``ceiling_epochs`` long (5 steps per epoch here); a ceiling below
    ``finetune.fit_accuracy`` at a cycle's end trains another, warm-restarted without warm-up;
    one that fits, or has used ``grid.ceiling_max_cycles``, stops and says why."""
    trainer = ceiling_trainer("grid.ceiling_max_cycles=3", "finetune.warmup_epochs=1")
    assert (trainer.epochs, trainer.total_steps, trainer.warmup_steps) == (2, 10, 5)
    assert trainer.lr_at(0) < trainer.lr_at(5) == pytest.approx(trainer.target_lr)  # warm-up, first cycle only
    assert trainer.lr_at(10) == pytest.approx(trainer.target_lr) and trainer.lr_at(15) < trainer.target_lr
    assert [trainer.cycle_end(e) for e in (0, 1, 2, 3, 4, 5)] == [2, 2, 2, 4, 4, 6]
    accuracy = iter([0.5, 0.99])  # predicted == labels for this share of the images
    labels = trainer.train_labels

    def predict(model, images, rows, transform, batch, device):
        k = int(round(next(accuracy) * len(rows)))
        return np.concatenate([labels[:k], (labels[k:] + 1) % 4])

    monkeypatch.setattr(finetune, "predict", predict)
    assert trainer.another_cycle(2) is True  # 0.5 < 0.98: once more
    assert trainer.another_cycle(4) is False and trainer.stop_reason == "fitted"
    capped = ceiling_trainer("grid.ceiling_max_cycles=2")
    monkeypatch.setattr(finetune, "predict", lambda *a: (capped.train_labels + 1) % 4)  # never fits
    assert capped.another_cycle(2) is True
    assert capped.another_cycle(4) is False and capped.stop_reason == "max_cycles"
    cell = ceiling_trainer("grid.ceiling_max_cycles=1")
    assert cell.another_cycle(2) is False and cell.stop_reason == "epochs"  # one cycle: no fit check


def test_a_ceiling_cycle_is_never_shorter_than_the_longest_cell():
    cfg = load_config(preset="demo")
    for cset, sizes in cfg.grid.sizes.items():
        pool = 2 * max(sizes)
        longest = max(cell_budget(cfg.finetune, n).total_steps for n in sizes)
        b = ceiling_budget(cfg.finetune, cfg.grid, cset, pool)
        assert b.total_steps >= longest and b.epochs >= cfg.grid.ceiling_epochs, cset


# -- initialisation ---------------------------------------------------------------------------------
def test_init_is_recorded_with_the_checkpoints_sha256(tmp_path):
    assert describe_init(None) == "random"
    ckpt = tmp_path / "enc.pt"
    ckpt.write_bytes(b"weights")
    assert describe_init(str(ckpt)) == f"{ckpt} sha256:{hashlib.sha256(b'weights').hexdigest()}"


# -- pretraining batches -----------------------------------------------------------------------------
def test_pretraining_batches_keep_their_shuffled_order(monkeypatch):
    """Rows are stored by campaign and category; a sorted batch would put one campaign's or
    category's images into each of MoCo's shuffle-BN query groups."""
    cfg = load_config(
        preset="smoke",
        overrides=[
            "model.arch=resnet18_w16",
            "model.proj_hidden_dim=16",
            "model.proj_dim=8",
            "pretrain.epochs=1",
            "pretrain.batch_size_per_worker=16",
            "pretrain.moco={queue_size: 32}",
            "pretrain.augment={resize: 24, crop_size: 16}",
        ],
    )
    images = np.random.default_rng(0).integers(0, 255, size=(64, 24, 24), dtype=np.uint8)
    seen: list[np.ndarray] = []
    real = pretrain.images_to_device
    monkeypatch.setattr(
        pretrain, "images_to_device", lambda im, rows, dev: seen.append(np.array(rows)) or real(im, rows, dev)
    )
    pretrain.run_pretrain_loop(cfg, "moco", images, torch.device("cpu"), rows=np.arange(64))
    assert len(seen) == 4 and sorted(np.concatenate(seen)) == list(range(64))
    assert any((np.diff(batch) < 0).any() for batch in seen)  # not sorted
    order = np.concatenate(seen)
    assert not np.array_equal(order, np.sort(order))


@pytest.mark.e2e
def test_ceiling_cells_end_to_end(ray_instance, tmp_path):
    """A baseline-only study with the supervised ceiling: one cell per set on every labeled
    image, trained ``grid.ceiling_epochs``, recorded as protocol 'ceiling' and drawn in the report."""
    import pandas as pd

    from raystudy.study import run_study

    cfg = load_config(
        preset="smoke",
        overrides=[
            "grid.models=[baseline]",
            "grid.sizes={4cat: [40]}",
            "finetune.epochs=1",
            "grid.ceiling_epochs=2",
        ],
    )
    report = run_study(cfg, tmp_path / "run")
    trials = pd.read_parquet(tmp_path / "run" / "results" / "trials").set_index("cell_id")
    assert sorted(trials.index) == ["baseline-4cat-ceiling", "baseline-4cat-n40-f0", "baseline-4cat-n40-f1"]
    ceiling = trials.loc["baseline-4cat-ceiling"]
    assert ceiling["protocol"] == "ceiling" and ceiling["status"] == "done" and ceiling["epochs"] >= 2
    # it trains whole cycles until it fits its images (or has trained grid.ceiling_max_cycles)
    assert ceiling["stop_reason"] in ("fitted", "max_cycles") and ceiling["epochs"] % 2 == 0
    assert ceiling["fitted"] == (ceiling["train_accuracy"] >= cfg.finetune.fit_accuracy)
    assert (ceiling["stop_reason"] == "fitted") == ceiling["fitted"]
    assert trials["fitted"].notna().all()
    pool = pd.read_parquet(tmp_path / "run" / "results" / "dataset")
    labeled = pool[(pool["role"] == "labeled") & pool["category"].isin(cfg.catalog.category_sets["4cat"])]
    assert ceiling["train_size"] == labeled["count"].sum()  # every labeled image of the set
    assert ceiling["n_train"] + ceiling["n_validation"] == ceiling["train_size"]
    per_class = pd.read_parquet(tmp_path / "run" / "results" / "per_class")
    assert "baseline-4cat-ceiling" in set(per_class["cell_id"])  # stored; the report keeps it out of per-size figures
    assert "supervised ceiling" in report.read_text()
