"""Turns as server-sent events: one renderer for the JSON API and the pages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sse_starlette import ServerSentEvent

from webapp.errors import AppError
from webapp.schemas import TurnRead, VoiceTurnRead
from webapp.services.turns import CancelledEvent, DoneEvent, ErrorEvent, TokenEvent, TurnEvent
from webapp.services.voice_events import Audio, End, Stage, Token, Transcript, VoiceEvent


def _event(name: str, data: Any) -> ServerSentEvent:
    return ServerSentEvent(json.dumps(data, ensure_ascii=False), event=name)


async def turn_events(
    events: AsyncIterator[TurnEvent],
    *,
    done: Callable[[TurnRead], Any],
    error: Callable[[ErrorEvent], dict[str, Any]] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """`token` events (`{"delta"}`), then `done` (or `cancelled`, when the turn was stopped) with `done(turn)` as its
    data, or `error` with a problem document (and `error(event)`'s fields: the page adds the stored messages)."""
    async for event in events:
        match event:
            case TokenEvent(delta=delta):
                yield _event("token", {"delta": delta})
            case DoneEvent(turn=turn):
                yield _event("done", done(turn))
            case CancelledEvent(turn=turn):
                yield _event("cancelled", done(turn))
            case ErrorEvent(error=exc):
                yield _event("error", exc.problem() | (error(event) if error else {}))


def _voice_event(event: VoiceEvent) -> ServerSentEvent:
    match event:
        case Stage(turn=turn):
            return ServerSentEvent(turn.model_dump_json(), event="status")
        case Transcript(turn=turn):
            return ServerSentEvent(turn.model_dump_json(), event="transcript")
        case Token(delta=delta):
            return _event("token", {"delta": delta})
        case Audio(segment=segment):
            return ServerSentEvent(segment.model_dump_json(), event="audio")
        case End(turn=turn):
            return ServerSentEvent(turn.model_dump_json(), event=turn.status)


async def voice_events(events: AsyncIterator[VoiceEvent]) -> AsyncIterator[ServerSentEvent]:
    """For the API: `status` and `transcript` carry the whole voice turn, `token` `{"delta"}`, `audio` a segment
    (`{"index", "url", "text"}`), and the last event, named by how the turn ended, the whole voice turn again."""
    async for event in events:
        yield _voice_event(event)


async def voice_page_events(
    events: AsyncIterator[VoiceEvent], *, finished: Callable[[VoiceTurnRead], Awaitable[dict[str, Any]]]
) -> AsyncIterator[ServerSentEvent]:
    """For the page: `status` (`{"id", "status"}`), `transcript` (`{"text"}`), `token` and `audio` as for the API,
    then `done` or `cancelled` with `await finished(turn)` as its data, or `failed` with the turn's problem document
    and those fields. (Not `error`: an `EventSource` fires that for a lost connection too.)"""
    async for event in events:
        match event:
            case Stage(turn=turn):
                yield _event("status", {"id": turn.id, "status": turn.status})
            case Transcript(turn=turn):
                yield _event("transcript", {"text": turn.transcript})
            case End(turn=turn) if turn.status == "failed":
                failure = turn.error.as_error() if turn.error else AppError("The voice turn failed.")
                yield _event("failed", failure.problem() | await finished(turn))
            case End(turn=turn):
                yield _event(turn.status, await finished(turn))
            case _:
                yield _voice_event(event)
