"""One turn at a time per chat session, in arrival order, across tasks and worker processes.

Within a process, waiters queue on a per-session `asyncio.Lock` (FIFO). Across processes, the holder also owns a
short lease on the session row, renewed while the turn runs, so a crashed worker's lease simply expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

from sqlalchemy import and_, exists, or_, select, update

from webapp.db import Database, utcnow
from webapp.errors import SessionBusy, SessionNotFound
from webapp.models import ChatSession


class TurnLocks:
    def __init__(
        self,
        database: Database,
        *,
        busy_timeout: float,
        lease_seconds: float = 30.0,
        poll_seconds: float = 0.05,
    ) -> None:
        self._db = database
        self._busy_timeout = busy_timeout
        self._lease = timedelta(seconds=lease_seconds)
        self._poll_seconds = poll_seconds
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[None]:
        """Wait for the session's turn (409 `session_busy` after the timeout), then hold it for the block."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout
        lock = self._enter(session_id)
        try:
            try:
                async with asyncio.timeout_at(deadline):
                    await lock.acquire()
            except TimeoutError:
                raise self._busy() from None
            try:
                token = await self._claim(session_id, deadline)
                renewer = asyncio.create_task(self._renew(session_id, token))
                try:
                    yield
                finally:
                    renewer.cancel()
                    await asyncio.gather(renewer, return_exceptions=True)
                    await asyncio.shield(self._release(session_id, token))
            finally:
                lock.release()
        finally:
            self._leave(session_id)

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

    async def _claim(self, session_id: str, deadline: float) -> str:
        token = str(uuid.uuid4())
        loop = asyncio.get_running_loop()
        while True:
            now = utcnow()
            async with self._db.write() as db:
                claimed = await db.execute(
                    update(ChatSession)
                    .where(
                        ChatSession.id == session_id,
                        or_(ChatSession.lease_token.is_(None), ChatSession.lease_expires_at < now),
                    )
                    .values(lease_token=token, lease_expires_at=now + self._lease, updated_at=ChatSession.updated_at)
                )
                if claimed.rowcount == 1:  # type: ignore[attr-defined]
                    return token
                if not await db.scalar(select(exists().where(ChatSession.id == session_id))):
                    raise SessionNotFound(f"No chat session with id {session_id!r}.")
            if loop.time() + self._poll_seconds > deadline:
                raise self._busy()
            await asyncio.sleep(self._poll_seconds)

    async def _renew(self, session_id: str, token: str) -> None:
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            async with self._db.write() as db:
                await db.execute(
                    update(ChatSession)
                    .where(and_(ChatSession.id == session_id, ChatSession.lease_token == token))
                    .values(lease_expires_at=utcnow() + self._lease, updated_at=ChatSession.updated_at)
                )

    async def _release(self, session_id: str, token: str) -> None:
        async with self._db.write() as db:
            await db.execute(
                update(ChatSession)
                .where(and_(ChatSession.id == session_id, ChatSession.lease_token == token))
                .values(lease_token=None, lease_expires_at=None, updated_at=ChatSession.updated_at)
            )
