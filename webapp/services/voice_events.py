"""Live progress of voice turns: an in-process broker, and a follower that also sees other workers' progress.

The pipeline publishes two things: the turn's stored state after each change (a stage, the transcript, each spoken
segment, the end) and the reply's text pieces as they arrive. A follower turns the differences between successive
states into events, so what it says is the same whether the states come from this process or from re-reading the
database (a turn running in another worker): only the text pieces are this process's alone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

from webapp.errors import VoiceTurnNotFound
from webapp.schemas import ErrorInfo, VoiceSegmentRead, VoiceTurnRead
from webapp.services.relay import PgRelay

STAGE_ORDER = {
    "queued": 0,
    "transcribing": 1,
    "thinking": 2,
    "speaking": 3,
    "done": 4,
    "failed": 4,
    "cancelled": 4,
}
TERMINAL = 4
UNFINISHED = tuple(name for name, rank in STAGE_ORDER.items() if rank < TERMINAL)
"""The statuses of a turn still under way: listed, not negated, so the (status, heartbeat_at) index serves recovery."""


def finished(turn: VoiceTurnRead) -> bool:
    return STAGE_ORDER[turn.status] == TERMINAL


@dataclass(frozen=True)
class Stage:
    """The turn reached a new stage (or, first of all, its state when the follower arrived)."""

    turn: VoiceTurnRead


@dataclass(frozen=True)
class Transcript:
    turn: VoiceTurnRead


@dataclass(frozen=True)
class Token:
    delta: str


@dataclass(frozen=True)
class Audio:
    segment: VoiceSegmentRead


@dataclass(frozen=True)
class End:
    """Always the last event: `turn.status` is `done`, `failed` or `cancelled`."""

    turn: VoiceTurnRead


VoiceEvent = Stage | Transcript | Token | Audio | End
Item = VoiceTurnRead | str | None
"""What a follower's queue gets: a state, a piece of the reply, or None: "changed elsewhere, read it again"."""
SAFETY_POLL_SECONDS = 5.0
"""How often a follower re-reads its turn even while changes arrive live (a message lost in transit)."""


class TurnBroker:
    """Fan-out of turn states and reply pieces to listeners in this process, and through `relay` (PostgreSQL) to and
    from every other process. Also wakes this process's voice runner when a job is waiting."""

    def __init__(self) -> None:
        self._listeners: defaultdict[str, set[asyncio.Queue[Item]]] = defaultdict(set)
        self.relay: PgRelay | None = None
        self._job_waiting: asyncio.Event | None = None

    @property
    def live(self) -> bool:
        """Whether other processes' changes arrive as they happen (else followers re-read the database)."""
        return self.relay is not None and self.relay.connected

    def publish(self, turn: VoiceTurnRead) -> None:
        """The turn's state, just committed."""
        for queue in self._listeners.get(turn.id, ()):
            queue.put_nowait(turn)
        if self.relay is not None:
            self.relay.send("state", turn.id)

    def publish_gone(self, turn_id: str) -> None:
        """The turn was deleted (with its session): its followers read it again, find it gone, and end."""
        for queue in self._listeners.get(turn_id, ()):
            queue.put_nowait(None)
        if self.relay is not None:
            self.relay.send("state", turn_id)

    def publish_token(self, turn_id: str, delta: str) -> None:
        for queue in self._listeners.get(turn_id, ()):
            queue.put_nowait(delta)
        if self.relay is not None:
            self.relay.send("token", turn_id, delta)

    def job_queued(self, turn_id: str) -> None:
        """A voice turn waits for a runner to claim it (in this process or another)."""
        self._wake()
        if self.relay is not None:
            self.relay.send("job", turn_id)

    async def wait_for_job(self, seconds: float) -> None:
        """Until a job is announced, or `seconds` have passed."""
        if self._job_waiting is None:
            self._job_waiting = asyncio.Event()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._job_waiting.wait(), seconds)
        self._job_waiting.clear()

    def received(self, kind: str, turn_id: str, text: str) -> None:
        """A message from another process (`PgRelay`): its followers here re-read the turn, or get the piece."""
        if kind == "job":
            self._wake()
            return
        item: Item = text if kind == "token" else None
        for queue in self._listeners.get(turn_id, ()):
            queue.put_nowait(item)

    def reconnected(self) -> None:
        """Messages may have been missed while the relay was down: every follower re-reads its turn."""
        for queues in self._listeners.values():
            for queue in queues:
                queue.put_nowait(None)
        self._wake()

    def _wake(self) -> None:
        if self._job_waiting is not None:
            self._job_waiting.set()

    @contextlib.contextmanager
    def listen(self, turn_id: str) -> Iterator[asyncio.Queue[Item]]:
        queue: asyncio.Queue[Item] = asyncio.Queue()
        self._listeners[turn_id].add(queue)
        try:
            yield queue
        finally:
            self._listeners[turn_id].discard(queue)
            if not self._listeners[turn_id]:
                del self._listeners[turn_id]


class _Progress:
    """What a follower has told so far, and the events a newer state adds to it."""

    def __init__(self, first: VoiceTurnRead) -> None:
        self.current = first
        self.rank = STAGE_ORDER[first.status]
        self.transcript_told = False
        self.segments_told = 0

    def catch_up(self, turn: VoiceTurnRead, *, first: bool = False) -> list[VoiceEvent]:
        events: list[VoiceEvent] = []
        rank = STAGE_ORDER[turn.status]
        if first or TERMINAL > rank > self.rank:
            events.append(Stage(turn))
        if turn.transcript is not None and not self.transcript_told:
            self.transcript_told = True
            events.append(Transcript(turn))
        events.extend(Audio(segment) for segment in turn.segments[self.segments_told :])
        self.segments_told = max(self.segments_told, len(turn.segments))
        if rank == TERMINAL:
            events.append(End(turn))
        if rank >= self.rank:
            self.current, self.rank = turn, rank
        return events


async def follow(
    broker: TurnBroker,
    turn_id: str,
    load: Callable[[], Awaitable[VoiceTurnRead]],
    *,
    poll_seconds: float = 1.0,
) -> AsyncIterator[VoiceEvent]:
    """The turn's current state as a `Stage`, its transcript and segments so far, then what follows, ending with `End`.

    States published in this process arrive at once; when the turn runs in another worker process, re-reading the
    database every `poll_seconds` picks up its progress. A turn deleted meanwhile (with its session) still ends its
    followers' streams: with a `failed` state saying so.
    """
    with broker.listen(turn_id) as queue:  # listen before reading, so nothing slips between the two
        first = await load()
        progress = _Progress(first)
        for event in progress.catch_up(first, first=True):
            yield event
        while progress.rank < TERMINAL:
            try:
                item = await asyncio.wait_for(queue.get(), SAFETY_POLL_SECONDS if broker.live else poll_seconds)
            except TimeoutError:
                item = None
            if isinstance(item, str):
                yield Token(item)
                continue
            if item is None:  # changed in another process, or time to look
                try:
                    item = await load()
                except VoiceTurnNotFound as gone:
                    error = ErrorInfo(code=gone.code, detail="The voice turn was deleted with its session.")
                    yield End(progress.current.model_copy(update={"status": "failed", "error": error}))
                    return
            for event in progress.catch_up(item):
                yield event
