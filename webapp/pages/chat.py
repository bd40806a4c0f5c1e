"""The chat view: history, a text box whose reply streams in, and push-to-talk (static/chat.js)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from sse_starlette import EventSourceResponse

from webapp.deps import DbDep, RuntimeDep
from webapp.errors import ValidationFailed
from webapp.http.sse import turn_events
from webapp.models import ChatSession
from webapp.pages.rendering import BrowserDep, render, templates
from webapp.schemas import MessageCreate, MessageRead, SessionRead, TurnRead
from webapp.services import accounts, chats, sessions

router = APIRouter(include_in_schema=False)
HISTORY_LIMIT = 100
TITLE_HEADER = "X-Session-Title"


async def _history(db: DbDep, chat: ChatSession) -> list[MessageRead]:
    messages: list[MessageRead] = []
    cursor = None
    while True:  # the whole conversation, page by page
        page, cursor = await chats.list_messages(db=db, chat=chat, limit=HISTORY_LIMIT, cursor=cursor)
        messages += page
        if cursor is None:
            return messages


@router.get("/sessions/{session_id}")
async def chat_page(
    session_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep, db: DbDep
) -> Response:
    chat, agent = await sessions.get_session(db=db, owner_id=principal.user_id, session_id=session_id)
    user = await accounts.get_user(db=db, user_id=principal.user_id)
    return render(
        request,
        runtime,
        "chat.html",
        user=user,
        agent=agent,
        agent_name=agent.name,
        session=SessionRead.of(chat, agent_name=agent.name),
        messages=await _history(db, chat),
    )


@router.get("/sessions/{session_id}/messages")
async def history_fragment(
    session_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep, db: DbDep
) -> Response:
    chat, agent = await sessions.get_session(db=db, owner_id=principal.user_id, session_id=session_id)
    response = render(request, runtime, "_history.html", agent_name=agent.name, messages=await _history(db, chat))
    # A voice turn's first message names the session; chat.js refreshes the history then, and the breadcrumb from
    # this header (percent-encoded: header values are Latin-1).
    response.headers[TITLE_HEADER] = quote(SessionRead.of(chat, agent_name=agent.name).title, safe="")
    return response


def _messages_html(request: Request, agent_name: str, *messages: Any) -> str:
    template = templates.get_template("_history.html")
    return template.render(request=request, agent_name=agent_name, messages=messages)


@router.post("/sessions/{session_id}/send")
async def send_message(session_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    """Like the API's streamed send, but `done` and `error` carry the stored messages as HTML."""
    form = await request.form()
    try:
        data = MessageCreate(content=str(form.get("content", "")))
    except ValidationError as exc:
        raise ValidationFailed.from_errors(exc.errors()) from None
    runtime.message_limiter.check(principal.user_id)
    async with runtime.db.read() as db:
        chat, agent = await sessions.get_session(db=db, owner_id=principal.user_id, session_id=session_id)
    untitled = chat.title is None
    turn = chats.start_turn(
        runtime, owner_id=principal.user_id, session_id=session_id, content=data.content, stream=True
    )
    await turn.user_message()  # errors before anything is stored keep their own status (404, 409)
    title = None
    if untitled:  # storing the first message named the session: the page's breadcrumb shows the new title
        async with runtime.db.read() as db:
            chat, _ = await sessions.get_session(db=db, owner_id=principal.user_id, session_id=session_id)
        title = SessionRead.of(chat, agent_name=agent.name).title

    def as_html(done: TurnRead) -> dict[str, str | None]:
        html = _messages_html(request, agent.name, done.user_message, done.assistant_message)
        return {"html": html, "title": title}

    return EventSourceResponse(turn_events(turn.events(), done=as_html), ping=15)
