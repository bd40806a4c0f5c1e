"""Live progress of voice turns: an in-process broker, and a follower that also sees other workers' progress."""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

from webapp.errors import VoiceTurnNotFound
from webapp.schemas import ErrorInfo, VoiceTurnRead

STAGE_ORDER = {"queued": 0, "transcribing": 1, "thinking": 2, "speaking": 3, "done": 4, "failed": 4}
TERMINAL = 4


class TurnBroker:
    """Fan-out of turn snapshots to listeners in this process."""

    def __init__(self) -> None:
        self._listeners: defaultdict[str, set[asyncio.Queue[VoiceTurnRead]]] = defaultdict(set)

    def publish(self, turn: VoiceTurnRead) -> None:
        for queue in self._listeners.get(turn.id, ()):
            queue.put_nowait(turn)

    @contextlib.contextmanager
    def listen(self, turn_id: str) -> Iterator[asyncio.Queue[VoiceTurnRead]]:
        queue: asyncio.Queue[VoiceTurnRead] = asyncio.Queue()
        self._listeners[turn_id].add(queue)
        try:
            yield queue
        finally:
            self._listeners[turn_id].discard(queue)
            if not self._listeners[turn_id]:
                del self._listeners[turn_id]


async def follow(
    broker: TurnBroker,
    turn_id: str,
    load: Callable[[], Awaitable[VoiceTurnRead]],
    *,
    poll_seconds: float = 1.0,
) -> AsyncIterator[VoiceTurnRead]:
    """The turn's current state, then each later stage in order, ending after `done` or `failed`.

    Snapshots published in this process arrive at once; when the turn runs in another worker process, re-reading
    the database every `poll_seconds` picks up its progress. A turn deleted meanwhile (with its session) still ends
    its followers' streams: with a `failed` state saying so.
    """
    with broker.listen(turn_id) as queue:  # listen before reading, so no stage slips between the two
        current = await load()
        yield current
        reached = STAGE_ORDER[current.status]
        while reached < TERMINAL:
            try:
                snapshot = await asyncio.wait_for(queue.get(), timeout=poll_seconds)
            except TimeoutError:
                try:
                    snapshot = await load()
                except VoiceTurnNotFound as gone:
                    error = ErrorInfo(code=gone.code, detail="The voice turn was deleted with its session.")
                    yield current.model_copy(update={"status": "failed", "error": error})
                    return
            if STAGE_ORDER[snapshot.status] > reached:
                reached = STAGE_ORDER[snapshot.status]
                current = snapshot
                yield snapshot
