"""Hyperparameter search: Tune samples, early stopping, best config written for the grid."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from raystudy.config import ConfigError, load_config
from raystudy.data.splits import inner_split, make_split
from raystudy.search import apply_values, search_space


def test_search_space_and_apply_values():
    space = search_space({"finetune.base_lr": {"loguniform": [0.01, 1.0]}, "finetune.epochs": {"choice": [1, 2]}})
    assert set(space) == {"finetune.base_lr", "finetune.epochs"}
    cfg = load_config(preset="smoke").to_dict()
    out = apply_values(cfg, {"finetune.base_lr": 0.3, "pretrain.moco.temperature": 0.5})
    assert out["finetune"]["base_lr"] == 0.3 and out["pretrain"]["moco"]["temperature"] == 0.5
    assert cfg["finetune"]["base_lr"] != 0.3  # a copy
    with pytest.raises(ConfigError, match="unknown key 'finetune.nope'"):
        apply_values(cfg, {"finetune.nope": 1})
    with pytest.raises(ConfigError, match="search.space.x"):
        search_space({"x": {"gaussian": [0, 1]}})


@pytest.mark.parametrize("protocol", ["paper", "holdout"])
def test_search_tunes_on_an_inner_split_that_never_holds_the_folds_validation_images(protocol):
    labels = np.repeat(np.arange(4), 50)
    for fold in range(3):
        outer = make_split(labels, 120, fold, 3, protocol, 0, "4cat")
        inner = inner_split(labels, outer, 3, 0, "4cat", 120, fold)
        assert set(inner.train) | set(inner.validation) == set(outer.train)
        assert not set(inner.train) & set(inner.validation)
        assert not set(inner.validation) & set(outer.validation)  # the grid's numbers for the fold stay honest
        per_class = np.bincount(labels[inner.validation], minlength=4)
        assert per_class.max() - per_class.min() <= 1  # stratified
        assert (inner.validation == inner_split(labels, outer, 3, 0, "4cat", 120, fold).validation).all()


@pytest.mark.e2e
def test_search_writes_best_config(ray_instance, tmp_path):
    from raystudy.sweep import search_study

    cfg = load_config(
        preset="smoke",
        overrides=[
            "search.model=moco",
            "search.train_size=64",
            "search.num_samples=2",
            "search.space={pretrain.moco.temperature: {uniform: [0.1, 0.5]}, "
            "finetune.base_lr: {loguniform: [0.1, 1.0]}}",
            "finetune.epochs=2",
            "pretrain.probe=false",
        ],
    )
    run_dir = tmp_path / "search"
    best = search_study(cfg, run_dir)
    assert set(best) == {"pretrain.moco.temperature", "finetune.base_lr"}
    assert 0.1 <= best["pretrain.moco.temperature"] <= 0.5
    samples = pd.read_csv(run_dir / "search" / "samples.csv")
    assert len(samples) == 2 and samples["val_accuracy"].between(0, 1).all()
    summary = yaml.safe_load((run_dir / "search" / "best.yaml").read_text())
    assert summary["train_size"] == 64 and summary["model"] == "moco"
    assert summary["tuned_on"].startswith("an inner split of fold 0's 32 training images")
    best_cfg = load_config(path=run_dir / "search" / "best_config.yaml")
    assert best_cfg.pretrain.section("moco").temperature == pytest.approx(best["pretrain.moco.temperature"])
    assert best_cfg.finetune.base_lr == pytest.approx(best["finetune.base_lr"])
