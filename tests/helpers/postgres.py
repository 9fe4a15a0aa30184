"""Throwaway PostgreSQL databases on the machine's server (127.0.0.1:5432, trust auth)."""

from collections.abc import Iterator
from contextlib import contextmanager
import uuid

import psycopg
from psycopg import sql

POSTGRES_SERVER = "postgresql://postgres@127.0.0.1:5432"


@contextmanager
def throwaway_database() -> Iterator[str]:
    """Create an empty database, yield its URL, and drop it with whatever still uses it."""
    name = f"kitty_test_{uuid.uuid4().hex}"
    database = sql.Identifier(name)
    with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(database))
        # A commit need not wait for the disk: a throwaway database survives no crash.
        admin.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(database))
    try:
        yield f"{POSTGRES_SERVER}/{name}"
    finally:
        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(database))
