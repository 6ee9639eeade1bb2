"""What every benchmark does the same way: percentiles, the machine, a hub run, the databases
its figures are measured on, the docs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import platform
import re
import shutil
import signal
import sys
import textwrap
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psutil
from sqlalchemy import URL, create_engine, text
from sqlalchemy.engine import make_url

from tests.harness.postgres import fresh_database, running_postgres

if TYPE_CHECKING:
    from tests.harness.hub import Hub

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "benchmarks.md"

T = TypeVar("T")

#: The databases our services run on, by ``--db`` name: what a figure's label calls each.
DATABASES = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank ``p``th percentile of ``samples``."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def machine() -> str:
    """The machine a figure was measured on, for the docs."""
    model = ""
    with open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f if "model name" in line), "")
    return (
        f"{os.cpu_count()} cores ({model or platform.processor()}), "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Linux {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting for I/O)."""
    t = psutil.cpu_times()
    not_busy = ("idle", "iowait", "guest", "guest_nice")  # guest time is counted in user too
    return sum(t) - sum(getattr(t, name, 0.0) for name in not_busy)


def wrap(line: str, width: int = 100) -> str:
    """Prose and bullets wrapped like the rest of the docs; table rows, commands stay whole."""
    if line.startswith(("|", ".venv/")) or len(line) <= width:
        return line
    indent = "  " if line.startswith("- ") else ""
    return textwrap.fill(
        line, width, subsequent_indent=indent, break_on_hyphens=False, break_long_words=False
    )


def write_section(title: str, section: str, path: Path = DOCS) -> None:
    """Replace the ``## <title>`` section of docs/benchmarks.md, keeping every other section."""
    if path.exists():
        text = path.read_text()
    else:
        text = (
            "# Benchmarks\n\nMeasured figures for the services, and the commands that give them.\n"
        )
    pattern = re.compile(rf"^## {re.escape(title)}\b.*?(?=^## |\Z)", re.M | re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")


def docs_section(title: str, body: list[str], command: str, note: str = "") -> str:
    """A ``## <title>`` section: the body, then the command in a code block, when and where."""
    lines = [
        f"## {title}",
        "",
        *body,
        "",
        "```sh",
        command,
        "```",
        "",
        f"Measured {datetime.now(UTC):%Y-%m-%d} on {machine()}.{note}",
        "",
    ]
    return "\n".join(wrap(line) for line in lines)


def add_output_options(parser: argparse.ArgumentParser, title: str) -> None:
    """``--write-docs`` (the benchmark's section of docs/benchmarks.md) and ``--keep``."""
    parser.add_argument(
        "--write-docs",
        action="store_true",
        help=f"replace the {title} section of docs/benchmarks.md",
    )
    parser.add_argument("--keep", action="store_true", help="keep the hub's directory and log")


def add_db_option(parser: argparse.ArgumentParser) -> None:
    """``--db``: which databases our services' figures are measured on (each one, side by side)."""
    parser.add_argument(
        "--db",
        choices=[*DATABASES, "both"],
        default="both",
        help="our services' database for every figure that involves it: SQLite, PostgreSQL "
        "(a private server the benchmark starts and stops), or both, side by side (default)",
    )


def chosen_databases(args: argparse.Namespace) -> list[str]:
    """The ``--db`` choice as a list of :data:`DATABASES` keys, SQLite first."""
    return list(DATABASES) if args.db == "both" else [args.db]


class Databases:
    """Fresh, empty databases for one benchmark run: SQLite files in ``directory``; databases
    on a private PostgreSQL server, started on first use (so ``--db sqlite`` needs none
    installed) and stopped, its data removed, when the ``with`` block ends, SIGTERM included."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stack = contextlib.ExitStack()
        self._server: URL | None = None

    def __enter__(self) -> Databases:
        signal.signal(signal.SIGTERM, _terminate)  # so that the server is stopped
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()

    def new(self, kind: str, name: str) -> str:
        """The URL of a new empty database of ``kind`` (a :data:`DATABASES` key)."""
        if kind == "sqlite":
            return f"sqlite:///{self.directory / name}.sqlite"
        if kind != "postgresql":
            raise ValueError(f"unknown database kind {kind!r}")
        if self._server is None:
            print("starting PostgreSQL...", flush=True)
            self._server = self._stack.enter_context(running_postgres())
        return self._stack.enter_context(fresh_database(self._server, prefix=name))


def database_bytes(url: str, *, vacuum: bool = False) -> int:
    """How much disk a database takes: the SQLite file, or PostgreSQL's ``pg_database_size``.

    With ``vacuum``, PostgreSQL first rewrites every table (``VACUUM FULL``) so that only live
    rows and their indexes count, as in SQLite's file: a benchmark that simulates a day in a
    minute leaves dead row versions faster than autovacuum (once a minute) reclaims them.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return Path(parsed.database or "").stat().st_size
    engine = create_engine(parsed, isolation_level="AUTOCOMMIT")  # VACUUM: no transaction
    try:
        with engine.connect() as connection:
            if vacuum:
                connection.execute(text("VACUUM FULL"))
            size = connection.execute(text("SELECT pg_database_size(current_database())"))
            return int(size.scalar_one())
    finally:
        engine.dispose()


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_on_hub(
    hub: Hub,
    workdir: Path,
    bench: Callable[[], Coroutine[Any, Any, T]],
    *,
    keep: bool = False,
    setup: Callable[[], object] | None = None,
) -> T:
    """``setup()``, start ``hub``, run ``bench()``; whatever happens, SIGTERM included, stop it.

    On failure the end of the hub's log is printed; afterwards any process the hub left behind
    is named, and ``workdir`` is removed unless ``keep``.
    """
    signal.signal(signal.SIGTERM, _terminate)  # so that the finally below runs
    try:
        if setup is not None:
            setup()
        hub.start()
        return asyncio.run(bench())
    except BaseException:
        if hub.proc is not None:
            print(hub.log_tail(20), file=sys.stderr)
        raise
    finally:
        hub.stop()
        _, alive = psutil.wait_procs(hub.leftover_processes(), timeout=5)
        for proc in alive:
            print(f"left over: {proc.pid} {proc.name()}", file=sys.stderr)
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def publish(title: str, report: str, section: str | None) -> int:
    """Print the report; with a section (``--write-docs``), write it into docs/benchmarks.md."""
    print(report)
    if section is not None:
        write_section(title, section)
        print(f"wrote the {title} section of {DOCS.relative_to(ROOT)}")
    return 0
