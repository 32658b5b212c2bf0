"""The results store: one folder of Parquet files per table under ``RUN_DIR/results``.

Every file is keyed by what it describes (a grid cell, a pretraining run), written
to a hidden temporary file and renamed into place, so a crash never leaves a
half-written result (see :mod:`raystudy.storage`: the run location may be a local
folder or an object store) and writing the same cell twice replaces it instead of
duplicating it. ``pandas.read_parquet(RUN_DIR / "results" / table)`` reads a table;
pyarrow skips the hidden temporary files.

Cells are keyed by ``cell_id, model, category_set, n_categories, train_size, fold, arch, selection``
(:data:`SCHEMAS` lists every table's columns).

Example:
    >>> write_table(run_dir, "trials", "moco-4cat-n40-f0", pd.DataFrame([row]))
    >>> read_table(run_dir, "trials")  # every cell's row, the schema's columns
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from raystudy.data.problems import DataError
from raystudy.storage import Location, as_location

_CELL_KEYS = [
    ("cell_id", pa.string()),
    ("model", pa.string()),
    ("category_set", pa.string()),
    ("n_categories", pa.int64()),
    ("train_size", pa.int64()),
    ("fold", pa.int64()),
    ("arch", pa.string()),  # the backbone (grid.archs)
    ("selection", pa.string()),  # how the n training images were chosen (grid.selection); null in older runs: random
]

SCHEMAS: dict[str, pa.Schema] = {
    "grid": pa.schema(_CELL_KEYS + [("planned", pa.string()), ("reason", pa.string())]),
    "trials": pa.schema(
        [("study", pa.string())]
        + _CELL_KEYS
        + [
            ("seed", pa.int64()),
            ("protocol", pa.string()),
            ("status", pa.string()),
            ("message", pa.string()),
            ("overall_accuracy", pa.float64()),
            ("macro_f1", pa.float64()),
            ("generalization_accuracy", pa.float64()),
            ("generalization_campaign", pa.string()),
            ("n_train", pa.int64()),
            ("n_validation", pa.int64()),
            ("epochs", pa.int64()),
            ("steps", pa.int64()),  # optimizer steps taken
            ("batch_size", pa.int64()),  # images per optimizer step (the global batch)
            ("stop_reason", pa.string()),  # epochs / min_steps / max_steps; the ceiling: fitted / max_cycles
            ("train_loss", pa.float64()),  # mean training loss of the last epoch
            ("train_accuracy", pa.float64()),  # OA on the cell's own training images
            ("fitted", pa.bool_()),  # train_accuracy >= finetune.fit_accuracy: the cell learned its images
            ("init", pa.string()),  # initial encoder weights: random, or "<file> sha256:<hex>"
            ("train_seconds", pa.float64()),
            ("device", pa.string()),
            ("node", pa.string()),
            ("config_hash", pa.string()),
            ("finished_at", pa.float64()),
        ]
    ),
    "per_class": pa.schema(
        _CELL_KEYS
        + [
            ("split", pa.string()),
            ("category", pa.string()),
            ("precision", pa.float64()),
            ("recall", pa.float64()),
            ("f1", pa.float64()),
            ("support", pa.int64()),
            ("train_count", pa.int64()),
        ]
    ),
    "confusion": pa.schema(
        _CELL_KEYS
        + [
            ("split", pa.string()),
            ("true_category", pa.string()),
            ("predicted_category", pa.string()),
            ("count", pa.int64()),
        ]
    ),
    "losses": pa.schema(
        [
            ("run", pa.string()),
            ("stage", pa.string()),
            ("model", pa.string()),
            ("category_set", pa.string()),
            ("train_size", pa.int64()),
            ("fold", pa.int64()),
            ("epoch", pa.int64()),
            ("step", pa.int64()),
            ("loss", pa.float64()),
            ("lr", pa.float64()),
        ]
    ),
    "pretraining": pa.schema(
        [
            ("model", pa.string()),
            ("arch", pa.string()),
            ("epochs", pa.int64()),
            ("stop_reason", pa.string()),  # epochs (all of pretrain.epochs) or patience (stopped early)
            ("n_images", pa.int64()),
            ("batch_size", pa.int64()),
            ("world_size", pa.int64()),
            ("seconds", pa.float64()),
            ("final_loss", pa.float64()),
            ("device", pa.string()),
            ("images_per_s", pa.float64()),
            ("no_learning_loss", pa.float64()),  # the loss of an encoder that learned nothing (MoCo: ln(K+1))
            ("restarts", pa.int64()),  # times the DDP group started again from a checkpoint (lost worker, rerun)
            ("resumed_from_epoch", pa.int64()),  # the epoch of the checkpoint it last resumed from; null: never
            ("online_knn_random_init", pa.float64()),  # online kNN of the random init (null: no online probe)
            ("online_knn_final", pa.float64()),  # online kNN after the last epoch
            ("online_knn_curve", pa.string()),  # JSON list, one online kNN value per epoch
            ("online_knn_images", pa.int64()),  # images in the online probe slice (bank + queries)
            ("online_knn_queries", pa.int64()),  # of them, the queries each kNN value is measured on
            ("knn_accuracy", pa.float64()),
            ("linear_probe_accuracy", pa.float64()),
        ]
    ),
    "probes": pa.schema(
        [
            ("model", pa.string()),  # the run name: moco / byol / random_init / pretrain_init (-<arch>)
            ("arch", pa.string()),  # the backbone probed
            ("encoder", pa.string()),
            ("category_set", pa.string()),
            ("n_train", pa.int64()),
            ("n_test", pa.int64()),
            ("knn_accuracy", pa.float64()),
            ("linear_probe_accuracy", pa.float64()),
        ]
    ),
    "probe_predictions": pa.schema(
        [
            ("model", pa.string()),  # the probe's run name (its ``probes`` row)
            ("arch", pa.string()),
            ("probe", pa.string()),  # knn / linear
            ("image_id", pa.string()),
            ("label", pa.int64()),  # the true category's index in the probe split
            ("predicted", pa.int64()),
        ]
    ),
    "embeddings": pa.schema(
        _CELL_KEYS
        + [
            ("stage", pa.string()),  # before_pretraining / after_pretraining / after_finetuning
            ("image_id", pa.string()),
            ("category", pa.string()),
            ("x", pa.float64()),
            ("y", pa.float64()),
        ]
    ),
    "selections": pa.schema(  # the training images of one (set, n, fold, strategy, arch), in the order picked
        [
            ("selection_key", pa.string()),  # grid.Cell.selection_key, the file's name
            ("category_set", pa.string()),
            ("train_size", pa.int64()),
            ("fold", pa.int64()),
            ("selection", pa.string()),
            ("arch", pa.string()),
            ("encoder", pa.string()),  # the selection encoder (run name); null for strategies that embed nothing
            ("rank", pa.int64()),  # 1 = picked first
            ("image_id", pa.string()),
            ("category", pa.string()),
        ]
    ),
    "selection_map": pa.schema(  # a 2-D t-SNE map of one set's labeled pool under the selection encoder
        [
            ("category_set", pa.string()),
            ("encoder", pa.string()),  # the selection encoder (run name)
            ("arch", pa.string()),
            ("image_id", pa.string()),
            ("category", pa.string()),
            ("x", pa.float64()),
            ("y", pa.float64()),
        ]
    ),
    "dataset": pa.schema(
        [
            ("campaign", pa.string()),
            ("category", pa.string()),
            ("count", pa.int64()),
            ("role", pa.string()),
        ]
    ),
}

TABLES = tuple(SCHEMAS)


def results_dir(run_dir: str | Path | Location) -> Location:
    return as_location(run_dir) / "results"


def _safe_key(key: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key) or key.startswith((".", "_")):
        raise ValueError(f"result key {key!r} must be letters, digits, '_', '-', '.'")
    return key


def to_arrow(table: str, df: pd.DataFrame) -> pa.Table:
    """Conform a frame to the table's schema (missing columns become nulls)."""
    schema = SCHEMAS[table]
    extra = sorted(set(df.columns) - set(schema.names))
    if extra:
        raise ValueError(f"table '{table}' has no columns {extra}")
    df = df.reindex(columns=schema.names)
    return pa.Table.from_pandas(df, schema=schema, preserve_index=False)


def write_table(run_dir: str | Path | Location, table: str, key: str, df: pd.DataFrame) -> Location:
    """Atomically write ``df`` as ``results/<table>/<key>.parquet`` (replacing it).

    Args:
        run_dir: the study's run location (a path or a URI).
        table: one of :data:`TABLES`; ``df`` may omit columns (nulls), not add any.
        key: the file's name: letters, digits, '_', '-', '.'.
    """
    buffer = io.BytesIO()
    pq.write_table(to_arrow(table, df), buffer)
    return (results_dir(run_dir) / table / f"{_safe_key(key)}.parquet").write_bytes(buffer.getvalue())


def parquet_files(folder: Location) -> list[Location]:
    """The result files of one table folder (hidden temporary files skipped)."""
    return [f for f in folder.glob("*.parquet") if not f.name.startswith((".", "_"))]


def read_parquet(file: Location, schema: pa.Schema | None = None, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file of a run location; a torn or foreign file is a DataError naming it."""
    data = file.read_bytes()
    try:
        return pq.read_table(io.BytesIO(data), schema=schema, columns=columns)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
        raise DataError(
            f"{file.uri} is not a readable result file ({str(err).splitlines()[0]}); it was torn or written by "
            "something else: delete it, then rerun the same command (the cell it held runs again)"
        ) from err


def read_table(run_dir: str | Path | Location, table: str) -> pd.DataFrame:
    """Read one table; an absent or empty table gives an empty frame with its columns."""
    files = parquet_files(results_dir(run_dir) / table)
    if not files:
        return SCHEMAS[table].empty_table().to_pandas()
    parts = [read_parquet(f, SCHEMAS[table]) for f in files]
    return pa.concat_tables(parts).to_pandas()


def finished_cells(run_dir: str | Path | Location) -> set[str]:
    """Cells with a result (status done). Failed cells are retried on rerun, and a cell
    recorded ``skipped`` is planned again when the grid or the data allow it now."""
    trials = read_table(run_dir, "trials")
    return set(trials.loc[trials["status"] == "done", "cell_id"])


def has_result(run_dir: str | Path | Location, cell_id: str) -> bool:
    """True when the cell's trial row exists and is done (a skipped row is no result)."""
    path = results_dir(run_dir) / "trials" / f"{_safe_key(cell_id)}.parquet"
    if not path.is_file():
        return False
    status = read_parquet(path, columns=["status"]).column("status").to_pylist()
    return bool(status) and status[0] == "done"


def read_result(run_dir: str | Path | Location, table: str, key: str) -> pd.DataFrame | None:
    """The one file ``results/<table>/<key>.parquet`` (one cell's or one run's rows); None when absent."""
    path = results_dir(run_dir) / table / f"{_safe_key(key)}.parquet"
    if not path.is_file():
        return None
    return read_parquet(path, SCHEMAS[table]).to_pandas()
