"""An agent's chats: list, start, rename, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from webapp.deps import DbDep, RuntimeDep
from webapp.errors import ValidationFailed
from webapp.media import remove_session_media
from webapp.pages.rendering import BrowserDep, render
from webapp.schemas import SessionUpdate
from webapp.services import accounts, agents, sessions

router = APIRouter(include_in_schema=False)


@router.get("/agents/{agent_id}")
async def sessions_page(
    agent_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep, db: DbDep
) -> Response:
    agent = await agents.get_agent(db=db, owner_id=principal.user_id, agent_id=agent_id)
    user = await accounts.get_user(db=db, user_id=principal.user_id)
    items, _ = await sessions.list_sessions(db=db, agent=agent, limit=100, cursor=None)
    return render(request, runtime, "sessions.html", user=user, agent=agent, sessions=items)


@router.post("/agents/{agent_id}/sessions")
async def start_session(agent_id: str, principal: BrowserDep, db: DbDep) -> Response:
    agent = await agents.get_agent(db=db, owner_id=principal.user_id, agent_id=agent_id)
    chat = await sessions.create_session(db=db, agent=agent, title=None)
    return RedirectResponse(f"/sessions/{chat.id}", status_code=303)


@router.post("/sessions/{session_id}/rename")
async def rename_session(
    session_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: BrowserDep,
    db: DbDep,
    hx_prompt: Annotated[str, Header()] = "",
) -> Response:
    chat, agent = await sessions.get_session(db=db, owner_id=principal.user_id, session_id=session_id)
    try:
        title = SessionUpdate(title=hx_prompt).title
    except ValidationError as exc:
        raise ValidationFailed.from_errors(exc.errors()) from None
    session = await sessions.rename_session(db=db, chat=chat, agent=agent, title=title)
    return render(request, runtime, "_session.html", session=session)


@router.post("/sessions/{session_id}/delete")
async def delete_session(session_id: str, runtime: RuntimeDep, principal: BrowserDep, db: DbDep) -> Response:
    chat, _ = await sessions.get_session(db=db, owner_id=principal.user_id, session_id=session_id)
    await sessions.delete_session(db=db, chat=chat)
    await db.commit()
    await remove_session_media(runtime.settings, [chat.id])
    return Response("")
