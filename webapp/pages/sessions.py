"""An agent's chats: list (with the last 30 days' activity), start, rename, delete.

Rename and delete answer fragments for two places: the agent's page (`_session.html`, the default) and the chat
page's sidebar (`?view=sidebar`: `_sidebar_item.html`; `current=true` when it is the chat on screen).
"""

from __future__ import annotations

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Request
from fastapi.responses import RedirectResponse, Response

from webapp.deps import RuntimeDep
from webapp.pages.rendering import BrowserDep, render, validated
from webapp.schemas import SessionUpdate
from webapp.services import accounts, agents, sessions, stats

router = APIRouter(include_in_schema=False)


@router.get("/agents/{agent_id}")
async def sessions_page(agent_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    owner_id = principal.user_id
    agent = await agents.get(runtime, owner_id=owner_id, agent_id=agent_id)
    chats = await sessions.list_sessions(runtime, owner_id=owner_id, agent_id=agent_id, limit=100, cursor=None)
    user = await accounts.me(runtime, user_id=owner_id)
    activity = await stats.daily_activity(runtime, owner_id=owner_id, agent_id=agent_id)
    return render(request, runtime, "sessions.html", user=user, agent=agent, sessions=chats.items, activity=activity)


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
    view: Literal["list", "sidebar"] = "list",
    current: bool = False,
) -> Response:
    title = validated(SessionUpdate, {"title": hx_prompt}).title
    session = await sessions.rename(runtime, owner_id=principal.user_id, session_id=session_id, title=title)
    if view == "sidebar":  # the chat on screen also gets its new title in the breadcrumb and the window's title
        return render(request, runtime, "_sidebar_item.html", chat=session, current=current, renamed=True)
    return render(request, runtime, "_session.html", session=session)


CHAT_SWAP = {"target": "#chat-layout", "select": "#chat-layout", "swap": "outerHTML show:window:top"}
"""How the sidebar's links put another chat on screen (htmx): the page's chat area, swapped in place."""


@router.post("/sessions/{session_id}/delete")
async def delete_session(
    session_id: str,
    runtime: RuntimeDep,
    principal: BrowserDep,
    view: Literal["list", "sidebar"] = "list",
    current: bool = False,
) -> Response:
    """The chat's row goes (an empty fragment); the chat on screen is replaced by the agent's most recently active
    other chat, or its page when there is none (`HX-Location`: no reload)."""
    owner_id = principal.user_id
    session = await sessions.get(runtime, owner_id=owner_id, session_id=session_id)
    await sessions.delete_session(runtime, owner_id=owner_id, session_id=session_id)
    if view != "sidebar" or not current:
        return Response("")
    rest = await sessions.list_sessions(runtime, owner_id=owner_id, agent_id=session.agent_id, limit=1, cursor=None)
    if rest.items:
        location = {"path": f"/sessions/{rest.items[0].id}", **CHAT_SWAP}
    else:
        location = {"path": f"/agents/{session.agent_id}", "target": "main", "select": "main", "swap": "outerHTML"}
    return Response("", headers={"HX-Location": json.dumps(location)})
