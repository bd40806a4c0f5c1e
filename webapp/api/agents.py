"""Agents and the sessions under them."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from webapp.deps import AUTHENTICATED, PageDep, PrincipalDep, RuntimeDep
from webapp.errors import AgentNotFound
from webapp.http.openapi import problems
from webapp.http.paths import API_PREFIX
from webapp.schemas import AgentCreate, AgentRead, AgentUpdate, Page, SessionCreate, SessionRead, VoiceCatalogRead
from webapp.services import agents, sessions

router = APIRouter(tags=["agents"], dependencies=AUTHENTICATED)
NOT_FOUND = problems(AgentNotFound)


@router.post("/agents", status_code=status.HTTP_201_CREATED, summary="Create an agent")
async def create_agent(
    data: AgentCreate, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> AgentRead:
    """Create an agent."""
    agent = await agents.create(runtime, owner_id=principal.user_id, data=data)
    response.headers["Location"] = f"{API_PREFIX}/agents/{agent.id}"
    return agent


@router.get("/agents", summary="List agents")
async def list_agents(runtime: RuntimeDep, principal: PrincipalDep, page: PageDep) -> Page[AgentRead]:
    """List agents, newest first."""
    return await agents.list_agents(runtime, owner_id=principal.user_id, limit=page.limit, cursor=page.cursor)


@router.get("/agents/{agent_id}", summary="Get an agent", responses=NOT_FOUND)
async def get_agent(agent_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> AgentRead:
    """Get one agent."""
    return await agents.get(runtime, owner_id=principal.user_id, agent_id=agent_id)


@router.patch("/agents/{agent_id}", summary="Update an agent", responses=NOT_FOUND)
async def update_agent(agent_id: str, data: AgentUpdate, runtime: RuntimeDep, principal: PrincipalDep) -> AgentRead:
    """Change some of an agent's fields."""
    return await agents.update(runtime, owner_id=principal.user_id, agent_id=agent_id, data=data)


@router.get("/voices", summary="List voices")
async def list_voices(runtime: RuntimeDep) -> VoiceCatalogRead:
    """The voice names the active provider's speech engine accepts for an agent's `voice`, and the default.

    With the offline provider a name espeak-ng does not know (such as OpenAI's `alloy`) speaks with the default:
    each agent's `runs_as.voice` tells which voice it actually gets.
    """
    return await agents.voices(runtime)


@router.delete(
    "/agents/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an agent", responses=NOT_FOUND
)
async def delete_agent(agent_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> None:
    """Delete an agent with all its sessions, messages and audio."""
    await agents.delete_agent(runtime, owner_id=principal.user_id, agent_id=agent_id)


@router.post(
    "/agents/{agent_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    tags=["sessions"],
    summary="Start a session",
    responses=NOT_FOUND,
)
async def create_session(
    agent_id: str, runtime: RuntimeDep, principal: PrincipalDep, response: Response, data: SessionCreate | None = None
) -> SessionRead:
    """Start a chat session with the agent."""
    title = data.title if data else None
    chat = await sessions.create(runtime, owner_id=principal.user_id, agent_id=agent_id, title=title)
    response.headers["Location"] = f"{API_PREFIX}/sessions/{chat.id}"
    return chat


@router.get("/agents/{agent_id}/sessions", tags=["sessions"], summary="List an agent's sessions", responses=NOT_FOUND)
async def list_sessions(
    agent_id: str, runtime: RuntimeDep, principal: PrincipalDep, page: PageDep
) -> Page[SessionRead]:
    """List the agent's sessions, most recently active first."""
    return await sessions.list_sessions(
        runtime, owner_id=principal.user_id, agent_id=agent_id, limit=page.limit, cursor=page.cursor
    )
