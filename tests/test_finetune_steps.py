"""A cell takes every optimizer step its budget plans, also when an epoch would end with one image."""

from __future__ import annotations

import numpy as np
import torch
from test_finetune_rules import record_batches, tiny

from raystudy.grid import Cell
from raystudy.training.budget import cell_budget
from raystudy.training.finetune import CellTrainer, recalibrate_batchnorm


def test_a_last_step_of_one_image_is_taken_with_two(monkeypatch):
    cfg, images, labels = tiny("finetune.micro_batch_size=3")
    cell = Cell("baseline", "4cat", 4, 30, 0, "resnet18_w16", "resnet18_w16")
    rows = np.arange(17)  # batch 8: 3 steps (once 8, 8 and a lone image, which used to be skipped)
    trainer = CellTrainer(cfg, cell, {}, images, rows, labels[rows], 4, torch.device("cpu"), cell.pair_key)
    plan = cell_budget(cfg.finetune, len(rows))
    assert (plan.steps_per_epoch, plan.epochs) == (3, 2)
    seen = record_batches(monkeypatch)
    for epoch in range(trainer.epochs):
        trainer.run_epoch(epoch)
    assert trainer.step == plan.total_steps == 6 and len(trainer.losses) == 6
    # per epoch: steps of equal size (6, 6 and 5 images), passes of at most 3 and none of one image
    assert [len(r) for r in seen[:6]] == [3, 3, 3, 3, 3, 2]
    assert all(len(r) >= 2 for r in seen) and sorted(np.concatenate(seen[:6])) == list(range(17))


def test_step_batches_never_hold_one_image():
    cfg, images, labels = tiny("finetune.batch_size=2")
    cell = Cell("baseline", "4cat", 4, 30, 0, "resnet18_w16", "resnet18_w16")
    for n in (1, 2, 3, 5, 6):
        rows = np.arange(n)
        trainer = CellTrainer(cfg, cell, {}, images, rows, labels[rows], 4, torch.device("cpu"), cell.pair_key)
        batches = trainer.step_batches(np.arange(n)[::-1])
        assert len(batches) == cell_budget(cfg.finetune, n).steps_per_epoch
        assert all(len(b) >= 2 for b in batches) and set(np.concatenate(batches)) == set(range(n))
        if n == 5:  # batch 2: the lone last image is paired with the one before it in the order
            assert [b.tolist() for b in trainer.step_batches(np.array([4, 3, 2, 1, 0]))] == [[4, 3], [2, 1], [1, 0]]
        if n == 1:  # one image: it is taken twice (two augmentations)
            assert [b.tolist() for b in batches] == [[0, 0]]


def test_steps_and_batchnorm_chunks_are_of_equal_size(monkeypatch):
    """68 images at batch 32 are 3 steps of 23, 23 and 22, not 32, 32 and 4; the BatchNorm
    re-estimate cuts 272 rows at 256 per pass into 136 + 136, not 256 + 16 (a short chunk
    counts as much as a full one in the cumulative average and broke evaluation)."""
    cfg, images, labels = tiny("finetune.batch_size=32", "finetune.eval_batch_size=256")
    cell = Cell("baseline", "4cat", 4, 68, 0, "resnet18_w16", "resnet18_w16")
    trainer = CellTrainer(cfg, cell, {}, images, np.arange(40), labels, 4, torch.device("cpu"), cell.pair_key)
    assert [len(b) for b in trainer.step_batches(np.arange(68))] == [23, 23, 22]
    seen = record_batches(monkeypatch)
    big = np.random.default_rng(0).integers(0, 255, size=(272, 24, 24), dtype=np.uint8)
    recalibrate_batchnorm(trainer.model, big, np.arange(272), trainer.eval_tf, 256, torch.device("cpu"))
    assert [len(r) for r in seen] == [136, 136]
