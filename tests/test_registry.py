"""The method registry: a method from outside raystudy pretrains without changing raystudy."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raystudy import registry
from raystudy.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model.proj_hidden_dim=32",
    "model.proj_dim=16",
    "pretrain.epochs=2",
    "pretrain.batch_size_per_worker=8",
    "pretrain.augment={resize: 24, crop_size: 16}",
]

pytestmark = pytest.mark.usefixtures("one_thread")


def test_builtin_methods_in_order_and_baseline_last():
    assert registry.method_names()[:3] == ("moco", "byol", "simclr")
    assert registry.model_types()[-1] == "baseline"
    with pytest.raises(KeyError, match="registered methods are"):
        registry.get_method("dino")


def test_toy_method_from_outside_raystudy_pretrains(tmp_path):
    from plugins.toy_method import ToyConfig, ToyMethod  # registers "toy"

    from raystudy.training.pretrain import run_pretrain_loop

    cfg = load_config(
        preset="smoke", overrides=TINY + ["grid.models=[toy, baseline]", "pretrain.toy={spread_weight: 0.5}"]
    )
    assert cfg.pretrain.methods == ["toy"]
    assert cfg.pretrain.section("toy") == ToyConfig(spread_weight=0.5)
    assert "toy" in cfg.to_dict()["pretrain"]  # dumped as pretrain.toy
    images = np.random.default_rng(0).integers(0, 255, size=(20, 24, 24), dtype=np.uint8)  # (N, S, S)
    seen = []
    state = run_pretrain_loop(cfg, "toy", images, torch.device("cpu"), on_epoch=lambda m, s: seen.append(m))
    assert [m["epoch"] for m in seen] == [0, 1] and all(np.isfinite(m["loss"]) for m in seen)
    assert len(state["losses"]) == 4  # 2 epochs x (20 // 8) steps
    assert state["encoder"]["method"] == "toy" and state["encoder"]["arch"] == "resnet18"
    model = ToyMethod.from_config(torch.nn.Identity(), 4, cfg.model, cfg.pretrain.section("toy"), 20, 8)
    assert model.spread_weight == 0.5
    with pytest.raises(ConfigError, match=r"pretrain.toy.spread_weight: must be > 0"):
        load_config(preset="smoke", overrides=["grid.models=[toy]", "pretrain.toy={spread_weight: -1}"])


def test_after_step_is_called_once_per_step():
    from plugins.toy_method import ToyMethod

    from raystudy.training import pretrain

    cfg = load_config(preset="smoke", overrides=TINY + ["grid.models=[toy]"])
    built = []
    original = pretrain.build_method

    def spy(*args, **kwargs):
        built.append(original(*args, **kwargs))
        return built[-1]

    images = np.random.default_rng(1).integers(0, 255, size=(16, 24, 24), dtype=np.uint8)
    try:
        pretrain.build_method = spy
        pretrain.run_pretrain_loop(cfg, "toy", images, torch.device("cpu"))
    finally:
        pretrain.build_method = original
    assert isinstance(built[0], ToyMethod)
    assert built[0].steps_seen == [(0, 4), (1, 4), (2, 4), (3, 4)]


@pytest.mark.parametrize(
    "old,new",
    [
        ("moco_momentum=0.9", "pretrain.moco.momentum"),
        ("queue_size=64", "pretrain.moco.queue_size"),
        ("temperature=0.1", "pretrain.moco.temperature"),
        ("moco_symmetric=true", "pretrain.moco.symmetric"),
        ("byol_base_momentum=0.9", "pretrain.byol.base_momentum"),
    ],
)
def test_old_flat_keys_name_their_new_key(old, new):
    with pytest.raises(ConfigError, match=re.escape(f"write it as {new}")):
        load_config(preset="smoke", overrides=[f"pretrain.{old}"])


def test_method_sections_are_typed_and_unknown_methods_named():
    cfg = load_config(preset="smoke", overrides=["pretrain.moco={temperature: 0.1, symmetric: true}"])
    moco = cfg.pretrain.section("moco")
    assert (moco.temperature, moco.symmetric, moco.queue_size) == (0.1, True, 65536)  # the rest: defaults
    assert cfg.pretrain.section("byol").base_momentum == 0.99
    with pytest.raises(
        ConfigError, match="pretrain.moco.tau.*allowed keys are: momentum, queue_size, symmetric, temperature"
    ):
        load_config(preset="smoke", overrides=["pretrain.moco={tau: 0.1}"])
    with pytest.raises(ConfigError, match=r"grid.models: unknown model 'dino'; use any of \['moco', 'byol', 'simclr'"):
        load_config(preset="smoke", overrides=["grid.models=[dino, baseline]"])


def test_no_method_dispatch_in_the_training_loop_scheduler_or_sweep():
    """`grep -rn '"moco"\\|"byol"' raystudy/training raystudy/scheduler.py raystudy/sweep.py` finds nothing."""
    files = list((ROOT / "raystudy" / "training").glob("*.py")) + [
        ROOT / "raystudy" / "scheduler.py",
        ROOT / "raystudy" / "sweep.py",
    ]
    hits = [
        f"{f.name}:{i}"
        for f in files
        for i, line in enumerate(f.read_text().splitlines(), 1)
        if '"moco"' in line or '"byol"' in line
    ]
    assert hits == []


def test_builtin_models_are_import_paths_resolved_on_use():
    spec = registry.get_method("moco")
    assert spec.model == "raystudy.models.moco:MoCo"
    from raystudy.models import MoCo, MoCoConfig

    assert spec.model_class() is MoCo and spec.config is MoCoConfig
    assert [registry.get_method(m).display_name for m in ("moco", "byol", "simclr")] == ["MoCo", "BYOL", "SimCLR"]


def test_reading_a_config_imports_no_torch():
    code = (
        "import sys; from raystudy.config import load_config; load_config(preset='smoke'); "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_selection_strategies_register_like_methods():
    import raystudy.selection as selection

    assert registry.strategy_names()[:4] == ("random", "balanced", "coreset", "uncertainty")
    assert registry.embedding_strategy_names()[:2] == ("coreset", "uncertainty")
    with pytest.raises(KeyError, match=r"unknown selection strategy 'nope'; registered strategies are \['random'"):
        registry.get_strategy("nope")
    first = registry.StrategySpec("first", lambda n, seed, **_: np.arange(n), False, "none", order=50)
    registry.register_strategy(first)
    try:
        assert selection.select("first", 3, seed=0).tolist() == [0, 1, 2]
        cfg = load_config(preset="smoke", overrides=["grid.protocol=holdout", "grid.selection=[random, first]"])
        assert cfg.grid.all_strategies() == ["random", "first"]
    finally:
        registry._STRATEGIES.pop("first")
    with pytest.raises(ValueError, match="registered strategies are"):
        selection.select("first", 3, seed=0)
