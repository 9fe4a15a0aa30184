"""The orchestrator's relational database: SQLite in the data dir, or PostgreSQL.

The same SQLAlchemy Core code serves both, so one machine and a cluster of
workers differ only in the URL. SQLAlchemy is synchronous: every transaction
runs in a thread, off the event loop.
"""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Self

from sqlalchemy import (
    Connection,
    DateTime,
    Dialect,
    Engine,
    MetaData,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import make_url

# Runs, steps, events, artifacts and work items; DBOS keeps its own tables beside them.
RUNS_FILE = "runs.sqlite3"
ENGINE_FILE = "engine.sqlite3"
_SQLITE_BUSY_TIMEOUT_MS = 30_000

METADATA = MetaData()


class Database:
    """An open database with KITTY's tables created."""

    def __init__(self, engine: Engine, engine_state_url: str) -> None:
        """Wrap `engine`; `engine_state_url` is where DBOS keeps its state."""
        self._engine = engine
        self.engine_state_url = engine_state_url

    @classmethod
    async def open(cls, url: str | None, data_dir: Path) -> Self:
        """Open (and create) the database at `url`, or SQLite files in `data_dir`."""
        return await asyncio.to_thread(cls._open, url, data_dir)

    @classmethod
    def _open(cls, url: str | None, data_dir: Path) -> Self:
        if url is None:
            data_dir.mkdir(parents=True, exist_ok=True)
            engine = create_engine(f"sqlite:///{data_dir / RUNS_FILE}")
            event.listen(engine, "connect", _configure_sqlite)
            engine_state_url = f"sqlite:///{data_dir / ENGINE_FILE}"
        else:
            parsed = make_url(url)
            if parsed.get_backend_name() != "postgresql":
                raise ValueError("the database URL must be a postgresql:// URL")
            # psycopg 3 is what DBOS brings; SQLAlchemy defaults to psycopg2.
            parsed = parsed.set(drivername="postgresql+psycopg")
            engine = create_engine(parsed, pool_pre_ping=True)
            engine_state_url = parsed.render_as_string(hide_password=False)
        METADATA.create_all(engine)
        return cls(engine, engine_state_url)

    @property
    def is_sqlite(self) -> bool:
        """Return whether this is the one-machine SQLite database."""
        return self._engine.dialect.name == "sqlite"

    async def transaction[T](self, work: Callable[[Connection], T]) -> T:
        """Run `work` in one transaction, in a thread; commit unless it raises."""
        return await asyncio.to_thread(self._transaction, work)

    def _transaction[T](self, work: Callable[[Connection], T]) -> T:
        with self._engine.begin() as connection:
            return work(connection)

    async def close(self) -> None:
        """Close every pooled connection."""
        await asyncio.to_thread(self._engine.dispose)


def utc_now() -> datetime:
    """Return the current time in UTC."""
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A UTC timestamp that comes back timezone-aware from SQLite too."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Store `value` in UTC (SQLite keeps no zone: it gets the naive UTC time)."""
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return `value` as an aware UTC datetime."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _configure_sqlite(connection: object, _record: object) -> None:
    cursor = connection.cursor()  # type: ignore[attr-defined]
    # WAL lets the API read while a step writes; the busy timeout waits out a writer.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
