"""A bubblewrap sandbox for one student kernel: what it sees, who it runs as, what it may use.

The sandbox is a fresh set of namespaces (user, mount, PID, network, IPC, UTS, cgroup): the
system and the Python environments read-only at their own paths, a tmpfs ``/tmp``, a fresh
``/proc`` and ``/dev``, and one scratch directory, the only writable path shared with the host
(the kernel's working copy and its IPC sockets). No network device but loopback, and no process
of the host is visible. Inside, the command drops to an unprivileged uid/gid with ``setpriv``
and runs under ``prlimit`` limits. Everything it starts lives in its PID namespace and dies
with it when its ``bwrap`` is killed (``--die-with-parent``), ``setsid`` children included.

When the service runs as root, bubblewrap's own user namespace maps only root, so
:meth:`Sandbox.spawn` writes the namespace's uid/gid maps itself (root and the sandbox uid,
both to themselves) while bwrap waits on ``--userns-block-fd``. A user namespace of its own per
sandbox also gives each sandbox its own process count: ``RLIMIT_NPROC`` is counted per
(namespace, uid), so a fork bomb in one sandbox does not starve a kernel in another one that
runs as the same uid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import IO, Any

from .courses import Course

#: How an autograde ran its student code, as each result's ``"sandbox"`` says: in bubblewrap,
#: without a sandbox (``allow_unsandboxed_autograde``), or not at all (refused).
SANDBOXED, UNSANDBOXED, REFUSED = "bubblewrap", "none", "unavailable"

#: The uid and gid student code runs as when the service runs as root ("nobody").
NOBODY = 65534

#: Top-level system directories that are symlinks into /usr on merged-/usr systems.
_SYSTEM_DIRS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")

#: Files of /etc a kernel may need (dynamic linker cache, time zone, certificates, fonts,
#: user names); the rest of /etc (the host's configuration) stays out.
_ETC_PATHS = (
    "/etc/ld.so.cache",
    "/etc/localtime",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/fonts",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
)

#: The fix named when bubblewrap cannot run here.
HOW_TO_FIX = (
    "install bubblewrap (Debian: apt-get install bubblewrap) and allow user namespaces "
    "(sysctl kernel.unprivileged_userns_clone=1; in a container, a seccomp profile that allows "
    "unshare and CAP_SYS_ADMIN), or let student code run without a sandbox with "
    "c.FormGrader.allow_unsandboxed_autograde = True"
)


class SandboxUnavailable(RuntimeError):
    """Bubblewrap cannot run here; the message names the reason and the fix."""


@dataclass(frozen=True)
class Limits:
    """Resource limits of everything in one sandbox (``prlimit``; 0 means no limit)."""

    memory: int = 2 * 2**30  # bytes of address space, each process
    cpu_seconds: int = 600  # each process
    processes: int = 256  # processes and threads of the sandbox's uid in its namespace
    file_size: int = 2**30  # bytes, each file written

    def prlimit_args(self) -> list[str]:
        limits = {
            "--as": self.memory,
            "--cpu": self.cpu_seconds,
            "--nproc": self.processes,
            "--fsize": self.file_size,
        }
        return [f"{flag}={value}" for flag, value in limits.items() if value > 0]


def default_identity() -> tuple[int, int]:
    """Nobody when the service runs as root; else the service's own uid (it can be no other)."""
    if os.geteuid() == 0:
        return NOBODY, NOBODY
    return os.geteuid(), os.getegid()


def python_paths() -> list[str]:
    """The Python installation and environment the kernels run from (their own paths)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    return sorted({os.path.realpath(p) for p in paths} | paths)


@dataclass(frozen=True)
class Sandbox:
    """How to run a command in a sandbox: identity, visible paths and limits."""

    uid: int
    gid: int
    limits: Limits = field(default_factory=Limits)
    #: Host paths the sandbox sees read-only at their own paths (Python, kernels, data).
    read_only: Sequence[str] = ()
    #: False only when the admin allowed autograde without a sandbox: then the command runs
    #: directly, with the limits and the scratch working directory, but sees the whole host.
    isolate: bool = True

    @property
    def _maps_own_namespace(self) -> bool:
        """Root writes the user namespace's maps (bwrap alone would map only root)."""
        return os.geteuid() == 0

    def command(
        self,
        argv: Sequence[str],
        scratch: str,
        workdir: str,
        *,
        info_fd: int | None = None,
        block_fd: int | None = None,
    ) -> list[str]:
        """The full command line that runs ``argv`` in ``workdir`` inside the sandbox."""
        inner = ["prlimit", *self.limits.prlimit_args(), "--", *argv]
        if not self.isolate:
            return inner
        bwrap = [
            "bwrap",
            "--unshare-user", "--unshare-pid", "--unshare-net", "--unshare-ipc",
            "--unshare-uts", "--unshare-cgroup-try",
            "--die-with-parent", "--new-session", "--hostname", "sandbox",
            "--ro-bind", "/usr", "/usr",
        ]  # fmt: skip
        if info_fd is not None and block_fd is not None:
            bwrap += ["--info-fd", str(info_fd), "--userns-block-fd", str(block_fd)]
        for name in _SYSTEM_DIRS:
            host = f"/{name}"
            if os.path.islink(host):
                bwrap += ["--symlink", os.readlink(host), host]
            elif os.path.isdir(host):
                bwrap += ["--ro-bind", host, host]
        bwrap += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
        bwrap += ["--perms", "0755", "--dir", "/etc"]
        for path in _ETC_PATHS:
            bwrap += ["--ro-bind-try", path, path]
        # bwrap makes missing parents of a mount point 0700 (unreadable to the sandbox's uid):
        # make them 0755 first, outermost first
        read_only = _outermost(self.read_only, covered=("/usr",))
        mounts = [*read_only, scratch]
        for parent in _parents_to_create(mounts, existing={"/", "/usr", "/tmp", "/etc"}):
            bwrap += ["--perms", "0755", "--dir", parent]
        for path in read_only:
            bwrap += ["--ro-bind", path, path]
        bwrap += ["--bind", scratch, scratch, "--chdir", workdir]
        # bwrap alone already runs it as the service's uid, without capabilities
        drop = drop_privileges(self.uid, self.gid) if self._maps_own_namespace else []
        return [*bwrap, "--", *drop, *inner]

    def spawn(
        self,
        argv: Sequence[str],
        scratch: str,
        workdir: str,
        *,
        env: Mapping[str, str],
        output: IO[bytes] | int,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in the sandbox, its stdout and stderr to ``output``, stdin empty.

        The process is the leader of a new process group (killing the group kills bwrap, and
        with it the sandbox's whole PID namespace).
        """

        def start(
            command: list[str], cwd: str, pass_fds: tuple[int, ...] = ()
        ) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                command, cwd=cwd, pass_fds=pass_fds, stdin=subprocess.DEVNULL, stdout=output,
                stderr=output, env=dict(env), start_new_session=True,
            )  # fmt: skip

        if not (self.isolate and self._maps_own_namespace):
            cwd = workdir if not self.isolate else "/"
            return start(self.command(argv, scratch, workdir), cwd)
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        try:
            command = self.command(argv, scratch, workdir, info_fd=info_w, block_fd=block_r)
            proc = start(command, "/", pass_fds=(info_w, block_r))
            os.close(info_w)
            os.close(block_r)
            info_w = block_r = -1
            try:
                self._write_id_maps(_read_json(info_r)["child-pid"])
            except (OSError, ValueError, KeyError):
                proc.kill()
            with contextlib.suppress(BrokenPipeError):  # bwrap failed: its output says why
                os.write(block_w, b"1")
        except BaseException:
            for fd in (info_w, block_r):
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            os.close(info_r)
            with contextlib.suppress(OSError):
                os.close(block_w)
        return proc

    def _write_id_maps(self, pid: int) -> None:
        """Map root and the sandbox's uid/gid to themselves in the new user namespace."""
        for kind, own in (("uid", self.uid), ("gid", self.gid)):
            lines = {0: "0 0 1\n", own: f"{own} {own} 1\n"}
            with open(f"/proc/{pid}/{kind}_map", "w") as map_file:
                map_file.write("".join(lines.values()))

    def check(self) -> None:
        """Raise :class:`SandboxUnavailable` unless a command runs in this sandbox here."""
        if self.isolate:
            _check_bwrap(self.uid, self.gid, tuple(self.read_only))


def drop_privileges(uid: int, gid: int) -> list[str]:
    """The command prefix that runs a command as ``uid``/``gid`` (as root), no way back."""
    return [
        "setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
        "--inh-caps=-all", "--no-new-privs", "--",
    ]  # fmt: skip


def check_default_sandbox() -> None:
    """Whether the sandbox with default settings runs here (SandboxUnavailable if not)."""
    Sandbox(*default_identity(), read_only=tuple(python_paths())).check()


@cache
def _check_bwrap(uid: int, gid: int, read_only: tuple[str, ...]) -> None:
    """Run ``true`` in the sandbox once per process (about 10 ms) and remember the verdict."""
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable(f"bubblewrap (bwrap) is not installed: {HOW_TO_FIX}")
    scratch = Path(os.environ.get("TMPDIR", "/tmp")) / f"hubservices-check-{os.getpid()}"
    scratch.mkdir(mode=0o700, exist_ok=True)
    try:
        os.chown(scratch, uid, gid)
        sandbox = Sandbox(uid, gid, Limits(), read_only)
        proc = sandbox.spawn(
            ["true"], str(scratch), str(scratch), env={"PATH": "/usr/bin:/bin"},
            output=subprocess.PIPE,
        )  # fmt: skip
        out, _ = proc.communicate(timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxUnavailable(f"bubblewrap cannot run here ({e}): {HOW_TO_FIX}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if proc.returncode != 0:
        reason = out.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SandboxUnavailable(f"bubblewrap cannot run here ({reason[0]}): {HOW_TO_FIX}")


def with_sandbox_settings(
    course: Course, defaults: Mapping[str, Any], *, allow_unsandboxed: bool
) -> Course:
    """``course`` with the service-wide sandbox settings under its own (which win); whether
    student code may run unsandboxed is the service's alone."""
    own = course.nbgrader.get("SandboxedExecute", {})
    settings = {**defaults, **own, "allow_unsandboxed": allow_unsandboxed}
    return replace(course, nbgrader={**course.nbgrader, "SandboxedExecute": settings})


def _outermost(paths: Iterable[str], covered: Sequence[str]) -> list[str]:
    """``paths`` without those inside another of them or inside ``covered`` (bound anyway)."""
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if not any(_is_within(path, outer) for outer in [*covered, *kept]):
            kept.append(path)
    return sorted(kept)


def _is_within(path: str, outer: str) -> bool:
    return path == outer or path.startswith(outer.rstrip("/") + "/")


def _parents_to_create(paths: Iterable[str], existing: set[str]) -> list[str]:
    """Every ancestor directory of ``paths`` not in ``existing``, outermost first."""
    parents: set[str] = set()
    for path in paths:
        for parent in Path(path).parents:
            if str(parent) not in existing:
                parents.add(str(parent))
    return sorted(parents, key=lambda p: (p.count("/"), p))


def _read_json(fd: int) -> dict[str, Any]:
    """bwrap's ``--info-fd`` document (it writes it, then waits on the block fd)."""
    data = b""
    while chunk := os.read(fd, 4096):
        data += chunk
        if data.rstrip().endswith(b"}"):
            break
    info: dict[str, Any] = json.loads(data)
    return info
