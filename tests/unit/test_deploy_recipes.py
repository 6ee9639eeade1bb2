"""The deploy recipes are valid for the tools that read them (no Docker or cluster here)."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = ROOT.parent / "shared" / "schemas"


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of user values over chart defaults: maps key by key, the rest replaced."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def schema(name: str) -> dict[str, Any]:
    path = SCHEMAS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: shared/ must sit beside the project")
    return (
        json.loads(path.read_text()) if name.endswith(".json") else yaml.safe_load(path.read_text())
    )


def test_compose_file_follows_the_compose_specification() -> None:
    compose = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())
    jsonschema.Draft7Validator(schema("compose-spec.json")).validate(compose)
    assert {"hub", "postgres", "prometheus"} <= set(compose["services"])
    assert "courses" in compose["volumes"]


def test_helm_values_validate_over_the_chart_defaults() -> None:
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    merged = deep_merge(yaml.safe_load((SCHEMAS / "z2jh-values.default.yaml").read_text()), values)
    jsonschema.Draft7Validator(schema("z2jh-values.schema.yaml")).validate(merged)
    assert merged["cull"]["enabled"] is False  # ours replaces the chart's culler


def test_helm_ports_match_the_generator() -> None:
    """The hub Service and network policy open exactly the ports the services use."""
    from hubservices.common.hubconfig import SERVICE_APPS, service_app_class

    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    ports = {service_app_class(name).default_port for name in SERVICE_APPS}
    assert {p["port"] for p in values["hub"]["service"]["extraPorts"]} == ports
    assert {p["port"] for p in values["hub"]["networkPolicy"]["ingress"][0]["ports"]} == ports


def test_prometheus_scrapes_the_services_metrics_routes() -> None:
    config = yaml.safe_load((DEPLOY / "compose" / "prometheus.yml").read_text())
    paths = {job["metrics_path"] for job in config["scrape_configs"]}
    assert paths == {"/services/stats/metrics", "/services/cull/metrics"}
    assert all(job["authorization"]["credentials_file"] for job in config["scrape_configs"])


def test_the_image_installs_with_the_script_the_tests_use() -> None:
    dockerfile = (DEPLOY / "compose" / "Dockerfile").read_text()
    assert re.search(r"^RUN deploy/install\.sh ", dockerfile, re.MULTILINE)
    assert "deploy/install.sh" in (ROOT / "Makefile").read_text()


def compose_hub_config(monkeypatch: pytest.MonkeyPatch, text: str, **env: str) -> Any:
    """The compose recipe's jupyterhub_config.py run as the hub runs it, with ``env``."""
    from traitlets.config import Config

    monkeypatch.setenv("HUBSERVICES_DATABASE_URL", "postgresql://hubservices@postgres/hubservices")
    monkeypatch.setenv("PROMETHEUS_API_TOKEN", "0" * 64)
    monkeypatch.delenv("HUB_ADDRESS", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = Config()
    exec(compile(text, "jupyterhub_config.py", "exec"), {"get_config": lambda: config})
    return config


def test_compose_publishes_the_dummy_hub_on_loopback_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    hub = yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())["services"]["hub"]
    assert hub["ports"] == ["${HUB_ADDRESS:-127.0.0.1}:${HUB_PORT:-8000}:8000"]
    assert hub["environment"]["HUB_ADDRESS"] == "${HUB_ADDRESS:-127.0.0.1}"

    text = (DEPLOY / "compose" / "jupyterhub_config.py").read_text()
    config = compose_hub_config(monkeypatch, text)  # HUB_ADDRESS unset: the host's loopback
    assert config.JupyterHub.authenticator_class == "dummy"
    with pytest.raises(SystemExit, match="HUB_ADDRESS=0.0.0.0 would publish a hub that takes any"):
        compose_hub_config(monkeypatch, text, HUB_ADDRESS="0.0.0.0")

    real = text.replace('authenticator_class = "dummy"', 'authenticator_class = "github"')
    assert real != text
    assert compose_hub_config(monkeypatch, real, HUB_ADDRESS="0.0.0.0").JupyterHub.bind_url


def test_compose_prometheus_holds_only_the_metrics_scope(monkeypatch: pytest.MonkeyPatch) -> None:
    from hubservices.common.app import METRICS_SCOPE

    text = (DEPLOY / "compose" / "jupyterhub_config.py").read_text()
    config = compose_hub_config(monkeypatch, text)
    assert METRICS_SCOPE in config.JupyterHub.custom_scopes
    roles = {role["name"]: role for role in config.JupyterHub.load_roles}
    assert roles["hubservices-metrics"]["scopes"] == [METRICS_SCOPE]
    assert roles["hubservices-metrics"]["services"] == ["prometheus"]
    assert METRICS_SCOPE not in roles["user"]["scopes"]
