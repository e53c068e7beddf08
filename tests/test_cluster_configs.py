"""The cluster-launcher YAMLs in cluster/ against the schema that ships inside the installed Ray."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"
CONFIGS = sorted(CLUSTER.glob("*.yaml"))
SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def test_configs_exist():
    assert {path.name for path in CONFIGS} >= {"aws.yaml", "gcp.yaml", "local.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_matches_rays_schema(path):
    jsonschema.validate(load(path), json.loads(SCHEMA.read_text()))


def test_schema_rejects_a_broken_config():
    """The check can fail: a node type without node_config breaks the schema."""
    config = load(CLUSTER / "aws.yaml")
    del config["available_node_types"]["gpu"]["node_config"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(config, json.loads(SCHEMA.read_text()))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_token_auth_and_private_dashboard(path):
    config = load(path)
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    ray_starts = [command for command in starts if "ray start" in command]
    assert ray_starts and all("RAY_AUTH_MODE=token" in command for command in ray_starts)
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert "~/.ray/auth_token" in config["file_mounts"]
    assert any("pip install" in command and "~/fooling" in command for command in config["setup_commands"])


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_cloud_configs_have_cheap_cpu_workers_and_gpu_scorers(name):
    nodes = load(CLUSTER / name)["available_node_types"]
    gpu = [node for node in nodes.values() if node.get("resources", {}).get("GPU", 0) >= 1]
    assert gpu, "no GPU node type for the scorers"
    workers = [node for node in nodes.values() if "min_workers" in node]
    cpu = [node for node in workers if not node.get("resources", {}).get("GPU")]
    text = json.dumps(cpu)
    assert cpu and ('"MarketType": "spot"' in text or '"preemptible": true' in text)
