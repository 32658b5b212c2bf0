"""The ``analysis:`` section of a study config, model display names and the catalog."""

from __future__ import annotations

import copy
from typing import Any

from raystudy import registry
from raystudy.catalog import Catalog
from raystudy.config import CatalogConfig, ConfigError, build_section

DEFAULTS: dict[str, Any] = {
    "reference_model": "baseline",
    "cssl_model": "moco",
    "seconds_per_image": 33.0,
    "labeling_time_model": "constant",  # or 'per_group'
    "basic_seconds": 6.0,
    "complex_seconds": 60.0,
    "reference_points": [],
    "targets": [0.8, 0.9],
    "compare_models": None,  # None: [cssl_model, reference_model]
    "advantage_max_size": 2048,  # "average CSSL advantage at sizes up to ..."
    "n_bootstrap": 1000,  # paired-difference CI resamples
    "curve_bootstrap": 100,  # unused since the weighted curve fits (analysis.curves); kept for configs
    "seed": 0,
    "tsne_max_points": 1500,  # per panel, seeded subsample
    "doa_margin_pp": 2.0,  # DOA non-inferiority margin (pp), analysis.labeling.DOA_MARGIN_PP
    "backtest_tolerance_pp": 2.0,  # analysis.stats.BACKTEST_TOLERANCE_PP
}

BASELINE_NAME = "Baseline (Sup)"
BASELINE_COLOR = "#6e6e6e"
EXTRA_COLORS: tuple[str, ...] = ("#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#d62728")
REFERENCE_COLOR = "#2ca02c"


def _method(model: Any):
    """The registered pretraining method named ``model``, or None (baseline, unknown)."""
    return registry.methods().get(str(model))


def display_name(model: Any) -> str:
    """Paper name of a model type (``Semisup-<method>``); unknown models keep their raw name."""
    if str(model) == "baseline":
        return BASELINE_NAME
    spec = _method(model)
    return f"Semisup-{spec.display_name}" if spec else str(model)


def pretrain_name(model: Any) -> str:
    spec = _method(model)
    return f"Unsup-{spec.display_name if spec else model}"


def model_color(model: Any) -> str:
    m = str(model)
    if m == "baseline":
        return BASELINE_COLOR
    spec = _method(m)
    if spec is not None and spec.color:
        return spec.color
    return EXTRA_COLORS[sum(map(ord, m)) % len(EXTRA_COLORS)]


def order_models(models: Any) -> list[str]:
    """Registered methods in registration order, then the baseline, then the others alphabetically."""
    found = {str(m) for m in models if m is not None and m == m}
    known = [m for m in registry.model_types() if m in found]
    return known + sorted(found - set(known))


def merge_analysis_config(section: dict[str, Any] | None) -> dict[str, Any]:
    """The ``analysis`` mapping merged over :data:`DEFAULTS` (targets given in % become fractions)."""
    cfg = copy.deepcopy(DEFAULTS)
    for key, value in (section or {}).items():
        cfg[key] = copy.deepcopy(value)
    cfg["targets"] = [float(t) / 100.0 if float(t) > 1.0 else float(t) for t in cfg.get("targets") or []]
    if not cfg.get("compare_models"):
        cfg["compare_models"] = [cfg["cssl_model"], cfg["reference_model"]]
    cfg["reference_points"] = list(cfg.get("reference_points") or [])
    return cfg


def catalog_from_config(raw: dict[str, Any] | None, source: str = "config.yaml") -> Catalog:
    """The study's catalog, built by raystudy's own :class:`CatalogConfig` (the paper's without a section).

    Raises ConfigError naming ``source`` when the ``catalog`` section is invalid.
    """
    section = (raw or {}).get("catalog")
    if section is None:
        return CatalogConfig().build()
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: catalog: expected a mapping, got {section!r}")
    try:
        return build_section(CatalogConfig, section, "catalog").build()
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}; fix the file or rerun the study") from err
