"""Load a run folder's Parquet result tables into one :class:`Results` object."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import yaml

from analysis.config import catalog_from_config, merge_analysis_config
from analysis.select import RANDOM, selection_of
from raystudy.catalog import Catalog
from raystudy.config import ConfigError, load_yaml
from raystudy.provenance import read_run_info
from raystudy.results import SCHEMAS as STORE_SCHEMAS
from raystudy.results import parquet_files, read_parquet
from raystudy.storage import Location, as_location

log = logging.getLogger("raystudy")


def _kind(dtype: pa.DataType) -> str:
    if pa.types.is_integer(dtype):
        return "int"
    if pa.types.is_floating(dtype):
        return "float"
    return "str"


# Column -> kind ('str', 'int', 'float') of every table, derived from the store's own schemas.
SCHEMAS: dict[str, dict[str, str]] = {
    name: {f.name: _kind(f.type) for f in schema} for name, schema in STORE_SCHEMAS.items()
}
TABLES: tuple[str, ...] = tuple(SCHEMAS)


def empty_table(name: str) -> pd.DataFrame:
    """An empty frame with the table's columns (nullable dtypes)."""
    dtypes = {"str": "object", "int": "Int64", "float": "float64"}
    return pd.DataFrame({c: pd.Series(dtype=dtypes[k]) for c, k in SCHEMAS[name].items()})


def conform(name: str, frame: pd.DataFrame | None) -> pd.DataFrame:
    """Add missing columns as nulls and make numeric columns numeric (NaN for bad values)."""
    if frame is None or len(frame.columns) == 0:
        return empty_table(name)
    df = frame.copy()
    for col, kind in SCHEMAS[name].items():
        if col not in df.columns:
            df[col] = pd.Series([None] * len(df), index=df.index, dtype="object")
        if kind in ("int", "float") and not pd.api.types.is_numeric_dtype(df[col]):
            df[col] = pd.to_numeric(df[col], errors="coerce")
        elif kind in ("int", "float") and pd.api.types.is_bool_dtype(df[col]):
            df[col] = df[col].astype(float)
    return df.reset_index(drop=True)


def read_table(run_dir: str | Path | Location, name: str) -> pd.DataFrame:
    """One result table; missing, empty or half-written folders give an empty frame."""
    files = parquet_files(as_location(run_dir) / "results" / name)
    if not files:
        return empty_table(name)
    try:
        return conform(
            name, pa.concat_tables([read_parquet(f) for f in files], promote_options="permissive").to_pandas()
        )
    except Exception:  # mixed schemas or a file being replaced: read file by file
        parts = []
        for path in files:
            try:
                parts.append(read_parquet(path).to_pandas())
            except Exception as err:  # a torn file: the report goes on without it, and says so
                log.warning("the report leaves out %s: %s", path.uri, str(err).splitlines()[0])
                continue
        parts = [p for p in parts if len(p)]
        if not parts:
            return empty_table(name)
        return conform(name, pd.concat(parts, ignore_index=True))


def read_config(run_dir: str | Path | Location) -> dict[str, Any]:
    """``RUN_DIR/config.yaml`` as a mapping ({} when absent); ConfigError naming the file when unreadable."""
    path = as_location(run_dir) / "config.yaml"
    if not path.is_file():
        return {}
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML ({err}); fix it or rerun the study") from err
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return raw or {}


@dataclass
class Results:
    """All result tables of one run plus the merged ``analysis`` config."""

    grid: pd.DataFrame = field(default_factory=lambda: empty_table("grid"))
    trials: pd.DataFrame = field(default_factory=lambda: empty_table("trials"))
    per_class: pd.DataFrame = field(default_factory=lambda: empty_table("per_class"))
    confusion: pd.DataFrame = field(default_factory=lambda: empty_table("confusion"))
    losses: pd.DataFrame = field(default_factory=lambda: empty_table("losses"))
    pretraining: pd.DataFrame = field(default_factory=lambda: empty_table("pretraining"))
    dataset: pd.DataFrame = field(default_factory=lambda: empty_table("dataset"))
    embeddings: pd.DataFrame = field(default_factory=lambda: empty_table("embeddings"))
    probes: pd.DataFrame = field(default_factory=lambda: empty_table("probes"))
    probe_predictions: pd.DataFrame = field(default_factory=lambda: empty_table("probe_predictions"))
    selections: pd.DataFrame = field(default_factory=lambda: empty_table("selections"))  # images each key trained on
    selection_map: pd.DataFrame = field(default_factory=lambda: empty_table("selection_map"))  # pool t-SNE per set
    config: dict[str, Any] = field(default_factory=lambda: merge_analysis_config(None))
    raw_config: dict[str, Any] = field(default_factory=dict)
    run_dir: Location | None = None
    run_info: dict[str, Any] | None = None  # RUN_DIR/run_info.json (raystudy.provenance); None: not recorded

    @classmethod
    def from_frames(
        cls,
        config: dict[str, Any] | None = None,
        raw_config: dict[str, Any] | None = None,
        run_dir: Location | None = None,
        **frames: pd.DataFrame | None,
    ) -> Results:
        """Results from hand-made frames; ``config`` is the (partial) analysis section."""
        unknown = set(frames) - set(TABLES)
        if unknown:
            raise TypeError(f"unknown tables {sorted(unknown)}; known tables are {list(TABLES)}")
        tables = {name: conform(name, frames.get(name)) for name in TABLES}
        return cls(**tables, config=merge_analysis_config(config), raw_config=dict(raw_config or {}), run_dir=run_dir)

    def with_frames(self, config: dict[str, Any] | None = None, **frames: pd.DataFrame | None) -> Results:
        """A copy with some tables (and optionally the analysis section) replaced."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, frame in frames.items():
            if frame is not None:
                kwargs[name] = conform(name, frame)
        if config is not None:
            kwargs["config"] = merge_analysis_config({**self.config, **config})
        return Results(**kwargs)

    @property
    def catalog(self) -> Catalog:
        return catalog_from_config(self.raw_config)

    @property
    def synthetic(self) -> bool:
        """True when the study ran on the embedded synthetic data (``data.root`` and ``data.manifest`` unset)."""
        if not self.raw_config:
            return False
        data = self.raw_config.get("data") or {}
        return not (isinstance(data, dict) and (data.get("root") or data.get("manifest")))

    def campaign(self, name: Any) -> str:
        """A campaign's name as every figure and table shows it: 'NASCENT19 (synthetic)' for synthetic data."""
        return f"{name} (synthetic)" if self.synthetic else str(name)

    @property
    def study_name(self) -> str:
        names = self.trials["study"].dropna().astype(str)
        if len(names):
            return names.iloc[-1]
        name = self.raw_config.get("name")
        if isinstance(name, str) and name:
            return name
        return self.run_dir.name if self.run_dir is not None else "study"


def load_results(run_dir: str | Path | Location) -> Results:
    """Read ``RUN_DIR/config.yaml`` and every table under ``RUN_DIR/results`` (a path or a URI)."""
    run_dir = as_location(run_dir)
    raw = read_config(run_dir)
    catalog_from_config(raw, source=str(run_dir / "config.yaml"))  # a bad catalog fails here, by name
    section = raw.get("analysis") if isinstance(raw.get("analysis"), dict) else None
    tables = drop_ceiling_details({name: read_table(run_dir, name) for name in TABLES})
    return Results(
        **tables,
        config=merge_analysis_config(section),
        raw_config=raw,
        run_dir=run_dir,
        run_info=read_run_info(run_dir),
    )


def drop_ceiling_details(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The supervised-ceiling cells are a reference line (their ``trials`` rows): keep their
    per-class, confusion, loss and embedding rows out of the figures built per train size;
    the same for the cells of selection strategies other than random."""
    trials = tables.get("trials")
    if trials is None or "protocol" not in trials:
        return tables
    ceiling = set(trials.loc[trials["protocol"] == "ceiling", "cell_id"])
    # cells of other selection strategies than random belong to the selection section, which
    # reads their trials rows only; the per-size figures describe the random draw
    ceiling |= set(trials.loc[selection_of(trials) != RANDOM, "cell_id"])
    if not ceiling:
        return tables
    out = dict(tables)
    for name in ("per_class", "confusion", "embeddings"):
        if name in out and "cell_id" in out[name]:
            out[name] = out[name][~out[name]["cell_id"].isin(ceiling)].reset_index(drop=True)
    if "losses" in out and "run" in out["losses"]:
        out["losses"] = out["losses"][~out["losses"]["run"].isin(ceiling)].reset_index(drop=True)
    return out


def resolve(results: Results | None, config: dict[str, Any] | None = None, **frames: pd.DataFrame | None) -> Results:
    """The builders' argument handling: a Results, explicit frames, or both."""
    if results is None:
        return Results.from_frames(config=config, **{k: v for k, v in frames.items() if v is not None})
    if config is None and all(v is None for v in frames.values()):
        return results
    return results.with_frames(config=config, **frames)
