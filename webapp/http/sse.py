"""A chat turn as server-sent events: one renderer for the JSON API and the pages."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

from sse_starlette import ServerSentEvent

from webapp.schemas import TurnRead
from webapp.services.turns import DoneEvent, ErrorEvent, TokenEvent, TurnEvent


async def turn_events(
    events: AsyncIterator[TurnEvent], *, done: Callable[[TurnRead], Any]
) -> AsyncIterator[ServerSentEvent]:
    """`token` events (`{"delta"}`), then `done` with `done(turn)` as its data, or `error` with a problem document."""
    async for event in events:
        data: Any
        match event:
            case TokenEvent(delta=delta):
                name, data = "token", {"delta": delta}
            case DoneEvent(turn=turn):
                name, data = "done", done(turn)
            case ErrorEvent(error=error):
                name, data = "error", error.problem()
        yield ServerSentEvent(json.dumps(data, ensure_ascii=False), event=name)
