"""The chat view: history, a text box whose reply streams in, and push-to-talk (static/chat.js)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sse_starlette import EventSourceResponse

from webapp.deps import RuntimeDep
from webapp.http.sse import turn_events
from webapp.pages.rendering import BrowserDep, render, templates, validated
from webapp.schemas import MessageCreate, TurnRead
from webapp.services import accounts, messages, sessions, turns

router = APIRouter(include_in_schema=False)
TITLE_HEADER = "X-Session-Title"


@router.get("/sessions/{session_id}")
async def chat_page(session_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    owner_id = principal.user_id
    session = await sessions.get(runtime, owner_id=owner_id, session_id=session_id)
    return render(
        request,
        runtime,
        "chat.html",
        user=await accounts.me(runtime, user_id=owner_id),
        agent_name=session.agent_name,
        session=session,
        messages=await messages.whole_history(runtime, owner_id=owner_id, session_id=session_id),
    )


@router.get("/sessions/{session_id}/messages")
async def history_fragment(session_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    owner_id = principal.user_id
    session = await sessions.get(runtime, owner_id=owner_id, session_id=session_id)
    history = await messages.whole_history(runtime, owner_id=owner_id, session_id=session_id)
    response = render(request, runtime, "_history.html", agent_name=session.agent_name, messages=history)
    # A voice turn's first message names the session; chat.js refreshes the history then, and the breadcrumb from
    # this header (percent-encoded: header values are Latin-1).
    response.headers[TITLE_HEADER] = quote(session.title, safe="")
    return response


def _messages_html(request: Request, agent_name: str, *shown: Any) -> str:
    template = templates.get_template("_history.html")
    return template.render(request=request, agent_name=agent_name, messages=shown)


@router.post("/sessions/{session_id}/send")
async def send_message(session_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    """Like the API's streamed send, but `done` and `error` carry the stored messages as HTML."""
    owner_id = principal.user_id
    data = validated(MessageCreate, {"content": str((await request.form()).get("content", ""))})
    before = await sessions.get(runtime, owner_id=owner_id, session_id=session_id)
    turn = turns.send(runtime, owner_id=owner_id, session_id=session_id, content=data.content, stream=True)
    await turn.user_message()  # errors before anything is stored keep their own status (404, 409)
    title = None
    if before.message_count == 0:  # the first message names the session: the page's breadcrumb shows it
        title = (await sessions.get(runtime, owner_id=owner_id, session_id=session_id)).title

    def as_html(done: TurnRead) -> dict[str, str | None]:
        html = _messages_html(request, before.agent_name, done.user_message, done.assistant_message)
        return {"html": html, "title": title}

    return EventSourceResponse(turn_events(turn.events(), done=as_html), ping=15)
