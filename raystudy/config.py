"""Study configuration: strict pydantic models loaded from YAML.

A study is one YAML file (``studies/<preset>.yaml``). Unknown keys, values of the
wrong type and out-of-range values are refused with the full key path, before
anything is trained or written; every problem of a file is reported at once.

Checks live where a field is declared: a ``Literal`` annotation lists the choices,
``Annotated[int, at_least(1)]`` (``gt``, ``in_unit_interval``, ``probability``: see
:mod:`raystudy.configbase`) the range, and ``Annotated[..., NO_HASH]`` leaves a field out
of :meth:`StudyConfig.config_hash`. Every float must be finite. Each pretraining method
reads its own section ``pretrain.<method>`` (a model declared with the method, see
:mod:`raystudy.registry`). ``raystudy schema`` prints the JSON Schema (``studies/schema.json``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import ErrorDetails

import raystudy.methods  # noqa: F401  (imported for its effect: registers the built-in pretraining methods)
import raystudy.selection  # noqa: F401  (imported for its effect: registers the built-in selection strategies)
from raystudy import registry
from raystudy.catalog import (
    BASIC_HABITS,
    CATEGORIES_4,
    CATEGORIES_19,
    DEFAULT_ALIASES,
    Catalog,
)
from raystudy.configbase import (  # ConfigError, RANDOM_INIT, weights_path: re-exported
    NO_HASH,
    RANDOM_INIT,
    ConfigError,
    Section,
    at_least,
    gt,
    in_unit_interval,
    load_yaml,
    probability,
)
from raystudy.methods import Arch, ModelConfig  # re-exported
from raystudy.storage import Location, as_location

STUDIES_DIR = Path(__file__).resolve().parents[1] / "studies"
PRESETS = ("smoke", "demo", "paper")
ARCHS = ("resnet18", "resnet34", "resnet50", "resnet101")
TRACKERS = ("mlflow", "wandb", "aim")  # the experiment trackers of ``tracking:``


@dataclass(frozen=True)
class _Inline:
    """Annotation marker: the field's mapping sits inline in its parent (``pretrain.<method>``)."""


INLINE = _Inline()
Problem = tuple[tuple[Any, ...], str]  # (the key path, for ordering and stripping; the message)


class SyntheticConfig(Section):
    """The embedded procedural data set, generated on first use."""

    campaigns: dict[str, int] = Field(default_factory=lambda: {"NASCENT19": 1200, "NASCENT20": 900, "CLOUDLAB": 300})
    image_size: int = 64
    seed: int = 0


class DataConfig(Section):
    """Where images come from and which campaign plays which role."""

    root: str | None = None  # DATA/<campaign>/<category>/*.png; None: synthetic
    manifest: str | None = None  # CSV or Parquet with columns path, label, campaign
    image_size: Annotated[int, at_least(8)] = 64  # side of the cached uint8 array
    labeled_campaign: str = "NASCENT19"
    pretrain_campaigns: list[str] = Field(default_factory=lambda: ["NASCENT19", "NASCENT20"])
    generalization_campaign: str | None = "CLOUDLAB"
    generalization_category_set: str | None = "4cat"
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)


class CatalogConfig(Section):
    """The labeling scheme; defaults to the paper's 19 categories (Table 2)."""

    categories: list[str] = Field(default_factory=lambda: list(CATEGORIES_19))
    basic: list[str] = Field(default_factory=lambda: list(BASIC_HABITS))
    category_sets: dict[str, list[str]] = Field(
        default_factory=lambda: {"19cat": list(CATEGORIES_19), "4cat": list(CATEGORIES_4)}
    )
    aliases: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_ALIASES))
    groups: dict[str, str] = Field(default_factory=dict)
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


class AugmentConfig(Section):
    """Augmentations of Sect. 3.1; sizes in pixels of the cached images."""

    resize: Annotated[int, at_least(1)] = 256
    crop_size: Annotated[int, at_least(1)] = 224
    crop_scale: list[float] = Field(default_factory=lambda: [0.6, 1.0])
    jitter_p: Annotated[float, probability()] = 0.8
    brightness: Annotated[float, at_least(0)] = 0.4
    contrast: Annotated[float, at_least(0)] = 0.4
    saturation: Annotated[float, at_least(0)] = 0.2
    blur_p: Annotated[float, probability()] = 0.5
    blur_sigma: list[float] = Field(default_factory=lambda: [0.1, 2.0])
    solarize_p: Annotated[float, probability()] = 0.2
    flip_p: Annotated[float, probability()] = 0.5
    rotation_degrees: list[float] = Field(default_factory=lambda: [0.0, 180.0])


class PretrainConfig(Section):
    """Upstream self-supervised pretraining on Ray Train (Sect. 3.3, 4.1).

    ``methods`` empty: the pretraining methods of ``grid.models``. ``sections`` holds the
    per-method sections, written ``pretrain.<method>: {...}`` in YAML (each method's
    config model, defaults for every listed method); read one with :meth:`section`.
    """

    model_config = ConfigDict(json_schema_extra=lambda schema, cls: _method_schemas(schema))

    methods: list[str] = Field(default_factory=list)
    # at most this many epochs (the cosine schedule spans them); with ``patience`` > 0 a run
    # stops earlier, after at least ``min_epochs``, once its online kNN has not improved for
    # ``patience`` epochs (``pretraining.stop_reason``); 0: always ``epochs``
    epochs: Annotated[int, at_least(1)] = 100
    min_epochs: Annotated[int, at_least(1)] = 1
    patience: Annotated[int, at_least(0)] = 0
    # epochs are raised until a run takes at least this many optimizer steps (small data sets get
    # more epochs, about the same steps and time); 0: always ``epochs``
    min_steps: Annotated[int, at_least(0)] = 0
    batch_size_per_worker: Annotated[int, at_least(2)] = 64
    # hashed (it sets the global pretraining batch, the scaled LR and SimCLR's negatives); one
    # worker, the default, is left out of the hash so run folders of earlier versions resume
    num_workers: Annotated[int, at_least(1)] = 1
    cpus_per_worker: Annotated[int, at_least(1), NO_HASH] = 1
    use_gpu: Annotated[bool | Literal["auto", "true", "false"], NO_HASH] = "auto"
    # a lost worker (or node) restarts the DDP group from its last epoch checkpoint this many times
    max_failures: Annotated[int, at_least(0), NO_HASH] = 3
    # worker-group start-ups before the pretraining fails (each waits RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S,
    # 60 s by default): time for an autoscaler to boot nodes; a group that can never start fails its job
    start_attempts: Annotated[int, at_least(1), NO_HASH] = 10
    sync_batchnorm: bool | Literal["auto"] = "auto"  # SyncBatchNorm over > 1 GPU workers; auto: the method's choice
    optimizer: Literal["lars", "sgd"] = "lars"
    base_lr: Annotated[float, gt(0)] = 0.3  # scaled by global batch / 256
    weight_decay: Annotated[float, at_least(0)] = 1.0e-6
    warmup_epochs: Annotated[int, at_least(0)] = 10
    probe: bool = True  # kNN and linear-probe accuracy of each frozen encoder
    probe_knn_k: Annotated[int, at_least(1)] = 20
    # online kNN every epoch on rank 0: this many labeled images of the pretraining campaigns that no
    # cell trains, validates or tests on (half memory bank, half queries); 0 turns it off
    online_knn_images: Annotated[int, at_least(0), NO_HASH] = 256
    # The learned-encoder gate: a pretraining whose final online kNN is not above its starting
    # weights' by at least this many points stops the study before its CSSL cells (they would
    # measure an untrained encoder), unless ``allow_unlearned``.
    learn_margin_pp: Annotated[float, NO_HASH] = 1.0
    allow_unlearned: Annotated[bool, NO_HASH] = False
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    sections: Annotated[dict[str, Any], INLINE] = Field(default_factory=dict)

    def section(self, method: str) -> Any:
        """The typed ``pretrain.<method>`` section (its defaults when not given)."""
        if method not in self.sections:
            return registry.get_method(method).config()
        return self.sections[method]

    def wants_gpu(self) -> bool | None:
        """True / False as configured; None for ``auto`` (use one when the cluster has one)."""
        return None if self.use_gpu == "auto" else self.use_gpu in (True, "true")

    @model_validator(mode="before")
    @classmethod
    def _method_sections(cls, raw: Any, info: ValidationInfo) -> Any:
        """Move the ``pretrain.<method>`` keys into ``sections``, each checked by its method's
        config; an old flat key that moved gets its own message. Problems go to the load's list."""
        if not isinstance(raw, dict):
            return raw
        out, sections, found = dict(raw), {}, []
        given = {**out.pop("sections", {}), **{k: out.pop(k) for k in list(out) if k in registry.methods()}}
        for name, value in given.items():
            section: Any = registry.get_method(name).config
            if isinstance(value, section):
                sections[name] = value
            elif not isinstance(value, dict):
                found.append(
                    (("pretrain", name), f"pretrain.{name}: expected a mapping of {name}'s settings, got {value!r}")
                )
            else:
                try:
                    sections[name] = section.model_validate(value)
                except ValidationError as err:
                    found += translate(err, section, ("pretrain", name))
        for key in list(out):
            if (moved := _moved_key_message(key)) is not None:
                found.append((("pretrain", key), moved))
                del out[key]
        problems_ = (info.context or {}).get("problems")
        if found and problems_ is None:  # built in code, not by load_config
            raise ValueError("; ".join(message for _, message in found))
        problems_ = problems_ if problems_ is not None else []
        problems_.extend(found)
        return {**out, "sections": sections}


class FinetuneConfig(Section):
    """Downstream fine-tuning trials on Ray Tune (Sect. 3.4, 4.1)."""

    # How long a cell trains (the stopping rule, the same for every model type): ``epochs``
    # passes over its n training images, and at least ``min_steps`` optimizer steps (small n
    # get more epochs), at most ``max_steps`` (0: no cap). ``trials`` records the steps,
    # the epochs, which bound decided (``stop_reason``), the final training loss and the
    # training accuracy, so a reader can see whether a cell learned what its images teach.
    epochs: Annotated[int, at_least(1)] = 50
    min_steps: Annotated[int, at_least(0)] = 0
    max_steps: Annotated[int, at_least(0)] = 0
    # A cell has fitted its training images when its accuracy on them (eval transform) is at
    # least this: ``trials.fitted``; the report marks sizes whose cells did not. The supervised
    # ceiling trains until it reaches it (``grid.ceiling_max_cycles``).
    fit_accuracy: Annotated[float, in_unit_interval()] = 0.98
    # The global batch per optimizer step (the paper: 64 per GPU x 4 GPUs = 256); the learning
    # rate is scaled from it. A trial runs on one device and accumulates gradients over
    # micro-batches of ``micro_batch_size`` images (0: the whole batch at once; the paper's
    # BatchNorm saw 64 images per GPU).
    batch_size: Annotated[int, at_least(2)] = 64
    micro_batch_size: Annotated[int, at_least(0)] = 0
    base_lr: Annotated[float, gt(0)] = 0.01
    momentum: Annotated[float, in_unit_interval()] = 0.9
    weight_decay: Annotated[float, at_least(0)] = 1.0e-4
    warmup_epochs: Annotated[int, at_least(0)] = 2
    cpus_per_trial: Annotated[float, gt(0), NO_HASH] = 1.0
    gpus_per_trial: Annotated[float, at_least(0), NO_HASH] = 0.0  # 0 on a CPU-only machine; fractions share a GPU
    max_concurrent_trials: Annotated[int, at_least(0), NO_HASH] = 0  # 0: as many as resources allow
    max_retries: Annotated[int, at_least(0), NO_HASH] = (
        2  # a failing trial is retried from its checkpoint this many times
    )
    eval_batch_size: Annotated[int, at_least(1)] = 256
    checkpoint_every_s: Annotated[float, at_least(0)] = 60.0  # a trial saves its epoch state at most this often
    recalibrate_bn: bool = True  # re-estimate BatchNorm statistics on the training images before evaluation
    balanced_sampling: bool = False  # draw batches with equal expected share per category
    logit_adjustment_tau: Annotated[float, at_least(0)] = 0.0  # > 0: logit-adjusted loss (Menon et al. 2021)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class GridConfig(Section):
    """The study grid: model types x backbones x category sets x train sizes x folds."""

    models: list[str] = Field(default_factory=lambda: ["moco", "byol", "baseline"])
    archs: list[Arch] = Field(default_factory=list)  # empty: [model.arch]
    sizes: dict[str, list[int]] = Field(
        default_factory=lambda: {
            "19cat": [128, 256, 512, 1024, 2048, 4096, 8192, 16384, 18864],
            "4cat": [128, 256, 512, 1024, 2048, 4096, 8192],
        }
    )
    folds: Annotated[int, at_least(2)] = 5
    protocol: Literal["paper", "holdout"] = "paper"  # paper: CV inside the n images | holdout: fixed folds
    # > 0: the supervised ceiling, one baseline cell per category set trained on all its labeled
    # images (fold 0 of ``folds`` held out); the report draws it as a line. It trains in cosine
    # cycles (warm restarts) of at least this many epochs and at least as many steps as the
    # longest cell of its set, until a cycle ends with the training images fitted
    # (``finetune.fit_accuracy``), at most ``ceiling_max_cycles`` cycles.
    ceiling_epochs: Annotated[int, at_least(0)] = 0
    ceiling_max_cycles: Annotated[int, at_least(1)] = 3
    # Which n images a cell trains on (registry.strategy_names()): a list for every category
    # set, or a mapping by set like ``sizes`` (a set it does not name gets [random]). Strategies
    # other than random need protocol: holdout (the validation fold is then the same for all).
    selection: list[str] | dict[str, list[str]] = Field(default_factory=lambda: ["random"])

    def strategies(self, category_set: str) -> list[str]:
        """The selection strategies of one category set (``[random]`` when not named)."""
        if isinstance(self.selection, dict):
            return list(self.selection.get(category_set, ["random"]))
        return list(self.selection)

    def all_strategies(self) -> list[str]:
        """Every strategy of any category set of ``sizes``, first-seen order."""
        return list(dict.fromkeys(s for name in self.sizes for s in self.strategies(name)))


class SelectionConfig(Section):
    """Knobs of the selection strategies (``grid.selection``; also ``raystudy advise``)."""

    # the pretraining method whose encoder (on the cell's arch) embeds the pool for the strategies
    # that embed (coreset, typiclust, probcover, uncertainty), once per (set, n, fold, strategy, arch)
    # for every model type, and for raystudy advise; None: the first of pretrain.methods
    encoder: str | None = None
    uncertainty_rounds: Annotated[int, at_least(1)] = 4  # refit-and-add rounds after the seed set
    uncertainty_seed_fraction: Annotated[float, gt(0)] = 0.25  # share of n drawn at random first


class EmbeddingConfig(Section):
    """Fig. 8: t-SNE maps of fold 0's validation embeddings at three stages."""

    models: list[str] = Field(default_factory=lambda: ["moco"])
    category_set: str | None = None  # None: the first category set of the grid
    sizes: list[int] = Field(default_factory=list)  # empty: the four largest runnable sizes
    max_points: Annotated[int, at_least(1)] = 2000


class SearchConfig(Section):
    """Hyperparameter search at one train size (``raystudy search``)."""

    model: str = "baseline"
    category_set: str | None = None  # None: the first category set of the grid
    train_size: int = 0  # 0: the largest size of that set that the data allows
    fold: int = 0
    num_samples: Annotated[int, at_least(1)] = 8
    algorithm: Literal["random", "optuna"] = "random"
    scheduler: Literal["asha", "fifo"] = "asha"  # asha: early stopping
    grace_period: Annotated[int, at_least(1)] = 1
    space: dict[str, dict[str, list[Any]]] = Field(
        default_factory=lambda: {
            "finetune.base_lr": {"loguniform": [0.05, 2.0]},
            "finetune.weight_decay": {"loguniform": [1.0e-6, 1.0e-3]},
        }
    )


class AnalysisConfig(Section):
    """The report's settings (``analysis/``): the models it compares and labeling-time model."""

    reference_model: str = "baseline"
    cssl_model: str = "moco"
    seconds_per_image: Annotated[float, gt(0)] = 33.0
    labeling_time_model: Literal["constant", "per_group"] = "constant"
    basic_seconds: Annotated[float, gt(0)] = 6.0
    complex_seconds: Annotated[float, gt(0)] = 60.0
    reference_points: list[dict[str, Any]] = Field(default_factory=list)  # {train_size, accuracy, ...}
    targets: list[float] = Field(default_factory=lambda: [0.8, 0.9])  # > 1 read as percent
    compare_models: list[str] | None = None  # None: [cssl_model, reference_model]
    advantage_max_size: Annotated[int, at_least(1)] = 2048  # "average CSSL advantage at sizes up to ..."
    n_bootstrap: Annotated[int, at_least(1)] = 1000  # paired-difference CI resamples
    curve_bootstrap: Annotated[int, at_least(0)] = 100  # unused since the weighted curve fits; configs may still set it
    seed: int = 0
    tsne_max_points: Annotated[int, at_least(1)] = 1500  # per panel, seeded subsample
    max_band_width: Annotated[float | None, gt(0)] = None  # learning-curve band limit; None: the report's
    # a learning curve's labels-needed number is printed only when the curve fitted without the
    # largest size predicts that size within this many pp (README: "How far to trust the report")
    backtest_tolerance_pp: Annotated[float, gt(0)] = 2.0
    doa_margin_pp: Annotated[float, gt(0)] = 2.0  # DOA non-inferiority margin (pp)


class MlflowTracking(Section):
    """MLflow: one run per study, a nested run per cell and per pretraining run."""

    # None: sqlite:///<run location>/mlflow.db for a local run folder; a cluster of more than one
    # node, or a run location on an object store, needs a tracking server (http://host:5000)
    uri: str | None = None
    experiment: str | None = None  # None: the study name


class WandbTracking(Section):
    """Weights & Biases through Ray's ``WandbLoggerCallback``: one W&B run per trial."""

    project: str | None = None  # None: the study name
    group: str | None = None  # None: the study name (a cell's configuration is its job_type)


class AimTracking(Section):
    """Aim through Ray's ``AimLoggerCallback``: one Aim run per trial."""

    repo: str | None = None  # None: <run location>/aim (a local run folder only)


class TrackingConfig(Section):
    """Experiment trackers the study logs to (none by default; ``--track mlflow``); none changes a result."""

    mlflow: MlflowTracking | None = None
    wandb: WandbTracking | None = None
    aim: AimTracking | None = None

    def chosen(self) -> list[str]:
        """The trackers asked for, in a fixed order."""
        return [name for name in TRACKERS if getattr(self, name) is not None]

    def turn_on(self, name: str) -> None:
        """Track to ``name`` (one of :data:`TRACKERS`) with its defaults, unless configured already (``--track``)."""
        if getattr(self, name) is None:
            setattr(self, name, {"mlflow": MlflowTracking, "wandb": WandbTracking, "aim": AimTracking}[name]())


class StudyConfig(Section):
    name: Annotated[str, NO_HASH] = "study"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    catalog: CatalogConfig = Field(default_factory=CatalogConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    grid: GridConfig = Field(default_factory=GridConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    embeddings: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    search: Annotated[SearchConfig, NO_HASH] = Field(default_factory=SearchConfig)
    analysis: Annotated[AnalysisConfig, NO_HASH] = Field(default_factory=AnalysisConfig)
    tracking: Annotated[TrackingConfig, NO_HASH] = Field(default_factory=TrackingConfig)

    def to_dict(self, hashed_only: bool = False) -> dict[str, Any]:
        """The config as plain data, as written in YAML (``pretrain.<method>`` sections inline).

        ``hashed_only``: without the fields marked ``NO_HASH`` (what the hash covers).
        """
        return _plain(self, hashed_only)

    def config_hash(self) -> str:
        """Hash of everything that changes a trial's result (not paths, names or resources)."""
        return _hash(self._hashed())

    def _hashed(self) -> dict[str, Any]:
        hashed = self.to_dict(hashed_only=True)
        if self.grid.all_strategies() == [
            "random"
        ]:  # a study without the selection axis keeps the hash it had before it
            hashed["grid"].pop("selection", None)
            hashed.pop("selection", None)
        if self.pretrain.sync_batchnorm == "auto":  # likewise a study that leaves sync_batchnorm at its default
            hashed["pretrain"].pop("sync_batchnorm", None)
        if self.pretrain.num_workers == 1:  # and one that pretrains on one worker
            hashed["pretrain"].pop("num_workers", None)
        if self.pretrain.min_steps == 0:  # as before the key existed
            hashed["pretrain"].pop("min_steps", None)
        for method in self.pretrain.sections:
            if method not in self.pretrain.methods:  # a section of a method the study does not pretrain
                hashed["pretrain"].pop(method, None)
            elif (
                isinstance(hashed["pretrain"].get(method), dict)
                and hashed["pretrain"][method].get("min_steps", 0) is None
            ):
                hashed["pretrain"][method].pop("min_steps")  # pretrain.min_steps applies, as before the key existed
        if self.pretrain.patience == 0:  # without early stopping every run trains pretrain.epochs
            hashed["pretrain"].pop("patience", None)
            hashed["pretrain"].pop("min_epochs", None)
        if self.grid.ceiling_epochs == 0:  # without a ceiling, its stopping rule trains nothing
            hashed["grid"].pop("ceiling_max_cycles", None)
            hashed["finetune"].pop("fit_accuracy", None)
        return hashed


# Grid axes: each value adds cells and changes none of the others (a cell's split depends on
# its own set, size and fold; ``grid.folds`` is not an axis: k changes every fold's split).
GRID_AXES = ("models", "archs", "sizes", "selection")


def _hash(hashed: dict[str, Any]) -> str:
    blob = json.dumps(hashed, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def changed_keys(a: StudyConfig, b: StudyConfig) -> list[str]:
    """Dotted keys whose hashed values differ between two configs (what makes them two studies)."""

    def flat(value: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {prefix.rstrip("."): value}

    fa, fb = flat(a._hashed()), flat(b._hashed())
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


def training_differences(a: StudyConfig, b: StudyConfig) -> list[str]:
    """The :func:`changed_keys` that change how a cell both configs hold trains: all but the grid
    axes (:data:`GRID_AXES`), ``pretrain.methods`` and the sections of methods only one has.

    Empty: ``b`` is ``a`` with its grid grown or shrunk, and their common cells are the same.
    """
    skip = [f"grid.{axis}" for axis in GRID_AXES] + ["pretrain.methods"]
    skip += [f"pretrain.{m}" for m in set(a.pretrain.sections) ^ set(b.pretrain.sections)]
    return [k for k in changed_keys(a, b) if not any(k == s or k.startswith(s + ".") for s in skip)]


def grid_growth(previous: StudyConfig, cfg: StudyConfig) -> tuple[list[str], list[str]]:
    """(what ``cfg`` adds to ``previous``'s grid, what it drops), one phrase per axis value."""
    added: list[str] = []
    dropped: list[str] = []

    def compare(name: str, old: list[Any], new: list[Any]) -> None:
        added.extend(f"{name} {v}" for v in new if v not in old)
        dropped.extend(f"{name} {v}" for v in old if v not in new)

    g0, g1 = previous.grid, cfg.grid
    compare("model", list(g0.models), list(g1.models))
    compare("arch", list(g0.archs), list(g1.archs))
    for cset in dict.fromkeys([*g0.sizes, *g1.sizes]):
        compare(f"{cset} size", list(g0.sizes.get(cset, [])), list(g1.sizes.get(cset, [])))
        compare(f"{cset} strategy", g0.strategies(cset) if cset in g0.sizes else [], g1.strategies(cset))
    return added, dropped


def _plain(value: Any, hashed_only: bool) -> Any:
    if isinstance(value, BaseModel):
        out: dict[str, Any] = {}
        for name, info in type(value).model_fields.items():
            if hashed_only and NO_HASH in info.metadata:
                continue
            item = _plain(getattr(value, name), hashed_only)
            if INLINE in info.metadata:
                out.update(item)  # pretrain.<method> sections sit inline
            else:
                out[name] = item
        return out
    if isinstance(value, dict):
        return {k: _plain(v, hashed_only) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, hashed_only) for v in value]
    return value


def _method_schemas(schema: dict[str, Any]) -> None:
    """JSON Schema of ``pretrain``: the registered methods' sections as properties, no ``sections``."""
    schema["properties"].pop("sections", None)
    for name, spec in registry.methods().items():
        section: Any = spec.config
        schema["properties"][name] = section.model_json_schema()


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a study YAML file (``raystudy schema``; editors read ``studies/schema.json``)."""
    schema = StudyConfig.model_json_schema()
    schema["title"] = "raystudy study config"
    return schema


def schema_text() -> str:
    """:func:`json_schema` as the text of ``studies/schema.json`` (indented, ends with a newline)."""
    return json.dumps(json_schema(), indent=2) + "\n"


# ---------------------------------------------------------------- pydantic's errors in the study's words


def _unwrap(tp: Any) -> Any:
    """``X | None`` -> X (pydantic's nullable needs no union tag in an error's location)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _member(tp: Any, tag: str) -> Any:
    """The member of union ``tp`` that pydantic's location tag (``list[str]``, ``bool``) names."""
    for arg in typing.get_args(tp):
        origin = typing.get_origin(arg)
        name = "literal" if origin is Literal else getattr(origin or arg, "__name__", "")
        if tag.split("[")[0] == name:
            return arg
    return Any


def _walk(root: type, loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], str, int | None]:
    """An error's location as (key path without union tags, dotted key, index in ``loc`` of the
    first union tag or None)."""
    tp: Any = root
    path, dotted, union_at = [], "", None
    for i, part in enumerate(loc):
        tp = _unwrap(tp)
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            union_at = i if union_at is None else union_at
            tp = _member(tp, str(part))
            continue
        path.append(part)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            field = tp.model_fields.get(part)
            dotted, tp = f"{dotted}.{part}", (field.annotation if field else Any)
        elif origin is list:
            dotted, tp = f"{dotted}[{part}]", typing.get_args(tp)[0]
        elif origin is dict and part == "[key]":
            dotted, tp = f"{dotted} key", typing.get_args(tp)[0]
        elif origin is dict:
            dotted, tp = f"{dotted}.{part}", typing.get_args(tp)[1]
        else:
            dotted, tp = f"{dotted}.{part}", Any
    return tuple(path), dotted.lstrip("."), union_at


def _text(error: ErrorDetails) -> str:
    """One pydantic error as the rule and the value given (``expected int, got str 'ten'``)."""
    kind, value = error["type"], error["input"]
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "range":
        return f"{error['ctx']['text']}, got {error['ctx']['value']!r}"  # the value as read (an int read as a float)
    if kind == "finite_number":
        return f"must be a finite number, got {value!r}"
    if kind == "literal_error":
        return f"{value!r} is not one of {', '.join(error['ctx']['expected'].rsplit(' or ', 1))}"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"expected a mapping, got {value!r}"
    if kind == "list_type":
        return f"expected a list, got {value!r}"
    if kind == "string_type" and number:
        return f"expected text, got the number {value!r}"
    names = {"int_type": "int", "float_type": "float", "string_type": "str", "bool_type": "bool"}
    if kind in names:
        return f"expected {names[kind]}, got {type(value).__name__} {value!r}"
    return f"invalid value {value!r} ({error['msg']})"


def _allowed(root: type, path: tuple[Any, ...]) -> list[str]:
    """The keys a mapping at ``path`` accepts (``pretrain`` also: the registered methods)."""
    tp: Any = root
    for part in path:
        tp = _unwrap(tp.model_fields[part].annotation)
    keys = [k for k, info in tp.model_fields.items() if INLINE not in info.metadata]
    return sorted(keys) + (sorted(registry.methods()) if tp is PretrainConfig else [])


def translate(err: ValidationError, root: type, prefix: tuple[Any, ...] = ()) -> list[Problem]:
    """pydantic's errors for ``root`` (found at key path ``prefix``) as the study's problems:
    the full dotted key and the fix; unknown keys grouped per mapping, union members joined."""
    pre = ".".join(map(str, prefix))

    def join(dotted: str) -> str:
        return f"{pre}.{dotted}" if pre and dotted else pre or dotted

    found: dict[tuple[tuple[Any, ...], str], list[str]] = {}
    unknown: dict[tuple[Any, ...], list[str]] = {}
    for error in err.errors():
        loc = tuple(error["loc"])
        path, dotted, union_at = _walk(root, loc)
        if error["type"] == "extra_forbidden":
            unknown.setdefault(path[:-1], []).append(join(dotted))
            continue
        at, key = path, dotted
        if union_at is not None:  # one message for the key, its union members joined by "or"
            at, key, _ = _walk(root, loc[:union_at])
        text = _text(error)
        found.setdefault((at, join(key)), []).append(text if dotted == key else f"{join(dotted)}: {text}")
    out: list[Problem] = []
    for parent, names in unknown.items():
        where = join(".".join(map(str, parent))) or "top level"
        allowed = ", ".join(_allowed(root, parent))
        message = f"unknown config key(s) {', '.join(names)} at {where}; allowed keys are: {allowed}"
        out.append((prefix + parent + (None,), message))
    out += [(prefix + at, f"{key}: {' or '.join(texts)}") for (at, key), texts in found.items()]
    return out


def _moved_key_message(key: str) -> str | None:
    """For an old flat ``pretrain.<key>``: where it lives now (a method's section)."""
    new = [f"pretrain.{s.name}.{s.moved_keys[key]}" for s in registry.methods().values() if key in s.moved_keys]
    if not new:
        return None
    return f"pretrain.{key} has moved: write it as {' or '.join(new)} (each method has its own section)"


def _position(raw: Any, path: tuple[Any, ...]) -> tuple[int, ...]:
    """Where ``path`` sits in the YAML (key order), to report problems in the file's order;
    a trailing None (unknown keys of that mapping) sorts first."""
    out = []
    for part in path:
        if part is None:
            out.append(-1)
        elif isinstance(raw, dict) and part in raw:
            out.append(list(raw).index(part))
            raw = raw[part]
        elif isinstance(raw, list) and isinstance(part, int) and part < len(raw):
            out.append(part)
            raw = raw[part]
        else:
            out.append(1 << 30)
            raw = None
    return tuple(out)


def _strip(raw: dict[str, Any], path: tuple[Any, ...]) -> None:
    """Drop the key of a problem from ``raw``, at the deepest config section, so its default stays."""
    tp: Any = StudyConfig
    node: Any = raw
    for part in path:
        if part is None or not isinstance(node, dict) or part not in node:
            return
        tp = _unwrap(tp)
        field = tp.model_fields.get(part) if isinstance(tp, type) and issubclass(tp, BaseModel) else None
        sub = _unwrap(field.annotation) if field else None
        if (
            field is None
            or not (isinstance(sub, type) and issubclass(sub, BaseModel))
            or not isinstance(node[part], dict)
        ):
            del node[part]
            return
        node, tp = node[part], sub


def build_section(cls: type[Section], raw: Any, prefix: str = "") -> Any:
    """One config section (``CatalogConfig``, at key ``prefix``) from plain data; its problems
    raised together as one ConfigError.

    Example:
        >>> build_section(CatalogConfig, {"strict": True}, "catalog").strict
        True
    """
    found: list[Problem] = []
    try:
        section = cls.model_validate(raw, context={"problems": found})
    except ValidationError as err:
        found += translate(err, cls, tuple(prefix.split(".")) if prefix else ())
    if found:
        raise ConfigError("; ".join(message for _, message in found))
    return section


def build(raw: dict[str, Any]) -> tuple[StudyConfig, list[str]]:
    """Validate ``raw`` as a :class:`StudyConfig`; returns it and every problem, in the file's order.

    A key with a problem keeps its default, so the consistency checks after it still run.
    """
    problems_: list[Problem] = []
    try:
        cfg = StudyConfig.model_validate(raw, context={"problems": problems_})
    except ValidationError as err:
        problems_ += translate(err, StudyConfig)
        kept = copy.deepcopy(raw)
        for path, _ in problems_:
            _strip(kept, path)
        try:
            cfg = StudyConfig.model_validate(kept, context={"problems": []})
        except ValidationError:  # a problem the strip did not reach: all defaults
            cfg = StudyConfig()
    problems_.sort(key=lambda p: _position(raw, p[0]))
    return cfg, [message for _, message in problems_]


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a", "b", "c"], value); the value is parsed as YAML (``3``, ``[1, 2]``)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value, e.g. --set finetune.epochs=3")
    key, text = item.split("=", 1)
    try:
        value = load_yaml(text)
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
    """The top-level mapping of a study YAML file; a missing, empty or non-mapping file is a ConfigError."""
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory; give a study YAML file, e.g. --config study.yaml")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = load_yaml(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from err
    except OSError as err:
        raise ConfigError(f"config file {path} cannot be read ({err.strerror or err})") from err
    if raw is None:
        raise ConfigError(
            f"config file {path} is empty; write the study's settings in it (studies/smoke.yaml is an example), "
            "or use --preset NAME"
        )
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
    cfg, errors = build(raw)
    errors += resolve_defaults(cfg) + problems(cfg)
    set_keys = [".".join(parse_override(item)[0]) for item in overrides]
    errors = [_blame_set(message, set_keys) for message in errors]
    if errors and all(message.startswith("--set ") for message in errors):
        where = ""  # the file is fine: every problem is a --set value
    if errors:
        raise ConfigError(f"invalid study config{where} ({len(errors)} problem(s)):\n  - " + "\n  - ".join(errors))
    return cfg


def _blame_set(message: str, set_keys: list[str]) -> str:
    """``--set KEY: ...`` for a problem at (or below) a key given with --set, else the message as it is."""
    for key in set_keys:
        if re.search(rf"(?<![\w.]){re.escape(key)}(?!\w)", message):
            return f"--set {message}"
    return message


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
        twice = sorted({s for s in sizes if sizes.count(s) > 1})
        need(not twice, f"grid.sizes.{name}: {sizes} lists the train size(s) {twice} twice; list each size once")
    need(len(set(cfg.grid.archs)) == len(cfg.grid.archs), f"grid.archs: {cfg.grid.archs} lists an arch twice")
    if cfg.model.require_init:
        checkpoints = {
            "baseline": "IM1K-Unsup-MoCo (e.g. MoCo v2's moco_v2_800ep_pretrain.pth.tar for ResNet-50)",
            "moco": "IM1K-Unsup-MoCo (e.g. MoCo v2's moco_v2_800ep_pretrain.pth.tar)",
            "byol": "IM1K-Unsup-BYOL (e.g. a ResNet-50 BYOL checkpoint converted to PyTorch)",
        }
        wanted = (
            {"model.baseline_init": (cfg.model.baseline_init, "baseline")}
            if registry.BASELINE in cfg.grid.models
            else {}
        )
        wanted.update({f"model.pretrain_init.{m}": (cfg.model.pretrain_init.get(m), m) for m in cfg.pretrain.methods})
        for key, (value, who) in wanted.items():
            need(
                bool(value),
                f"{key}: this study starts from ImageNet weights, as the paper does "
                f"(Sect. 4.2.1: {checkpoints.get(who, 'a checkpoint of the same arch')}); pass "
                f"--set {key}=/path/to/checkpoint, or --set {key}={RANDOM_INIT} to start from random weights",
            )
    f = cfg.finetune
    need(
        f.micro_batch_size != 1,
        "finetune.micro_batch_size: BatchNorm needs at least 2 images; use 0 (whole batch) or >= 2",
    )
    need(
        f.max_steps == 0 or f.max_steps >= f.min_steps,
        f"finetune.max_steps ({f.max_steps}) is below finetune.min_steps ({f.min_steps}); raise it or use 0 (no cap)",
    )
    gset = cfg.data.generalization_category_set
    need(gset is None or gset in category_sets, f"data.generalization_category_set: unknown category set '{gset}'")
    for section in ("pretrain", "finetune"):
        aug: AugmentConfig = getattr(cfg, section).augment
        need(
            0.0 < aug.crop_scale[0] <= aug.crop_scale[1] <= 1.0 if len(aug.crop_scale) == 2 else False,
            f"{section}.augment.crop_scale: two numbers 0 < lo <= hi <= 1",
        )
        need(aug.crop_size <= aug.resize, f"{section}.augment.crop_size must not exceed resize")
    need(cfg.search.model in types_, f"search.model: use one of {list(types_)}")
    found += selection_problems(cfg)
    eset = cfg.embeddings.category_set
    need(eset is None or eset in cfg.grid.sizes, f"embeddings.category_set: '{eset}' is not in grid.sizes")
    return found


def selection_problems(cfg: StudyConfig) -> list[str]:
    """``grid.selection`` and the ``selection`` section: known strategies and sets, the holdout
    protocol for non-random strategies, a pretrained encoder for the embedding strategies."""
    known, embedding = registry.strategy_names(), registry.embedding_strategy_names()
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
            if s not in known:
                found.append(f"{key}[{i}]: unknown selection strategy '{s}'; use one of {list(known)}")
    chosen = [s for s in g.all_strategies() if s in known]
    other = [s for s in chosen if s != "random"]
    if other and g.protocol != "holdout":
        found.append(
            f"grid.selection: {other} need grid.protocol: holdout (under '{g.protocol}' the validation folds "
            "are drawn inside the n selected images, so they would differ between strategies and the cells "
            "would not be paired); set grid.protocol: holdout or use only [random]"
        )
    enc = cfg.selection.encoder
    if any(s in embedding for s in chosen):
        if enc is None:
            found.append(
                f"selection.encoder: {[s for s in chosen if s in embedding]} embed the pool with "
                "a pretrained encoder, but the study pretrains none; add a method to pretrain.methods"
            )
        elif enc not in cfg.pretrain.methods:
            found.append(
                f"selection.encoder: '{enc}' is not pretrained by this study; use one of {cfg.pretrain.methods}"
            )
    return found


def dump_config(cfg: StudyConfig, path: str | Path | Location) -> None:
    """Write the resolved config as YAML, atomically (a path or a URI: see :mod:`raystudy.storage`)."""
    as_location(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
