"""Study configuration: plain dataclasses loaded from YAML, with strict checking.

A study is one YAML file (``studies/<preset>.yaml``). Unknown keys, values of the
wrong type and out-of-range values are refused with the full key path, before
anything is trained or written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from raystudy.catalog import (
    BASIC_HABITS,
    CATEGORIES_4,
    CATEGORIES_19,
    DEFAULT_ALIASES,
    Catalog,
)

STUDIES_DIR = Path(__file__).resolve().parents[1] / "studies"
PRESETS = ("smoke", "demo", "paper")
MODEL_TYPES = ("moco", "byol", "baseline")
PRETRAIN_METHODS = ("moco", "byol")


class ConfigError(ValueError):
    """A study config that cannot be used; the message names the key and the fix."""


@dataclass
class SyntheticConfig:
    """The embedded procedural data set, generated on first use."""

    campaigns: dict[str, int] = field(
        default_factory=lambda: {"NASCENT19": 1200, "NASCENT20": 900, "CLOUDLAB": 300}
    )
    image_size: int = 64
    seed: int = 0


@dataclass
class DataConfig:
    """Where images come from and which campaign plays which role."""

    root: str | None = None  # DATA/<campaign>/<category>/*.png; None: synthetic
    manifest: str | None = None  # CSV or Parquet with columns path, label, campaign
    image_size: int = 64  # side of the cached uint8 array
    labeled_campaign: str = "NASCENT19"
    pretrain_campaigns: list[str] = field(default_factory=lambda: ["NASCENT19", "NASCENT20"])
    generalization_campaign: str | None = "CLOUDLAB"
    generalization_category_set: str | None = "4cat"
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)


@dataclass
class CatalogConfig:
    """The labeling scheme; defaults to the paper's 19 categories (Table 2)."""

    categories: list[str] = field(default_factory=lambda: list(CATEGORIES_19))
    basic: list[str] = field(default_factory=lambda: list(BASIC_HABITS))
    category_sets: dict[str, list[str]] = field(
        default_factory=lambda: {"19cat": list(CATEGORIES_19), "4cat": list(CATEGORIES_4)}
    )
    aliases: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ALIASES))
    groups: dict[str, str] = field(default_factory=dict)
    strict: bool = False  # True: folder names / labels outside the catalog are refused, not new categories

    def build(self) -> Catalog:
        try:
            return Catalog(
                categories=tuple(self.categories),
                basic=tuple(self.basic),
                category_sets={k: tuple(v) for k, v in self.category_sets.items()},
                aliases=dict(self.aliases),
                groups=dict(self.groups),
            )
        except ValueError as err:
            raise ConfigError(f"catalog: {err}") from err


@dataclass
class ModelConfig:
    """Backbone and heads (Sect. 3.2 and 3.4)."""

    arch: str = "resnet50"
    in_channels: int = 1
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    classifier_hidden_dim: int = 512
    # Initial weights (the paper's IM1K-Unsup-MoCo / -BYOL); None = random.
    pretrain_init: dict[str, str] = field(default_factory=dict)
    baseline_init: str | None = None


@dataclass
class AugmentConfig:
    """Augmentations of Sect. 3.1; sizes in pixels of the cached images."""

    resize: int = 256
    crop_size: int = 224
    crop_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.2
    blur_p: float = 0.5
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    solarize_p: float = 0.2
    flip_p: float = 0.5
    rotation_degrees: list[float] = field(default_factory=lambda: [0.0, 180.0])


@dataclass
class PretrainConfig:
    """Upstream contrastive pretraining on Ray Train (Sect. 3.3, 4.1)."""

    methods: list[str] = field(default_factory=lambda: list(PRETRAIN_METHODS))
    epochs: int = 100
    batch_size_per_worker: int = 64
    num_workers: int = 1
    cpus_per_worker: int = 1
    use_gpu: str = "auto"  # auto | true | false
    optimizer: str = "lars"  # lars | sgd
    base_lr: float = 0.3  # scaled by global batch / 256
    weight_decay: float = 1.0e-6
    warmup_epochs: int = 10
    moco_momentum: float = 0.99
    queue_size: int = 65536
    temperature: float = 0.2
    moco_symmetric: bool = False  # True: MoCo v3-style symmetrized loss (twice the cost)
    byol_base_momentum: float = 0.99
    probe: bool = True  # kNN and linear-probe accuracy of each frozen encoder
    probe_knn_k: int = 20
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class FinetuneConfig:
    """Downstream fine-tuning trials on Ray Tune (Sect. 3.4, 4.1)."""

    epochs: int = 50
    min_steps: int = 0  # small train sizes get more epochs, up to this many steps
    batch_size: int = 64
    base_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1.0e-4
    warmup_epochs: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # 0 on a CPU-only machine; fractions share a GPU
    max_concurrent_trials: int = 0  # 0: as many as resources allow
    max_retries: int = 2  # a failing trial is retried from its checkpoint this many times
    eval_batch_size: int = 256
    checkpoint_every_s: float = 60.0  # a trial saves its epoch state at most this often
    recalibrate_bn: bool = True  # re-estimate BatchNorm statistics on the training images before evaluation
    balanced_sampling: bool = False  # draw batches with equal expected share per category
    logit_adjustment_tau: float = 0.0  # > 0: logit-adjusted loss (Menon et al. 2021)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class GridConfig:
    """The study grid: model types x category sets x train sizes x folds."""

    models: list[str] = field(default_factory=lambda: list(MODEL_TYPES))
    sizes: dict[str, list[int]] = field(
        default_factory=lambda: {
            "19cat": [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 18864],
            "4cat": [128, 256, 512, 1024, 2048, 4096, 8192],
        }
    )
    folds: int = 5
    protocol: str = "paper"  # paper: CV inside the n images | holdout: fixed folds


@dataclass
class EmbeddingConfig:
    """Fig. 8: t-SNE maps of fold 0's validation embeddings at three stages."""

    models: list[str] = field(default_factory=lambda: ["moco"])
    category_set: str | None = None  # None: the first category set of the grid
    sizes: list[int] = field(default_factory=list)  # empty: the four largest runnable sizes
    max_points: int = 2000


@dataclass
class SearchConfig:
    """Hyperparameter search at one train size (``raystudy search``)."""

    model: str = "baseline"
    category_set: str | None = None  # None: the first category set of the grid
    train_size: int = 0  # 0: the largest size of that set that the data allows
    fold: int = 0
    num_samples: int = 8
    algorithm: str = "random"  # random | optuna
    scheduler: str = "asha"  # asha (early stopping) | fifo
    grace_period: int = 1
    space: dict[str, dict[str, list[Any]]] = field(
        default_factory=lambda: {
            "finetune.base_lr": {"loguniform": [0.05, 2.0]},
            "finetune.weight_decay": {"loguniform": [1.0e-6, 1.0e-3]},
        }
    )


@dataclass
class StudyConfig:
    name: str = "study"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    analysis: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def config_hash(self) -> str:
        """Hash of everything that changes a trial's result (not paths or names)."""
        d = self.to_dict()
        d.pop("analysis", None)
        d.pop("search", None)
        d.pop("name", None)
        for key in ("max_concurrent_trials", "max_retries", "cpus_per_trial", "gpus_per_trial"):
            d["finetune"].pop(key, None)
        for key in ("num_workers", "cpus_per_worker", "use_gpu"):
            d["pretrain"].pop(key, None)
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


# ---------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints accepted as floats)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {
            _coerce(k, key_tp, f"{key} key"): _coerce(v, val_tp, f"{key}.{k}")
            for k, v in value.items()
        }
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected text, got the number {value!r}")
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(
            f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _build(cls: type, raw: dict[str, Any], prefix: str = "") -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        dotted = ", ".join(f"{prefix}.{k}" if prefix else k for k in unknown)
        raise ConfigError(
            f"unknown config key(s) {dotted} at {prefix or 'top level'}; "
            f"allowed keys are: {', '.join(sorted(names))}"
        )
    kwargs = {
        k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in raw.items()
    }
    return cls(**kwargs)


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value); the value is parsed as YAML (``3``, ``[1, 2]``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set finetune.epochs=3")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item!r}: the value is not valid YAML ({err})") from err
    return key.strip().split("."), value


def apply_override(raw: dict[str, Any], item: str) -> dict[str, Any]:
    """Set one value (replacing, not merging, a mapping) at a dotted key path."""
    path, value = parse_override(item)
    out = dict(raw)
    node = out
    for part in path[:-1]:
        child = node.get(part)
        node[part] = dict(child) if isinstance(child, dict) else {}
        node = node[part]
    node[path[-1]] = value
    return out


def read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path}: expected a mapping at the top level")
    return raw


def preset_path(preset: str) -> Path:
    path = STUDIES_DIR / f"{preset}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in STUDIES_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown preset '{preset}'; known presets are {known}")
    return path


def load_config(
    path: str | Path | None = None,
    preset: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    raw: dict[str, Any] | None = None,
) -> StudyConfig:
    """Load a study from a YAML file or a preset name, apply ``--set`` overrides, validate."""
    if raw is None:
        if path is not None:
            raw = read_yaml(Path(path))
        else:
            raw = read_yaml(preset_path(preset or "demo"))
    for item in overrides:
        raw = apply_override(raw, item)
    cfg = _build(StudyConfig, raw)
    validate(cfg)
    return cfg


def validate(cfg: StudyConfig) -> None:
    """Range and consistency checks that types alone cannot express."""
    problems: list[str] = []

    def need(cond: bool, msg: str) -> None:
        if not cond:
            problems.append(msg)

    catalog = cfg.catalog.build()
    for m in cfg.grid.models:
        need(m in MODEL_TYPES, f"grid.models: unknown model '{m}'; use any of {list(MODEL_TYPES)}")
    for m in cfg.pretrain.methods:
        need(m in PRETRAIN_METHODS, f"pretrain.methods: unknown method '{m}'; use {list(PRETRAIN_METHODS)}")
    for m in cfg.grid.models:
        if m in PRETRAIN_METHODS:
            need(m in cfg.pretrain.methods, f"grid.models has '{m}' but pretrain.methods does not")
    for name, sizes in cfg.grid.sizes.items():
        need(name in catalog.category_sets, f"grid.sizes.{name}: unknown category set; known sets are {sorted(catalog.category_sets)}")
        need(all(s >= 2 for s in sizes), f"grid.sizes.{name}: train sizes must be >= 2")
    need(cfg.grid.folds >= 2, "grid.folds: need at least 2 folds")
    need(cfg.grid.protocol in ("paper", "holdout"), "grid.protocol: use 'paper' or 'holdout'")
    gset = cfg.data.generalization_category_set
    need(gset is None or gset in catalog.category_sets, f"data.generalization_category_set: unknown category set '{gset}'")
    need(cfg.model.arch in ("resnet18", "resnet34", "resnet50", "resnet101"), "model.arch: use resnet18, resnet34, resnet50 or resnet101")
    need(cfg.model.in_channels in (1, 3), "model.in_channels: use 1 or 3")
    need(cfg.data.image_size >= 8, "data.image_size: must be at least 8")
    need(cfg.pretrain.use_gpu in ("auto", "true", "false"), "pretrain.use_gpu: use auto, true or false")
    need(cfg.pretrain.optimizer in ("lars", "sgd"), "pretrain.optimizer: use lars or sgd")
    for section in ("pretrain", "finetune"):
        sec = getattr(cfg, section)
        aug: AugmentConfig = sec.augment
        need(sec.epochs >= 1, f"{section}.epochs: must be >= 1")
        need(0.0 < aug.crop_scale[0] <= aug.crop_scale[1] <= 1.0 if len(aug.crop_scale) == 2 else False, f"{section}.augment.crop_scale: two numbers 0 < lo <= hi <= 1")
        need(aug.crop_size <= aug.resize, f"{section}.augment.crop_size must not exceed resize")
        for p in ("jitter_p", "blur_p", "solarize_p", "flip_p"):
            need(0.0 <= getattr(aug, p) <= 1.0, f"{section}.augment.{p}: a probability in [0, 1]")
    need(cfg.pretrain.batch_size_per_worker >= 2, "pretrain.batch_size_per_worker: must be >= 2")
    need(cfg.pretrain.num_workers >= 1, "pretrain.num_workers: must be >= 1")
    need(0.0 <= cfg.pretrain.moco_momentum < 1.0, "pretrain.moco_momentum: in [0, 1)")
    need(0.0 <= cfg.pretrain.byol_base_momentum < 1.0, "pretrain.byol_base_momentum: in [0, 1)")
    need(cfg.pretrain.temperature > 0, "pretrain.temperature: must be > 0")
    need(cfg.finetune.batch_size >= 2, "finetune.batch_size: must be >= 2")
    need(cfg.finetune.cpus_per_trial > 0, "finetune.cpus_per_trial: must be > 0")
    need(cfg.finetune.gpus_per_trial >= 0, "finetune.gpus_per_trial: must be >= 0")
    need(cfg.finetune.logit_adjustment_tau >= 0, "finetune.logit_adjustment_tau: must be >= 0")
    need(cfg.search.model in MODEL_TYPES, f"search.model: use one of {list(MODEL_TYPES)}")
    need(cfg.search.algorithm in ("random", "optuna"), "search.algorithm: use random or optuna")
    need(cfg.search.scheduler in ("asha", "fifo"), "search.scheduler: use asha or fifo")
    need(cfg.search.num_samples >= 1, "search.num_samples: must be >= 1")
    eset = cfg.embeddings.category_set
    need(eset is None or eset in cfg.grid.sizes, f"embeddings.category_set: '{eset}' is not in grid.sizes")
    if problems:
        raise ConfigError("invalid study config:\n  - " + "\n  - ".join(problems))


def dump_config(cfg: StudyConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
