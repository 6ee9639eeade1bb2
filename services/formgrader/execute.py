"""nbgrader's Execute with the student's kernel in a sandbox; everything else stays trusted.

nbgrader's Autograde converter runs its preprocessors on the trusted side: ClearOutput,
DeduplicateIds, OverwriteKernelspec, OverwriteCells and CheckCellMetadata before execution,
SaveAutoGrades, AssignLatePenalties and the rest after it. Only :class:`SandboxedExecute`, in
place of nbgrader's ``Execute``, differs: the kernel it starts runs in a :class:`Sandbox`
(bubblewrap) in a scratch copy of that one submission's directory, talks to this process over
IPC sockets in the scratch directory (bound at the same path inside, so the connection file's
paths hold on both sides), and its stdout/stderr go to a size-limited file of its own, never
to this process's descriptors. What comes back is kernel messages, each at most
``max_message_size`` bytes (ZMQ drops larger ones unread), counted against ``output_limit``
as they arrive; past it, or past ``wall_timeout``, the sandbox is killed and the notebook fails
with that reason. The kernel's files stay in the scratch directory, which is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nbformat
import zmq
import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode
from nbgrader.preprocessors import Execute
from traitlets import Any as AnyTrait
from traitlets import Bool, Instance, Integer, List, Unicode, default
from traitlets.config import Config

from .sandbox import (
    SANDBOXED,
    UNSANDBOXED,
    Limits,
    Sandbox,
    SandboxUnavailable,
    default_identity,
    python_paths,
)

#: The kernel's sockets' ports, as the connection file names them.
PortName = Literal["shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"]
PORTS: tuple[PortName, ...] = ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port")
#: Bytes of the kernel's own stdout/stderr kept (for the log when it dies).
KERNEL_OUTPUT_TAIL = 2000


@dataclass
class Report:
    """What the sandboxed executions of one job did: isolation used and limits hit."""

    isolation: str = SANDBOXED  # or UNSANDBOXED (allow_unsandboxed_autograde)
    problems: list[str] = field(default_factory=list)
    #: Dask workers the notebooks ran on (the Dask executor: .dask_executor)
    executed_on: list[str] = field(default_factory=list)


#: The report of the job the current thread runs: a Dask worker runs several jobs at once,
#: one a thread.
_reports = threading.local()


@contextlib.contextmanager
def reporting() -> Iterator[Report]:
    """Collect what the executions inside the ``with`` block report (one job a thread)."""
    _reports.current = report = Report()
    try:
        yield report
    finally:
        _reports.current = None


def current_report() -> Report | None:
    """The report of the ``reporting()`` block this thread is in, if any."""
    return getattr(_reports, "current", None)


def _record(problem: str) -> None:
    report = current_report()
    if report is not None:
        report.problems.append(problem)


class OutputLimitExceeded(RuntimeError):
    """The kernel sent more output than the course allows."""


def _content_size(value: Any) -> int:
    """Characters of text in a message's content (what it would add to the notebook)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(key)) + _content_size(item) for key, item in value.items())
    if isinstance(value, list | tuple):
        return sum(_content_size(item) for item in value)
    return 8


class SandboxProvisioner(LocalProvisioner):
    """Starts the kernel command inside the manager's sandbox instead of as a child of ours."""

    def _manager(self) -> SandboxedKernelManager:
        """The kernel manager this provisioner starts a kernel for: its sandbox and paths."""
        km = self.parent
        if not isinstance(km, SandboxedKernelManager):
            raise TypeError(f"SandboxProvisioner needs a SandboxedKernelManager parent, not {km!r}")
        return km

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        kwargs = await super().pre_launch(**kwargs)  # writes the connection file (0600)
        km = self._manager()
        os.chown(km.connection_file, km.sandbox.uid, km.sandbox.gid)
        # a SIGINT to bwrap's process group would kill the sandbox, not interrupt the kernel:
        # ask the kernel to interrupt itself (ipykernel signals its own process group)
        self.kernel_spec.interrupt_mode = "message"
        return kwargs

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> Any:
        km = self._manager()
        env = {
            **kwargs.get("env", {}),
            "HOME": "/tmp",
            "TMPDIR": "/tmp",
            # glibc reserves 64 MB of address space per thread arena: keep the memory limit
            # about memory the student's code uses, not ipykernel's threads
            "MALLOC_ARENA_MAX": "2",
        }
        self.process = process = km.sandbox.spawn(
            cmd, km.scratch, km.workdir, env=env, output=km.kernel_output
        )
        self.pid = self.pgid = process.pid
        self.cwd = km.workdir
        await self._lock_sockets(km, process)
        return self.connection_info

    async def _lock_sockets(
        self, km: SandboxedKernelManager, process: subprocess.Popen[bytes]
    ) -> None:
        """Once the kernel has bound its sockets, take their directory back from it.

        We connect to the socket paths from outside, where a path the kernel replaced with a
        symlink would lead to any socket of the host; after this, the kernel can no longer
        change the scratch directory's entries (its working directory stays its own), and
        each of them is checked to be a socket. If the kernel exits first, nbclient says so.
        """
        paths = [f"{km.ip}-{self.connection_info[port]}" for port in PORTS]
        while not all(os.path.lexists(path) for path in paths):
            if process.poll() is not None:
                return
            await asyncio.sleep(0.005)
        # 0755 before and after the chown: an honest kernel, still starting (it reads its
        # connection file after binding), never meets a directory it cannot enter; whatever
        # mode a hostile one sets in between is ours to reset once the directory is ours
        os.chmod(km.scratch, 0o755)
        os.chown(km.scratch, os.geteuid(), os.getegid())
        os.chmod(km.scratch, 0o755)
        for path in paths:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                self.kill_sandbox()
                raise RuntimeError(f"the kernel put something else than a socket at {path}")

    def kill_sandbox(self) -> None:
        """SIGKILL bwrap's process group: the sandbox's PID namespace dies with it."""
        if self.pgid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pgid, signal.SIGKILL)

    async def cleanup(self, restart: bool = False) -> None:
        self.kill_sandbox()  # a kernel that ignored the shutdown request, and its children
        await super().cleanup(restart)


class SandboxedKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs in ``sandbox``, over IPC sockets in ``scratch``."""

    sandbox = Instance(Sandbox)
    scratch = Unicode()
    workdir = Unicode()
    kernel_output = AnyTrait()
    max_message_size = Integer(2**20)

    @default("transport")
    def _ipc(self) -> str:
        return "ipc"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.ip = os.path.join(self.scratch, "kernel-ipc")
        self.connection_file = os.path.join(self.scratch, "kernel.json")
        self.context = self._capped_context(zmq.asyncio.Context())
        self._client_context = self._capped_context(zmq.asyncio.Context())

    def _capped_context(self, context: zmq.Context[Any]) -> zmq.Context[Any]:
        """New sockets drop messages over ``max_message_size`` and queue only a few."""
        context.setsockopt(zmq.MAXMSGSIZE, self.max_message_size)
        context.setsockopt(zmq.RCVHWM, 16)
        return context

    def client(self, **kwargs: Any) -> Any:
        return super().client(context=self._client_context, **kwargs)

    async def _async_pre_start_kernel(self, **kwargs: Any) -> Any:
        if self.provisioner is None:
            self.kernel_id = self.kernel_id or str(uuid.uuid4())
            self.provisioner = SandboxProvisioner(
                kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self
            )
        return await super()._async_pre_start_kernel(**kwargs)

    def close_contexts(self) -> None:
        self._client_context.destroy(linger=0)
        self.context.destroy(linger=0)


class SandboxedExecute(Execute):  # type: ignore[misc]  # nbgrader ships no type information
    """nbgrader's Execute, the kernel in a sandbox with limits a course can set."""

    #: nbclient's trait (nbgrader's Execute is untyped): the kernel to start, "" for the
    #: notebook's own
    kernel_name: str

    memory_limit = Integer(
        2 * 2**30, help="Bytes of address space each process of student code may use."
    ).tag(config=True)
    cpu_limit = Integer(600, help="CPU seconds each process of student code may use.").tag(
        config=True
    )
    process_limit = Integer(
        256, help="Processes and threads student code may run at once (ipykernel uses ~10)."
    ).tag(config=True)
    file_size_limit = Integer(2**30, help="Bytes of each file student code writes.").tag(
        config=True
    )
    wall_timeout = Integer(
        600, help="Seconds a whole notebook may run (nbgrader's timeout is per cell)."
    ).tag(config=True)
    output_limit = Integer(
        16 * 2**20, help="Characters of output a notebook may produce; past them it fails."
    ).tag(config=True)
    sandbox_uid = Integer(help="uid of student code (65534 when the service runs as root).").tag(
        config=True
    )
    sandbox_gid = Integer(help="gid of student code (65534 when the service runs as root).").tag(
        config=True
    )
    read_only_paths = List(
        Unicode(),
        help="""Host paths the sandbox sees read-only, besides the system and this Python
        (e.g. another kernel's installation, a shared data set).""",
    ).tag(config=True)
    allow_unsandboxed = Bool(
        False,
        help="""Run student code without bubblewrap where it cannot run (limits still apply,
        but the code sees the host): FormGrader.allow_unsandboxed_autograde sets it.""",
    ).tag(config=True)
    scratch_root = Unicode(
        help="Where the scratch directories are made (default: the system's temp directory)."
    ).tag(config=True)

    @default("shutdown_kernel")
    def _kill_at_the_end(self) -> str:
        """The outputs are in; the whole sandbox goes anyway: no graceful shutdown round trip
        (it cost about 0.4 s a notebook)."""
        return "immediate"

    @default("sandbox_uid")
    def _default_uid(self) -> int:
        return default_identity()[0]

    @default("sandbox_gid")
    def _default_gid(self) -> int:
        return default_identity()[1]

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("kernel_manager_class", SandboxedKernelManager)
        super().__init__(**kwargs)
        self._run: dict[str, Any] = {}

    def sandbox(self) -> Sandbox:
        """The sandbox of this configuration; SandboxUnavailable if it cannot run here."""
        sandbox = Sandbox(
            uid=self.sandbox_uid,
            gid=self.sandbox_gid,
            limits=Limits(
                memory=self.memory_limit,
                cpu_seconds=self.cpu_limit,
                processes=self.process_limit,
                file_size=self.file_size_limit,
            ),
            read_only=tuple(python_paths() + list(self.read_only_paths)),
        )
        try:
            sandbox.check()
        except SandboxUnavailable:
            if not self.allow_unsandboxed:
                raise
            return Sandbox(**{**sandbox.__dict__, "isolate": False})
        return sandbox

    def preprocess(
        self, nb: NotebookNode, resources: Any = None, km: Any = None
    ) -> tuple[NotebookNode, Any]:
        """Execute ``nb`` in a sandbox with the files of its directory (DaskExecute sends them
        to a Dask worker's sandbox instead)."""
        source = Path(resources.get("metadata", {}).get("path") or ".")
        return self.execute_here(nb, resources, source)

    def execute_here(
        self, nb: NotebookNode, resources: Any, source: Path
    ) -> tuple[NotebookNode, Any]:
        """The "local" executor: the kernel in a sandbox on this machine, in a scratch copy of
        ``source`` (deleted afterwards), driven by this process's nbclient."""
        sandbox = self.sandbox()
        report = current_report()
        if report is not None and not sandbox.isolate:
            report.isolation = UNSANDBOXED
        scratch = tempfile.mkdtemp(prefix="hubservices-sandbox-", dir=self.scratch_root or None)
        workdir = os.path.join(scratch, "work")
        shutil.copytree(source, workdir, symlinks=True)
        _chown_tree(scratch, sandbox.uid, sandbox.gid)
        with tempfile.TemporaryFile() as kernel_output:
            self._run = {
                "sandbox": sandbox, "scratch": scratch, "workdir": workdir,
                "kernel_output": kernel_output, "output": 0, "killed": None,
            }  # fmt: skip
            watchdog = threading.Timer(self.wall_timeout, self._stop, [self._wall_reason()])
            watchdog.start()
            try:
                nb, resources = super().preprocess(nb, resources)
                _check_notebook(nb)
                return nb, resources
            except Exception as e:
                self._explain_failure(e, kernel_output)
                raise
            finally:
                watchdog.cancel()
                if self._run.get("km") is not None:
                    self._run["km"].close_contexts()
                self._run = {}
                shutil.rmtree(scratch, ignore_errors=True)

    def _wall_reason(self) -> str:
        return f"the notebook ran longer than the wall-clock limit of {self.wall_timeout}s"

    def create_kernel_manager(self) -> SandboxedKernelManager:
        run = self._run
        if not self.kernel_name:
            self.kernel_name = self.nb.metadata.get("kernelspec", {}).get("name") or ""
        km: SandboxedKernelManager = self.kernel_manager_class(
            config=self.config,
            sandbox=run["sandbox"],
            scratch=run["scratch"],
            workdir=run["workdir"],
            kernel_output=run["kernel_output"],
            max_message_size=self.output_limit + 2**16,
            **({"kernel_name": self.kernel_name} if self.kernel_name else {}),
        )
        self.km = run["km"] = km
        return km

    def process_message(self, msg: dict[str, Any], cell: NotebookNode, cell_index: int) -> Any:
        """Count the output as it arrives; past ``output_limit``, stop the kernel."""
        if msg["msg_type"] != "status":
            self._run["output"] += _content_size(msg.get("content"))
            if self._run["output"] > self.output_limit:
                reason = f"the notebook printed more than the output limit of {self.output_limit}"
                self._stop(reason)
                raise OutputLimitExceeded(reason)
        return super().process_message(msg, cell, cell_index)

    def _stop(self, reason: str) -> None:
        """Kill the sandbox (a thread may call it): nbclient then sees a dead kernel."""
        if self._run.get("killed") is None and self._run:
            self._run["killed"] = reason
            provisioner = getattr(self.km, "provisioner", None)
            if isinstance(provisioner, SandboxProvisioner):
                provisioner.kill_sandbox()

    def _explain_failure(self, error: Exception, kernel_output: Any) -> None:
        """Say why in the job's error: a limit, or the kernel's own last words."""
        if self._run.get("killed"):
            problem = self._run["killed"]
        elif isinstance(error, nbformat.ValidationError):
            where = "/".join(str(part) for part in error.absolute_path)
            problem = f"the kernel's output is not valid in a notebook ({where}: {error.message})"
            problem = problem[:KERNEL_OUTPUT_TAIL]
        elif isinstance(error, DeadKernelError) or "Kernel died" in str(error):
            kernel_output.seek(0, os.SEEK_END)
            kernel_output.seek(max(0, kernel_output.tell() - KERNEL_OUTPUT_TAIL))
            tail = kernel_output.read().decode(errors="replace").strip()
            problem = (
                "the kernel died"
                + (f"; its last output:\n{tail}" if tail else "")
                + (
                    f" (limits: {self.memory_limit} bytes of memory, {self.cpu_limit} CPU seconds, "
                    f"{self.process_limit} processes, {self.file_size_limit} bytes a file)"
                )
            )
        else:
            return  # not the sandbox's doing: nbgrader's log has the traceback
        self.log.error("Sandbox: %s", problem)
        _record(problem)


def _check_notebook(nb: NotebookNode) -> None:
    """The executed notebook is valid nbformat as a whole (nbclient checks each output)."""
    nbformat.validate(nb)


def _chown_tree(root: str, uid: int, gid: int) -> None:
    """Give the scratch directory to the sandbox's uid (a no-op when that is our own)."""
    if (uid, gid) == (os.geteuid(), os.getegid()):
        return
    for directory, dirs, files in os.walk(root):
        os.chown(directory, uid, gid)
        for name in dirs + files:
            os.chown(os.path.join(directory, name), uid, gid, follow_symlinks=False)


def sandboxed(config: Config) -> Config:
    """``config`` with SandboxedExecute in place of nbgrader's Execute in autograde."""
    from nbgrader.converters import Autograde

    configured = config.Autograde.get("autograde_preprocessors")
    preprocessors = configured or Autograde.class_traits()["autograde_preprocessors"].default()
    config.Autograde.autograde_preprocessors = [
        SandboxedExecute if pp in (Execute, "nbgrader.preprocessors.Execute") else pp
        for pp in preprocessors
    ]
    return config
