"""The cluster-launcher YAMLs in cluster/, through the same preparation and validation `ray up` runs."""

from __future__ import annotations

import json
from pathlib import Path

import click
import jsonschema
import pytest
import yaml
from ray.autoscaler._private.local.config import LOCAL_CLUSTER_NODE_TYPE
from ray.autoscaler._private.providers import _NODE_PROVIDERS
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER = Path(__file__).resolve().parents[3] / "cluster"
CONFIGS = sorted(CLUSTER.glob("*.yaml"))


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def prepare_as_ray_up(config: dict) -> dict:
    """What `ray up` does to a config before it contacts any machine.

    ``ray up`` (``create_or_update_cluster`` -> ``_bootstrap_config``) runs Ray's
    ``prepare_config`` (defaults merged in; for on-premise clusters Ray's own node type,
    whose min and max workers come from ``worker_ips``), the provider's
    ``fillout_available_node_types_resources``, ``validate_config`` (Ray's JSON schema and
    its cross-field rules) and the provider's ``bootstrap_config``. The last two provider
    steps call the cloud's API for AWS and GCP, so they run here for the local provider only.

    Raises:
        click.ClickException: Ray's preparation refuses the config (what `ray up` prints).
        jsonschema.ValidationError, ValueError: validation refuses it.
    """
    prepared = prepare_config(config)
    validate_config(prepared)
    if prepared["provider"]["type"] == "local":
        provider = _NODE_PROVIDERS["local"](prepared["provider"])
        prepared = provider.fillout_available_node_types_resources(prepared)
        validate_config(prepared)
        prepared = provider.bootstrap_config(prepared)
    return prepared


def test_configs_exist():
    assert {path.name for path in CONFIGS} >= {"aws.yaml", "gcp.yaml", "local.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.name)
def test_config_passes_ray_ups_preparation_and_validation(path):
    prepared = prepare_as_ray_up(load(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]
    assert prepared["cluster_name"] == load(path)["cluster_name"]


def test_local_config_keeps_every_listed_worker():
    config = load(CLUSTER / "local.yaml")
    node_type = prepare_as_ray_up(config)["available_node_types"][LOCAL_CLUSTER_NODE_TYPE]
    count = len(config["provider"]["worker_ips"])
    assert count >= 1 and node_type["min_workers"] == node_type["max_workers"] == count


def test_preparation_refuses_node_types_in_an_on_premise_config():
    """The check can fail as `ray up` does: node types in a local-provider config are refused."""
    config = load(CLUSTER / "local.yaml")
    config["available_node_types"] = {"head": {"resources": {}, "node_config": {}}}
    config["head_node_type"] = "head"
    with pytest.raises(click.ClickException, match="available_node_types is not supported"):
        prepare_as_ray_up(config)


def test_validation_refuses_a_broken_cloud_config():
    """The check can fail: a node type without node_config breaks Ray's schema."""
    config = load(CLUSTER / "aws.yaml")
    del config["available_node_types"]["gpu"]["node_config"]
    with pytest.raises(jsonschema.ValidationError):
        prepare_as_ray_up(config)


def test_validation_refuses_more_min_workers_than_max_workers():
    """Not only the schema: Ray's cross-field rules run too."""
    config = load(CLUSTER / "aws.yaml")
    config["max_workers"] = 1
    with pytest.raises(ValueError, match="max_workers"):
        prepare_as_ray_up(config)


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
