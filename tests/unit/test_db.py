"""Database: migrations on start, sessions, SQLite tuning; on SQLite and on PostgreSQL."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, func, insert, inspect, select

from hubservices.common.db import Database
from tests.unit.sample_migrations.models import Item
from tests.unit.sample_migrations.notes.models import Note

ITEMS = "tests.unit.sample_migrations"
NOTES = "tests.unit.sample_migrations.notes"

OpenDb = Callable[..., Database]


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database; for SQLite in a directory that does not exist yet."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'hub.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def open_db(db_url: str) -> Iterator[OpenDb]:
    """Open ``db_url`` as a service would (items migrations by default); dispose all at the end."""
    opened: list[Database] = []

    def open_(migrations: str = ITEMS, version_table: str = "alembic_version_items") -> Database:
        opened.append(Database(db_url, migrations=migrations, version_table=version_table))
        return opened[-1]

    yield open_
    for db in opened:
        db.dispose()


def current_revision(db: Database, version_table: str) -> str | None:
    with db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": version_table})
        return context.get_current_revision()


def test_upgrade_creates_tables_and_restart_keeps_data(open_db: OpenDb) -> None:
    db = open_db()
    db.upgrade()
    with db.session() as session:
        session.add(Item(name="notebook"))
    db.dispose()

    restarted = open_db()
    restarted.upgrade()  # already at head: nothing to do

    with restarted.session() as session:
        assert session.scalars(select(Item.name)).all() == ["notebook"]
    assert set(inspect(restarted.engine).get_table_names()) == {"items", "alembic_version_items"}
    assert current_revision(restarted, "alembic_version_items") == "0002"


def test_new_migration_adds_column_keeping_rows(open_db: OpenDb) -> None:
    db = open_db()
    db.upgrade("0001")
    old_items = Table("items", MetaData(), autoload_with=db.engine)
    with db.engine.begin() as connection:
        connection.execute(insert(old_items), [{"name": "a"}, {"name": "b"}])

    db.upgrade()

    with db.session() as session:
        rows = session.execute(select(Item.name, Item.priority).order_by(Item.id)).all()
    assert [tuple(row) for row in rows] == [("a", 0), ("b", 0)]


def test_services_sharing_a_database_keep_separate_versions(open_db: OpenDb) -> None:
    items = open_db(ITEMS, "alembic_version_items")
    notes = open_db(NOTES, "alembic_version_notes")
    items.upgrade("0001")
    notes.upgrade()
    items.upgrade()
    with items.session() as session:
        session.add(Item(name="notebook"))
    with notes.session() as session:
        session.add(Note(body="graded"))

    notes.upgrade()  # both restart
    items.upgrade()

    assert current_revision(items, "alembic_version_items") == "0002"
    assert current_revision(notes, "alembic_version_notes") == "0001"
    with items.session() as session:
        assert session.scalars(select(Item.name)).all() == ["notebook"]
        assert session.scalars(select(Note.body)).all() == ["graded"]


def test_session_rolls_back_on_error(open_db: OpenDb) -> None:
    db = open_db()
    db.upgrade()

    with pytest.raises(RuntimeError), db.session() as session:
        session.add(Item(name="lost"))
        session.flush()
        raise RuntimeError("handler failed")

    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 0


def test_sqlite_is_tuned_for_concurrent_services(tmp_path: Path) -> None:
    db = Database(
        f"sqlite:///{tmp_path / 'state' / 'hub.db'}",
        migrations=ITEMS,
        version_table="alembic_version_items",
    )
    try:
        with db.engine.connect() as connection:
            pragma = connection.exec_driver_sql  # PRAGMAs have no SQLAlchemy construct
            assert pragma("PRAGMA journal_mode").scalar() == "wal"
            assert pragma("PRAGMA busy_timeout").scalar() == 30_000
            assert pragma("PRAGMA foreign_keys").scalar() == 1
    finally:
        db.dispose()


def test_sqlite_files_and_directories_are_private(tmp_path: Path) -> None:
    """Usage history, audit trails: readable by the service's user only, whatever the umask."""
    before = mode(tmp_path)
    old_umask = os.umask(0o022)
    try:
        path = tmp_path / "data" / "deeper" / "hub.db"
        db = Database(f"sqlite:///{path}", migrations=ITEMS, version_table="alembic_version_items")
        try:
            db.upgrade()
            with db.session() as session:
                session.add(Item(name="x"))
            files = [path, path.with_name("hub.db-wal"), path.with_name("hub.db-shm")]
            assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
            assert mode(path.parent) == mode(path.parent.parent) == 0o700
        finally:
            db.dispose()
    finally:
        os.umask(old_umask)
    assert mode(tmp_path) == before  # a directory that was there keeps its mode


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("bad_url", ["not a url", "nosuchdb://host/db"])
def test_bad_url_is_one_clear_value_error(bad_url: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid database URL \(expected e\.g\. sqlite:") as err:
        Database(bad_url, migrations=ITEMS, version_table="alembic_version_items")
    assert "\n" not in str(err.value)
