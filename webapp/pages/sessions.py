"""An agent's chats: list, start, rename, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import RedirectResponse, Response

from webapp.deps import RuntimeDep
from webapp.pages.rendering import BrowserDep, render, validated
from webapp.schemas import SessionUpdate
from webapp.services import accounts, agents, sessions

router = APIRouter(include_in_schema=False)


@router.get("/agents/{agent_id}")
async def sessions_page(agent_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    owner_id = principal.user_id
    agent = await agents.get(runtime, owner_id=owner_id, agent_id=agent_id)
    chats = await sessions.list_sessions(runtime, owner_id=owner_id, agent_id=agent_id, limit=100, cursor=None)
    user = await accounts.me(runtime, user_id=owner_id)
    return render(request, runtime, "sessions.html", user=user, agent=agent, sessions=chats.items)


@router.post("/agents/{agent_id}/sessions")
async def start_session(agent_id: str, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    chat = await sessions.create(runtime, owner_id=principal.user_id, agent_id=agent_id)
    return RedirectResponse(f"/sessions/{chat.id}", status_code=303)


@router.post("/sessions/{session_id}/rename")
async def rename_session(
    session_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: BrowserDep,
    hx_prompt: Annotated[str, Header()] = "",
) -> Response:
    title = validated(SessionUpdate, {"title": hx_prompt}).title
    session = await sessions.rename(runtime, owner_id=principal.user_id, session_id=session_id, title=title)
    return render(request, runtime, "_session.html", session=session)


@router.post("/sessions/{session_id}/delete")
async def delete_session(session_id: str, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    await sessions.delete_session(runtime, owner_id=principal.user_id, session_id=session_id)
    return Response("")
