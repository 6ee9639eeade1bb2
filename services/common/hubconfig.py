"""Write the ``jupyterhub_config.py`` lines that add our services to a hub.

Each service states the hub scopes it uses (:meth:`HubServiceApp.required_scopes`, which may
depend on its options), so the roles printed here are least-privilege and nobody hand-writes
scopes. ``hubservices-config cull stats --arg cull=--cull-users`` prints the snippet;
:func:`services_and_roles` gives the same as data for recipes that are not Python.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pprint
import secrets
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .access import PEERS_ENV, Peer, peers_json
from .app import METRICS_SCOPE, HubServiceApp

#: Where each service's application class lives.
SERVICE_APPS = {
    "cull": "hubservices.cull.app:Culler",
    "stats": "hubservices.stats.app:Stats",
    "formgrader": "hubservices.formgrader.app:FormGrader",
}


#: ``c.JupyterHub.custom_scopes`` for the scopes our services check, which JupyterHub must define.
CUSTOM_SCOPES = {METRICS_SCOPE: {"description": "Read hubservices' /metrics"}}
#: The environment variable the printed Prometheus service reads its token from.
PROMETHEUS_TOKEN_ENV = "PROMETHEUS_API_TOKEN"


def service_app_class(name: str) -> type[HubServiceApp]:
    """The application class of a service by its name."""
    try:
        module, _, cls = SERVICE_APPS[name].partition(":")
    except KeyError:
        raise ValueError(
            f"unknown service {name!r}; choose from {', '.join(SERVICE_APPS)}"
        ) from None
    app_class: type[HubServiceApp] = getattr(importlib.import_module(module), cls)
    return app_class


def configured_app(name: str, args: Sequence[str] = ()) -> HubServiceApp:
    """Service ``name``'s application with the configuration ``args`` give it (not started)."""
    app = service_app_class(name)()
    app.load_config(list(args))
    return app


def required_scopes(name: str, args: Sequence[str] = ()) -> list[str]:
    """The scopes service ``name`` needs when started with ``args``."""
    return sorted(configured_app(name, args).required_scopes())


def peers_environment(apps: Mapping[str, HubServiceApp]) -> dict[str, str]:
    """``$HUBSERVICES_PEERS``: each service's title and access rule, for the others' headers."""
    peers = [Peer(name, app.title, app.access_rule()) for name, app in apps.items()]
    return {PEERS_ENV: peers_json(peers)}


def services_and_roles(
    services: Sequence[str] = tuple(SERVICE_APPS),
    *,
    python: str = sys.executable,
    host: str = "127.0.0.1",
    bind_host: str | None = None,
    ports: Mapping[str, int] | None = None,
    args: Mapping[str, Sequence[str]] | None = None,
    data_dir: str | None = None,
    environment: Mapping[str, str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``c.JupyterHub.services`` entries and ``load_roles`` for the chosen services.

    ``host`` is where the proxy reaches the services; ``bind_host`` (e.g. ``0.0.0.0`` in a
    container, where ``host`` is the container's name) is where they listen, if different.
    Every hub user gets ``access:services!service=<name>`` (through the ``user`` role) so that
    anyone can log in to a service and be told by the service itself whether they may use it.
    """
    ports = ports or {}
    args = args or {}
    entries: list[dict[str, Any]] = []
    roles: list[dict[str, Any]] = []
    apps = {name: configured_app(name, args.get(name, ())) for name in services}
    peers = peers_environment(apps)
    for name in services:
        cls = service_app_class(name)
        port = ports.get(name, cls.default_port)
        command = [python, "-m", f"hubservices.{name}", *args.get(name, ())]
        if data_dir:
            command.append(f"--data-dir={data_dir}")
        if bind_host:
            command.append(f"--bind-url=http://{bind_host}:{port}")
        entries.append(
            {
                "name": name,
                "url": f"http://{host}:{port}",
                "command": command,
                "oauth_no_confirm": True,
                # secrets (a database password) go here, not on the command line
                "environment": {**peers, **(environment or {})},
                "info": {"description": str(cls.description).strip().splitlines()[0]},
            }
        )
        scopes = sorted(apps[name].required_scopes())
        if scopes:
            roles.append(
                {
                    "name": f"hubservices-{name}",
                    "description": f"What the {name} service uses, and nothing more",
                    "scopes": scopes,
                    "services": [name],
                }
            )
    if not entries:
        return entries, roles
    roles.append(
        {
            "name": "user",
            "description": "Standard user privileges, and logging in to hubservices",
            "scopes": ["self", *(f"access:services!service={name}" for name in services)],
        }
    )
    return entries, roles


def prometheus_service_and_role(
    token: str, name: str = "prometheus"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A token-only service for Prometheus and the role that lets it read every service's
    ``/metrics`` and nothing else (needs :data:`CUSTOM_SCOPES` defined in the hub)."""
    entry = {"name": name, "api_token": token}
    role = {
        "name": "hubservices-metrics",
        "description": "Scrape the hubservices' metrics, and nothing more",
        "scopes": [METRICS_SCOPE],
        "services": [name],
    }
    return entry, role


def service_environment(
    name: str,
    *,
    token: str,
    hub_api_url: str,
    host: str = "127.0.0.1",
    port: int | None = None,
    args: Sequence[str] = (),
) -> dict[str, str]:
    """The environment of a service that systemd (not the hub) runs: what the hub would set."""
    prefix = f"/services/{name}/"
    return {
        "JUPYTERHUB_SERVICE_NAME": name,
        "JUPYTERHUB_API_URL": hub_api_url,
        "JUPYTERHUB_API_TOKEN": token,
        "JUPYTERHUB_SERVICE_URL": f"http://{host}:{port or service_app_class(name).default_port}",
        "JUPYTERHUB_SERVICE_PREFIX": prefix,
        "JUPYTERHUB_CLIENT_ID": f"service-{name}",
        "JUPYTERHUB_OAUTH_CALLBACK_URL": prefix + "oauth_callback",
        "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps([f"access:services!service={name}"]),
        "HUBSERVICES_ARGS": shlex.join(args),
    }


def format_env_file(env: Mapping[str, str]) -> str:
    """``KEY='value'`` lines, as systemd's EnvironmentFile and shells read them."""
    return "".join(f"{key}={shlex.quote(value)}\n" for key, value in env.items())


def read_env_file(path: Path) -> dict[str, str]:
    """The variables of an environment file written by :func:`format_env_file`."""
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            env[key.strip()] = " ".join(shlex.split(value))
    return env


def external_services_and_roles(
    envs: Mapping[str, Mapping[str, str]],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Entries and roles for services run by a supervisor with these environments (by name)."""
    args = {name: shlex.split(env.get("HUBSERVICES_ARGS", "")) for name, env in envs.items()}
    entries, roles = services_and_roles(list(envs), args=args)
    for entry in entries:
        env = envs[entry["name"]]
        del entry["command"], entry["environment"]
        entry["url"] = env["JUPYTERHUB_SERVICE_URL"]
        entry["api_token"] = env["JUPYTERHUB_API_TOKEN"]
    return entries, roles


def hub_config_snippet(
    services: Sequence[str] = tuple(SERVICE_APPS), *, prometheus: bool = False, **options: Any
) -> str:
    """The Python lines to paste into ``jupyterhub_config.py``; with ``prometheus``, also a
    ``prometheus`` service whose token (from ``$PROMETHEUS_API_TOKEN``) reads the metrics."""
    return format_snippet(services, *services_and_roles(services, **options), prometheus=prometheus)


def format_snippet(
    services: Sequence[str],
    entries: list[dict[str, Any]],
    roles: list[dict[str, Any]],
    *,
    prometheus: bool = False,
) -> str:
    """Entries and roles as ``jupyterhub_config.py`` lines that extend what is there."""
    lines = [
        f"# hubservices: {', '.join(services)} (printed by hubservices-config)",
        "# If you already define the 'user' role in load_roles, merge its scopes into yours.",
        f"c.JupyterHub.custom_scopes.update({pprint.pformat(CUSTOM_SCOPES)})",
        f"c.JupyterHub.services.extend({pprint.pformat(entries, sort_dicts=False)})",
        f"c.JupyterHub.load_roles.extend({pprint.pformat(roles, sort_dicts=False)})",
    ]
    if prometheus:
        entry, role = prometheus_service_and_role(f"os.environ[{PROMETHEUS_TOKEN_ENV!r}]")
        entry_text = pprint.pformat(entry, sort_dicts=False).replace(
            repr(entry["api_token"]), entry["api_token"]
        )
        lines += [
            f"# Prometheus scrapes /services/<name>/metrics with ${PROMETHEUS_TOKEN_ENV}",
            "import os",
            f"c.JupyterHub.services.append({entry_text})",
            f"c.JupyterHub.load_roles.append({pprint.pformat(role, sort_dicts=False)})",
        ]
    return "\n".join([*lines, ""])


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or name not in SERVICE_APPS:
        raise argparse.ArgumentTypeError(
            f"expected SERVICE=VALUE with a known service, not {text!r}"
        )
    return name, value


def main(argv: Sequence[str] | None = None) -> None:
    """``hubservices-config``: print the snippet for the chosen services."""
    parser = argparse.ArgumentParser(
        prog="hubservices-config", description="Print jupyterhub_config.py lines for hubservices."
    )
    parser.add_argument(
        "services",
        nargs="*",
        metavar="SERVICE",
        help=f"services to add (default: all of {', '.join(SERVICE_APPS)})",
    )
    parser.add_argument(
        "--python", default=sys.executable, help="Python that has hubservices installed"
    )
    parser.add_argument("--host", default="127.0.0.1", help="host the proxy reaches them at")
    parser.add_argument("--bind-host", help="address they listen on, if not --host (0.0.0.0)")
    parser.add_argument("--data-dir", help="directory for the services' files")
    parser.add_argument(
        "--port", action="append", type=_key_value, default=[], metavar="SERVICE=PORT"
    )
    parser.add_argument(
        "--arg",
        action="append",
        type=_key_value,
        default=[],
        metavar="SERVICE=ARG",
        help="an option for a service, e.g. --arg cull=--timeout=3600 (repeatable)",
    )
    external = parser.add_argument_group(
        "services run by systemd (external)",
        "--env-for prints a service's environment file with a new token; --env-dir prints "
        "the hub's lines for the services whose environment files are in that directory",
    )
    parser.add_argument(
        "--prometheus",
        action="store_true",
        help=f"add a 'prometheus' service that reads the metrics with ${PROMETHEUS_TOKEN_ENV}",
    )
    external.add_argument("--env-for", choices=list(SERVICE_APPS), metavar="SERVICE")
    external.add_argument("--hub-api-url", default="http://127.0.0.1:8081/hub/api")
    external.add_argument("--env-dir", type=Path, metavar="DIR")
    ns = parser.parse_args(argv)
    try:
        ports = {name: int(port) for name, port in ns.port}
    except ValueError:
        parser.error("--port takes SERVICE=PORT with a number")
    args: dict[str, list[str]] = {}
    for name, value in ns.arg:
        args.setdefault(name, []).append(value)
    services = ns.services or list(SERVICE_APPS)
    unknown = [name for name in services if name not in SERVICE_APPS]
    if unknown:
        parser.error(f"unknown service {unknown[0]!r}; choose from {', '.join(SERVICE_APPS)}")
    if ns.env_for:
        env = service_environment(
            ns.env_for,
            token=secrets.token_hex(32),
            hub_api_url=ns.hub_api_url,
            host=ns.host,
            port=ports.get(ns.env_for),
            args=args.get(ns.env_for, ()),
        )
        print(format_env_file(env), end="")
    elif ns.env_dir:
        missing = [n for n in services if not (ns.env_dir / f"{n}.env").is_file()]
        if missing:
            parser.error(f"no {missing[0]}.env in {ns.env_dir}: write it with --env-for")
        envs = {name: read_env_file(ns.env_dir / f"{name}.env") for name in services}
        snippet = format_snippet(
            services, *external_services_and_roles(envs), prometheus=ns.prometheus
        )
        print(snippet, end="")
    else:
        snippet = hub_config_snippet(
            services,
            python=ns.python,
            host=ns.host,
            bind_host=ns.bind_host,
            ports=ports,
            args=args,
            data_dir=ns.data_dir,
            prometheus=ns.prometheus,
        )
        print(snippet, end="")


if __name__ == "__main__":
    main()
