"""The primitives every config section is declared with (a leaf: imports nothing from raystudy).

A section is a :class:`Section` (a strict pydantic model): unknown keys are refused, a bool
is not an int, a number is not text, an int is accepted for a float, floats must be finite.
A range is declared on the annotation and checked with its own message::

    class SimCLRConfig(Section):
        temperature: Annotated[float, gt(0)] = 0.2

``Annotated[..., NO_HASH]`` leaves a field out of the study's config hash. The method
modules (``raystudy.methods``, plugins) import from here, never from ``raystudy.config``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import PydanticCustomError, core_schema

RANDOM_INIT = "random"  # the initial-weights value that means random initialisation


class ConfigError(ValueError):
    """A study config that cannot be used; the message names the key and the fix."""


class StudyYAMLLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints
    """PyYAML's safe loader that reads floats as YAML 1.2 does: ``1e-5`` is a float, not a string."""


StudyYAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(text: str) -> Any:
    """Parse a study YAML document (or a ``--set`` value) with :class:`StudyYAMLLoader`.

    Example:
        >>> load_yaml("weight_decay: 1e-5")
        {'weight_decay': 1e-05}
    """
    return yaml.load(text, Loader=StudyYAMLLoader)  # noqa: S506 - a SafeLoader subclass


class Section(BaseModel):
    """Base of every config section: strict types, unknown keys refused, finite floats.

    Attributes can be set after loading (``resolve_defaults`` does); they are not re-checked.
    """

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False)


@dataclass(frozen=True)
class NoHash:
    """Annotation marker: the field does not change a trial's result (paths, names, resources)."""


NO_HASH = NoHash()

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_SCHEMA = {"gt": "exclusiveMinimum", "ge": "minimum", "lt": "exclusiveMaximum", "le": "maximum"}


@dataclass(frozen=True)
class Range:
    """A declared range of a number (``Annotated[int, at_least(1)]``): checked after the type,
    refused as ``<text>, got <value>``, shown in the JSON Schema as minimum / maximum.

    Args:
        bounds: ``(op, limit)`` pairs, op one of gt, ge, lt, le.
        text: the rule as the error message says it (``must be >= 1``).
    """

    bounds: tuple[tuple[str, float], ...]
    text: str

    def check(self, value: Any) -> Any:
        if value is not None and not all(_OPS[op](value, limit) for op, limit in self.bounds):
            raise PydanticCustomError("range", "{text}, got {value}", {"text": self.text, "value": value})
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        out = handler(schema)
        out.update({_SCHEMA[op]: limit for op, limit in self.bounds})
        return out


def gt(lo: float) -> Range:
    """The value must be > ``lo``."""
    return Range((("gt", lo),), f"must be > {lo}")


def at_least(lo: float) -> Range:
    """The value must be >= ``lo``."""
    return Range((("ge", lo),), f"must be >= {lo}")


def in_unit_interval() -> Range:
    """0 <= value < 1 (momenta)."""
    return Range((("ge", 0.0), ("lt", 1.0)), "must be in [0, 1)")


def probability() -> Range:
    """0 <= value <= 1."""
    return Range((("ge", 0.0), ("le", 1.0)), "a probability in [0, 1]")


def weights_path(value: str | None) -> str | None:
    """A configured initial-weights value as a file path; None for random initialisation."""
    return None if value in (None, "", RANDOM_INIT) else value
