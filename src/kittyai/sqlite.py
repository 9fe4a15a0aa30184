"""SQLite for the services: one connection on one thread, schemas migrated in steps.

sqlite3 connections belong to the thread that made them, and their calls block, so
each database gets a thread of its own and the event loop only awaits its jobs.
"""

import asyncio
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
import sqlite3
from typing import ClassVar, Self

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class SqliteDatabase:
    """One SQLite file, worked on by one thread; jobs run in the order they are asked for."""

    def __init__(self, executor: ThreadPoolExecutor, connection: sqlite3.Connection) -> None:
        """Wrap a connection made on `executor`'s only thread; use `open` instead."""
        self._executor = executor
        self._connection = connection
        self._closed = False

    @classmethod
    async def open(cls, path: Path, migrations: Sequence[str], *, name: str) -> Self:
        """Open `path`, bringing its schema up to date with `migrations` (step N is N-1)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"kitty-{name}")
        try:
            connection = await asyncio.get_running_loop().run_in_executor(
                executor, _connect, path, migrations
            )
        except BaseException:
            await asyncio.to_thread(executor.shutdown, wait=True)
            raise
        return cls(executor, connection)

    async def run[*Args, T](self, job: Callable[[sqlite3.Connection, *Args], T], *args: *Args) -> T:
        """Run `job(connection, *args)` on the database's thread."""
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, job, self._connection, *args
        )

    async def close(self) -> None:
        """Finish the jobs already asked for, close the file, and end the thread."""
        if self._closed:
            return
        self._closed = True
        closing = asyncio.get_running_loop().run_in_executor(self._executor, self._connection.close)
        # Queued jobs still run; new ones are refused instead of meeting a closed file.
        self._executor.shutdown(wait=False)
        await closing
        await asyncio.to_thread(self._executor.shutdown, wait=True)


class SqliteStore:
    """A store in one SQLite file, its rows read by column name, its foreign keys enforced."""

    # The steps of the store's schema (see `SqliteDatabase.open`), and the name of its thread.
    migrations: ClassVar[Sequence[str]]
    thread_name: ClassVar[str]

    def __init__(self, database: SqliteDatabase) -> None:
        """Keep the store in `database`; use `open` instead."""
        self._database = database

    @classmethod
    async def open(cls, path: Path) -> Self:
        """Open the store at `path`, creating or migrating its schema."""
        database = await SqliteDatabase.open(path, cls.migrations, name=cls.thread_name)
        await database.run(_configure_store)
        return cls(database)

    async def close(self) -> None:
        """Finish the jobs already asked for, then close the database."""
        await self._database.close()


@contextmanager
def transaction(connection: sqlite3.Connection) -> Iterator[None]:
    """Run the statements of the `with` block in one transaction: all of them or none.

    The connections autocommit each statement on its own; a block that raises rolls back.
    """
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def to_epoch_us(moment: datetime) -> int:
    """Return an aware `moment` as a column stores it: microseconds since the epoch."""
    return (moment - _EPOCH) // _MICROSECOND


def from_epoch_us(value: int) -> datetime:
    """Return the UTC time a column stores as microseconds since the epoch."""
    return _EPOCH + value * _MICROSECOND


def _configure_store(connection: sqlite3.Connection) -> None:
    # Rows by column name, so reads do not depend on the order columns were added in.
    connection.row_factory = sqlite3.Row
    # Off by default in SQLite; on, what a row refers to must exist, and deletions
    # cascade as the schema says.
    connection.execute("PRAGMA foreign_keys = ON")


def _connect(path: Path, migrations: Sequence[str]) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Autocommit: each write is its own transaction, committed when `execute` returns.
    connection = sqlite3.connect(path, autocommit=True)
    try:
        connection.execute("PRAGMA journal_mode = WAL")
        # In WAL mode NORMAL survives a crash of the process (what services face) without
        # an fsync per write, which would cost more than the work being recorded.
        connection.execute("PRAGMA synchronous = NORMAL")
        _migrate(connection, path, migrations)
    except BaseException:
        connection.close()
        raise
    return connection


def _migrate(connection: sqlite3.Connection, path: Path, migrations: Sequence[str]) -> None:
    (version,) = connection.execute("PRAGMA user_version").fetchone()
    if version > len(migrations):
        raise RuntimeError(
            f"{path} has schema version {version}; this release knows up to {len(migrations)}"
        )
    for number, script in enumerate(migrations[version:], start=version + 1):
        # One transaction per step: a crash mid-migration leaves the previous version.
        connection.executescript(
            f"BEGIN IMMEDIATE; {script}; PRAGMA user_version = {number}; COMMIT;"
        )
