"""The turns under way in this process that a client may stop (barge-in, the stop button).

A turn registers while it runs; stopping one sets its `requested` event, which the turn engine and the voice pipeline
watch, and waits for its `finished` event, set once the turn has stored what it had and freed its session.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(eq=False)
class Stop:
    session_id: str
    voice_turn_id: str | None = None
    requested: asyncio.Event = field(default_factory=asyncio.Event)
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class Stops:
    def __init__(self) -> None:
        self._running: set[Stop] = set()

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

    @staticmethod
    async def stop(found: list[Stop], *, grace_seconds: float = 10.0) -> None:
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
