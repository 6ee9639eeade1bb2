"""A throwaway PostgreSQL server and fresh databases on it: for the tests (a pytest plugin: a
server per test session, a database per test) and for the benchmarks (``running_postgres``,
``fresh_database``, plain context managers).

The server is private to its user (own data directory, free port on 127.0.0.1, unix socket in a
temp dir), so neither tests nor benchmarks depend on, or touch, a PostgreSQL service of the
machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import URL, create_engine, text

from tests.harness import free_port


class PostgresMissing(RuntimeError):
    """PostgreSQL is not installed on this machine."""


@contextlib.contextmanager
def running_postgres() -> Iterator[URL]:
    """Start PostgreSQL; yield the URL of its superuser's ``postgres`` database; stop it and
    remove its data afterwards. Raises :class:`PostgresMissing` when it is not installed."""
    bindir = _find_bindir()
    if bindir is None:
        raise PostgresMissing(
            "PostgreSQL is not installed (no pg_ctl in /usr/lib/postgresql/*/bin or on PATH)"
        )
    # PostgreSQL refuses to run as root, so root runs it as the postgres system user.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    initdb, pg_ctl = [*as_user, str(bindir / "initdb")], [*as_user, str(bindir / "pg_ctl")]
    tmp = Path(tempfile.mkdtemp(prefix="test-postgres-"))
    data, log, port = str(tmp / "data"), tmp / "server.log", free_port()
    try:
        if as_user:
            shutil.chown(tmp, user="postgres")
        _run([*initdb, "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-locale"])
        options = f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 -c fsync=off"
        _run([*pg_ctl, "start", "-w", "-D", data, "-l", str(log), "-o", options], log=log)
        try:
            yield URL.create(
                "postgresql+psycopg2", "postgres", host="127.0.0.1", port=port, database="postgres"
            )
        finally:
            _run([*pg_ctl, "stop", "-D", data, "-m", "immediate"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server: URL, prefix: str = "test") -> Iterator[str]:
    """Create an empty database on ``server``; yield its URL; drop it afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    quoted = admin.dialect.identifier_preparer.quote(name)
    try:
        # CREATE/DROP DATABASE have no SQLAlchemy construct, hence text().
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {quoted}"))
        yield server.set(database=name).render_as_string(hide_password=False)
        with admin.connect() as connection:
            # FORCE: connections a user left open must not keep its database alive.
            connection.execute(text(f"DROP DATABASE {quoted} WITH (FORCE)"))
    finally:
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[URL]:
    """A PostgreSQL server for the test session: the URL of its ``postgres`` database.

    Skips when PostgreSQL is not installed, except under CI (env var CI set), where a missing
    server must fail the run rather than silently skip the PostgreSQL half of the tests.
    """
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(running_postgres())
        except PostgresMissing as missing:
            if os.environ.get("CI"):
                pytest.fail(str(missing))
            pytest.skip(str(missing))
        yield url


@pytest.fixture
def postgres_url(postgres_server: URL) -> Iterator[str]:
    """Create an empty database for one test; yield its URL; drop it afterwards."""
    with fresh_database(postgres_server) as url:
        yield url


def _find_bindir() -> Path | None:
    """The newest installed PostgreSQL's bin directory (Debian/Ubuntu layout, else PATH)."""
    candidates = Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")
    newest = max(candidates, key=lambda pg_ctl: float(pg_ctl.parent.parent.name), default=None)
    found = newest or shutil.which("pg_ctl")
    return Path(found).parent if found else None


def _run(args: list[str], *, log: Path | None = None) -> None:
    """Run a PostgreSQL tool; on failure raise with its output (and the server log)."""
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        details = result.stdout + result.stderr
        if log is not None and log.exists():
            details += log.read_text()
        raise RuntimeError(f"{' '.join(args)} failed:\n{details}")
