"""The agents screen: list, create, edit, delete (HTMX fragments from the same templates as the page)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response

from webapp.deps import RuntimeDep
from webapp.pages.rendering import BrowserDep, render, validated
from webapp.schemas import AgentCreate, AgentUpdate
from webapp.services import accounts, agents

router = APIRouter(include_in_schema=False)


def _form_fields(form: Any) -> dict[str, str | None]:
    fields: dict[str, str | None] = {key: str(form.get(key, "")) for key in ("name", "prompt", "model", "voice")}
    for optional in ("model", "voice"):  # left blank: the server's default
        fields[optional] = (fields[optional] or "").strip() or None
    return fields


@router.get("/")
async def agents_page(request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    owner_id = principal.user_id
    voices = await agents.voices(runtime)
    return render(
        request,
        runtime,
        "agents.html",
        user=await accounts.me(runtime, user_id=owner_id),
        agents=(await agents.list_agents(runtime, owner_id=owner_id, limit=100, cursor=None)).items,
        voices=voices,
        default_model=runtime.settings.chat_model,
        default_voice=voices.default,
    )


@router.post("/agents")
async def create_agent(request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    data = validated(AgentCreate, _form_fields(await request.form()))
    agent = await agents.create(runtime, owner_id=principal.user_id, data=data)
    return render(request, runtime, "_agent.html", agent=agent)


@router.get("/agents/{agent_id}/{view}")
async def agent_fragment(
    agent_id: str, view: Literal["item", "edit"], request: Request, runtime: RuntimeDep, principal: BrowserDep
) -> Response:
    """One agent as its list item, or as the form that edits it in place."""
    agent = await agents.get(runtime, owner_id=principal.user_id, agent_id=agent_id)
    if view == "item":
        return render(request, runtime, "_agent.html", agent=agent)
    return render(request, runtime, "_agent_edit.html", agent=agent, voices=await agents.voices(runtime))


@router.post("/agents/{agent_id}")
async def update_agent(agent_id: str, request: Request, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    data = validated(AgentUpdate, _form_fields(await request.form()))
    agent = await agents.update(runtime, owner_id=principal.user_id, agent_id=agent_id, data=data)
    return render(request, runtime, "_agent.html", agent=agent)


@router.post("/agents/{agent_id}/delete")
async def delete_agent(agent_id: str, runtime: RuntimeDep, principal: BrowserDep) -> Response:
    await agents.delete_agent(runtime, owner_id=principal.user_id, agent_id=agent_id)
    return Response("")  # swapped in place of the item: it disappears
