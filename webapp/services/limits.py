"""Per-user rate limits and the sign-in throttle, counted where every process that serves the users can see them.

One interface, `RateLimiter` (async `check`, `blocked`, `reset`, `refund`), with two homes for the counts, chosen by
the database in one place (`build_limits`):

- PostgreSQL: `PostgresRateLimiter` counts in the `rate_count` table, so a limit holds across all processes and
  nodes. Each check is one atomic statement; old rows are pruned from the check path, at most once a minute.
- SQLite (the single-process default): `MemoryRateLimiter` keeps a sliding window in this process's memory, so a
  check costs no database round trip.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import SQLAlchemyError

from webapp.config import Settings
from webapp.db import Database
from webapp.errors import RateLimited
from webapp.models import RateCount

log = logging.getLogger(__name__)

Clock = Callable[[], float]

SIGN_IN_PER_ACCOUNT = 5
SIGN_IN_PER_ADDRESS = 20
SIGN_IN_WINDOW_SECONDS = 900
PRUNE_EVERY_SECONDS = 60.0
"""How often (at most) a `PostgresRateLimiter` deletes its old rows, from the check path, in each process."""
KEY_LENGTH = 300
"""`rate_count.key`'s length."""


class RateLimiter(ABC):
    """At most `limit` events per key in `window` seconds. A limit of 0 is off (and costs nothing)."""

    def __init__(self, limit: int, *, window_seconds: float = 60.0, what: str = "requests") -> None:
        self.limit, self.window, self.what = limit, window_seconds, what

    @abstractmethod
    async def check(self, key: str) -> None:
        """Count one event for `key`, or raise 429 `rate_limited` (counting nothing) if its window is full."""

    @abstractmethod
    async def blocked(self, key: str) -> bool:
        """Whether `key` is at its limit, without counting anything."""

    @abstractmethod
    async def reset(self, key: str) -> None:
        """Forget the key's events."""

    @abstractmethod
    async def refund(self, key: str) -> None:
        """Take back one of the key's events in the current window (its latest)."""

    def _refused(self, seconds_left: float) -> RateLimited:
        retry_after = max(1, math.ceil(seconds_left))
        return RateLimited(
            f"Too many {self.what}: the limit is {self.limit} per {self.window:g} s. Retry in {retry_after} s.",
            retry_after=retry_after,
        )


class MemoryRateLimiter(RateLimiter):
    """A sliding window in this process's memory (SQLite: one process). With several processes each would keep its
    own count, so this is only for the single-process setup."""

    def __init__(
        self, limit: int, *, window_seconds: float = 60.0, what: str = "requests", clock: Clock = time.monotonic
    ) -> None:
        super().__init__(limit, window_seconds=window_seconds, what=what)
        self._clock = clock
        self._events: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        """The key's events inside the window; keys with none are dropped, so memory follows recent activity."""
        events = self._events.get(key)
        if events is None:
            return deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
        return events

    async def check(self, key: str) -> None:
        if self.limit <= 0:
            return
        now = self._clock()
        events = self._recent(key, now)
        if len(events) >= self.limit:
            raise self._refused(events[0] + self.window - now)
        events.append(now)
        self._events[key] = events

    async def blocked(self, key: str) -> bool:
        return 0 < self.limit <= len(self._recent(key, self._clock()))

    async def reset(self, key: str) -> None:
        self._events.pop(key, None)

    async def refund(self, key: str) -> None:
        events = self._events.get(key)
        if events:
            events.pop()


# The check: one statement. The conflict's update locks the row and re-evaluates its WHERE on the row's latest
# version, so concurrent checks are serialised on the row and a refused one (no row returned) changes nothing.
_COUNT = (
    insert(RateCount)
    .values(key=bindparam("row_key"), window_start=bindparam("start"), count=1)
    .on_conflict_do_update(
        index_elements=[RateCount.key, RateCount.window_start],
        set_={"count": RateCount.count + 1},
        where=RateCount.count < bindparam("cap"),
    )
    .returning(RateCount.count)
)
_READ = select(RateCount.count).where(
    RateCount.key == bindparam("row_key"), RateCount.window_start == bindparam("start")
)
_REFUND = (
    update(RateCount)
    .where(RateCount.key == bindparam("row_key"), RateCount.window_start == bindparam("start"), RateCount.count > 0)
    .values(count=RateCount.count - 1)
)


class PostgresRateLimiter(RateLimiter):
    """Fixed windows counted in PostgreSQL's `rate_count` table, shared by every process and node on the database.

    Windows are `window_seconds` long (whole seconds), aligned to the Unix epoch; a key's row is
    `(name:key, window_start)`. A check is one atomic statement on an autocommit connection (no transaction held):

        INSERT INTO rate_count (key, window_start, count) VALUES (:key, :window_start, 1)
        ON CONFLICT (key, window_start) DO UPDATE SET count = rate_count.count + 1
        WHERE rate_count.count < :limit
        RETURNING rate_count.count

    No row back means the window is full: the check is refused with Retry-After = the time left until the window's
    end, and counts nothing, so any number of concurrent checks let exactly `limit` through. Being fixed (not a
    two-window estimate), a key can get up to twice its limit around a window boundary.

    Old rows: `prune` deletes this limiter's windows that ended more than a window ago. `check` runs it at most once
    every `PRUNE_EVERY_SECONDS` in each process (after counting, so the count itself stays one statement).
    """

    def __init__(
        self,
        database: Database,
        *,
        name: str,
        limit: int,
        window_seconds: int = 60,
        what: str = "requests",
        clock: Clock = time.time,
    ) -> None:
        if window_seconds < 1 or window_seconds != int(window_seconds):
            raise ValueError("a window is a whole number of seconds")
        super().__init__(limit, window_seconds=window_seconds, what=what)
        self.name = name
        self._prefix = f"{name}:"
        self._step = int(window_seconds)
        self._clock = clock
        self._engine = database.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._pruned_at = -math.inf

    def _window_start(self, now: float) -> int:
        return int(now // self._step) * self._step

    def _row_key(self, key: str) -> str:
        """`name:key`; a key too long for the column, or that PostgreSQL's text cannot hold (NUL, lone
        surrogates), is stored as its SHA-256."""
        row_key = self._prefix + key
        if len(row_key) <= KEY_LENGTH and row_key.isprintable():
            return row_key
        return f"{self._prefix}sha256:{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()}"

    async def check(self, key: str) -> None:
        if self.limit <= 0:
            return
        now = self._clock()
        start = self._window_start(now)
        params = {"row_key": self._row_key(key), "start": start, "cap": self.limit}
        async with self._engine.connect() as connection:
            counted = (await connection.execute(_COUNT, params)).first()
        if now - self._pruned_at >= PRUNE_EVERY_SECONDS:
            await self._prune_quietly(now)
        if counted is None:
            raise self._refused(start + self._step - now)

    async def blocked(self, key: str) -> bool:
        if self.limit <= 0:
            return False
        params = {"row_key": self._row_key(key), "start": self._window_start(self._clock())}
        async with self._engine.connect() as connection:
            count = await connection.scalar(_READ, params)
        return (count or 0) >= self.limit

    async def reset(self, key: str) -> None:
        async with self._engine.connect() as connection:
            await connection.execute(delete(RateCount).where(RateCount.key == self._row_key(key)))

    async def refund(self, key: str) -> None:
        """Take back one event of the current window. (An event counted just before the window turned is already
        out of the count; the new window's count loses one instead, which errs towards the user.)"""
        params = {"row_key": self._row_key(key), "start": self._window_start(self._clock())}
        async with self._engine.connect() as connection:
            await connection.execute(_REFUND, params)

    async def prune(self) -> int:
        """Delete this limiter's rows of windows that ended more than a window ago; the number of rows deleted."""
        return await self._prune(self._clock())

    async def _prune(self, now: float) -> int:
        self._pruned_at = now
        cutoff = self._window_start(now) - self._step
        statement = delete(RateCount).where(
            RateCount.window_start < cutoff, RateCount.key.startswith(self._prefix, autoescape=True)
        )
        async with self._engine.connect() as connection:
            result = await connection.execute(statement)
        return result.rowcount

    async def _prune_quietly(self, now: float) -> None:
        # The event is already counted: a failed clean-up must not fail the request (the next minute tries again).
        try:
            await self._prune(now)
        except (SQLAlchemyError, OSError):
            log.warning("pruning old rate counts failed", exc_info=True)


class SignInThrottle:
    """Sign-in attempts per account and per client address.

    An attempt is counted *before* its password is checked (~0.1-0.4 s of argon2), so guesses sent in parallel are
    counted as they arrive and cannot overrun the limit (each count is atomic: in one statement on PostgreSQL, with
    no await in between in memory). A success clears the account's count and gives the address its attempt back:
    only failures are meant to add up.
    """

    def __init__(self, *, account: RateLimiter, address: RateLimiter) -> None:
        self._account, self._address = account, address

    async def attempt(self, *, account: str, address: str) -> None:
        """Count one attempt, or raise 429 `rate_limited` (counting nothing) when either window is full."""
        await self._account.check(account)
        try:
            await self._address.check(address)
        except RateLimited:
            await self._account.refund(account)
            raise

    async def succeeded(self, *, account: str, address: str) -> None:
        await self._account.reset(account)
        await self._address.refund(address)


@dataclass(frozen=True)
class Limits:
    messages: RateLimiter
    voice: RateLimiter
    sign_in: SignInThrottle


def build_limits(settings: Settings, database: Database) -> Limits:
    """The limits, counted in PostgreSQL when the database is PostgreSQL (shared by every process), else in this
    process's memory (SQLite runs in one process)."""
    shared = database.engine.dialect.name == "postgresql"

    def limiter(name: str, limit: int, window_seconds: int, what: str) -> RateLimiter:
        if shared:
            return PostgresRateLimiter(database, name=name, limit=limit, window_seconds=window_seconds, what=what)
        return MemoryRateLimiter(limit, window_seconds=window_seconds, what=what)

    sign_in = SignInThrottle(
        account=limiter("sign-in-account", SIGN_IN_PER_ACCOUNT, SIGN_IN_WINDOW_SECONDS, "sign-in attempts"),
        address=limiter("sign-in-address", SIGN_IN_PER_ADDRESS, SIGN_IN_WINDOW_SECONDS, "sign-in attempts"),
    )
    return Limits(
        messages=limiter("messages", settings.rate_limit_messages_per_minute, 60, "messages"),
        voice=limiter("voice", settings.rate_limit_voice_per_minute, 60, "voice turns"),
        sign_in=sign_in,
    )
