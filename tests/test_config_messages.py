"""The exact wording of the commonest config mistakes, and the config hash of every preset.

The messages were captured on the hand-written loader before the config moved to pydantic;
each must stay as clear (the full dotted key, what was expected, what was given). The hashes
are recorded in results' Parquet tables and run folders resume by them: they must never change.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from raystudy import registry
from raystudy.config import ConfigError, load_config


@pytest.fixture(autouse=True)
def builtin_methods_only(monkeypatch):
    """The messages list the registered methods: hide any a plugin test registered before."""
    monkeypatch.setattr(
        registry, "_METHODS", {k: v for k, v in registry._METHODS.items() if k in ("moco", "byol", "simclr")}
    )


MESSAGES = [
    (
        ["foo=1"],
        "unknown config key(s) foo at top level; allowed keys are: analysis, catalog, data, embeddings, finetune, "
        "grid, model, name, pretrain, search, seed, selection, tracking",
    ),  # unknown_top
    (
        ["grid.foldz=3"],
        "unknown config key(s) grid.foldz at grid; allowed keys are: archs, ceiling_epochs, "
        "ceiling_max_cycles, folds, models, protocol, selection, sizes",
    ),  # unknown_nested
    (["finetune.epochs=ten"], "finetune.epochs: expected int, got str 'ten'"),  # int_from_str
    (["finetune.epochs=true"], "finetune.epochs: expected int, got bool True"),  # bool_for_int
    (["name=3"], "name: expected text, got the number 3"),  # number_for_text
    (["finetune.epochs=0"], "finetune.epochs: must be >= 1, got 0"),  # out_of_range
    (["grid.protocol=x"], "grid.protocol: 'x' is not one of 'paper', 'holdout'"),  # literal
    (["finetune.base_lr=.inf"], "finetune.base_lr: must be a finite number, got inf"),  # nonfinite
    (["pretrain.moco=3"], "pretrain.moco: expected a mapping of moco's settings, got 3"),  # method_section_type
    (
        ["grid.models=[moco, dino]"],
        "grid.models: unknown model 'dino'; use any of ['moco', 'byol', 'simclr', 'baseline']",
    ),  # unknown_model
    (
        ["pretrain.moco_momentum=0.9"],
        "pretrain.moco_momentum has moved: write it as pretrain.moco.momentum (each method has its own section)",
    ),  # moved_key
    (["grid.sizes=[1, 2]"], "grid.sizes: expected a mapping, got [1, 2]"),  # list_for_mapping
    (["pretrain.moco.momentum=1.5"], "pretrain.moco.momentum: must be in [0, 1), got 1.5"),  # method_section_field
    (
        ["pretrain.moco.queue=3"],
        "unknown config key(s) pretrain.moco.queue at pretrain.moco; allowed keys are: momentum, queue_size, "
        "symmetric, temperature",
    ),  # method_section_unknown
    (["grid.sizes.19cat=[128, x]"], "grid.sizes.19cat[1]: expected int, got str 'x'"),  # list_item_type
    (["analysis.max_band_width=abc"], "analysis.max_band_width: expected float, got str 'abc'"),  # optional_float
    (["grid.selection=3"], "grid.selection: expected a list, got 3 or expected a mapping, got 3"),  # union_selection
    (["finetune=3"], "finetune: expected a mapping, got 3"),  # mapping_for_section
    (
        ["grid.archs=[resnet9]"],
        "grid.archs[0]: 'resnet9' is not one of 'resnet18', 'resnet34', 'resnet50', 'resnet101', 'resnet18_w16'",
    ),  # literal_list
    (["catalog.aliases={a: 1}"], "catalog.aliases.a: expected text, got the number 1"),  # dict_value_type
    (
        ["pretrain.use_gpu=maybe"],
        "pretrain.use_gpu: expected bool, got str 'maybe' or 'maybe' is not one of 'auto', 'true', 'false'",
    ),  # bool_union
    (["model.in_channels=true"], "model.in_channels: True is not one of 1, 3"),  # bool for a Literal of ints
    (["finetune.base_lr=-1"], "finetune.base_lr: must be > 0, got -1.0"),  # an int read as a float
    (["finetune.epochs=1.5"], "finetune.epochs: expected int, got float 1.5"),  # float_for_int
    (
        ["grid.selection=[random, nope]"],
        "grid.selection[1]: unknown selection strategy 'nope'; "
        "use one of ['random', 'balanced', 'coreset', 'uncertainty', 'typiclust', 'probcover']",
    ),  # unknown_strategy
]


@pytest.mark.parametrize(("overrides", "problem"), MESSAGES)
def test_message(overrides: list[str], problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(preset="smoke", overrides=overrides)
    # every problem is a --set value: the message names the --set key, not the preset file
    assert str(err.value) == f"invalid study config (1 problem(s)):\n  - --set {problem}"


def test_every_problem_at_once() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(preset="smoke", overrides=["finetune.epochs=0", "grid.protocol=x", "foo=1"])
    assert str(err.value) == (
        "invalid study config (3 problem(s)):\n"
        "  - --set unknown config key(s) foo at top level; allowed keys are: analysis, catalog, data, embeddings, "
        "finetune, grid, model, name, pretrain, search, seed, selection, tracking\n"
        "  - --set finetune.epochs: must be >= 1, got 0\n"
        "  - --set grid.protocol: 'x' is not one of 'paper', 'holdout'"
    )


def test_override_mistakes() -> None:
    with pytest.raises(
        ConfigError, match=r"^--set 'finetune.epochs': expected key=value, e.g. --set finetune.epochs=3$"
    ):
        load_config(preset="smoke", overrides=["finetune.epochs"])
    with pytest.raises(ConfigError) as err:
        load_config(preset="smoke", overrides=["finetune.epochs=[1"])
    assert str(err.value).startswith(
        "--set 'finetune.epochs=[1': the value is not valid YAML (while parsing a flow sequence"
    )


HASHES = [
    ("smoke", [], "0f71b5acc534", "739ba0b7e6860f9b"),  # smoke
    (
        "demo",
        [],
        "9ed4f05c67fd",
        "9773a03d2ed76aec",
    ),  # demo (ab6b2a03c1b3 until pretrain.min_steps: 744, 336396037607 until ceiling_max_cycles: 10)
    ("selection", [], "8a1757d34789", "3f9765cb86e3ac74"),  # selection (4 strategies, sizes 24..192 since issue 24)
    (
        "paper",
        ["model.baseline_init=random", "model.pretrain_init.moco=random", "model.pretrain_init.byol=random"],
        "355eaecbf22e",  # 7b2f80a13685 until pretrain.num_workers (4 here) joined the hash, 2026-12-02
        "df3a3195fe6f8cee",
    ),  # paper
    (
        "smoke",
        ["grid.models=[moco, simclr, baseline]", "pretrain.simclr.temperature=0.5"],
        "b848181d041c",
        "4b8c2fe5565b35d0",
    ),  # smoke+simclr
    (
        "demo",
        ["finetune.epochs=7", "pretrain.moco.momentum=0.95", "finetune.base_lr=1"],
        "3bfe6117299b",  # ed2053734934 until pretrain.min_steps: 744, a46136c3d1ba until grid.ceiling_max_cycles: 10
        "6f6556a3a654bfcd",
    ),  # demo+epochs
    (
        "smoke",
        ["grid.protocol=holdout", "grid.selection=[random, balanced]"],
        "756166156191",
        "f1ae493b8d92c91b",
    ),  # smoke+holdout_balanced
]


@pytest.mark.parametrize(("preset", "overrides", "config_hash", "dict_sha"), HASHES)
def test_config_hash_never_changes(preset: str, overrides: list[str], config_hash: str, dict_sha: str) -> None:
    cfg = load_config(preset=preset, overrides=overrides)
    assert cfg.config_hash() == config_hash
    plain = cfg.to_dict()
    # the keys added since these were captured (pretrain.sync_batchnorm, pretrain.online_knn_images, tracking,
    # analysis.backtest_tolerance_pp, analysis.doa_margin_pp), at their defaults, stay out of the hash
    assert plain["pretrain"].pop("sync_batchnorm") == "auto"
    assert plain["pretrain"].pop("online_knn_images") == 256  # NO_HASH: a monitor, no result changes
    assert plain.pop("tracking") == {"mlflow": None, "wandb": None, "aim": None}
    assert (plain["analysis"].pop("backtest_tolerance_pp"), plain["analysis"].pop("doa_margin_pp")) == (2.0, 2.0)
    # since issues 21 and 22 (the ceiling that fits, the pretraining gate and stopping rule), at their defaults
    assert plain["finetune"].pop("fit_accuracy") == 0.98
    assert plain["grid"].pop("ceiling_max_cycles") == (10 if preset == "demo" else 3)
    assert (plain["pretrain"].pop("learn_margin_pp"), plain["pretrain"].pop("allow_unlearned")) == (1.0, False)
    assert (plain["pretrain"].pop("min_epochs"), plain["pretrain"].pop("patience")) == (1, 0)
    assert plain["pretrain"].pop("min_steps") == (744 if preset == "demo" else 0)  # issue 22: steps for small data
    assert plain["pretrain"].pop("start_attempts") == 10  # issue 23: a worker group that never starts (NO_HASH)
    byol = plain["pretrain"].get("byol")  # issue 22: BYOL's own step floor (the demo's 3,000)
    if byol is not None:
        assert byol.pop("min_steps") == (3000 if preset == "demo" else None)
        if "byol" not in cfg.pretrain.methods:  # the demo's section, for --set grid.models=[moco,byol,baseline]
            assert plain["pretrain"].pop("byol") == {"base_momentum": 0.99}
    saved = json.dumps(plain, sort_keys=False, default=str)  # the saved config.yaml, key order included
    assert hashlib.sha256(saved.encode()).hexdigest()[:16] == dict_sha
