"""Rate limiters under test: a clock to move by hand, both kinds of limiter, and the mark for PostgreSQL-only tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from tests.databases import TEST_DATABASE_URL
from webapp.db import Database
from webapp.services.limits import MemoryRateLimiter, PostgresRateLimiter, RateLimiter

postgres_only = pytest.mark.skipif(
    not TEST_DATABASE_URL,
    reason="counts are shared through PostgreSQL (set TEST_DATABASE_URL); on SQLite they stay in one process's memory",
)
KINDS = ["memory", pytest.param("postgres", marks=postgres_only)]
"""Parametrize a `kind` with these to run a test on both kinds of limiter (PostgreSQL's only when it is there)."""

MakeLimiter = Callable[..., RateLimiter]


class Clock:
    """A clock that moves only when told to; starts at the beginning of a 60 s and of a 900 s window."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@asynccontextmanager
async def opened(database_url: str) -> AsyncIterator[Database]:
    """A `Database` of its own: its own engine and pool, as another process would have."""
    database = Database(database_url)
    try:
        yield database
    finally:
        await database.dispose()


@asynccontextmanager
async def limiters(kind: str, database_url: str, clock: Clock) -> AsyncIterator[MakeLimiter]:
    """Makes limiters of `kind` (on one database for PostgreSQL) that all read `clock`."""
    if kind == "memory":
        yield lambda name, limit, **kw: MemoryRateLimiter(limit, clock=clock, **kw)
        return
    async with opened(database_url) as database:
        yield lambda name, limit, **kw: PostgresRateLimiter(database, name=name, limit=limit, clock=clock, **kw)
