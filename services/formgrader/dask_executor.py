"""Autograde's executions on a Dask cluster (``FormGrader.autograde_executor = "dask"``).

nbgrader's Autograde still runs here, on the trusted side (the service's worker process, which
holds the gradebook): :class:`DaskExecute` takes the place of nbgrader's ``Execute`` and sends
the notebook, with the files of that one submission's directory (regular files only, size
capped), to a Dask worker through ``dask.distributed``. The worker runs :func:`execute_on_worker`:
the very :class:`.execute.SandboxedExecute` of the local executor, its kernel in bubblewrap on
the worker's own machine, in a scratch copy of those files. Only the executed notebook comes
back, as text. Workers need no shared filesystem, no gradebook and no secret.

What comes back is not trusted: it is size capped, parsed and validated, and must have the very
cells that were sent (ids, types, sources, metadata); only code cells' outputs and execution
counts are taken from it, into the notebook that was sent. So nothing a submission does on a
worker can add or rewrite a grade cell or its points; SaveAutoGrades, AssignLatePenalties and
CheckCellMetadata then run here, on nbgrader's own terms.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import nbformat
from nbclient.util import run_sync
from nbformat import NotebookNode
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import Bool, Dict, Float, Integer, Unicode
from traitlets.config import Config

from . import execute
from .courses import Course, worker_env
from .sandbox import REFUSED, Sandbox, SandboxUnavailable, drop_privileges

if TYPE_CHECKING:  # distributed is imported only when the Dask executor runs
    from distributed import Client

#: nbgrader config sections the worker's SandboxedExecute reads (limits, timeouts, kernel).
EXECUTION_SECTIONS = ("SandboxedExecute", "Execute", "ExecutePreprocessor", "NotebookClient")
#: Where student code in a pod (no bubblewrap) can leave files for the next submission.
WORLD_WRITABLE = ("/tmp", "/var/tmp", "/dev/shm")
#: Environment variables of autograde the kernel sees, as it would with the local executor.
KERNEL_ENV = ("NBGRADER_EXECUTION",)


class UntrustedResult(ValueError):
    """What a worker sent back is not an execution of the notebook that was sent."""


class RemoteExecutionFailed(RuntimeError):
    """The notebook's execution on a Dask worker failed; the message says why."""


class DaskExecute(NbGraderPreprocessor):  # type: ignore[misc]  # nbgrader ships no type information
    """nbgrader's Execute step, run in the sandbox of a Dask worker (see the module's doc)."""

    scheduler_address = Unicode(
        help="The Dask scheduler, e.g. tls://scheduler:8786 (or tcp://, or a dask-gateway's)."
    ).tag(config=True)
    security = Dict(
        help="""Arguments of distributed.security.Security, e.g. {"tls_ca_file": ...,
        "tls_client_cert": ..., "tls_client_key": ..., "require_encryption": True}; empty:
        Dask's own configuration (/etc/dask/*.yaml, ~/.config/dask/*.yaml) decides.""",
    ).tag(config=True)
    allow_unsandboxed = Bool(
        False,
        help="""Let a worker where bubblewrap cannot run execute student code without it (a
        Kubernetes pod of its own is then the sandbox); each such job says "sandbox": "none".""",
    ).tag(config=True)
    max_files_size = Integer(
        64 * 2**20, help="Bytes of a submission's files that may travel to a worker."
    ).tag(config=True)
    max_result_size = Integer(
        128 * 2**20, help="Bytes of the executed notebook a worker may send back."
    ).tag(config=True)
    connect_timeout = Float(30, help="Seconds to reach the scheduler.").tag(config=True)

    def preprocess(
        self, nb: NotebookNode, resources: dict[str, Any]
    ) -> tuple[NotebookNode, dict[str, Any]]:
        """Execute ``nb`` on a worker; the outputs that come back, into ``nb``'s own cells."""
        source = Path(resources.get("metadata", {}).get("path") or ".")
        files = pack_directory(source, self.max_files_size)
        try:
            client = client_for(self.scheduler_address, self.security, self.connect_timeout)
        except OSError as e:  # distributed's connection timeouts are OSErrors too
            problem = f"cannot reach the Dask scheduler at {self.scheduler_address}: {e}"
            execute._record(problem)
            raise RemoteExecutionFailed(problem) from None
        future = client.submit(
            execute_on_worker,
            nbformat.writes(nb),
            files,
            self.worker_settings(),
            {name: os.environ[name] for name in KERNEL_ENV if name in os.environ},
            pure=False,  # two identical submissions are two executions
        )
        answer = future.result()
        report = execute.current_report()
        if report is not None:
            report.executed_on.append(str(answer.get("worker")))
            report.isolation = answer["isolation"]
            # a limit's reason, else the error itself: the job's error starts with why
            report.problems.extend(answer["problems"] or [answer["error"]] * bool(answer["error"]))
        if answer["error"] is not None:
            raise RemoteExecutionFailed(answer["error"])
        return merge_outputs(nb, answer["notebook"], self.max_result_size), resources

    def worker_settings(self) -> dict[str, dict[str, Any]]:
        """The course's execution settings, as plain data, for the worker's SandboxedExecute."""
        sections = {
            name: copy.deepcopy(dict(self.config[name]))
            for name in EXECUTION_SECTIONS
            if name in self.config
        }
        sandbox = sections.setdefault("SandboxedExecute", {})
        sandbox["allow_unsandboxed"] = self.allow_unsandboxed  # Dask's setting, not the local
        sandbox.pop("executor", None)  # on the worker, the sandbox runs where it is
        return sections


_clients: dict[tuple[str, str], Client] = {}
_clients_lock = threading.Lock()


def client_for(address: str, security: Mapping[str, Any], timeout: float) -> Client:
    """One Client per scheduler for this process: a batch's jobs reuse its connection."""
    from distributed import Client
    from distributed.security import Security

    if not address:
        raise RemoteExecutionFailed("the Dask executor needs DaskExecute.scheduler_address")
    if address.startswith("gateway://"):
        import dask_gateway  # noqa: F401 (registers the gateway:// scheme with distributed)
    key = (address, repr(sorted(security.items())))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = Client(
                address,
                security=Security(**security) if security else None,
                timeout=timeout,
                set_as_default=False,
            )
        return _clients[key]


def pack_directory(root: Path, limit: int) -> dict[str, bytes]:
    """The regular files under ``root`` by relative path, at most ``limit`` bytes in all.

    Symlinks stay behind: followed here, they would carry a host file to the worker.
    """
    files: dict[str, bytes] = {}
    total = 0
    for directory, _, names in os.walk(root):
        for name in sorted(names):
            path = Path(directory, name)
            if path.is_symlink() or not path.is_file():
                continue
            data = path.read_bytes()
            total += len(data)
            if total > limit:
                raise RemoteExecutionFailed(
                    f"the submission's files are larger than {limit} bytes, the most that may "
                    "travel to a Dask worker (DaskExecute.max_files_size)"
                )
            files[path.relative_to(root).as_posix()] = data
    return files


def unpack_files(files: Mapping[str, bytes], root: Path) -> None:
    """Write ``files`` under ``root``; a path that would leave ``root`` is refused."""
    for name, data in files.items():
        relative = PurePosixPath(name)
        if relative.is_absolute() or not relative.parts or ".." in relative.parts:
            raise ValueError(f"refused file name {name!r}")
        path = root.joinpath(*relative.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def merge_outputs(sent: NotebookNode, returned: str | None, limit: int) -> NotebookNode:
    """``sent`` with the outputs of ``returned``, checked to be an execution of ``sent``.

    Cells must come back in the same number and order with the same id, type, source and
    metadata (nbclient adds only ``metadata.execution``, its timings, which are dropped); a code
    cell's outputs and execution count are all that is taken. The result is validated against
    nbformat's schema. UntrustedResult otherwise.
    """
    if not isinstance(returned, str) or len(returned.encode()) > limit:
        raise UntrustedResult(f"the executed notebook is missing or larger than {limit} bytes")
    try:
        executed = nbformat.reads(returned, as_version=4)
    except Exception as e:  # nbformat raises several kinds on malformed JSON
        raise UntrustedResult(f"the executed notebook is not a notebook: {e}") from None
    if len(executed.cells) != len(sent.cells):
        raise UntrustedResult("the executed notebook has a different number of cells")
    merged = copy.deepcopy(sent)
    for index, (mine, theirs) in enumerate(zip(merged.cells, executed.cells, strict=True)):
        their_metadata = {k: v for k, v in theirs.get("metadata", {}).items() if k != "execution"}
        if (
            theirs.get("id"), theirs.get("cell_type"), theirs.get("source"), their_metadata
        ) != (mine.get("id"), mine.cell_type, mine.source, dict(mine.metadata)):  # fmt: skip
            raise UntrustedResult(f"cell {index} came back changed, not only executed")
        if mine.cell_type == "code":
            mine.outputs = theirs.get("outputs", [])
            mine.execution_count = theirs.get("execution_count")
    try:
        nbformat.validate(merged)
    except nbformat.ValidationError as e:
        raise UntrustedResult(f"the executed notebook's outputs are invalid: {e}") from None
    return merged


@dataclass(frozen=True)
class PodSandbox(Sandbox):
    """No bubblewrap: the worker's pod is the sandbox (``DaskExecute.allow_unsandboxed``).

    Student code still runs as ``uid``, not as the worker: as the worker's own uid it could
    take the worker process over, and a Dask worker can send the scheduler and the service's
    client pickles. One submission at a time per worker (``--nthreads 1``), and whatever
    runs as ``uid`` is killed after each one, so no submission meets another's processes.
    """

    isolate: bool = False

    def command(self, argv: Sequence[str], scratch: str, workdir: str, **kwargs: Any) -> list[str]:
        return [*drop_privileges(self.uid, self.gid), *super().command(argv, scratch, workdir)]

    def remove_everything_left(self) -> None:
        """Kill every process of ``uid`` (``setsid`` ones too: kill(-1) as that uid, which a
        fork cannot outrun), then delete its files in the pod's world-writable directories."""
        as_uid = drop_privileges(self.uid, self.gid)
        for command in (
            ["kill", "-KILL", "-1"],
            ["find", *WORLD_WRITABLE, "-xdev", "-mindepth", "1", "-user", str(self.uid), "-delete"],
        ):
            subprocess.run(
                [*as_uid, *command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )


def pod_sandbox(sandbox: Sandbox, worker_threads: int) -> PodSandbox:
    """``sandbox`` without bubblewrap, if student code can still be kept from the worker."""
    if os.geteuid() != 0 or sandbox.uid == 0:
        raise SandboxUnavailable(
            "without bubblewrap, a Dask worker must run as root (in its own pod) so that "
            "student code runs as sandbox_uid, not as the worker's uid"
        )
    if worker_threads != 1:
        raise SandboxUnavailable(
            "without bubblewrap, a Dask worker must run one submission at a time "
            f"(dask worker --nthreads 1, not {worker_threads}): its pod is the sandbox"
        )
    return PodSandbox(**{**sandbox.__dict__, "isolate": False})


class _WorkerExecute(execute.SandboxedExecute):
    """SandboxedExecute on a Dask worker: the kernel's environment that of a service worker
    plus autograde's variables, and the pod as the sandbox where bubblewrap cannot run and the
    admin allowed it."""

    def __init__(self, kernel_env: Mapping[str, str], worker_threads: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._kernel_env = dict(kernel_env)
        self._worker_threads = worker_threads
        self.pod: PodSandbox | None = None

    def sandbox(self) -> Sandbox:
        sandbox = super().sandbox()
        if sandbox.isolate:
            return sandbox
        self.pod = pod_sandbox(sandbox, self._worker_threads)
        return self.pod

    async def async_start_new_kernel(self, **kwargs: Any) -> None:
        # the worker's own environment may hold its cluster's settings: the kernel gets only
        # what a service worker keeps (no token, no secret), and autograde's variables
        kept = worker_env(os.environ, os.path.dirname(sys.executable))
        kwargs["env"] = {**kept, **kwargs.get("env", {}), **self._kernel_env}
        await super().async_start_new_kernel(**kwargs)

    # nbconvert's preprocess calls the sync twin, which nbclient binds to its own coroutine
    start_new_kernel = run_sync(async_start_new_kernel)


def execute_on_worker(
    notebook: str,
    files: Mapping[str, bytes],
    settings: Mapping[str, Mapping[str, Any]],
    kernel_env: Mapping[str, str],
) -> dict[str, Any]:
    """Run on a Dask worker: execute ``notebook`` in the sandbox, in a copy of ``files``.

    Returns the executed notebook as text (or the error), the isolation used, the limits hit
    and this worker's address; the files and the scratch directory are deleted.
    """
    from distributed import get_worker

    dask_worker = get_worker()
    where = dask_worker.address
    answer: dict[str, Any] = {"worker": where, "notebook": None, "error": None}
    with (
        tempfile.TemporaryDirectory(prefix="hubservices-dask-") as submission,
        execute.reporting() as report,
    ):
        preprocessor = _WorkerExecute(
            kernel_env, dask_worker.state.nthreads, config=Config(copy.deepcopy(settings))
        )
        try:
            unpack_files(files, Path(submission))
            nb = nbformat.reads(notebook, as_version=4)
            executed, _ = preprocessor.preprocess(nb, {"metadata": {"path": submission}})
            answer["notebook"] = nbformat.writes(executed)
        except SandboxUnavailable as e:
            report.isolation = REFUSED
            answer["error"] = f"autograde refused on Dask worker {where}: {e}"
        except Exception as e:
            answer["error"] = f"on Dask worker {where}: {type(e).__name__}: {e}"
        finally:
            if preprocessor.pod is not None:
                preprocessor.pod.remove_everything_left()
    answer.update(isolation=report.isolation, problems=report.problems)
    return answer


def configured(config: Config) -> bool:
    """Whether this autograde's executions go to Dask (the course has a scheduler)."""
    return bool(config.DaskExecute.get("scheduler_address"))


def on_dask(config: Config) -> Config:
    """``config`` with DaskExecute in place of nbgrader's Execute in autograde."""
    config = execute.sandboxed(config)
    config.Autograde.autograde_preprocessors = [
        DaskExecute if pp is execute.SandboxedExecute else pp
        for pp in config.Autograde.autograde_preprocessors
    ]
    return config


def with_executor(course: Course, executor: str, dask: Mapping[str, Any]) -> Course:
    """``course`` with the service's Dask settings under its own (which win) on Dask."""
    if executor != "dask":
        return course
    own = course.nbgrader.get("DaskExecute", {})
    return replace(course, nbgrader={**course.nbgrader, "DaskExecute": {**dask, **own}})


def check_dask_settings(settings: Mapping[str, Any]) -> None:
    """ValueError naming what is wrong with ``FormGrader.dask`` (checked at start)."""
    known = set(DaskExecute.class_trait_names(config=True)) - {"enabled"}
    unknown = set(settings) - known
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}"
        )
    if not settings.get("scheduler_address"):
        raise ValueError('executor "dask" needs "scheduler_address", e.g. "tls://host:8786"')
