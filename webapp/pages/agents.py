"""The agents screen: list, create, edit, delete (HTMX fragments from the same templates as the page)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from webapp.deps import DbDep, RuntimeDep
from webapp.errors import ValidationFailed
from webapp.media import remove_session_media
from webapp.pages.rendering import BrowserDep, render
from webapp.schemas import AgentCreate, AgentUpdate
from webapp.services import accounts, agents

router = APIRouter(include_in_schema=False)


def _form_fields(form: Any) -> dict[str, str | None]:
    fields: dict[str, str | None] = {key: str(form.get(key, "")) for key in ("name", "prompt", "model", "voice")}
    for optional in ("model", "voice"):  # left blank: the server's default
        fields[optional] = (fields[optional] or "").strip() or None
    return fields


@router.get("/")
async def agents_page(request: Request, runtime: RuntimeDep, principal: BrowserDep, db: DbDep) -> Response:
    user = await accounts.get_user(db=db, user_id=principal.user_id)
    items, _ = await agents.list_agents(db=db, owner_id=principal.user_id, limit=100, cursor=None)
    voices = await agents.list_voices(provider=runtime.provider)
    return render(
        request,
        runtime,
        "agents.html",
        user=user,
        agents=await agents.read_agents(agents=items, provider=runtime.provider),
        voices=voices,
        default_model=runtime.settings.chat_model,
        default_voice=voices.default,
    )


@router.post("/agents")
async def create_agent(request: Request, runtime: RuntimeDep, principal: BrowserDep, db: DbDep) -> Response:
    try:
        data = AgentCreate.model_validate(_form_fields(await request.form()))
    except ValidationError as exc:
        raise ValidationFailed.from_errors(exc.errors()) from None
    agent = await agents.create_agent(db=db, settings=runtime.settings, owner_id=principal.user_id, data=data)
    return render(
        request, runtime, "_agent.html", agent=await agents.read_agent(agent=agent, provider=runtime.provider)
    )


@router.get("/agents/{agent_id}/{view}")
async def agent_fragment(
    agent_id: str,
    view: Literal["item", "edit"],
    request: Request,
    runtime: RuntimeDep,
    principal: BrowserDep,
    db: DbDep,
) -> Response:
    """One agent as its list item, or as the form that edits it in place."""
    agent = await agents.get_agent(db=db, owner_id=principal.user_id, agent_id=agent_id)
    shown = await agents.read_agent(agent=agent, provider=runtime.provider)
    if view == "item":
        return render(request, runtime, "_agent.html", agent=shown)
    voices = await agents.list_voices(provider=runtime.provider)
    return render(request, runtime, "_agent_edit.html", agent=shown, voices=voices)


@router.post("/agents/{agent_id}")
async def update_agent(
    agent_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep, db: DbDep
) -> Response:
    agent = await agents.get_agent(db=db, owner_id=principal.user_id, agent_id=agent_id)
    try:
        data = AgentUpdate.model_validate(_form_fields(await request.form()))
    except ValidationError as exc:
        raise ValidationFailed.from_errors(exc.errors()) from None
    agent = await agents.update_agent(db=db, settings=runtime.settings, agent=agent, data=data)
    return render(
        request, runtime, "_agent.html", agent=await agents.read_agent(agent=agent, provider=runtime.provider)
    )


@router.post("/agents/{agent_id}/delete")
async def delete_agent(agent_id: str, runtime: RuntimeDep, principal: BrowserDep, db: DbDep) -> Response:
    agent = await agents.get_agent(db=db, owner_id=principal.user_id, agent_id=agent_id)
    session_ids = await agents.delete_agent(db=db, agent=agent)
    await db.commit()
    await remove_session_media(runtime.settings, session_ids)
    return Response("")  # swapped in place of the item: it disappears
