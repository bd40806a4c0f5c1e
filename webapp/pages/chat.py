"""The chat view: history, a text box whose reply streams in, and push-to-talk (static/chat.js).

Typed and spoken turns both come through here, as server-sent events that end with `done`, `cancelled` or `error`
(`failed` for voice), whose data carries the turn's stored messages as HTML (`_history.html`) and the session's
title if the turn named it. A spoken reply's sentences arrive as `audio` events, played back to back by chat.js.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup
from sse_starlette import EventSourceResponse

from webapp.deps import RuntimeDep
from webapp.errors import SessionNotFound
from webapp.http.sse import turn_events, voice_page_events
from webapp.http.uploads import audio_receiver
from webapp.pages.rendering import BrowserDep, render, templates, validated
from webapp.schemas import MessageCreate, MessageRead, TurnRead, VoiceTurnRead
from webapp.services import accounts, messages, sessions, turns, voice
from webapp.services.turns import ErrorEvent
from webapp.services.voice_events import STAGE_ORDER, TERMINAL

router = APIRouter(include_in_schema=False)

VOICE_STAGES = sorted((name for name, rank in STAGE_ORDER.items() if rank < TERMINAL), key=STAGE_ORDER.__getitem__)
"""A voice turn's stages before it ends, in order: the page's `data-stages`, which chat.js shows as they come."""

SIDEBAR_CHATS = 50
"""How many of the agent's chats the sidebar lists (most recently active first); the agent's page has them all."""


@router.get("/sessions/{session_id}")
async def chat_page(session_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    owner_id = principal.user_id
    session = await sessions.get(runtime, owner_id=owner_id, session_id=session_id)
    chats = await sessions.list_sessions(
        runtime, owner_id=owner_id, agent_id=session.agent_id, limit=SIDEBAR_CHATS, cursor=None
    )
    shown = await messages.whole_history(runtime, owner_id=owner_id, session_id=session_id)
    timings = await messages.voice_timings(runtime, owner_id=owner_id, session_id=session_id)
    # Rendering a long history's markdown is CPU work (about 1 ms a reply): off the event loop.
    history = await asyncio.to_thread(_messages_html, request, session.agent_name, shown, timings)
    return render(
        request,
        runtime,
        "chat.html",
        user=await accounts.me(runtime, user_id=owner_id),
        agent_name=session.agent_name,
        session=session,
        chats=chats.items,
        more_chats=chats.next_cursor is not None,
        history=Markup(history),
        stages=VOICE_STAGES,
    )


def _messages_html(
    request: Request, agent_name: str, shown: Iterable[MessageRead], timings: dict[str, dict[str, int]] | None = None
) -> str:
    """Messages as the history shows them; `timings`: the stage bars' `timings_ms`, by assistant message id."""
    template = templates.get_template("_history.html")
    return template.render(request=request, agent_name=agent_name, messages=list(shown), timings=timings or {})


@router.post("/sessions/{session_id}/send")
async def send_message(session_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    """Like the API's streamed send, but `done` and `error` carry the stored messages as HTML."""
    owner_id = principal.user_id
    data = validated(MessageCreate, {"content": str((await request.form()).get("content", ""))})
    turn = await turns.send(runtime, owner_id=owner_id, session_id=session_id, content=data.content, stream=True)
    question = await turn.user_message()  # errors before anything is stored keep their own status (404, 409)
    session = await sessions.get(runtime, owner_id=owner_id, session_id=session_id)
    title = session.title  # the first message names the session: the page's breadcrumb follows

    def as_html(done: TurnRead) -> dict[str, str | None]:
        html = _messages_html(request, session.agent_name, (done.user_message, done.assistant_message))
        return {"html": html, "title": title}

    def failed_as_html(failed: ErrorEvent) -> dict[str, str | None]:
        if failed.turn is not None:  # the failed reply is stored with the question
            return as_html(failed.turn)
        return {"html": _messages_html(request, session.agent_name, [question]), "title": title}

    return EventSourceResponse(turn_events(turn.events(), done=as_html, error=failed_as_html), ping=15)


@router.post("/sessions/{session_id}/voice", status_code=202)
async def send_recording(session_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    """The API's voice upload (a multipart `audio` field); `Location` names the stream of the turn's stages."""
    receive = audio_receiver(request, max_bytes=runtime.settings.max_audio_bytes)
    turn = await voice.accept(runtime, owner_id=principal.user_id, session_id=session_id, receive=receive)
    return Response(status_code=202, headers={"Location": f"/voice-turns/{turn.id}/events"})


@router.get("/voice-turns/{turn_id}/events")
async def follow_recording(turn_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    """The voice turn as server-sent events (an `EventSource`, which reconnects): `status`, `transcript`, `token` and
    `audio` as they come, then `done`, `cancelled` or `failed` carrying the stored messages as HTML, the session's
    title if the turn named it, and the reply's audio URL."""
    owner_id = principal.user_id
    await voice.get_turn(runtime, owner_id=owner_id, turn_id=turn_id)  # a 404 before the stream starts

    async def finished(turn: VoiceTurnRead) -> dict[str, Any]:
        try:
            session = await sessions.get(runtime, owner_id=owner_id, session_id=turn.session_id)
        except SessionNotFound:  # deleted while the turn ran: nothing left to show
            return {"html": "", "title": None, "reply_audio_url": None}
        ids = (turn.user_message_id, turn.assistant_message_id)
        shown = await messages.get_many(runtime, owner_id=owner_id, ids=ids)
        timings = {turn.assistant_message_id: turn.timings_ms} if turn.assistant_message_id else {}
        html = _messages_html(request, session.agent_name, shown, timings)  # the title: the turn may have named it
        return {"html": html, "title": session.title, "reply_audio_url": turn.reply_audio_url}

    events = voice.follow_turn(runtime, owner_id=owner_id, turn_id=turn_id)
    return EventSourceResponse(voice_page_events(events, finished=finished), ping=15)


@router.post("/sessions/{session_id}/cancel", status_code=204)
async def stop_turn(session_id: str, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    """The stop button and barge-in: the API's session cancel."""
    await turns.stop(runtime, owner_id=principal.user_id, session_id=session_id)
    return Response(status_code=204)
