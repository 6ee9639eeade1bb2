"""The config generator prints what a hub admin pastes; it must load and be least-privilege."""

from __future__ import annotations

import subprocess
import sys

import pytest
from traitlets.config import Config

from hubservices.common.hubconfig import hub_config_snippet, main, services_and_roles


def load(snippet: str, before: str = "") -> Config:
    """Run the snippet the way jupyterhub runs jupyterhub_config.py."""
    c = Config()
    exec(before + snippet, {"c": c})  # noqa: S102 - this is what the hub does with the file
    return c


def test_snippet_adds_services_and_roles_to_an_empty_config() -> None:
    c = load(hub_config_snippet(["cull", "stats"], python="/opt/py/bin/python"))
    services = c.JupyterHub.services.get_value([])
    assert [s["name"] for s in services] == ["cull", "stats"]
    assert services[0]["command"] == ["/opt/py/bin/python", "-m", "hubservices.cull"]
    assert services[0]["url"] == "http://127.0.0.1:10101"
    assert all(s["oauth_no_confirm"] for s in services)
    roles = c.JupyterHub.load_roles.get_value([])
    user_role = next(r for r in roles if r["name"] == "user")
    assert user_role["scopes"] == [
        "self",
        "access:services!service=cull",
        "access:services!service=stats",
    ]


def test_snippet_keeps_what_the_admin_already_configured() -> None:
    before = "c.JupyterHub.services = [{'name': 'mine', 'api_token': 'x'}]\n"
    c = load(hub_config_snippet(["formgrader"]), before)
    assert [s["name"] for s in c.JupyterHub.services] == ["mine", "formgrader"]


def role_scopes(services: list[str], args: dict | None = None) -> dict[str, list[str]]:
    _, roles = services_and_roles(services, args=args)
    return {r["name"]: r["scopes"] for r in roles if r["name"] != "user"}


def test_cull_role_holds_only_what_its_options_use() -> None:
    base = ["delete:servers", "list:users", "read:servers", "read:users:activity"]
    # "keep it running" (on by default) records activity; --max-extensions=0 needs none
    assert role_scopes(["cull"], {"cull": ["--max-extensions=0"]}) == {"hubservices-cull": base}
    base = sorted([*base, "users:activity"])
    assert role_scopes(["cull"]) == {"hubservices-cull": base}
    assert role_scopes(["cull"], {"cull": ["--cull-users"]})["hubservices-cull"] == sorted(
        [*base, "admin:users"]
    )
    busy = role_scopes(["cull"], {"cull": ["--busy-kernels", "--server-url=http://hub"]})
    # a one-minute token per server asked, never the culler's own: no access:servers
    assert busy["hubservices-cull"] == sorted([*base, "tokens"])


def test_ports_args_and_data_dir_reach_the_command() -> None:
    services, _ = services_and_roles(
        ["stats"],
        host="0.0.0.0",
        ports={"stats": 9999},
        args={"stats": ["--log-level=DEBUG"]},
        data_dir="/var/lib/hubservices",
    )
    assert services[0]["url"] == "http://0.0.0.0:9999"
    assert services[0]["command"][-2:] == ["--log-level=DEBUG", "--data-dir=/var/lib/hubservices"]


def test_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown service 'culler'"):
        services_and_roles(["culler"])


def test_command_prints_the_snippet(capsys: pytest.CaptureFixture[str]) -> None:
    main(["cull", "--port", "cull=12000", "--python", "python3"])
    out = capsys.readouterr().out
    c = load(out)
    assert c.JupyterHub.services.get_value([])[0]["url"] == "http://127.0.0.1:12000"


def test_command_rejects_a_bad_port_with_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "hubservices.common.hubconfig", "--port", "cull=abc"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "SERVICE=PORT" in result.stderr
    assert "Traceback" not in result.stderr
