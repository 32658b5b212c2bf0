"""The pretraining-method registry: every method the study can pretrain, by name.

A method is one module that declares its config section (a dataclass, read from
``pretrain.<name>`` in the study YAML), its model class (built by
``Model.from_config``, owning its per-step momentum update or none) and registers
itself with :func:`register_method` when imported::

    @dataclass
    class SimCLRConfig:
        temperature: float = field(default=0.1, metadata=gt(0))

    class SimCLR(PretrainModel):
        ...

    register_method(MethodSpec("simclr", SimCLRConfig, SimCLR, display_name="SimCLR"))

The built-in methods are the modules of ``raystudy.models`` that call
:func:`register_method`; they are imported on the first look-up, so importing the
registry (and the config) costs no torch import. A method from outside raystudy
registers when its module is imported: import it before loading a study config.
This module imports no torch.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field, is_dataclass
from typing import Any

BASELINE = "baseline"  # the supervised model type: no pretraining, fine-tuned from its init


@dataclass(frozen=True)
class MethodSpec:
    """One pretraining method.

    Args:
        name: the key in ``pretrain.methods``, ``grid.models`` and ``pretrain.<name>``.
        config: dataclass of the method's config section (every field has a default).
        model: the ``PretrainModel`` subclass; ``model.from_config(...)`` builds it.
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
        if not is_dataclass(self.config):
            raise TypeError(f"method {self.name}: config must be a dataclass, got {self.config!r}")


_METHODS: dict[str, MethodSpec] = {}
_builtins_loaded = False


def register_method(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the registry (re-registering the same name replaces it); returns it."""
    _METHODS[spec.name] = spec
    return spec


def _load_builtins() -> None:
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import raystudy.models as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")


def methods() -> dict[str, MethodSpec]:
    """Every registered pretraining method, by ``order`` then registration."""
    _load_builtins()
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
