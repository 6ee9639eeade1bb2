"""Configuration the JupyterHub way, the cookie secret, and clean shutdown."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from traitlets import Bool, Integer

from hubservices.common.app import HubServiceApp
from hubservices.formgrader.app import FormGrader
from tests.harness import free_port


class Demo(HubServiceApp):
    """A service with one option of each kind, like the culler's."""

    service_name = "demo"
    timeout = Integer(600, help="Idle seconds").tag(config=True)
    cull_users = Bool(False, help="Also remove users").tag(config=True)


def configured(*argv: str) -> Demo:
    app = Demo()
    app.initialize(list(argv))
    return app


@pytest.fixture(autouse=True)
def hub_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "secret-token")
    monkeypatch.delenv("JUPYTERHUB_SERVICE_PREFIX", raising=False)
    monkeypatch.delenv("JUPYTERHUB_SERVICE_URL", raising=False)


@pytest.mark.parametrize(
    "argv",
    [["--Demo.timeout=3600"], ["--timeout=3600"], ["--timeout", "3600"]],
)
def test_option_by_full_and_short_name(argv: list[str]) -> None:
    assert configured(*argv).timeout == 3600


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], False),
        (["--cull-users"], True),
        (["--cull_users"], True),
        (["--cull-users=true"], True),
        (["--cull-users=false"], False),
        (["--cull-users=False"], False),
        (["--Demo.cull_users=True"], True),
    ],
)
def test_boolean_flag_bare_and_valued(argv: list[str], expected: bool) -> None:
    assert configured(*argv).cull_users is expected


def test_config_file_and_command_line_overrides_it(tmp_path: Path) -> None:
    config = tmp_path / "demo_config.py"
    config.write_text("c.Demo.timeout = 1200\nc.Demo.cull_users = True\n")
    assert configured(f"--config={config}").timeout == 1200
    app = configured(f"--config={config}", "--timeout=60")
    assert (app.timeout, app.cull_users) == (60, True)


def test_defaults_follow_the_hub_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUPYTERHUB_SERVICE_PREFIX", "/services/demo")
    monkeypatch.setenv("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:12345")
    monkeypatch.setenv("JUPYTERHUB_API_URL", "http://hub:8081/hub/api")
    app = configured()
    assert app.service_prefix == "/services/demo/"
    assert app.bind_url == "http://127.0.0.1:12345"
    assert app.hub_api_url == "http://hub:8081/hub/api"
    assert app.api_token == "secret-token"


def test_token_is_not_a_command_line_option() -> None:
    assert "api-token" not in Demo().aliases


@pytest.mark.parametrize("argv", [["--timeout=abc"], ["--bind-url=nowhere"]])
def test_invalid_value_exits_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        configured(*argv)
    assert exc.value.code == 2


def run_service(
    module: str, *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", module, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "JUPYTERHUB_API_TOKEN": "t", **(env or {})},
    )


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--grader-group-pattern=graders"], "{course}"),
        (["--student-group-pattern=students"], "student_group_pattern"),
        (["--mathjax-dir=/nonexistent"], "no MathJax.js in /nonexistent"),
        (["--FormGrader.bind_url=ftp://x"], "bind_url"),
        (["--config=/nonexistent/config.py"], "/nonexistent/config.py"),
        # a typo must not leave the service running on defaults
        (["--max-workres=4"], "--max-workres"),
        (["--max-workres"], "--max-workres"),
        (["--max-workers"], "--FormGrader.max_workers"),
        (["course101"], "course101"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(argv: list[str], says: str) -> None:
    result = run_service("hubservices.formgrader", *argv)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "module, argv, says",
    [
        ("hubservices.cull", ["--HubServiceApp.api_token=s3cret"], "$JUPYTERHUB_API_TOKEN"),
        ("hubservices.stats", ["--Stats.api_token", "s3cret"], "$JUPYTERHUB_API_TOKEN"),
        (
            "hubservices.stats",
            ["--db-url=postgresql://stats:s3cret@db/hub"],
            "db_url holds a secret",
        ),
        ("hubservices.cull", ["--hub-api-url=http://u:s3cret@hub/api"], "--config"),
        (
            "hubservices.formgrader",
            [
                "--FormGrader.courses="
                '{"c1": {"root": "/tmp/c1", "db_url": "postgresql://u:s3cret@db/c1"}}'
            ],
            "--FormGrader.courses holds a secret",
        ),
    ],
)
def test_secret_on_the_command_line_is_refused(module: str, argv: list[str], says: str) -> None:
    """argv is visible to every local user in ps: one line naming the safe ways, exit 2."""
    result = run_service(module, *argv)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0] and "config file (--config)" in lines[0]
    assert "s3cret" not in result.stderr


def test_database_url_without_a_password_is_fine_on_the_command_line(tmp_path: Path) -> None:
    app = configured(f"--db-url=sqlite:///{tmp_path}/x.sqlite")
    assert app.db_url.endswith("x.sqlite")


def test_missing_token_is_one_line_and_exit_2() -> None:
    result = run_service("hubservices.cull", env={"JUPYTERHUB_API_TOKEN": ""})
    assert result.returncode == 2
    assert "JUPYTERHUB_API_TOKEN" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_peers_from_hubservices_config_are_one_line_and_exit_2() -> None:
    result = run_service("hubservices.stats", env={"HUBSERVICES_PEERS": '{"cull": {}}'})
    assert result.returncode == 2
    assert "HUBSERVICES_PEERS" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_cookie_secret_is_private_and_survives_restart(tmp_path: Path) -> None:
    app = configured(f"--data-dir={tmp_path}")
    secret = app.load_cookie_secret()
    path = Path(app.cookie_secret_file)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert configured(f"--data-dir={tmp_path}").load_cookie_secret() == secret
    path.chmod(0o644)
    assert configured(f"--data-dir={tmp_path}").load_cookie_secret() == secret
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


async def test_new_data_directory_and_database_are_private(tmp_path: Path) -> None:
    """A service's data directory and SQLite file, created under a 022 umask: ours only."""
    from hubservices.stats.app import Stats

    data = tmp_path / "srv" / "stats"
    app = Stats()
    app.initialize([f"--data-dir={data}"])
    old_umask = os.umask(0o022)
    try:
        await app.open()
        await app.close()
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE(data.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "hubservices.sqlite").stat().st_mode) == 0o600


def test_formgrader_courses_come_from_grader_groups() -> None:
    app = FormGrader()
    model = {"name": "i", "groups": ["formgrade-course101", "formgrade-bio 2", "students"]}
    assert app.graded_courses(model) == ["bio 2", "course101"]
    assert app.user_allowed(model)
    # anyone may come in (to their own grades); a course's pages ask for its group
    student = {"name": "s", "groups": ["students"], "admin": False}
    assert app.user_allowed(student) and not app.may_grade_course(student, "course101")
    app.grader_group_pattern = "{course}-graders"
    assert app.graded_courses({"groups": ["phys-graders", "formgrade-x"]}) == ["phys"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_service_within_5_seconds(tmp_path: Path, sig: signal.Signals) -> None:
    port, hub_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hubservices.stats", f"--data-dir={tmp_path}"],
        env={
            **os.environ,
            "JUPYTERHUB_API_TOKEN": "t",
            "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/services/stats/health", timeout=10)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "service did not start"
                assert proc.poll() is None, proc.communicate()[0].decode()
                time.sleep(0.1)
        # anonymous callers learn that the hub does not answer, not where it lives
        assert r.json()["hub"] == {"reachable": False}
        assert str(hub_port) not in r.text
        start = time.monotonic()
        proc.send_signal(sig)
        assert proc.wait(timeout=5) == 0
        assert time.monotonic() - start < 5
    finally:
        proc.kill()
        proc.wait()
