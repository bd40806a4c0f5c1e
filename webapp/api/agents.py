"""Agents and the sessions under them."""

from __future__ import annotations

from fastapi import APIRouter, Response, status

from webapp.deps import AUTHENTICATED, AgentDep, DbDep, PageDep, PrincipalDep, RuntimeDep
from webapp.errors import AgentNotFound
from webapp.http.openapi import problems
from webapp.media import remove_session_media
from webapp.schemas import AgentCreate, AgentRead, AgentUpdate, Page, SessionCreate, SessionRead, VoiceCatalogRead
from webapp.services import agents, sessions

router = APIRouter(tags=["agents"], dependencies=AUTHENTICATED)
NOT_FOUND = problems(AgentNotFound)


@router.post("/agents", status_code=status.HTTP_201_CREATED, summary="Create an agent")
async def create_agent(
    data: AgentCreate, db: DbDep, runtime: RuntimeDep, principal: PrincipalDep, response: Response
) -> AgentRead:
    """Create an agent."""
    agent = await agents.create_agent(db=db, settings=runtime.settings, owner_id=principal.user_id, data=data)
    response.headers["Location"] = f"/api/v1/agents/{agent.id}"
    return await agents.read_agent(agent=agent, provider=runtime.provider)


@router.get("/agents", summary="List agents")
async def list_agents(db: DbDep, runtime: RuntimeDep, principal: PrincipalDep, page: PageDep) -> Page[AgentRead]:
    """List agents, newest first."""
    items, next_cursor = await agents.list_agents(
        db=db, owner_id=principal.user_id, limit=page.limit, cursor=page.cursor
    )
    return Page[AgentRead](
        items=await agents.read_agents(agents=items, provider=runtime.provider), next_cursor=next_cursor
    )


@router.get("/agents/{agent_id}", summary="Get an agent", responses=NOT_FOUND)
async def get_agent(agent: AgentDep, runtime: RuntimeDep) -> AgentRead:
    """Get one agent."""
    return await agents.read_agent(agent=agent, provider=runtime.provider)


@router.patch("/agents/{agent_id}", summary="Update an agent", responses=NOT_FOUND)
async def update_agent(agent: AgentDep, data: AgentUpdate, db: DbDep, runtime: RuntimeDep) -> AgentRead:
    """Change some of an agent's fields."""
    agent = await agents.update_agent(db=db, settings=runtime.settings, agent=agent, data=data)
    return await agents.read_agent(agent=agent, provider=runtime.provider)


@router.get("/voices", summary="List voices")
async def list_voices(runtime: RuntimeDep) -> VoiceCatalogRead:
    """The voice names the active provider's speech engine accepts for an agent's `voice`, and the default.

    With the offline provider a name espeak-ng does not know (such as OpenAI's `alloy`) speaks with the default:
    each agent's `runs_as.voice` tells which voice it actually gets.
    """
    return await agents.list_voices(provider=runtime.provider)


@router.delete(
    "/agents/{agent_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete an agent", responses=NOT_FOUND
)
async def delete_agent(agent: AgentDep, db: DbDep, runtime: RuntimeDep) -> None:
    """Delete an agent with all its sessions, messages and audio."""
    session_ids = await agents.delete_agent(db=db, agent=agent)
    await db.commit()
    await remove_session_media(runtime.settings, session_ids)


@router.post(
    "/agents/{agent_id}/sessions",
    status_code=status.HTTP_201_CREATED,
    tags=["sessions"],
    summary="Start a session",
    responses=NOT_FOUND,
)
async def create_session(
    agent: AgentDep, db: DbDep, response: Response, data: SessionCreate | None = None
) -> SessionRead:
    """Start a chat session with the agent."""
    chat = await sessions.create_session(db=db, agent=agent, title=data.title if data else None)
    response.headers["Location"] = f"/api/v1/sessions/{chat.id}"
    return chat


@router.get("/agents/{agent_id}/sessions", tags=["sessions"], summary="List an agent's sessions", responses=NOT_FOUND)
async def list_sessions(agent: AgentDep, db: DbDep, page: PageDep) -> Page[SessionRead]:
    """List the agent's sessions, most recently active first."""
    items, next_cursor = await sessions.list_sessions(db=db, agent=agent, limit=page.limit, cursor=page.cursor)
    return Page[SessionRead](items=items, next_cursor=next_cursor)
