from pathlib import Path

import pytest

from raystudy.config import ConfigError, load_config, parse_override


def test_presets_load_and_paper_is_faithful():
    paper = load_config(preset="paper")
    assert paper.grid.sizes["19cat"] == [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 18864]
    assert paper.grid.sizes["4cat"] == [128, 256, 512, 1024, 2048, 4096, 8192]
    assert paper.grid.folds == 5 and paper.grid.models == ["moco", "byol", "baseline"]
    assert paper.model.arch == "resnet50"
    assert (paper.pretrain.augment.resize, paper.pretrain.augment.crop_size) == (256, 224)
    assert paper.pretrain.batch_size_per_worker == 64 and paper.pretrain.optimizer == "lars"
    assert (paper.model.proj_hidden_dim, paper.model.proj_dim) == (4096, 256)
    assert paper.data.pretrain_campaigns == ["NASCENT19", "NASCENT20"]
    assert paper.data.generalization_campaign == "CLOUDLAB"
    assert paper.pretrain.augment.crop_scale == [0.6, 1.0]
    for preset in ("smoke", "demo"):
        load_config(preset=preset)


def test_unknown_preset_names_known_ones():
    with pytest.raises(ConfigError, match="unknown preset 'nope'.*smoke"):
        load_config(preset="nope")


def test_unknown_key_is_named_with_its_path():
    with pytest.raises(ConfigError, match="finetune.epoch\\b.*allowed keys"):
        load_config(preset="smoke", overrides=["finetune.epoch=3"])


def test_wrong_type_and_range_are_refused():
    with pytest.raises(ConfigError, match="finetune.epochs: expected int"):
        load_config(preset="smoke", overrides=["finetune.epochs=many"])
    with pytest.raises(ConfigError, match="grid.folds"):
        load_config(preset="smoke", overrides=["grid.folds=1"])
    with pytest.raises(ConfigError, match="crop_scale"):
        load_config(preset="smoke", overrides=["pretrain.augment.crop_scale=[0.9, 0.5]"])


def test_malformed_yaml_names_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(path=bad)


def test_override_parses_yaml_values():
    assert parse_override("grid.sizes={4cat: [8, 16]}") == (["grid", "sizes"], {"4cat": [8, 16]})
    replaced = load_config(preset="smoke", overrides=["grid.sizes={4cat: [8]}"])
    assert replaced.grid.sizes == {"4cat": [8]}  # a mapping value replaces, it does not merge
    cfg = load_config(preset="smoke", overrides=["finetune.base_lr=0.05", "grid.models=[baseline]"])
    assert cfg.finetune.base_lr == 0.05 and cfg.grid.models == ["baseline"]


def test_custom_catalog_and_unknown_set():
    raw = {
        "catalog": {
            "categories": ["a", "b", "c"],
            "basic": ["a"],
            "category_sets": {"abc": ["a", "b", "c"], "ab": ["a", "b"]},
            "aliases": {},
        },
        "grid": {"sizes": {"abc": [10], "ab": [10]}, "models": ["baseline"]},
        "data": {"generalization_category_set": "ab"},
    }
    cfg = load_config(raw=raw)
    assert cfg.catalog.build().group("b") == "basic" or cfg.catalog.build().group("b")
    raw["grid"]["sizes"]["xyz"] = [10]
    with pytest.raises(ConfigError, match="grid.sizes.xyz: unknown category set"):
        load_config(raw=raw)


def test_config_hash_ignores_concurrency_only():
    a = load_config(preset="smoke")
    b = load_config(preset="smoke", overrides=["finetune.max_concurrent_trials=1"])
    c = load_config(preset="smoke", overrides=["finetune.epochs=5"])
    assert a.config_hash() == b.config_hash() != c.config_hash()
