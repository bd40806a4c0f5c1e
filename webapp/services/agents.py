"""Agents: create, read, list, update, delete."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from webapp.ai.base import AIProvider
from webapp.config import Settings
from webapp.errors import AgentNotFound
from webapp.models import Agent, ChatSession
from webapp.schemas import AgentCreate, AgentRead, AgentUpdate, RunsAsRead, VoiceCatalogRead
from webapp.services.pagination import decode_cursor, encode_cursor


async def create_agent(*, db: AsyncSession, settings: Settings, owner_id: str, data: AgentCreate) -> Agent:
    agent = Agent(
        owner_id=owner_id,
        name=data.name,
        prompt=data.prompt,
        model=data.model or settings.chat_model,
        voice=data.voice or settings.tts_voice,
        temperature=data.temperature,
    )
    db.add(agent)
    await db.flush()
    return agent


async def get_agent(*, db: AsyncSession, owner_id: str, agent_id: str) -> Agent:
    """The agent, if it is `owner_id`'s: another user's agent is as unknown as a missing one."""
    agent = await db.scalar(select(Agent).where(Agent.id == agent_id, Agent.owner_id == owner_id))
    if agent is None:
        raise AgentNotFound(f"No agent with id {agent_id!r}.")
    return agent


async def list_agents(
    *, db: AsyncSession, owner_id: str, limit: int, cursor: str | None
) -> tuple[list[Agent], str | None]:
    """Newest first."""
    query = (
        select(Agent)
        .where(Agent.owner_id == owner_id)
        .order_by(Agent.created_at.desc(), Agent.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        created_at, agent_id = decode_cursor(cursor, datetime, str)
        query = query.where(tuple_(Agent.created_at, Agent.id) < tuple_(created_at, agent_id))
    agents = list((await db.scalars(query)).all())
    if len(agents) <= limit:
        return agents, None
    last = agents[limit - 1]
    return agents[:limit], encode_cursor(last.created_at, last.id)


async def update_agent(*, db: AsyncSession, settings: Settings, agent: Agent, data: AgentUpdate) -> Agent:
    defaults = {"model": settings.chat_model, "voice": settings.tts_voice}
    for field, value in data.model_dump(exclude_unset=True).items():
        setattr(agent, field, defaults.get(field) if value is None else value)
    await db.flush()
    return agent


async def delete_agent(*, db: AsyncSession, agent: Agent) -> list[str]:
    """Delete the agent with its sessions and messages; returns the deleted sessions' ids (their media goes too)."""
    session_ids = list((await db.scalars(select(ChatSession.id).where(ChatSession.agent_id == agent.id))).all())
    await db.execute(delete(Agent).where(Agent.id == agent.id))
    return session_ids


async def read_agent(*, agent: Agent, provider: AIProvider) -> AgentRead:
    """The agent as the API shows it: its stored fields, and what runs for them under `provider` (`runs_as`)."""
    runs_as = RunsAsRead.model_validate(await provider.runs_as(model=agent.model, voice=agent.voice))
    stored = {field: getattr(agent, field) for field in AgentRead.model_fields if field != "runs_as"}
    return AgentRead(**stored, runs_as=runs_as)


async def read_agents(*, agents: list[Agent], provider: AIProvider) -> list[AgentRead]:
    return [await read_agent(agent=agent, provider=provider) for agent in agents]


async def list_voices(*, provider: AIProvider) -> VoiceCatalogRead:
    """The voice names the active provider's speech engine accepts, and its default."""
    return VoiceCatalogRead.model_validate(await provider.voices())
