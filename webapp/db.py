"""Database plumbing: declarative base, a UTC datetime type, the engine factory and session helpers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy
from sqlalchemy import DateTime, MetaData, event
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
T = TypeVar("T")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def new_id() -> str:
    return str(uuid.uuid4())


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite stores no offset, so it is attached on load)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    @property
    def python_type(self) -> type:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sqlite_pragmas(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # WAL lets readers and one writer work at once; the busy timeout makes a second writer wait instead of failing.
    # The driver's own transaction handling is switched off so that `_sqlite_begin` can choose how to BEGIN.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    # A writer starts with BEGIN IMMEDIATE: it waits for the write lock up front (busy timeout) instead of failing
    # when it upgrades a read snapshot that another writer has made stale.
    immediate = connection.get_execution_options().get("sqlite_immediate", False)
    connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def create_engine(database_url: str, **kwargs: Any) -> AsyncEngine:
    """An async engine; for SQLite, creates the file's folder and sets the pragmas on every connection."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine
    return create_async_engine(url, pool_pre_ping=True, **kwargs)


class Database:
    """The engine with three ways in: `read()` for a session that may write little, `write()` for a write
    transaction, and `transaction(work)` for a hot write transaction of plain (synchronous) Core statements.

    On SQLite, writers of this process queue on an asyncio lock and begin IMMEDIATE, so they never sit in SQLite's
    busy handler (which sleeps in growing steps) or fail on a stale read snapshot. PostgreSQL needs neither.

    aiosqlite hops to its own thread for every cursor call (open, execute, fetch, close), and a hop costs about as
    much CPU as a small statement; so on SQLite `transaction(work)` runs the whole of `work` on one writer thread
    with the stdlib driver: one hop per transaction. On PostgreSQL it runs on the async engine (`run_sync`).
    """

    def __init__(self, database_url: str) -> None:
        self.engine = create_engine(database_url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self.read = async_sessionmaker(self.engine, expire_on_commit=False)
        self._writer_engine = self.engine.execution_options(sqlite_immediate=True) if self.is_sqlite else self.engine
        self._write = async_sessionmaker(self._writer_engine, expire_on_commit=False)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        url = make_url(database_url)
        self._sync_engine: Engine | None = None
        self._writer: ThreadPoolExecutor | None = None
        if self.is_sqlite and url.database not in (None, "", ":memory:"):
            self._sync_engine = sqlalchemy.create_engine(url.set(drivername="sqlite"), pool_size=1)
            event.listen(self._sync_engine, "connect", _sqlite_pragmas)
            event.listen(self._sync_engine, "begin", _sqlite_begin)
            self._sync_engine = self._sync_engine.execution_options(sqlite_immediate=True)
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-writer")

    @contextlib.asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A transaction committed on exit (rolled back on error)."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            yield await stack.enter_async_context(self._write.begin())

    async def transaction(self, work: Callable[[Connection], T]) -> T:
        """`work(connection)` in one write transaction: committed when it returns, rolled back if it raises.

        On SQLite a caller cancelled while `work` runs does not stop it: the transaction still ends as `work` does,
        and the write lock is held until then, so the next writer never waits inside SQLite.
        """
        async with self._write_lock or contextlib.nullcontext():
            if self._writer is not None:
                running = asyncio.get_running_loop().run_in_executor(self._writer, self._run, work)
                try:
                    return await asyncio.shield(running)
                except asyncio.CancelledError:
                    await asyncio.wait({running})
                    raise
            async with self._writer_engine.begin() as connection:
                return await connection.run_sync(work)

    def _run(self, work: Callable[[Connection], T]) -> T:
        assert self._sync_engine is not None
        with self._sync_engine.begin() as connection:
            return work(connection)

    @property
    def sync_engines(self) -> list[Engine]:
        """Every engine statements go through (the async one's, and SQLite's writer thread's): for instrumentation."""
        return [self.engine.sync_engine, *([self._sync_engine] if self._sync_engine is not None else [])]

    async def dispose(self) -> None:
        if self._writer is not None:  # off the loop: a transaction may still be waiting for SQLite's write lock
            await asyncio.to_thread(self._writer.shutdown)
        if self._sync_engine is not None:
            self._sync_engine.dispose()
        await self.engine.dispose()
