"""The cluster's settings: one model with the server's (same file format), and what it tells
Ray Serve; the KubeRay manifest's settings file must load into it."""

from __future__ import annotations

import tomllib

import pytest
import yaml

from comfyui_persona.headless.cluster.deploy import replica_config_json
from comfyui_persona.headless.cluster.replica import deployment_options
from comfyui_persona.headless.cluster.settings import DEPLOYMENT_ONLY_FIELDS, ClusterConfig
from comfyui_persona.headless.server.config import ServerConfig
from comfyui_persona.headless.settings_args import SettingsError, load_settings_file, settings_from_args
from paths import REPO


def test_a_serve_settings_file_deploys_unchanged_and_replicas_get_the_server_part(tmp_path):
    path = tmp_path / "persona.toml"
    path.write_text('max_sessions = 3\nresume_grace_s = 12.5\nreplicas = 2\n')
    config = ClusterConfig(**load_settings_file(path))
    server = config.server_config()
    assert type(server) is ServerConfig and server.max_sessions == 3 and server.resume_grace_s == 12.5
    # Replicas see every client from the ingress's address: the per-address caps are the ingress's.
    assert server.max_sessions_per_ip == 3 and server.max_connections_per_ip == config.max_connections
    with pytest.raises(ValueError):
        ServerConfig(**load_settings_file(path))  # `replicas` is no serve setting: extra="forbid"


def test_bad_cluster_settings_are_refused_naming_the_field(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("autoscale = true\nmin_replicas = 3\nmax_replicas = 2\n")

    class Args:
        pass

    with pytest.raises(SettingsError, match="min_replicas"):
        settings_from_args(ClusterConfig, Args(), path)
    with pytest.raises(ValueError, match="replica_gpus"):
        ClusterConfig(replica_gpus=-1)


def test_serve_options_come_from_the_settings():
    fixed = deployment_options(ClusterConfig(replicas=3, max_sessions=2, replica_gpus=1, replica_cpus=4))
    assert fixed["num_replicas"] == 3 and fixed["max_ongoing_requests"] == 2
    assert fixed["ray_actor_options"] == {"num_cpus": 4, "num_gpus": 1}
    assert "autoscaling_config" not in fixed
    scaled = deployment_options(ClusterConfig(autoscale=True, replicas=1, min_replicas=1, max_replicas=5,
                                              max_sessions=4, downscale_delay_s=90))
    auto = scaled["autoscaling_config"]
    assert "num_replicas" not in scaled
    assert (auto["min_replicas"], auto["initial_replicas"], auto["max_replicas"]) == (1, 1, 5)
    assert auto["target_ongoing_requests"] == 4 and auto["downscale_delay_s"] == 90


def test_the_kuberay_manifest_settings_load():
    docs = list(yaml.safe_load_all((REPO / "deploy" / "kuberay-persona.yaml").read_text()))
    assert [d["kind"] for d in docs] == ["RayCluster", "ConfigMap", "Service"]
    config = ClusterConfig(**tomllib.loads(docs[1]["data"]["cluster.toml"]))
    assert config.cluster == "auto" and config.replica_gpus == 1 and config.autoscale


def test_replicas_are_built_without_the_deployment_only_settings():
    """Scaling or queue settings reach no replica (so changing them alone changes no replica's
    arguments); everything a replica reads does."""
    assert DEPLOYMENT_ONLY_FIELDS <= set(ClusterConfig.model_fields)
    assert not DEPLOYMENT_ONLY_FIELDS & set(ServerConfig.model_fields)  # the replicas' server part
    base = ClusterConfig(max_sessions=3, replica_hang_timeout_s=7, fault_injection=True, replica_host="127.0.0.1")
    scaled = base.model_copy(update={"replicas": 9, "queue_timeout_s": 3.0, "drain_timeout_s": 1.0,
                                     "cluster_check_period_s": 9.0, "upstream_timeout_s": 2.0})
    assert replica_config_json(base) == replica_config_json(scaled)
    seen = ClusterConfig.model_validate_json(replica_config_json(base))
    assert (seen.max_sessions, seen.replica_hang_timeout_s, seen.fault_injection, seen.replica_host) == (
        3, 7, True, "127.0.0.1")
    assert seen.server_config() == base.server_config()
