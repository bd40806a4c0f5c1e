"""One turn at a time per chat session, in arrival order, across tasks and worker processes.

Within a process, turns queue on a per-session `asyncio.Lock` (FIFO). Across processes, the turn also holds a lease
on the session row: taken by the turn's first write (`claim_values`, in the same UPDATE that stores the user's
message) or by `claim`, renewed while the turn runs, given back by its last write, and left to expire if a worker
dies mid-turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, bindparam, case, exists, or_, select, update

from webapp.db import Database, utcnow
from webapp.errors import SessionBusy, SessionNotFound
from webapp.models import ChatSession

SESSION = cast(Table, ChatSession.__table__)


class LeaseTaken(Exception):
    """Another worker process is running a turn in this session; retry after `TurnLocks.retry_later`."""


@dataclass
class Lease:
    session_id: str
    token: str
    deadline: float
    """Event-loop time after which waiting for the turn fails with 409 `session_busy`."""
    held: bool = False


class TurnLocks:
    def __init__(
        self, database: Database, *, busy_timeout: float, lease_seconds: float = 30.0, poll_seconds: float = 0.05
    ) -> None:
        self._db = database
        self._busy_timeout = busy_timeout
        self._lease = timedelta(seconds=lease_seconds)
        self._poll_seconds = poll_seconds
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[Lease]:
        """Wait for the session's turn in this process (409 `session_busy` after the timeout) and hold it."""
        loop = asyncio.get_running_loop()
        lease = Lease(session_id, str(uuid.uuid4()), loop.time() + self._busy_timeout)
        lock = self._enter(session_id)
        try:
            try:
                async with asyncio.timeout_at(lease.deadline):
                    await lock.acquire()
            except TimeoutError:
                raise self._busy() from None
            renewer = asyncio.create_task(self._renew(lease))
            try:
                yield lease
            finally:
                renewer.cancel()
                await asyncio.gather(renewer, return_exceptions=True)
                if lease.held:
                    await asyncio.shield(self._release(lease))
                lock.release()
        finally:
            self._leave(session_id)

    # --- the lease, as parts of a turn's own statements --------------------------------------------------------------
    # Fragments with bound parameters (`lease_owner`, `now`, `lease_until`), so statements built from them can be
    # built once and reused; `lease_params` supplies the values.

    @staticmethod
    def claim_condition() -> ColumnElement[bool]:
        """True on a session row whose lease is free, expired, or already this turn's."""
        token, expires_at = SESSION.c.lease_token, SESSION.c.lease_expires_at
        return or_(token.is_(None), token == bindparam("lease_owner"), expires_at < bindparam("now"))

    @staticmethod
    def claim_values() -> dict[str, Any]:
        return {"lease_token": bindparam("lease_owner"), "lease_expires_at": bindparam("lease_until")}

    @staticmethod
    def release_values() -> dict[str, Any]:
        mine = SESSION.c.lease_token == bindparam("lease_owner")
        return {
            "lease_token": case((mine, None), else_=SESSION.c.lease_token),
            "lease_expires_at": case((mine, None), else_=SESSION.c.lease_expires_at),
        }

    def lease_params(self, lease: Lease, now: datetime) -> dict[str, Any]:
        return {"lease_owner": lease.token, "now": now, "lease_until": now + self._lease}

    async def retry_later(self, lease: Lease) -> None:
        """Wait a moment before trying to claim again, or give up with 409 once the deadline has passed."""
        if asyncio.get_running_loop().time() + self._poll_seconds > lease.deadline:
            raise self._busy()
        await asyncio.sleep(self._poll_seconds)

    async def claim(self, lease: Lease) -> None:
        """Take the lease in a transaction of its own (for turns that work before their first write)."""
        while True:
            async with self._db.write() as db:
                now = utcnow()
                claimed = await db.execute(
                    update(SESSION)
                    .where(SESSION.c.id == lease.session_id, self.claim_condition())
                    .values(self.claim_values()),
                    self.lease_params(lease, now),
                )
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    lease.held = True
                    return
                if not await db.scalar(select(exists().where(SESSION.c.id == lease.session_id))):
                    raise SessionNotFound(f"No chat session with id {lease.session_id!r}.")
            await self.retry_later(lease)

    # --- internals ---------------------------------------------------------------------------------------------------

    def _busy(self) -> SessionBusy:
        return SessionBusy(
            f"Another turn in this session has been running for over {self._busy_timeout:g} s; try again later."
        )

    def _enter(self, session_id: str) -> asyncio.Lock:
        lock, users = self._local.get(session_id) or (asyncio.Lock(), 0)
        self._local[session_id] = (lock, users + 1)
        return lock

    def _leave(self, session_id: str) -> None:
        lock, users = self._local[session_id]
        if users == 1:
            del self._local[session_id]
        else:
            self._local[session_id] = (lock, users - 1)

    async def _renew(self, lease: Lease) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            if lease.held:
                async with self._db.write() as db:
                    await db.execute(
                        update(SESSION)
                        .where(SESSION.c.id == lease.session_id, SESSION.c.lease_token == lease.token)
                        .values(lease_expires_at=utcnow() + self._lease)
                    )

    async def _release(self, lease: Lease) -> None:
        async with self._db.write() as db:
            await db.execute(
                update(SESSION).where(SESSION.c.id == lease.session_id).values(self.release_values()),
                self.lease_params(lease, utcnow()),
            )
        lease.held = False
