"""cluster.yaml passes Ray's own cluster-config validation, offline, and keeps the dashboard private."""

from pathlib import Path

import ray
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[1] / "cluster.yaml"


def test_cluster_yaml_validates():
    raw = yaml.safe_load(CLUSTER.read_text())
    validate_config(prepare_config(raw))


def test_image_matches_pinned_ray_and_dashboard_is_local():
    raw = yaml.safe_load(CLUSTER.read_text())
    assert raw["docker"]["image"].startswith(f"rayproject/ray:{ray.__version__}-")
    assert raw["docker"]["image"].endswith("-gpu")
    head = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head
    assert "0.0.0.0" not in CLUSTER.read_text()
    assert any("pip install" in c and "raystudy" in c for c in raw["setup_commands"])
