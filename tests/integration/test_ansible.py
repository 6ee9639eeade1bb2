"""The Ansible playbook, run for real against localhost into a temporary prefix."""

from __future__ import annotations

import json
import os
import shlex
import site
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from hubservices.common.hubconfig import read_env_file
from tests.harness import free_port
from tests.harness.hub import Hub

pytestmark = pytest.mark.hub

ROOT = Path(__file__).resolve().parents[2]
PLAYBOOK = ROOT / "deploy" / "ansible" / "playbook.yml"
ANSIBLE = Path(sys.executable).parent / "ansible-playbook"
SERVICES = ["cull", "stats"]


def test_playbook_syntax() -> None:
    result = subprocess.run(
        [ANSIBLE, "--syntax-check", "-i", "localhost,", PLAYBOOK], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def prepared_venv(prefix: Path) -> None:
    """A venv that sees this one's packages, so the playbook installs only ours (no download)."""
    venv = prefix / "opt" / "hubservices" / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    (next(venv.glob("lib/python*/site-packages")) / "outer.pth").write_text(
        site.getsitepackages()[0] + "\n"
    )


def test_playbook_installs_services_the_hub_runs(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    prepared_venv(prefix)
    ports = {name: free_port() for name in SERVICES}
    hub = Hub(tmp_path / "hub", services=[])  # its ports and API URL go to the playbook
    extra = {
        "ansible_python_interpreter": sys.executable,
        "hubservices_prefix": str(prefix),
        "hubservices_systemd": False,
        "hubservices_become": False,
        "hubservices_services": SERVICES,
        "hubservices_args": {"cull": ["--timeout=3600"]},
        "hubservices_ports": ports,
        "hubservices_hub_api_url": hub.api_url,
        "hubservices_pip_extra_args": "--no-deps",
    }
    result = subprocess.run(
        [ANSIBLE, "-i", "localhost,", "-c", "local", "-e", json.dumps(extra), PLAYBOOK],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    etc = prefix / "etc" / "hubservices"
    envs = {name: read_env_file(etc / f"{name}.env") for name in SERVICES}
    for name in SERVICES:
        assert stat.S_IMODE((etc / f"{name}.env").stat().st_mode) == 0o600
        assert len(envs[name]["JUPYTERHUB_API_TOKEN"]) == 64
    assert envs["cull"]["HUBSERVICES_ARGS"] == "--timeout=3600"
    unit = (prefix / "etc" / "systemd" / "system" / "hubservices@.service").read_text()
    assert f"EnvironmentFile={prefix}/etc/hubservices/%i.env" in unit
    snippet_path = prefix / "etc" / "jupyterhub" / "jupyterhub_config.d" / "hubservices.py"
    assert stat.S_IMODE(snippet_path.stat().st_mode) == 0o600

    # what systemd would do: the units run the services, the hub loads the snippet
    hub.extra_config = snippet_path.read_text()
    venv_python = prefix / "opt" / "hubservices" / "venv" / "bin" / "python"
    procs = []
    try:
        for name in SERVICES:
            command = [str(venv_python), "-m", f"hubservices.{name}"]
            command += [f"--data-dir={tmp_path / name}"]
            command += shlex.split(envs[name]["HUBSERVICES_ARGS"])
            env = {"PATH": os.environ["PATH"], **envs[name]}
            procs.append(subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL))
        hub.start()  # after the services: the hub waits for external services it cannot reach
        for name in SERVICES:
            deadline = time.monotonic() + 30
            while httpx.get(hub.service_url(name, "health")).status_code != 200:
                assert time.monotonic() < deadline, f"{name} never answered through the proxy"
                time.sleep(0.3)
        admin = hub.browser("admin")
        assert admin.get(hub.service_url("cull")).status_code == 200  # OAuth, external service
        admin.close()
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        hub.stop()
