"""Turns as server-sent events: one renderer for the JSON API and the pages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from sse_starlette import ServerSentEvent

from webapp.errors import AppError
from webapp.schemas import TurnRead, VoiceTurnRead
from webapp.services.turns import DoneEvent, ErrorEvent, TokenEvent, TurnEvent
from webapp.services.voice_events import STAGE_ORDER, TERMINAL


def _event(name: str, data: Any) -> ServerSentEvent:
    return ServerSentEvent(json.dumps(data, ensure_ascii=False), event=name)


async def turn_events(
    events: AsyncIterator[TurnEvent],
    *,
    done: Callable[[TurnRead], Any],
    error: Callable[[ErrorEvent], dict[str, Any]] | None = None,
) -> AsyncIterator[ServerSentEvent]:
    """`token` events (`{"delta"}`), then `done` with `done(turn)` as its data, or `error` with a problem document
    (and `error(event)`'s fields: the page adds the stored messages)."""
    async for event in events:
        match event:
            case TokenEvent(delta=delta):
                yield _event("token", {"delta": delta})
            case DoneEvent(turn=turn):
                yield _event("done", done(turn))
            case ErrorEvent(error=exc):
                yield _event("error", exc.problem() | (error(event) if error else {}))


async def voice_turn_events(
    snapshots: AsyncIterator[VoiceTurnRead], *, finished: Callable[[VoiceTurnRead], Awaitable[dict[str, Any]]]
) -> AsyncIterator[ServerSentEvent]:
    """For the page: a `status` event (`{"id", "status"}`) per stage, then `done` with `await finished(turn)` as its
    data, or `failed` with the turn's problem document and those fields. (Not `error`: an `EventSource` fires that
    for a lost connection too.)"""
    async for turn in snapshots:
        if STAGE_ORDER[turn.status] < TERMINAL:
            yield _event("status", {"id": turn.id, "status": turn.status})
        elif turn.status == "done":
            yield _event("done", await finished(turn))
        else:
            failure = turn.error.as_error() if turn.error else AppError("The voice turn failed.")
            yield _event("failed", failure.problem() | await finished(turn))
