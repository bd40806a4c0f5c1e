"""The turns under way in this process that a client may stop (barge-in, the stop button).

A turn registers while it runs; stopping one sets its `requested` event, which the turn engine and the voice pipeline
watch, and waits for its `finished` event, set once the turn has stored what it had and freed its session. A turn
running in another process is asked to stop through `send` (the PostgreSQL relay), and answers once it has.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Stop:
    session_id: str
    voice_turn_id: str | None = None
    requested: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


Send = Callable[[str, str], None]
"""Sends (kind, key) to every other process: `PgRelay.send`."""
ACK_SECONDS = 3.0
"""How long a stop asked of the other processes waits for one of them to say it stopped the turn."""


class Stops:
    def __init__(self) -> None:
        self._running: set[Stop] = set()
        self.send: Send | None = None
        """Set when other processes may run turns (PostgreSQL): stops are then asked of them too."""
        self._acks: dict[str, asyncio.Event] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @contextlib.contextmanager
    def track(self, session_id: str, *, voice_turn_id: str | None = None) -> Iterator[Stop]:
        stop = Stop(session_id, voice_turn_id)
        self._running.add(stop)
        try:
            yield stop
        finally:
            self._running.discard(stop)
            stop.finished.set()

    def find(self, *, session_id: str | None = None, voice_turn_id: str | None = None) -> list[Stop]:
        return [
            stop
            for stop in self._running
            if (session_id is None or stop.session_id == session_id)
            and (voice_turn_id is None or stop.voice_turn_id == voice_turn_id)
        ]

    async def stop_anywhere(
        self, *, session_id: str | None = None, voice_turn_id: str | None = None, elsewhere: bool = True
    ) -> bool:
        """Stop the matching turns in this process, or else (when one may run `elsewhere`) ask the others; whether
        any turn was stopped."""
        found = self.find(session_id=session_id, voice_turn_id=voice_turn_id)
        if found:
            await stop_all(found)
            return True
        if self.send is None or not elsewhere:
            return False
        key = f"turn:{voice_turn_id}" if voice_turn_id else f"session:{session_id}"
        acked = self._acks.setdefault(key, asyncio.Event())
        try:
            self.send("stop", key)
            async with asyncio.timeout(ACK_SECONDS):
                await acked.wait()
            return True
        except TimeoutError:
            return False
        finally:
            self._acks.pop(key, None)

    def received(self, kind: str, key: str) -> None:
        """A message from another process: a stop asked of this one, or another's answer that it stopped one."""
        if kind == "stopped":
            if (acked := self._acks.get(key)) is not None:
                acked.set()
            return
        what, _, ident = key.partition(":")
        found = self.find(voice_turn_id=ident) if what == "turn" else self.find(session_id=ident)
        if found:
            task = asyncio.create_task(self._stop_and_answer(found, key))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _stop_and_answer(self, found: list[Stop], key: str) -> None:
        await stop_all(found)
        if self.send is not None:
            self.send("stopped", key)


async def stop_all(found: list[Stop], *, grace_seconds: float = 10.0) -> None:
    """Ask each to stop and wait until it has (a turn stops within one database write of being asked)."""
    for stop in found:
        stop.requested.set()
    waits = [asyncio.ensure_future(stop.finished.wait()) for stop in found]
    _, pending = await asyncio.wait(waits, timeout=grace_seconds)
    for wait in pending:
        wait.cancel()


async def finishes_first(work: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Wait for `work` or `stop`, whichever comes first; True when the work finished (or failed) first."""
    if stop.is_set():
        return False
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    return work.done()
