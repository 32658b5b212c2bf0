"""A cell takes every optimizer step its budget plans, also when an epoch would end with one image."""

from __future__ import annotations

import numpy as np
import torch
from test_finetune_rules import record_batches, tiny

from raystudy.grid import Cell
from raystudy.training.budget import cell_budget
from raystudy.training.finetune import CellTrainer


def test_a_last_step_of_one_image_is_taken_with_two(monkeypatch):
    cfg, images, labels = tiny("finetune.micro_batch_size=3")
    cell = Cell("baseline", "4cat", 4, 30, 0, "resnet18_w16", "resnet18_w16")
    rows = np.arange(17)  # batch 8: steps of 8, 8 and 1 image, the last one used to be skipped
    trainer = CellTrainer(cfg, cell, {}, images, rows, labels[rows], 4, torch.device("cpu"), cell.pair_key)
    plan = cell_budget(cfg.finetune, len(rows))
    assert (plan.steps_per_epoch, plan.epochs) == (3, 2)
    seen = record_batches(monkeypatch)
    for epoch in range(trainer.epochs):
        trainer.run_epoch(epoch)
    assert trainer.step == plan.total_steps == 6 and len(trainer.losses) == 6
    # per epoch: steps of 8, 7 and 2 images, passes of at most 3 and none of one image
    assert [len(r) for r in seen[:7]] == [3, 3, 2, 3, 2, 2, 2]
    assert all(len(r) >= 2 for r in seen) and sorted(np.concatenate(seen[:7])) == list(range(17))


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
