"""Each recipe's Python config, loaded by a real hub with this machine's paths: services answer."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml

from hubservices.common.hubapi import HubAPI
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ALL = ["cull", "stats", "formgrader"]


def recipes() -> dict[str, str]:
    values = yaml.safe_load((DEPLOY / "helm" / "values.yaml").read_text())
    return {
        "compose": (DEPLOY / "compose" / "jupyterhub_config.py").read_text(),
        "helm": values["hub"]["extraConfig"]["hubservices"],
        "tljh": (DEPLOY / "tljh" / "hubservices.py").read_text(),
    }


@pytest.mark.parametrize("recipe", ["compose", "helm", "tljh"])
async def test_recipe_config_brings_the_services_up(
    recipe: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUBSERVICES_DATABASE_URL", f"sqlite:///{tmp_path}/hubservices.sqlite")
    monkeypatch.setenv("PROMETHEUS_API_TOKEN", "prometheus-" + "0" * 32)
    hub = Hub(tmp_path / "hub", services=ALL, recipe=recipes()[recipe])
    hub.start()  # waits for every service's health through the proxy
    try:
        for name in ALL:
            assert httpx.get(hub.service_url(name, "health")).json()["hub"]["reachable"]
        async with HubAPI(hub.api_url, hub.admin_token) as api:
            assert "hubservices-cull" in (await api.get("services", "cull"))["roles"]
            # the culler's role works: its first cycle listed users without a scope error
            await api.create_users(["student"])
        student = hub.browser("student")
        # logged in, not allowed (the cull page is for everyone: their own servers)
        assert student.get(hub.service_url("stats")).status_code == 403
        if recipe == "compose":
            # Prometheus's token reads the metrics the scrape config points at; a student not
            async with HubAPI(hub.api_url, hub.admin_token) as api:
                access = ["access:services!service=stats", "access:services!service=cull"]
                token = await api.create_token("student", scopes=access)
            prometheus = {"Authorization": "Bearer prometheus-" + "0" * 32}
            student_auth = {"Authorization": f"Bearer {token}"}
            for name in ["stats", "cull"]:
                url = hub.service_url(name, "metrics")
                assert httpx.get(url, headers=prometheus).status_code == 200
                assert httpx.get(url, headers=student_auth).status_code == 403
    finally:
        hub.stop()
