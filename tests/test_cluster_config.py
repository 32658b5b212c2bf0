"""cluster.yaml, the Dockerfile and k8s/rayjob.yaml: Ray's own validation offline, and one image, one Ray, one study."""

import re
import shlex
from pathlib import Path

import ray
import tomllib
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

from raystudy.cli import build_parser
from raystudy.config import load_config
from raystudy.resources import NodeType, check_fits, study_requests

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster.yaml"
DOCKERFILE = REPO / "Dockerfile"
RAYJOB = REPO / "k8s" / "rayjob.yaml"


def test_cluster_yaml_validates():
    raw = yaml.safe_load(CLUSTER.read_text())
    validate_config(prepare_config(raw))


def test_image_matches_pinned_ray_and_dashboard_is_local():
    raw = yaml.safe_load(CLUSTER.read_text())
    base = re.search(r"^FROM (\S+)", DOCKERFILE.read_text(), re.M).group(1)
    assert base.startswith(f"rayproject/ray:{ray.__version__}-")  # the image is built on the pinned Ray
    assert base.endswith("-gpu")
    assert raw["docker"]["image"].endswith(f"raystudy:0.1.0-ray{ray.__version__}-py311-gpu")
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in CLUSTER.read_text()
    assert not any("pip install" in c for c in raw["setup_commands"])  # everything is in the image


def test_dockerfile_pins_torch_as_pyproject_and_installs_raystudy():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = {d.split(">=")[0]: d.split("<=")[1] for d in deps if d.startswith(("torch>=", "torchvision>="))}
    text = DOCKERFILE.read_text()
    assert f"torch=={pins['torch']}" in text and f"torchvision=={pins['torchvision']}" in text
    assert re.search(r"pip install .*-e \.", text) and "COPY --chown=ray:users raystudy raystudy" in text


def test_cluster_yaml_boots_safely():
    raw = yaml.safe_load(CLUSTER.read_text())
    types = raw["available_node_types"]
    assert types[raw["head_node_type"]]["resources"] == {"CPU": 0}  # work goes to the GPU workers
    assert all(t["node_config"]["ImageId"].startswith("ami-") for t in types.values())  # no latest_dlami
    assert raw["rsync_filter"] == [".gitignore"]
    # SSH limited to the user's CIDR: a group the user made, named on every node type; none made by Ray
    assert "security_group" not in raw["provider"]
    assert all(t["node_config"]["SecurityGroupIds"] for t in types.values())
    mount = " ".join(raw["initialization_commands"])
    assert "mount -t nfs4" in mount and "|| true" not in mount  # a failed mount fails the node's setup
    gpu = types["gpu_worker"]
    assert gpu["min_workers"] == 0 and gpu["max_workers"] >= 1


def rayjob_node_types(job: dict) -> list[NodeType]:
    """Node types of a RayJob: resources from rayStartParams and the containers' limits."""
    spec = job["spec"]["rayClusterSpec"]
    head = spec["headGroupSpec"]
    out = [NodeType("head", {"CPU": float(head["rayStartParams"]["num-cpus"])}, 1)]
    for group in spec["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        res = {"CPU": float(limits["cpu"]), "GPU": float(limits.get("nvidia.com/gpu", 0))}
        out.append(NodeType(group["groupName"], res, group["maxReplicas"]))
    return out


def test_rayjob_manifest_matches_the_project():
    job = yaml.safe_load(RAYJOB.read_text())
    spec = job["spec"]["rayClusterSpec"]
    assert job["kind"] == "RayJob" and spec["rayVersion"] == ray.__version__
    image = yaml.safe_load(CLUSTER.read_text())["docker"]["image"]
    containers = [spec["headGroupSpec"]["template"]["spec"]["containers"][0]]
    containers += [g["template"]["spec"]["containers"][0] for g in spec["workerGroupSpecs"]]
    assert {c["image"] for c in containers} == {image}
    gpu = spec["workerGroupSpecs"][0]
    assert gpu["minReplicas"] == 0 and spec["enableInTreeAutoscaling"]
    # the command is the project's: studies/scaling.py with arguments raystudy accepts
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["python", "studies/scaling.py"]
    args = build_parser("demo").parse_args(["run", *argv[2:]])
    cfg = load_config(preset=args.preset, overrides=args.overrides)  # --data is read on the cluster
    assert (
        cfg.name == "paper" and str(args.out).startswith("/mnt/shared/") and str(args.data).startswith("/mnt/shared/")
    )
    check_fits(study_requests(cfg, use_gpu=True), rayjob_node_types(job), str(RAYJOB))
