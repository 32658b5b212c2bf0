"""What a study asks of the Ray cluster, and whether the cluster can ever give it.

A study requests bundles of resources: one per pretraining worker (Ray Train) and one
per grid cell or probe (Ray Tune). On a cluster that can autoscale, nothing is shrunk:
the requests are checked against the cluster's node types (a request that no node type
can hold fails at once, naming the request and the node types), and the autoscaler is
asked up front for the pretraining workers and the first wave of cells. Shrinking the
requests to what is there stays for the local instance the driver starts itself, and
behind an explicit flag (``--shrink-to-fit``).

Node types come from the autoscaler's config: ``RAYSTUDY_AUTOSCALER_CONFIG`` (a path),
else ``~/ray_bootstrap_config.yaml`` (written by ``ray up`` on the head), else the
autoscaler v2 config in the GCS (KubeRay). Instance types without explicit ``resources``
are looked up in ``INSTANCE_RESOURCES``.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from raystudy.config import ConfigError, StudyConfig
from raystudy.grid import pretrain_jobs

log = logging.getLogger("raystudy")

# vCPUs and GPUs of the instance types a raystudy cluster is likely to use (AWS).
INSTANCE_RESOURCES: dict[str, dict[str, float]] = {
    "m6i.xlarge": {"CPU": 4},
    "m6i.2xlarge": {"CPU": 8},
    "m6i.4xlarge": {"CPU": 16},
    "m5.2xlarge": {"CPU": 8},
    "g5.xlarge": {"CPU": 4, "GPU": 1},
    "g5.2xlarge": {"CPU": 8, "GPU": 1},
    "g5.4xlarge": {"CPU": 16, "GPU": 1},
    "g5.8xlarge": {"CPU": 32, "GPU": 1},
    "g5.12xlarge": {"CPU": 48, "GPU": 4},
    "g5.24xlarge": {"CPU": 96, "GPU": 4},
    "g5.48xlarge": {"CPU": 192, "GPU": 8},
    "g6.12xlarge": {"CPU": 48, "GPU": 4},
    "g6e.12xlarge": {"CPU": 48, "GPU": 4},
    "p3.8xlarge": {"CPU": 32, "GPU": 4},
    "p4d.24xlarge": {"CPU": 96, "GPU": 8},
}
IGNORED = ("memory", "object_store_memory")  # not requested by the study's bundles
RELEASE_AFTER_S = 900.0  # the up-front request is dropped once met, or after this long


class ResourceError(ConfigError):
    """A request that no node type of the cluster can ever hold."""


@dataclass(frozen=True)
class NodeType:
    """One kind of node: its resources and how many of it the cluster may have."""

    name: str
    resources: dict[str, float]
    max_count: int

    def holds(self, bundle: dict[str, float]) -> int:
        """How many ``bundle``s fit on one node of this type.

        Example:
            NodeType("g", {"CPU": 48, "GPU": 4}, 8).holds({"CPU": 4, "GPU": 1})  # 4
        """
        fits = [self.resources.get(k, 0.0) / v for k, v in bundle.items() if v > 0]
        return int(math.floor(min(fits) + 1e-9)) if fits else 1

    def describe(self) -> str:
        res = ", ".join(f"{k}: {v:g}" for k, v in sorted(self.resources.items()))
        return f"{self.name} {{{res}}} x{self.max_count}"


@dataclass(frozen=True)
class Request:
    """``count`` bundles of ``bundle`` (``what``: the config keys behind it).

    ``together``: all bundles are needed at once (a Ray Train worker group).
    """

    what: str
    bundle: dict[str, float]
    count: int
    together: bool = False

    def describe(self) -> str:
        res = ", ".join(f"{k}: {v:g}" for k, v in sorted(self.bundle.items()))
        return f"{self.what} asks {{{res}}} x{self.count}"


def uses_gpu(cfg: StudyConfig, gpu_available: bool) -> bool:
    """``pretrain.use_gpu``: true / false as configured, or ``auto`` = whether a GPU is available."""
    wanted = cfg.pretrain.wants_gpu()
    return gpu_available if wanted is None else wanted


def pretrain_uses_gpu(cfg: StudyConfig, node_types: list[NodeType]) -> bool:
    """:func:`uses_gpu` on a cluster of ``node_types``: auto = any node type has a GPU."""
    return uses_gpu(cfg, any(t.resources.get("GPU", 0) > 0 for t in node_types))


def study_requests(cfg: StudyConfig, use_gpu: bool, cells: int | None = None) -> list[Request]:
    """The bundles of one study: pretraining workers per method, then cells (one bundle each).

    ``cells`` caps the cell bundles (the first wave); default: every cell of the grid.
    """
    p, f = cfg.pretrain, cfg.finetune
    worker = {"CPU": float(p.cpus_per_worker), **({"GPU": 1.0} if use_gpu else {})}
    cell = {"CPU": float(f.cpus_per_trial), **({"GPU": float(f.gpus_per_trial)} if f.gpus_per_trial > 0 else {})}
    g = cfg.grid
    n_cells = (
        sum(len(s) * len(g.strategies(name)) for name, s in g.sizes.items()) * g.folds * len(g.models) * len(g.archs)
    )
    n_cells += len(cfg.grid.sizes) if cfg.grid.ceiling_epochs > 0 else 0  # one supervised-ceiling cell per set
    requests = [
        Request(
            f"pretraining {j.name} (pretrain.num_workers={p.num_workers}, "
            f"pretrain.cpus_per_worker={p.cpus_per_worker}, "
            f"pretrain.use_gpu={p.use_gpu})",
            worker,
            p.num_workers,
            together=True,
        )
        for j in pretrain_jobs(cfg)
        if j.model in cfg.grid.models
    ]
    requests.append(
        Request(
            f"a cell (finetune.cpus_per_trial={f.cpus_per_trial:g}, finetune.gpus_per_trial={f.gpus_per_trial:g})",
            cell,
            n_cells if cells is None else min(cells, n_cells),
        )
    )
    return requests


def holders(request: Request, node_types: list[NodeType]) -> list[NodeType]:
    """Node types on which one bundle of ``request`` fits."""
    return [t for t in node_types if t.holds(request.bundle) >= 1]


def check_fits(requests: list[Request], node_types: list[NodeType], source: str) -> None:
    """Raise ResourceError when a bundle fits no node type, or a Train worker group cannot fit at once."""
    problems = []
    for r in requests:
        ok = holders(r, node_types)
        capacity = sum(t.holds(r.bundle) * t.max_count for t in ok)
        if not ok:
            problems.append(f"{r.describe()}: no node type holds one")
        elif r.together and capacity < r.count:
            problems.append(f"{r.describe()}: the node types hold at most {capacity} at once")
    if problems:
        types = "; ".join(t.describe() for t in node_types) or "none"
        raise ResourceError(
            "the study asks for resources the cluster can never give:\n  - "
            + "\n  - ".join(problems)
            + f"\nnode types ({source}): {types}\n"
            "lower the request (e.g. --set finetune.cpus_per_trial=...) or add a node type that holds it"
        )


def node_resources(name: str, spec: dict[str, Any]) -> dict[str, float]:
    """A node type's resources: explicit ``resources`` over the instance type's (INSTANCE_RESOURCES)."""
    explicit = {k: float(v) for k, v in (spec.get("resources") or {}).items() if k not in IGNORED}
    instance = (spec.get("node_config") or {}).get("InstanceType")
    if instance is None:
        return explicit
    if instance not in INSTANCE_RESOURCES and not {"CPU", "GPU"} <= set(explicit):
        raise ConfigError(
            f"node type {name}: instance type {instance} is not in raystudy.resources.INSTANCE_RESOURCES; "
            "write its resources: {CPU: ..., GPU: ...} in the cluster config"
        )
    return {**INSTANCE_RESOURCES.get(instance, {}), **explicit}


def node_types_from_config(raw: dict[str, Any], where: str) -> list[NodeType]:
    """Node types of a Ray cluster config (cluster.yaml, the bootstrap config, the fake provider's)."""
    types = raw.get("available_node_types")
    if not isinstance(types, dict) or not types:
        raise ConfigError(f"{where}: no available_node_types")
    head = raw.get("head_node_type")
    out = []
    for name, spec in types.items():
        count = 1 if name == head else int(spec.get("max_workers", raw.get("max_workers", 0)))
        out.append(NodeType(name, node_resources(name, spec), count))
    return out


def load_node_types(path: Path) -> list[NodeType]:
    if not path.is_file():
        raise ConfigError(f"cluster config {path} does not exist")
    return node_types_from_config(yaml.safe_load(path.read_text()) or {}, str(path))


def autoscaler_node_types() -> tuple[list[NodeType], str] | None:
    """The running cluster's node types from its autoscaler config; None when none is visible."""
    for path in (os.environ.get("RAYSTUDY_AUTOSCALER_CONFIG"), "~/ray_bootstrap_config.yaml"):
        if path and Path(path).expanduser().is_file():
            return load_node_types(Path(path).expanduser()), str(path)
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # an older GCS, or no autoscaler v2
        config = None
    if config is None or not config.node_group_configs:
        return None
    types = [
        NodeType(
            g.name,
            {k: float(v) for k, v in g.resources.items() if k not in IGNORED},
            g.max_count if g.max_count >= 0 else 10**6,
        )
        for g in config.node_group_configs
    ]
    return types, "the autoscaler's cluster config in the GCS"


def started_here() -> bool:
    """True when this process started the Ray instance itself (a local instance, not a cluster)."""
    import ray

    node = ray._private.worker._global_node
    return node is not None and node.head


def shrink_to_cluster(cfg: StudyConfig, where: str = "this Ray instance's nodes") -> StudyConfig:
    """Shrink per-trial and per-worker requests to what the Ray instance has, with a warning.

    A preset written for GPU nodes runs unchanged on a CPU-only machine: GPU requests
    become 0 and CPU requests are capped at the largest node's CPU count; on a machine
    with fewer GPUs than ``pretrain.num_workers`` (a one-GPU workstation), the pretraining
    workers are capped at the GPU workers the instance holds at once. What is left is
    checked against the live nodes (:func:`check_fits`: a request that can never start
    fails now, not after a wait). For a local instance, ``--shrink-to-fit``, and a cluster
    that shows no autoscaler config (``where`` then says so in the error): never on a
    cluster whose node types are known.
    """
    import ray

    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((r.get("CPU", 0) for r in nodes), default=1) or 1
    has_gpu = any(r.get("GPU", 0) > 0 for r in nodes)
    f, p = cfg.finetune, cfg.pretrain
    changes = []
    if f.gpus_per_trial > 0 and not has_gpu:
        changes.append(f"finetune.gpus_per_trial {f.gpus_per_trial} -> 0 (no GPU in the cluster)")
        f.gpus_per_trial = 0.0
    if f.cpus_per_trial > max_cpu:
        changes.append(f"finetune.cpus_per_trial {f.cpus_per_trial} -> {max_cpu}")
        f.cpus_per_trial = float(max_cpu)
    if p.cpus_per_worker > max_cpu:
        changes.append(f"pretrain.cpus_per_worker {p.cpus_per_worker} -> {int(max_cpu)}")
        p.cpus_per_worker = int(max_cpu)
    total_cpu = sum(r.get("CPU", 0) for r in nodes)
    if not has_gpu and p.num_workers * p.cpus_per_worker > total_cpu:
        workers = max(1, int(total_cpu // p.cpus_per_worker // max(1, len(p.methods))))
        changes.append(f"pretrain.num_workers {p.num_workers} -> {workers} (CPU only)")
        p.num_workers = workers
    live = [NodeType(f"node {i}", {k: float(v) for k, v in r.items()}, 1) for i, r in enumerate(nodes)]
    use_gpu = uses_gpu(cfg, has_gpu)
    groups = study_requests(cfg, use_gpu, cells=1)[:-1]  # one Train worker group per pretraining run
    room = sum(t.holds(groups[0].bundle) for t in live) if groups else 0
    if use_gpu and groups and 0 < room < p.num_workers:  # a Train group starts only once all its workers fit
        changes.append(
            f"pretrain.num_workers {p.num_workers} -> {room} (this Ray instance holds {room} GPU worker(s) of "
            f"{{CPU: {p.cpus_per_worker}, GPU: 1}} at once)"
        )
        p.num_workers = room
    for change in changes:
        log.warning("resources: %s", change)
    check_fits(study_requests(cfg, use_gpu, cells=1), live, where)
    return cfg


class AutoscalerRequest:
    """``request_resources`` for the study's first wave, dropped once the cluster holds it.

    A request stays in force until replaced, so it is cleared when met (Tune's own
    pending trials drive the autoscaler from then on), after ``RELEASE_AFTER_S``, and
    when the study ends.
    """

    def __init__(
        self, bundles: list[dict[str, float]], ceiling: dict[str, float], release_after_s: float = RELEASE_AFTER_S
    ) -> None:
        from ray.autoscaler.sdk import request_resources

        self._request = request_resources
        self.bundles = bundles
        self.wanted: dict[str, float] = {}  # met: the cluster holds this much (at most its ceiling)
        for b in bundles:
            for k, v in b.items():
                self.wanted[k] = min(self.wanted.get(k, 0.0) + v, ceiling.get(k, 0.0))
        self._done = threading.Event()
        self._request(bundles=bundles)
        self._thread = threading.Thread(target=self._release_when_met, args=(release_after_s,), daemon=True)
        self._thread.start()

    def _release_when_met(self, release_after_s: float) -> None:
        import ray

        deadline = time.time() + release_after_s
        while not self._done.wait(5.0) and time.time() < deadline:
            have = ray.cluster_resources()
            if all(have.get(k, 0.0) >= v for k, v in self.wanted.items()):
                break
        self.release()

    def release(self) -> None:
        if not self._done.is_set():
            self._done.set()
            try:
                self._request(bundles=[])
            except Exception as err:  # the cluster is gone: nothing to release
                log.debug("could not clear the autoscaler request: %s", err)


@contextmanager
def fit_resources(cfg: StudyConfig, shrink: bool = False) -> Iterator[StudyConfig]:
    """The study config the trials run with, on the connected Ray instance.

    A local instance this process started (or ``shrink``): requests shrunk to fit.
    A cluster: requests kept, ``pretrain.use_gpu: auto`` resolved from the node types,
    checked against them (ResourceError when one can never fit) and asked of the
    autoscaler up front; the request is cleared when the block ends.

    Example:
        with fit_resources(copy.deepcopy(cfg)) as run_cfg:
            run_jobs(run_cfg, ...)
    """
    if shrink or started_here():
        yield shrink_to_cluster(cfg)
        return
    found = autoscaler_node_types()
    if found is None:  # no autoscaler config: a cluster started by hand, whose live nodes are all it has
        log.warning(
            "resources: this cluster shows no autoscaler config, so its live nodes are taken as all it has "
            "and the requests are fitted to them (on an autoscaling cluster, set RAYSTUDY_AUTOSCALER_CONFIG "
            "to its autoscaler config)"
        )
        yield shrink_to_cluster(
            cfg,
            "the live nodes: no autoscaler config is visible; set RAYSTUDY_AUTOSCALER_CONFIG if this cluster "
            "autoscales",
        )
        return
    node_types, source = found
    use_gpu = pretrain_uses_gpu(cfg, node_types)
    cfg.pretrain.use_gpu = use_gpu  # resolved here from the node types, not from the nodes up now
    requests = study_requests(cfg, use_gpu)
    check_fits(requests, node_types, source)
    cells = requests[-1]
    room = sum(t.holds(cells.bundle) * t.max_count for t in holders(cells, node_types))
    first_wave = [r.bundle for r in requests[:-1] for _ in range(r.count)] + [cells.bundle] * min(cells.count, room)
    print(
        "resources: "
        + "; ".join(r.describe() for r in requests)
        + f"; asking the autoscaler for {len(first_wave)} bundles up front (node types from {source})",
        flush=True,
    )
    ceiling = {k: sum(t.resources.get(k, 0.0) * t.max_count for t in node_types) for b in first_wave for k in b}
    request = AutoscalerRequest(first_wave, ceiling)
    try:
        yield cfg
    finally:
        request.release()
