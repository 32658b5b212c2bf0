from pathlib import Path

import pytest

from raystudy.config import ConfigError, load_config, parse_override

# the paper preset requires its initial weights; these tests start it from random weights
RANDOM_INITS = ["model.baseline_init=random", "model.pretrain_init={moco: random, byol: random}"]


def test_presets_load_and_paper_is_faithful():
    paper = load_config(preset="paper", overrides=RANDOM_INITS)
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
    # Sect. 4.1: fine-tuning with SGD, 64 images per GPU on 4 GPUs: a global batch of 256,
    # accumulated here in passes of 64 on one device; the rate "e.g. 0.01" per 256 images
    assert (paper.finetune.batch_size, paper.finetune.micro_batch_size, paper.finetune.base_lr) == (256, 64, 0.01)
    assert (paper.model.baseline_weights(), paper.model.pretrain_weights("moco")) == (None, None)
    for preset in ("smoke", "demo"):
        load_config(preset=preset)
    selection = load_config(preset="selection")  # the demo's setup on 19cat, random vs coreset
    assert selection.grid.strategies("19cat") == ["random", "coreset", "typiclust", "probcover"] and list(
        selection.grid.sizes
    ) == ["19cat"]
    assert selection.grid.protocol == "holdout" and selection.selection.encoder == "moco"


def test_paper_preset_refuses_to_start_without_its_initial_weights(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(preset="paper")
    text = str(err.value)
    for key in ("model.baseline_init", "model.pretrain_init.moco", "model.pretrain_init.byol"):
        assert key in text
    assert "IM1K-Unsup-MoCo" in text and "IM1K-Unsup-BYOL" in text and "=random" in text
    ckpt = tmp_path / "moco_v2_800ep_pretrain.pth.tar"
    ckpt.write_bytes(b"x")
    cfg = load_config(
        preset="paper",
        overrides=[
            f"model.baseline_init={ckpt}",
            f"model.pretrain_init.moco={ckpt}",
            "model.pretrain_init.byol=random",
        ],
    )
    assert cfg.model.baseline_weights() == str(ckpt) and cfg.model.pretrain_weights("byol") is None


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


def test_scientific_notation_is_a_number_in_set_values_and_in_files(tmp_path):
    # PyYAML's YAML 1.1 reads 1e-5 as text, which the strict float fields refused
    cfg = load_config(preset="smoke", overrides=["pretrain.weight_decay=1e-5", "finetune.base_lr=5E-2"])
    assert cfg.pretrain.weight_decay == 1e-5 and cfg.finetune.base_lr == 0.05
    study = tmp_path / "study.yaml"
    study.write_text("name: sci\npretrain: {weight_decay: 1e-6, base_lr: 3e-1}\n")
    cfg = load_config(study)
    assert cfg.pretrain.weight_decay == 1e-6 and cfg.pretrain.base_lr == 0.3


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


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as err:
        load_config(
            preset="smoke",
            overrides=[
                "finetune.epoch=3",
                "finetune.batch_size=many",
                "grid.folds=1",
                "pretrain.optimizer=adam",
                "model.in_channels=2",
            ],
        )
    text = str(err.value)
    assert "invalid study config (5 problem(s))" in text and "smoke.yaml" not in text  # all --set values
    for key in (
        "finetune.epoch",
        "--set finetune.batch_size: expected int",
        "--set grid.folds: must be >= 2",
        "--set pretrain.optimizer: 'adam' is not one of 'lars', 'sgd'",
        "--set model.in_channels: 2 is not one of 1, 3",
    ):
        assert key in text


@pytest.mark.parametrize(
    "override,message",
    [
        ("finetune.base_lr=-1", "finetune.base_lr: must be > 0, got -1.0"),
        ("finetune.weight_decay=-3", "finetune.weight_decay: must be >= 0, got -3.0"),
        ("pretrain.base_lr=.nan", "pretrain.base_lr: must be a finite number, got nan"),
        ("pretrain.weight_decay=.inf", "pretrain.weight_decay: must be a finite number, got inf"),
        ("finetune.momentum=1.5", "finetune.momentum: must be in [0, 1)"),
        ("pretrain.moco={momentum: -0.1}", "pretrain.moco.momentum: must be in [0, 1)"),
        ("pretrain.simclr={temperature: 0}", "pretrain.simclr.temperature: must be > 0"),
    ],
)
def test_learning_rates_and_decays_must_be_finite_and_in_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(preset="smoke", overrides=[override])
    assert message in str(err.value)


def test_choices_are_checked_where_declared_and_yaml_booleans_work():
    assert load_config(preset="smoke", overrides=["pretrain.use_gpu=true"]).pretrain.wants_gpu() is True
    assert load_config(preset="smoke", overrides=["pretrain.use_gpu=false"]).pretrain.wants_gpu() is False
    assert load_config(preset="smoke", overrides=["pretrain.use_gpu='true'"]).pretrain.wants_gpu() is True
    assert load_config(preset="smoke").pretrain.wants_gpu() is None  # auto
    with pytest.raises(ConfigError, match="pretrain.use_gpu: .*'auto'"):
        load_config(preset="smoke", overrides=["pretrain.use_gpu=sometimes"])
    with pytest.raises(ConfigError, match="grid.protocol: 'kfold' is not one of 'paper', 'holdout'"):
        load_config(preset="smoke", overrides=["grid.protocol=kfold"])


def test_analysis_section_is_typed():
    cfg = load_config(preset="demo")
    assert cfg.analysis.seconds_per_image == 33.0 and cfg.analysis.cssl_model == "moco"
    with pytest.raises(ConfigError, match="analysis.cssl_modle.*allowed keys"):
        load_config(preset="smoke", overrides=["analysis.cssl_modle=byol"])
    with pytest.raises(ConfigError, match="analysis.labeling_time_model"):
        load_config(preset="smoke", overrides=["analysis.labeling_time_model=hourly"])


def test_hash_leaves_out_the_fields_marked_no_hash():
    base = load_config(preset="smoke").config_hash()
    for same in (
        "name=other",
        "pretrain.num_workers=1",
        "pretrain.use_gpu=false",
        "finetune.cpus_per_trial=2",
        "search.num_samples=3",
        "analysis.seconds_per_image=10",
    ):
        assert load_config(preset="smoke", overrides=[same]).config_hash() == base, same
    for other in (
        "pretrain.moco={queue_size: 512}",
        "pretrain.byol={base_momentum: 0.9}",
        "grid.archs=[resnet18, resnet34]",
        "pretrain.num_workers=4",  # the global pretraining batch
    ):
        assert load_config(preset="smoke", overrides=[other]).config_hash() != base, other


def test_dumped_config_loads_back_the_same(tmp_path):
    from raystudy.config import dump_config

    cfg = load_config(preset="paper", overrides=RANDOM_INITS)
    dump_config(cfg, tmp_path / "config.yaml")
    again = load_config(path=tmp_path / "config.yaml")
    assert again == cfg and again.config_hash() == cfg.config_hash()
    assert again.pretrain.section("moco").queue_size == 65536


def test_selection_axis_changes_the_hash_only_when_used():
    """Run folders of studies before grid.selection existed still resume (same hash)."""
    base = load_config(preset="demo")
    same = load_config(preset="demo", overrides=["grid.selection=[random]", "selection.uncertainty_rounds=7"])
    assert same.config_hash() == base.config_hash()
    used = load_config(preset="demo", overrides=["grid.selection={19cat: [random, coreset]}"])
    assert used.config_hash() != base.config_hash()


def test_a_section_of_a_method_the_study_does_not_pretrain_leaves_the_hash_alone():
    demo = load_config(preset="demo")  # MoCo and the baseline; its byol section serves --set grid.models
    assert "byol" not in demo.pretrain.methods and demo.pretrain.section("byol").min_steps == 3000
    other = load_config(preset="demo", overrides=["pretrain.byol.min_steps=9", "pretrain.byol.base_momentum=0.9"])
    assert other.config_hash() == demo.config_hash()
    with_byol = load_config(preset="demo", overrides=["grid.models=[moco, byol, baseline]"])
    changed = load_config(preset="demo", overrides=["grid.models=[moco, byol, baseline]", "pretrain.byol.min_steps=9"])
    assert changed.config_hash() != with_byol.config_hash()
