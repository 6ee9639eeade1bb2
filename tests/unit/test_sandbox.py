"""The sandbox's command line, settings and nbgrader configuration, without running anything."""

from __future__ import annotations

from pathlib import Path

import pytest
from nbgrader.preprocessors import Execute, SaveAutoGrades
from traitlets.config import Config

from hubservices.formgrader.courses import Course
from hubservices.formgrader.execute import SandboxedExecute, _content_size, sandboxed
from hubservices.formgrader.sandbox import Limits, Sandbox, with_sandbox_settings

SCRATCH = "/tmp/hubservices-sandbox-x"


def command(sandbox: Sandbox) -> list[str]:
    return sandbox.command(["python", "-m", "ipykernel_launcher"], SCRATCH, f"{SCRATCH}/work")


def test_the_sandbox_shares_nothing_but_read_only_paths_and_the_scratch_directory() -> None:
    argv = command(Sandbox(65534, 65534, read_only=("/opt/py", "/srv/venv")))
    bwrap, inner = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    for namespace in ("user", "pid", "net", "ipc", "uts"):
        assert f"--unshare-{namespace}" in bwrap
    assert "--die-with-parent" in bwrap and "--new-session" in bwrap
    binds = [tuple(bwrap[i + 1 : i + 3]) for i, a in enumerate(bwrap) if a.startswith("--bind")]
    assert binds == [(SCRATCH, SCRATCH)]  # the only writable path shared with the host
    ro = {bwrap[i + 1] for i, a in enumerate(bwrap) if a.startswith("--ro-bind")}
    assert {"/usr", "/opt/py", "/srv/venv"} <= ro
    assert not {"/", "/etc", "/home", "/root", "/srv", "/tmp", "/proc"} & ro
    assert bwrap[bwrap.index("--chdir") + 1] == f"{SCRATCH}/work"
    assert inner[-3:] == ["python", "-m", "ipykernel_launcher"]


def test_parents_of_mount_points_are_made_readable_outermost_first() -> None:
    argv = command(Sandbox(65534, 65534, read_only=("/root/.pyenv/versions/3.11",)))
    made = [argv[i + 1] for i, a in enumerate(argv) if a == "--dir"]
    assert made.index("/root") < made.index("/root/.pyenv") < made.index("/root/.pyenv/versions")
    for path in made:
        assert argv[argv.index(path) - 2 : argv.index(path)] == ["0755", "--dir"]


def test_paths_inside_other_mounts_are_not_bound_twice() -> None:
    argv = command(Sandbox(1, 1, read_only=("/srv/venv", "/srv/venv/bin", "/usr/lib/python3")))
    ro = [argv[i + 1] for i, a in enumerate(argv) if a == "--ro-bind"]
    assert "/srv/venv" in ro and "/srv/venv/bin" not in ro and "/usr/lib/python3" not in ro


def test_limits_become_prlimit_options_and_zero_means_none() -> None:
    limits = Limits(memory=2**28, cpu_seconds=5, processes=0, file_size=2**20)
    assert limits.prlimit_args() == ["--as=268435456", "--cpu=5", "--fsize=1048576"]
    argv = command(Sandbox(1, 1, limits=limits))
    assert argv[argv.index("prlimit") + 1 : argv.index("prlimit") + 4] == limits.prlimit_args()


def test_unsandboxed_runs_the_command_with_limits_only() -> None:
    argv = command(Sandbox(1, 1, isolate=False))
    assert argv[0] == "prlimit" and "bwrap" not in argv


def test_course_settings_win_over_the_services_but_not_allow_unsandboxed() -> None:
    course = Course(
        "c1",
        Path("/srv/c1"),
        "sqlite://",
        Path("/srv/x"),
        nbgrader={
            "SandboxedExecute": {"memory_limit": 5, "allow_unsandboxed": True},
            "ExecutePreprocessor": {"timeout": 9},
        },
    )
    merged = with_sandbox_settings(
        course, {"memory_limit": 1, "cpu_limit": 2}, allow_unsandboxed=False
    )
    assert merged.nbgrader["SandboxedExecute"] == {
        "memory_limit": 5,
        "cpu_limit": 2,
        "allow_unsandboxed": False,
    }
    assert merged.nbgrader["ExecutePreprocessor"] == {"timeout": 9}


def test_autograde_keeps_nbgraders_preprocessors_with_execute_sandboxed() -> None:
    from nbgrader.converters import Autograde

    default = Autograde.class_traits()["autograde_preprocessors"].default()
    configured = sandboxed(Config()).Autograde.autograde_preprocessors
    assert configured == [SandboxedExecute if pp is Execute else pp for pp in default]
    assert Execute not in configured and SaveAutoGrades in configured

    own = Config({"Autograde": {"autograde_preprocessors": [Execute, SaveAutoGrades]}})
    assert sandboxed(own).Autograde.autograde_preprocessors == [SandboxedExecute, SaveAutoGrades]


@pytest.mark.parametrize(
    ("content", "size"),
    [
        ({"name": "stdout", "text": "x" * 1000}, 4 + 6 + 4 + 1000),
        ({"data": {"text/plain": "ab"}, "metadata": {}}, 4 + 10 + 2 + 8),
        ({"traceback": ["a", "bc"]}, 9 + 3),
    ],
)
def test_output_is_counted_by_its_text(content: dict, size: int) -> None:
    assert _content_size(content) == size
