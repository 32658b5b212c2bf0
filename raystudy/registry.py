"""The pretraining-method registry: every method the study can pretrain, by name.

A method declares its config section (a :class:`raystudy.configbase.Section`, read from
``pretrain.<name>`` in the study YAML), its model class (built by ``Model.from_config``,
owning its per-step momentum update or none) and registers itself with
:func:`register_method`::

    class SimCLRConfig(Section):
        temperature: Annotated[float, gt(0)] = 0.1

    register_method(MethodSpec("simclr", SimCLRConfig, "raystudy.models.simclr:SimCLR", display_name="SimCLR"))

The model may be given as an import path (``"package.module:Class"``), imported only when a
model is built, so registering and reading configs costs no torch import; the built-in
methods register so in :mod:`raystudy.methods` (imported by :mod:`raystudy.config`). A method
from outside raystudy registers when its module is imported: import it before loading a study
config. Selection strategies (``grid.selection``) register the same way
(:func:`register_strategy`, built-ins in :mod:`raystudy.selection`).

This module imports nothing from raystudy.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BASELINE = "baseline"  # the supervised model type: no pretraining, fine-tuned from its init


@dataclass(frozen=True)
class MethodSpec:
    """One pretraining method.

    Args:
        name: the key in ``pretrain.methods``, ``grid.models`` and ``pretrain.<name>``.
        config: the pydantic model of the method's config section (every field has a default).
        model: the ``PretrainModel`` subclass, or its import path ``"module:Class"``; see :meth:`model_class`.
        display_name: the paper-style short name (``MoCo``); reports show
            ``Semisup-<display_name>`` and ``Unsup-<display_name>``.
        color: the method's colour in the report's figures (None: picked from its name).
        moved_keys: old flat ``pretrain.<key>`` -> the key of this section it moved to.
        order: where the method sits in lists and reports (lower first; ties: by registration).
    """

    name: str
    config: type
    model: Any
    display_name: str
    color: str | None = None
    moved_keys: dict[str, str] = field(default_factory=dict)
    order: int = 100

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name == BASELINE:
            raise ValueError(f"method name {self.name!r} must be an identifier other than '{BASELINE}'")
        if not callable(getattr(self.config, "model_validate", None)):
            raise TypeError(f"method {self.name}: config must be a raystudy.configbase.Section, got {self.config!r}")

    def model_class(self) -> Any:
        """The ``PretrainModel`` subclass; ``model_class().from_config(...)`` builds the model."""
        if not isinstance(self.model, str):
            return self.model
        module, _, name = self.model.partition(":")
        # deferred so that reading a config never imports torch (the entry-point pattern)
        return getattr(importlib.import_module(module), name)


_METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (re-registering the same name replaces it); returns it."""
    _METHODS[spec.name] = spec
    return spec


def methods() -> dict[str, MethodSpec]:
    """Every registered pretraining method, by ``order`` then registration."""
    return dict(sorted(_METHODS.items(), key=lambda item: item[1].order))


def method_names() -> tuple[str, ...]:
    """Names of the registered pretraining methods (``PRETRAIN_METHODS``)."""
    return tuple(methods())


def model_types() -> tuple[str, ...]:
    """Every model type a grid can hold: the pretraining methods and ``baseline``."""
    return method_names() + (BASELINE,)


def get_method(name: str) -> MethodSpec:
    """The registered method ``name``; a KeyError naming the known ones otherwise."""
    known = methods()
    if name not in known:
        raise KeyError(f"unknown pretraining method '{name}'; registered methods are {list(known)}")
    return known[name]


# ---------------------------------------------------------------- selection strategies


@dataclass(frozen=True)
class StrategySpec:
    """One selection strategy of ``grid.selection`` (which ``n`` pool images a cell trains on).

    Args:
        name: the key in ``grid.selection``.
        pick: ``pick(n, seed, labels=..., features=..., rounds=..., seed_fraction=...)`` -> ``n``
            pool positions; it takes the keywords it needs and ignores the rest (``**_``), see
            :func:`raystudy.selection.select`.
        needs_embedding: the strategy reads encoder embeddings of the pool (``selection.encoder``).
        reads_labels: one line on which labels it reads (the pool's, only the selected ones, none).
        order: where it sits in lists (lower first; ties: by registration).
    """

    name: str
    pick: Callable[..., Any]
    needs_embedding: bool
    reads_labels: str
    order: int = 100


_STRATEGIES: dict[str, StrategySpec] = {}


def register_strategy(spec: StrategySpec) -> StrategySpec:
    """Add ``spec`` to the registry (re-registering the same name replaces it); returns it."""
    _STRATEGIES[spec.name] = spec
    return spec


def strategies() -> dict[str, StrategySpec]:
    """Every registered selection strategy, by ``order`` then registration."""
    return dict(sorted(_STRATEGIES.items(), key=lambda item: item[1].order))


def strategy_names() -> tuple[str, ...]:
    """Names of the registered selection strategies."""
    return tuple(strategies())


def embedding_strategy_names() -> tuple[str, ...]:
    """The strategies that embed the pool with the selection encoder."""
    return tuple(name for name, spec in strategies().items() if spec.needs_embedding)


def get_strategy(name: str) -> StrategySpec:
    """The registered strategy ``name``; a KeyError naming the known ones otherwise."""
    known = strategies()
    if name not in known:
        raise KeyError(f"unknown selection strategy '{name}'; registered strategies are {list(known)}")
    return known[name]
