"""The run location (``--out``): usable before anything starts, locked while a driver runs,
seen by every node, and left as found on bad input.

A run location is a local folder, a shared mount or an object-store URI (see
:mod:`raystudy.storage`). The decoded image cache always stays on the driver's disk: in
``RUN_DIR/cache`` for a local run folder, else under ``$RAYSTUDY_CACHE`` (default
``~/.cache/raystudy``) in a folder named after the URI; trials get the images through
Ray's object store.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import yaml

from raystudy.config import ConfigError, StudyConfig, load_config, load_yaml
from raystudy.data.problems import DataError
from raystudy.errors import StudyLockedError
from raystudy.storage import Location, as_location


def check_run_folder(run_dir: str | Path | Location) -> None:
    """A location raystudy can create and write, else a DataError saying what to do.

    Example:
        >>> check_run_folder("runs/demo")  # doctest: +SKIP
    """
    run = as_location(run_dir)
    if not run.is_local:
        probe = run / f".raystudy-write-check-{uuid.uuid4().hex[:8]}"
        try:
            probe.write_text("ok")
            probe.unlink()
        except (OSError, ValueError) as err:
            raise DataError(
                f"--out {run.uri}: cannot write there ({str(err).splitlines()[0]}); check the bucket, "
                "the endpoint and the credentials (AWS_* variables for s3://)"
            ) from err
        return
    path = run.local_path()
    if path.exists() and not path.is_dir():
        raise DataError(f"--out {path} is a file, not a folder; choose a folder path with --out DIR")
    parent = path
    while not parent.exists():  # the nearest existing folder above it must be writable
        parent = parent.parent
    if not parent.is_dir():
        raise DataError(f"--out {path}: {parent} is a file, not a folder; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"--out {path}: {parent} is not writable by this user; choose another --out")


def read_saved_config(saved: Location) -> StudyConfig:
    """The config a run folder was started with (its ``config.yaml``); a torn or invalid file is a
    ConfigError naming it."""
    try:
        raw = load_yaml(saved.read_text())
        if not isinstance(raw, dict):
            raise ConfigError("expected a mapping at the top level")
        return load_config(raw=raw)
    except (yaml.YAMLError, ConfigError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"{saved.uri} (the config this run folder was started with) cannot be read ({first}), so raystudy "
            "cannot tell whether the results there belong to this study; restore the file, or use another --out, "
            "or delete the folder to start over"
        ) from err


def cache_dir(run_dir: str | Path | Location) -> Path:
    """Where the driver keeps the decoded images of this run (always a local folder)."""
    run = as_location(run_dir)
    if run.is_local:
        return run.local_path() / "cache"
    root = Path(os.environ.get("RAYSTUDY_CACHE", Path.home() / ".cache" / "raystudy"))
    return root / hashlib.sha1(run.uri.encode()).hexdigest()[:16]


def lock_file(run_dir: str | Path | Location) -> Path:
    """The driver's lock: in the run folder, or beside the cache of an object-store location."""
    run = as_location(run_dir)
    return run.local_path() / ".lock" if run.is_local else cache_dir(run).with_suffix(".lock")


@contextmanager
def run_lock(run_dir: str | Path | Location) -> Iterator[None]:
    """An exclusive lock on the run location for the driver's lifetime.

    On an object store the lock lives on this machine (object stores have no locks), so it
    keeps two drivers of one machine apart; do not drive one S3 location from two machines.
    """
    path = lock_file(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = open(path, "a+")  # not "w": a refused second driver must not blank the first one's pid
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise StudyLockedError(
            f"run folder {as_location(run_dir).uri} is in use by another raystudy driver; wait for it to finish "
            "or choose another folder with --out"
        ) from None
    try:
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fcntl.flock(fh, fcntl.LOCK_UN)
        fh.close()


def driver_active(run_dir: str | Path | Location) -> bool:
    """True while a raystudy driver (on this machine) holds the run location's lock."""
    path = lock_file(run_dir)
    if not path.exists():
        return False
    with open(path) as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
    return False


def entries(run_dir: str | Path | Location) -> set[str] | None:
    """Top-level names in the run location (None when it does not exist): what :func:`removed_if_failing` keeps."""
    run = as_location(run_dir)
    if run.is_local:
        path = run.local_path()
        return set(os.listdir(path)) if path.is_dir() else None
    names = {c.name for c in run.iterdir()}
    return names or None


@contextmanager
def removed_if_failing(run_dir: str | Path | Location, before: set[str] | None) -> Iterator[None]:
    """Remove what was created in the run location since ``before = entries(run_dir)`` when the block raises.

    A folder that did not exist is removed whole; in one that did, only new top-level
    entries are removed (results of an earlier run stay). Nothing half-written is left.
    """
    run = as_location(run_dir)
    try:
        yield
    except BaseException:
        if not run.is_local:
            for child in run.iterdir():
                if before is None or child.name not in before:
                    child.rmtree() if child.is_dir() else child.unlink()
            raise
        path = run.local_path()
        if before is None:
            shutil.rmtree(path, ignore_errors=True)
        elif path.is_dir():
            for name in set(os.listdir(path)) - before:
                entry = path / name
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
        raise


def _sees(path: str, token: str) -> bool:
    """True when this node reads ``token`` from ``path`` (a Ray task placed on each node)."""
    try:
        return Path(path).read_text() == token
    except OSError:
        return False


def nodes_missing(run_dir: str | Path | Location, token_path: Location, token: str) -> list[str]:
    """Alive Ray nodes that cannot read ``token`` at ``token_path`` (their addresses)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    sees = ray.remote(num_cpus=0, max_retries=0)(_sees)
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    checks = [
        sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote(
            token_path.path, token
        )
        for n in nodes
    ]
    results = ray.get(checks, timeout=120)
    return [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(nodes, results, strict=True) if not ok]


def write_driver_token(run_dir: str | Path | Location) -> str | None:
    """On a local run folder: a fresh token in ``logs/.driver-token`` that every trial checks
    (:func:`check_driver_token`), so a node that joined after :func:`check_visible_to_nodes` and
    does not mount the folder fails its trials with a message instead of writing results no one
    reads. None on an object store, which every node reaches."""
    run = as_location(run_dir)
    if not run.is_local:
        return None
    token = uuid.uuid4().hex
    (run / "logs" / ".driver-token").write_text(token)
    return token


def check_driver_token(run_dir: str | Path | Location, token: str | None) -> None:
    """In a trial: the run folder this node sees is the driver's (its token matches), else a DataError
    naming the node and what to do."""
    if token is None:
        return
    run = as_location(run_dir)
    where = run / "logs" / ".driver-token"
    seen = where.read_text() if where.is_file() else None
    if seen != token:
        import ray

        raise DataError(
            f"this node ({ray.util.get_node_ip_address()}) does not see the run folder {run.uri} that the driver "
            f"writes ({where.uri} {'is absent here' if seen is None else 'holds another driver token here'}): "
            "mount it at the same path on every node, including nodes the autoscaler adds later, or use an "
            "object store (--out s3://...)"
        )


def check_visible_to_nodes(run_dir: str | Path | Location) -> None:
    """On a multi-node cluster a local run folder must be a shared mount: stop early otherwise.

    The driver writes a token into the folder and a task on every alive node reads it back;
    an object-store location is reachable everywhere and is not checked.
    """
    import ray

    run = as_location(run_dir)
    if not run.is_local or len([n for n in ray.nodes() if n.get("Alive")]) < 2:
        return
    token, token_path = uuid.uuid4().hex, run / f".visible-{uuid.uuid4().hex[:8]}"
    token_path.write_text(token)
    try:
        missing = nodes_missing(run, token_path, token)
    finally:
        token_path.unlink()
    if missing:
        raise DataError(
            f"--out {run.uri} is a folder the cluster's node(s) {', '.join(missing)} cannot see, so their trials "
            "could not write results there; use a folder on a file system mounted at the same path on every "
            "node, or an object store (--out s3://bucket/runs/NAME)"
        )
