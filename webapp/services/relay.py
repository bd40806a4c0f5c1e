"""Messages between server processes over PostgreSQL `LISTEN/NOTIFY`: one connection per process, for both.

A message is small text: which turn changed, a piece of a reply, or "a voice job is waiting". State is never sent:
receivers read it from the database. The connection comes back after a failure with back-off; while it is down,
`connected` is false, and followers fall back to re-reading the database (see `voice_events.follow`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import Callable
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

log = logging.getLogger(__name__)
CHANNEL = "parley"
MAX_PAYLOAD = 7_000
"""PostgreSQL caps a notification's payload at 8,000 bytes: longer text is sent in pieces."""

Receiver = Callable[[str, str, str], None]
"""Called with (kind, turn id, text) for each message from another process."""


def asyncpg_dsn(database_url: str) -> str:
    """The libpq URL asyncpg takes, from SQLAlchemy's `postgresql+asyncpg://...`."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class PgRelay:
    def __init__(self, database_url: str, *, receive: Receiver, on_connect: Callable[[], None]) -> None:
        self.node = uuid.uuid4().hex[:12]
        """This process's name in messages: its own come back to it, and are ignored."""
        self.connected = False
        self._dsn = asyncpg_dsn(database_url)
        self._receive = receive
        self._on_connect = on_connect
        self._outbox: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pg-relay")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self.connected = False

    def send(self, kind: str, turn_id: str, text: str = "") -> None:
        """Queue a message for every other process (dropped while disconnected: they are re-reading meanwhile)."""
        if not self.connected:
            return
        for start in range(0, max(len(text), 1), MAX_PAYLOAD):
            self._outbox.put_nowait(f"{self.node}|{kind}|{turn_id}|{text[start : start + MAX_PAYLOAD]}")

    async def _run(self) -> None:
        delay = 0.1
        while True:
            connection: Any = None
            try:
                connection = await asyncpg.connect(self._dsn, timeout=5)
                lost = asyncio.Event()
                connection.add_termination_listener(functools.partial(_set, lost))
                await connection.add_listener(CHANNEL, self._heard)
                self.connected, delay = True, 0.1
                self._on_connect()  # anything missed while disconnected is read again by the followers
                await self._send_until(connection, lost)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a refused, dropped or failed connection: try again later
                if self.connected:
                    log.warning("lost the PostgreSQL notification connection (%s); reconnecting", exc)
            finally:
                self.connected = False
                if connection is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.shield(connection.close(timeout=1))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def _send_until(self, connection: Any, lost: asyncio.Event) -> None:
        gone = asyncio.ensure_future(lost.wait())
        try:
            while True:
                message = asyncio.ensure_future(self._outbox.get())
                await asyncio.wait({message, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not message.done():
                    message.cancel()
                    raise ConnectionError("the connection closed")
                await connection.execute("SELECT pg_notify($1, $2)", CHANNEL, message.result())
        finally:
            gone.cancel()

    def _heard(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        node, kind, turn_id, text = payload.split("|", 3)
        if node != self.node:
            self._receive(kind, turn_id, text)


def _set(event: asyncio.Event, _connection: Any) -> None:
    event.set()
