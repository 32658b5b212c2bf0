"""Study configuration: plain dataclasses loaded from YAML, with strict checking.

A study is one YAML file (``studies/<preset>.yaml``). Unknown keys, values of the
wrong type and out-of-range values are refused with the full key path, before
anything is trained or written; every problem of a file is reported at once.

Checks live where a field is declared: a ``Literal`` annotation lists the choices,
``metadata=gt(0)`` / ``at_least(1)`` / ``in_unit_interval()`` / ``probability()`` the
range, and ``metadata=NO_HASH`` leaves a field out of :meth:`StudyConfig.config_hash`.
Every float must be finite. Each pretraining method reads its own section
``pretrain.<method>`` (a dataclass declared by the method's module, see
:mod:`raystudy.registry`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

import yaml

from raystudy.catalog import (
    BASIC_HABITS,
    CATEGORIES_4,
    CATEGORIES_19,
    DEFAULT_ALIASES,
    Catalog,
)
from raystudy import registry

if TYPE_CHECKING:
    from raystudy import storage

# the backbones of raystudy.models.encoders (kept here as names: the config does not import torch)
Arch = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet18_w16"]
STUDIES_DIR = Path(__file__).resolve().parents[1] / "studies"
PRESETS = ("smoke", "demo", "paper")
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
NO_HASH = {"hash": False}  # field metadata: the field does not change a trial's result


class ConfigError(ValueError):
    """A study config that cannot be used; the message names the key and the fix."""


# ---------------------------------------------------------------- declared ranges


def _check(predicate: Callable[[Any], bool], text: str) -> dict[str, Any]:
    return {"check": (predicate, text)}


def gt(lo: float) -> dict[str, Any]:
    """Field metadata: the value must be > ``lo``."""
    return _check(lambda v: v > lo, f"must be > {lo}")


def at_least(lo: float) -> dict[str, Any]:
    """Field metadata: the value must be >= ``lo``."""
    return _check(lambda v: v >= lo, f"must be >= {lo}")


def in_unit_interval() -> dict[str, Any]:
    """Field metadata: 0 <= value < 1 (momenta)."""
    return _check(lambda v: 0.0 <= v < 1.0, "must be in [0, 1)")


def probability() -> dict[str, Any]:
    """Field metadata: 0 <= value <= 1."""
    return _check(lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]")


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
    image_size: int = field(default=64, metadata=at_least(8))  # side of the cached uint8 array
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

    arch: Arch = "resnet50"
    in_channels: Literal[1, 3] = 1
    proj_hidden_dim: int = 4096
    proj_dim: int = 256
    pred_hidden_dim: int = 4096
    classifier_hidden_dim: int = 512  # the classifier's hidden layer (the paper gives no width)
    # Initial weights: a checkpoint file, or "random" (None: random too, unless require_init).
    # The paper starts pretraining from ImageNet MoCo / BYOL weights (IM1K-Unsup-MoCo /
    # -BYOL) and the baseline from IM1K-Unsup-MoCo (Sect. 4.2.1).
    pretrain_init: dict[str, str] = field(default_factory=dict)  # method -> checkpoint | "random"
    baseline_init: str | None = None
    require_init: bool = False  # True: refuse to start until every initial weight is given (or "random")

    def baseline_weights(self) -> str | None:
        """The baseline's initial checkpoint, or None for random weights."""
        return weights_path(self.baseline_init)

    def pretrain_weights(self, method: str) -> str | None:
        """The checkpoint pretraining of ``method`` starts from, or None for random weights."""
        return weights_path(self.pretrain_init.get(method))


RANDOM_INIT = "random"


def weights_path(value: str | None) -> str | None:
    """A configured initial-weights value as a file path; None for random initialisation."""
    return None if value in (None, "", RANDOM_INIT) else value


@dataclass
class AugmentConfig:
    """Augmentations of Sect. 3.1; sizes in pixels of the cached images."""

    resize: int = field(default=256, metadata=at_least(1))
    crop_size: int = field(default=224, metadata=at_least(1))
    crop_scale: list[float] = field(default_factory=lambda: [0.6, 1.0])
    jitter_p: float = field(default=0.8, metadata=probability())
    brightness: float = field(default=0.4, metadata=at_least(0))
    contrast: float = field(default=0.4, metadata=at_least(0))
    saturation: float = field(default=0.2, metadata=at_least(0))
    blur_p: float = field(default=0.5, metadata=probability())
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    solarize_p: float = field(default=0.2, metadata=probability())
    flip_p: float = field(default=0.5, metadata=probability())
    rotation_degrees: list[float] = field(default_factory=lambda: [0.0, 180.0])


@dataclass
class PretrainConfig:
    """Upstream self-supervised pretraining on Ray Train (Sect. 3.3, 4.1).

    ``methods`` empty: the pretraining methods of ``grid.models``. ``sections`` holds the
    per-method sections, written ``pretrain.<method>: {...}`` in YAML (each method's
    config dataclass, defaults for every listed method); read one with :meth:`section`.
    """

    methods: list[str] = field(default_factory=list)
    epochs: int = field(default=100, metadata=at_least(1))
    batch_size_per_worker: int = field(default=64, metadata=at_least(2))
    num_workers: int = field(default=1, metadata={**at_least(1), **NO_HASH})
    cpus_per_worker: int = field(default=1, metadata={**at_least(1), **NO_HASH})
    use_gpu: bool | Literal["auto", "true", "false"] = field(default="auto", metadata=NO_HASH)
    # a lost worker (or node) restarts the DDP group from its last epoch checkpoint this many times
    max_failures: int = field(default=3, metadata={**at_least(0), **NO_HASH})
    sync_batchnorm: bool | Literal["auto"] = "auto"  # SyncBatchNorm over > 1 GPU workers; auto: the method's choice
    optimizer: Literal["lars", "sgd"] = "lars"
    base_lr: float = field(default=0.3, metadata=gt(0))  # scaled by global batch / 256
    weight_decay: float = field(default=1.0e-6, metadata=at_least(0))
    warmup_epochs: int = field(default=10, metadata=at_least(0))
    probe: bool = True  # kNN and linear-probe accuracy of each frozen encoder
    probe_knn_k: int = field(default=20, metadata=at_least(1))
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sections: dict[str, Any] = field(default_factory=dict, metadata={"sections": True})

    def section(self, method: str) -> Any:
        """The typed ``pretrain.<method>`` section (its defaults when not given)."""
        if method not in self.sections:
            return registry.get_method(method).config()
        return self.sections[method]

    def wants_gpu(self) -> bool | None:
        """True / False as configured; None for ``auto`` (use one when the cluster has one)."""
        return None if self.use_gpu == "auto" else self.use_gpu in (True, "true")


@dataclass
class FinetuneConfig:
    """Downstream fine-tuning trials on Ray Tune (Sect. 3.4, 4.1)."""

    # How long a cell trains (the stopping rule, the same for every model type): ``epochs``
    # passes over its n training images, and at least ``min_steps`` optimizer steps (small n
    # get more epochs), at most ``max_steps`` (0: no cap). ``trials`` records the steps,
    # the epochs, which bound decided (``stop_reason``), the final training loss and the
    # training accuracy, so a reader can see whether a cell learned what its images teach.
    epochs: int = field(default=50, metadata=at_least(1))
    min_steps: int = field(default=0, metadata=at_least(0))
    max_steps: int = field(default=0, metadata=at_least(0))
    # The global batch per optimizer step (the paper: 64 per GPU x 4 GPUs = 256); the learning
    # rate is scaled from it. A trial runs on one device and accumulates gradients over
    # micro-batches of ``micro_batch_size`` images (0: the whole batch at once; the paper's
    # BatchNorm saw 64 images per GPU).
    batch_size: int = field(default=64, metadata=at_least(2))
    micro_batch_size: int = field(default=0, metadata=at_least(0))
    base_lr: float = field(default=0.01, metadata=gt(0))
    momentum: float = field(default=0.9, metadata=in_unit_interval())
    weight_decay: float = field(default=1.0e-4, metadata=at_least(0))
    warmup_epochs: int = field(default=2, metadata=at_least(0))
    cpus_per_trial: float = field(default=1.0, metadata={**gt(0), **NO_HASH})
    gpus_per_trial: float = field(default=0.0, metadata={**at_least(0), **NO_HASH})  # 0 on a CPU-only machine; fractions share a GPU
    max_concurrent_trials: int = field(default=0, metadata={**at_least(0), **NO_HASH})  # 0: as many as resources allow
    max_retries: int = field(default=2, metadata={**at_least(0), **NO_HASH})  # a failing trial is retried from its checkpoint this many times
    eval_batch_size: int = field(default=256, metadata=at_least(1))
    checkpoint_every_s: float = field(default=60.0, metadata=at_least(0))  # a trial saves its epoch state at most this often
    recalibrate_bn: bool = True  # re-estimate BatchNorm statistics on the training images before evaluation
    balanced_sampling: bool = False  # draw batches with equal expected share per category
    logit_adjustment_tau: float = field(default=0.0, metadata=at_least(0))  # > 0: logit-adjusted loss (Menon et al. 2021)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class GridConfig:
    """The study grid: model types x backbones x category sets x train sizes x folds."""

    models: list[str] = field(default_factory=lambda: ["moco", "byol", "baseline"])
    archs: list[Arch] = field(default_factory=list)  # empty: [model.arch]
    sizes: dict[str, list[int]] = field(
        default_factory=lambda: {
            "19cat": [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 18864],
            "4cat": [128, 256, 512, 1024, 2048, 4096, 8192],
        }
    )
    folds: int = field(default=5, metadata=at_least(2))
    protocol: Literal["paper", "holdout"] = "paper"  # paper: CV inside the n images | holdout: fixed folds
    # > 0: the supervised ceiling, one baseline cell per category set trained on all its labeled
    # images (fold 0 of ``folds`` held out) for this many epochs; the report draws it as a line
    ceiling_epochs: int = field(default=0, metadata=at_least(0))
    # Which n images a cell trains on (raystudy.selection.STRATEGIES): a list for every category
    # set, or a mapping by set like ``sizes`` (a set it does not name gets [random]). Strategies
    # other than random need protocol: holdout (the validation fold is then the same for all).
    selection: list[str] | dict[str, list[str]] = field(default_factory=lambda: ["random"])

    def strategies(self, category_set: str) -> list[str]:
        """The selection strategies of one category set (``[random]`` when not named)."""
        if isinstance(self.selection, dict):
            return list(self.selection.get(category_set, ["random"]))
        return list(self.selection)

    def all_strategies(self) -> list[str]:
        """Every strategy of any category set of ``sizes``, first-seen order."""
        return list(dict.fromkeys(s for name in self.sizes for s in self.strategies(name)))


@dataclass
class SelectionConfig:
    """Knobs of the selection strategies (``grid.selection``; also ``raystudy advise``)."""

    # the pretraining method whose encoder (on the cell's arch) embeds the pool for coreset and
    # uncertainty, for every model type of a cell so that paired cells train on the same images;
    # None: the first of pretrain.methods
    encoder: str | None = None
    uncertainty_rounds: int = field(default=4, metadata=at_least(1))  # refit-and-add rounds after the seed set
    uncertainty_seed_fraction: float = field(default=0.25, metadata=gt(0))  # share of n drawn at random first


@dataclass
class EmbeddingConfig:
    """Fig. 8: t-SNE maps of fold 0's validation embeddings at three stages."""

    models: list[str] = field(default_factory=lambda: ["moco"])
    category_set: str | None = None  # None: the first category set of the grid
    sizes: list[int] = field(default_factory=list)  # empty: the four largest runnable sizes
    max_points: int = field(default=2000, metadata=at_least(1))


@dataclass
class SearchConfig:
    """Hyperparameter search at one train size (``raystudy search``)."""

    model: str = "baseline"
    category_set: str | None = None  # None: the first category set of the grid
    train_size: int = 0  # 0: the largest size of that set that the data allows
    fold: int = 0
    num_samples: int = field(default=8, metadata=at_least(1))
    algorithm: Literal["random", "optuna"] = "random"
    scheduler: Literal["asha", "fifo"] = "asha"  # asha: early stopping
    grace_period: int = field(default=1, metadata=at_least(1))
    space: dict[str, dict[str, list[Any]]] = field(
        default_factory=lambda: {
            "finetune.base_lr": {"loguniform": [0.05, 2.0]},
            "finetune.weight_decay": {"loguniform": [1.0e-6, 1.0e-3]},
        }
    )


@dataclass
class AnalysisConfig:
    """The report's settings (``analysis/``): the models it compares and labeling-time model."""

    reference_model: str = "baseline"
    cssl_model: str = "moco"
    seconds_per_image: float = field(default=33.0, metadata=gt(0))
    labeling_time_model: Literal["constant", "per_group"] = "constant"
    basic_seconds: float = field(default=6.0, metadata=gt(0))
    complex_seconds: float = field(default=60.0, metadata=gt(0))
    reference_points: list[dict[str, Any]] = field(default_factory=list)  # {train_size, accuracy, ...}
    targets: list[float] = field(default_factory=lambda: [0.8, 0.9])  # > 1 read as percent
    compare_models: list[str] | None = None  # None: [cssl_model, reference_model]
    advantage_max_size: int = field(default=2048, metadata=at_least(1))  # "average CSSL advantage at sizes up to ..."
    n_bootstrap: int = field(default=1000, metadata=at_least(1))  # paired-difference CI resamples
    curve_bootstrap: int = field(default=100, metadata=at_least(0))  # learning-curve refits over resampled folds
    seed: int = 0
    tsne_max_points: int = field(default=1500, metadata=at_least(1))  # per panel, seeded subsample
    max_band_width: float | None = field(default=None, metadata=gt(0))  # learning-curve band limit; None: the report's


@dataclass
class StudyConfig:
    name: str = field(default="study", metadata=NO_HASH)
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    catalog: CatalogConfig = field(default_factory=CatalogConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    embeddings: EmbeddingConfig = field(default_factory=EmbeddingConfig)
    search: SearchConfig = field(default_factory=SearchConfig, metadata=NO_HASH)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig, metadata=NO_HASH)

    def to_dict(self, hashed_only: bool = False) -> dict[str, Any]:
        """The config as plain data, as written in YAML (``pretrain.<method>`` sections inline).

        ``hashed_only``: without the fields marked ``NO_HASH`` (what the hash covers).
        """
        return _plain(self, hashed_only)

    def config_hash(self) -> str:
        """Hash of everything that changes a trial's result (not paths, names or resources)."""
        hashed = self.to_dict(hashed_only=True)
        if self.grid.all_strategies() == ["random"]:  # a study without the selection axis keeps the hash it had before it
            hashed["grid"].pop("selection", None)
            hashed.pop("selection", None)
        if self.pretrain.sync_batchnorm == "auto":  # likewise a study that leaves sync_batchnorm at its default
            hashed["pretrain"].pop("sync_batchnorm", None)
        blob = json.dumps(hashed, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:12]


def _plain(value: Any, hashed_only: bool) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            if hashed_only and not f.metadata.get("hash", True):
                continue
            item = _plain(getattr(value, f.name), hashed_only)
            if f.metadata.get("sections"):
                out.update(item)  # pretrain.<method> sections sit inline
            else:
                out[f.name] = item
        return out
    if isinstance(value, dict):
        return {k: _plain(v, hashed_only) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, hashed_only) for v in value]
    return value


# ---------------------------------------------------------------- loading


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, errors: list[str]) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints accepted as floats).

    A wrong leaf raises ConfigError; problems inside nested dataclasses go to ``errors``.
    """
    origin = typing.get_origin(tp)
    if origin is Literal:
        choices = typing.get_args(tp)
        if any(value == c and type(value) is type(c) for c in choices):
            return value
        raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, choices))}")
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        messages = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, errors)
            except ConfigError as err:
                messages.append(str(err).removeprefix(f"{key}: "))
        raise ConfigError(f"{key}: " + " or ".join(messages) if messages else f"{key}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return _build(tp, value, key, errors)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]", errors) for i, v in enumerate(value)]
    if origin is dict:
        key_tp, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return {
            _coerce(k, key_tp, f"{key} key", errors): _coerce(v, val_tp, f"{key}.{k}", errors)
            for k, v in value.items()
        }
    if tp is Any:
        return value
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {value!r}")
        return float(value)
    if tp is str and isinstance(value, (int, float)) and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected text, got the number {value!r}")
    if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
        raise ConfigError(
            f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    return value


def _moved_key_message(prefix: str, key: str) -> str | None:
    """For an old flat ``pretrain.<key>``: where it lives now (a method's section)."""
    if prefix != "pretrain":
        return None
    new = [f"pretrain.{s.name}.{s.moved_keys[key]}" for s in registry.methods().values() if key in s.moved_keys]
    if not new:
        return None
    return f"pretrain.{key} has moved: write it as {' or '.join(new)} (each method has its own section)"


def _build(cls: type, raw: dict[str, Any], prefix: str = "", errors: list[str] | None = None) -> Any:
    """Build dataclass ``cls`` from ``raw``; every problem is appended to ``errors``.

    A field with a problem keeps its default, so the checks after it still run. Without
    an ``errors`` list, the problems are raised together as one ConfigError.
    """
    if errors is None:
        found: list[str] = []
        built = _build(cls, raw, prefix, found)
        if found:
            raise ConfigError("; ".join(found))
        return built
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    sections = next((f.name for f in fields.values() if f.metadata.get("sections")), None)
    dotted = (lambda k: f"{prefix}.{k}" if prefix else k)
    kwargs: dict[str, Any] = {}
    given: dict[str, Any] = {}
    unknown = []
    for k, v in raw.items():
        if k in fields and k != sections:
            given[k] = v
        elif sections and k in registry.methods():
            spec = registry.get_method(k)
            if not isinstance(v, dict):
                errors.append(f"{dotted(k)}: expected a mapping of {spec.name}'s settings, got {v!r}")
                continue
            kwargs.setdefault(sections, {})[k] = _build(spec.config, v, dotted(k), errors)
        elif (moved := _moved_key_message(prefix, k)) is not None:
            errors.append(moved)
        else:
            unknown.append(k)
    if unknown:
        allowed = sorted(set(fields) - {sections}) + (sorted(registry.methods()) if sections else [])
        errors.append(
            f"unknown config key(s) {', '.join(map(dotted, unknown))} at {prefix or 'top level'}; "
            f"allowed keys are: {', '.join(allowed)}"
        )
    for k, v in given.items():
        try:
            value = _coerce(v, hints[k], dotted(k), errors)
        except ConfigError as err:
            errors.append(str(err))
            continue
        check = fields[k].metadata.get("check")
        if check is not None and isinstance(value, (int, float)) and not check[0](value):
            errors.append(f"{dotted(k)}: {check[1]}, got {value!r}")
            continue
        kwargs[k] = value
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
    """Load a study from a YAML file or a preset name, apply ``--set`` overrides, validate.

    Every problem (unknown keys, wrong types, out-of-range values, inconsistencies) is
    reported together in one ConfigError.
    """
    where = ""
    if raw is None:
        source = Path(path) if path is not None else preset_path(preset or "demo")
        raw = read_yaml(source)
        where = f" {source}"
    for item in overrides:
        raw = apply_override(raw, item)
    errors: list[str] = []
    cfg = _build(StudyConfig, raw, "", errors)
    errors += resolve_defaults(cfg) + problems(cfg)
    if errors:
        raise ConfigError(f"invalid study config{where} ({len(errors)} problem(s)):\n  - " + "\n  - ".join(errors))
    return cfg


def validate(cfg: StudyConfig) -> None:
    """Check a config built or changed in code (defaults resolved, consistency) as ``load_config`` does."""
    errors = resolve_defaults(cfg) + problems(cfg)
    if errors:
        raise ConfigError(f"invalid study config ({len(errors)} problem(s)):\n  - " + "\n  - ".join(errors))


def resolve_defaults(cfg: StudyConfig) -> list[str]:
    """Fill in what defaults to other keys: ``pretrain.methods`` (empty: the pretraining
    methods of ``grid.models``), ``grid.archs`` (empty: ``[model.arch]``) and the section of
    every listed method; returns the unknown methods found on the way."""
    methods = registry.method_names()
    if not cfg.pretrain.methods:
        cfg.pretrain.methods = [m for m in cfg.grid.models if m in methods]
    if not cfg.grid.archs:
        cfg.grid.archs = [cfg.model.arch]
    if cfg.selection.encoder is None and cfg.pretrain.methods:
        cfg.selection.encoder = cfg.pretrain.methods[0]
    found = []
    for m in cfg.pretrain.methods:
        if m not in methods:
            found.append(f"pretrain.methods: unknown method '{m}'; use {list(methods)}")
        elif m not in cfg.pretrain.sections:
            cfg.pretrain.sections[m] = registry.get_method(m).config()
    return found


def problems(cfg: StudyConfig) -> list[str]:
    """Consistency checks that types and declared ranges cannot express."""
    found: list[str] = []

    def need(cond: bool, msg: str) -> None:
        if not cond:
            found.append(msg)

    try:
        catalog = cfg.catalog.build()
        category_sets = catalog.category_sets
    except ConfigError as err:
        found.append(str(err))
        category_sets = {}
    methods, types_ = registry.method_names(), registry.model_types()
    for m in cfg.grid.models:
        need(m in types_, f"grid.models: unknown model '{m}'; use any of {list(types_)}")
    for m in cfg.grid.models:
        if m in methods:
            need(m in cfg.pretrain.methods, f"grid.models has '{m}' but pretrain.methods does not")
    for name, sizes in cfg.grid.sizes.items():
        need(name in category_sets, f"grid.sizes.{name}: unknown category set; known sets are {sorted(category_sets)}")
        need(all(s >= 2 for s in sizes), f"grid.sizes.{name}: train sizes must be >= 2")
    need(len(set(cfg.grid.archs)) == len(cfg.grid.archs), f"grid.archs: {cfg.grid.archs} lists an arch twice")
    if cfg.model.require_init:
        checkpoints = {"baseline": "IM1K-Unsup-MoCo (e.g. MoCo v2's moco_v2_800ep_pretrain.pth.tar for ResNet-50)",
                       "moco": "IM1K-Unsup-MoCo (e.g. MoCo v2's moco_v2_800ep_pretrain.pth.tar)",
                       "byol": "IM1K-Unsup-BYOL (e.g. a ResNet-50 BYOL checkpoint converted to PyTorch)"}
        wanted = {"model.baseline_init": (cfg.model.baseline_init, "baseline")} if registry.BASELINE in cfg.grid.models else {}
        wanted.update({f"model.pretrain_init.{m}": (cfg.model.pretrain_init.get(m), m) for m in cfg.pretrain.methods})
        for key, (value, who) in wanted.items():
            need(bool(value), f"{key}: this study starts from ImageNet weights, as the paper does "
                 f"(Sect. 4.2.1: {checkpoints.get(who, 'a checkpoint of the same arch')}); pass "
                 f"--set {key}=/path/to/checkpoint, or --set {key}={RANDOM_INIT} to start from random weights")
    f = cfg.finetune
    need(f.micro_batch_size != 1, "finetune.micro_batch_size: BatchNorm needs at least 2 images; use 0 (whole batch) or >= 2")
    need(f.max_steps == 0 or f.max_steps >= f.min_steps,
         f"finetune.max_steps ({f.max_steps}) is below finetune.min_steps ({f.min_steps}); raise it or use 0 (no cap)")
    gset = cfg.data.generalization_category_set
    need(gset is None or gset in category_sets, f"data.generalization_category_set: unknown category set '{gset}'")
    for section in ("pretrain", "finetune"):
        aug: AugmentConfig = getattr(cfg, section).augment
        need(0.0 < aug.crop_scale[0] <= aug.crop_scale[1] <= 1.0 if len(aug.crop_scale) == 2 else False, f"{section}.augment.crop_scale: two numbers 0 < lo <= hi <= 1")
        need(aug.crop_size <= aug.resize, f"{section}.augment.crop_size must not exceed resize")
    need(cfg.search.model in types_, f"search.model: use one of {list(types_)}")
    found += selection_problems(cfg)
    eset = cfg.embeddings.category_set
    need(eset is None or eset in cfg.grid.sizes, f"embeddings.category_set: '{eset}' is not in grid.sizes")
    return found


def selection_problems(cfg: StudyConfig) -> list[str]:
    """``grid.selection`` and the ``selection`` section: known strategies and sets, the holdout
    protocol for non-random strategies, a pretrained encoder for the embedding strategies."""
    from raystudy.selection import EMBEDDING_STRATEGIES, STRATEGIES

    g, found = cfg.grid, []
    lists = g.selection.items() if isinstance(g.selection, dict) else [(None, g.selection)]
    for name, strategies in lists:
        key = "grid.selection" if name is None else f"grid.selection.{name}"
        if name is not None and name not in g.sizes:
            found.append(f"{key}: category set '{name}' is not in grid.sizes ({sorted(g.sizes)})")
        if not strategies:
            found.append(f"{key}: empty; list at least one strategy, e.g. [random]")
        if len(set(strategies)) != len(strategies):
            found.append(f"{key}: {strategies} lists a strategy twice")
        for i, s in enumerate(strategies):
            if s not in STRATEGIES:
                found.append(f"{key}[{i}]: unknown selection strategy '{s}'; use one of {list(STRATEGIES)}")
    chosen = [s for s in g.all_strategies() if s in STRATEGIES]
    other = [s for s in chosen if s != "random"]
    if other and g.protocol != "holdout":
        found.append(
            f"grid.selection: {other} need grid.protocol: holdout (under '{g.protocol}' the validation folds "
            "are drawn inside the n selected images, so they would differ between strategies and the cells "
            "would not be paired); set grid.protocol: holdout or use only [random]")
    enc = cfg.selection.encoder
    if any(s in EMBEDDING_STRATEGIES for s in chosen):
        if enc is None:
            found.append(f"selection.encoder: {[s for s in chosen if s in EMBEDDING_STRATEGIES]} embed the pool with "
                         "a pretrained encoder, but the study pretrains none; add a method to pretrain.methods")
        elif enc not in cfg.pretrain.methods:
            found.append(f"selection.encoder: '{enc}' is not pretrained by this study; use one of {cfg.pretrain.methods}")
    return found


def dump_config(cfg: StudyConfig, path: "str | Path | storage.Location") -> None:
    """Write the resolved config as YAML, atomically (a path or a URI: see :mod:`raystudy.storage`)."""
    from raystudy.storage import as_location

    as_location(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
