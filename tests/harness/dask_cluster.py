"""A real Dask cluster on 127.0.0.1: ``dask scheduler`` and ``dask worker`` processes.

Each process gets a working directory of its own and a session of its own, so that stopping
the cluster kills everything it started (nannies, workers, the kernels of their sandboxes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASK = str(Path(sys.executable).parent / "dask")
#: A variable of every worker's environment that student code must not see.
WORKER_SECRET = "HUBSERVICES_TEST_WORKER_SECRET"


class DaskCluster:
    """A scheduler and ``workers`` workers of ``nthreads`` threads; ``address`` once started."""

    def __init__(
        self, workdir: Path, workers: int = 2, worker_path: str = "", nthreads: int = 1
    ) -> None:
        self.workdir = workdir
        self.workers = workers
        self.nthreads = nthreads
        #: the workers' PATH (default: this venv's bin, then ours)
        self.worker_path = worker_path or f"{Path(sys.executable).parent}:{os.environ['PATH']}"
        self.procs: list[subprocess.Popen[bytes]] = []
        self.tmpdirs: dict[str, Path] = {}
        self.address = ""

    def _start(self, name: str, *args: str) -> None:
        cwd = self.workdir / name
        cwd.mkdir(parents=True)
        # the worker's copies of submissions and scratch directories, its own; short, for the
        # kernel's IPC socket paths (at most 107 bytes)
        tmpdir = tempfile.mkdtemp(prefix=f"dask-test-{name}-")
        self.tmpdirs[name] = Path(tmpdir)
        env = {**os.environ, "PATH": self.worker_path, "TMPDIR": tmpdir, WORKER_SECRET: "s3cret"}
        with open(cwd / "log", "wb") as log:
            self.procs.append(
                subprocess.Popen(
                    [DASK, *args],
                    cwd=cwd,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )  # fmt: skip
            )

    def start(self) -> None:
        scheduler_file = self.workdir / "scheduler.json"
        self._start(
            "scheduler", "scheduler", "--host", "127.0.0.1", "--port", "0",
            "--no-dashboard", "--scheduler-file", str(scheduler_file),
        )  # fmt: skip
        for i in range(self.workers):
            self._start(
                f"worker{i}", "worker", "--scheduler-file", str(scheduler_file),
                "--host", "127.0.0.1", "--nthreads", str(self.nthreads), "--no-dashboard",
                "--name", f"worker{i}", "--local-directory", str(self.workdir / f"worker{i}"),
            )  # fmt: skip
        self.address = self._wait_for_workers(scheduler_file)

    def _wait_for_workers(self, scheduler_file: Path, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Dask process exited early: {self.logs()}")
            if scheduler_file.exists():
                with contextlib.suppress(ValueError):
                    info = json.loads(scheduler_file.read_text())
                    if info.get("address") and self._registered(info["address"]):
                        return info["address"]
            time.sleep(0.5)
        raise RuntimeError(f"the Dask cluster did not start: {self.logs()}")

    def _registered(self, address: str) -> bool:
        from distributed import Client

        with Client(address, timeout=10, set_as_default=False) as client:
            return len(client.scheduler_info()["workers"]) >= self.workers

    def worker_addresses(self) -> dict[str, str]:
        """Worker name -> address."""
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            workers = client.scheduler_info()["workers"]
        return {info["name"]: address for address, info in workers.items()}

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.parent.name}\n{log.read_text(errors='replace')[-3000:]}"
            for log in sorted(self.workdir.glob("*/log"))
        )

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for proc in self.procs:
            proc.wait()
        for tmpdir in self.tmpdirs.values():
            shutil.rmtree(tmpdir, ignore_errors=True)


@contextlib.contextmanager
def dask_cluster(workdir: Path, **options: Any) -> Iterator[DaskCluster]:
    """A started cluster (options: DaskCluster's), killed whole at the end, also on failure."""
    cluster = DaskCluster(workdir, **options)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
