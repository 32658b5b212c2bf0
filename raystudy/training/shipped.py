"""Initial-weight files shipped through Ray's object store, so no node needs the driver's mounts.

The driver checks ``model.baseline_init`` and ``model.pretrain_init`` where it starts (the
config's checks); a node that joins the cluster later, or one without the same mount, would
not find a local file at that path. So the driver reads every local initial-weight file once
and puts its bytes in the object store (:func:`ship_init_weights`); each trial (and each Ray
Train worker of a pretraining run) hands them to :func:`raystudy.storage.provide` before it
builds a model (:func:`receive_init_weights`), and loading the path reads those bytes. Files on
an object store (``s3://...``) are reachable from every node and are not shipped.

Example:
    >>> refs = ship_init_weights(cfg)  # on the driver: {"/data/init.pth": ObjectRef}
    >>> receive_init_weights(refs)  # in a trial: load_encoder_weights(net, "/data/init.pth") works
"""

from __future__ import annotations

from typing import Any

import ray

from raystudy.config import StudyConfig
from raystudy.storage import as_location, provide

_RECEIVED: dict[str, str] = {}  # URI -> the hex of the ObjectRef this process took it from


def init_weight_paths(cfg: StudyConfig) -> list[str]:
    """Every initial-weight file of the study (the baseline's, each pretraining method's), once."""
    paths = [cfg.model.baseline_weights()] + [cfg.model.pretrain_weights(m) for m in cfg.pretrain.methods]
    return list(dict.fromkeys(p for p in paths if p))


def ship_init_weights(cfg: StudyConfig) -> dict[str, Any]:
    """On the driver: put the bytes of every local initial-weight file in the object store.

    Returns URI -> ObjectRef (empty when the study starts from random weights or every file is
    on an object store)."""
    refs = {}
    for path in init_weight_paths(cfg):
        where = as_location(path)
        if where.is_local and where.is_file():  # a missing file fails where it is loaded, with its message
            refs[where.uri] = ray.put(where.read_bytes())
    return refs


def receive_init_weights(refs: dict[str, Any] | None) -> None:
    """In a trial or a Train worker: hand the shipped bytes to :func:`raystudy.storage.provide`
    (once per process and object)."""
    for uri, ref in (refs or {}).items():
        if _RECEIVED.get(uri) != ref.hex():
            provide(uri, ray.get(ref))
            _RECEIVED[uri] = ref.hex()
