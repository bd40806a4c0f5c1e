"""Agents: create, read, list, update, delete — each a use case with its own short transaction."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from webapp.ai.base import AIProvider
from webapp.errors import AgentNotFound
from webapp.media import remove_session_media
from webapp.models import Agent, ChatSession
from webapp.schemas import AgentCreate, AgentRead, AgentUpdate, Page, RunsAsRead, VoiceCatalogRead
from webapp.services.ownership import agent_owned_by
from webapp.services.pagination import keyset_page
from webapp.services.runtime import Runtime


async def owned_agent(db: AsyncSession, *, owner_id: str, agent_id: str) -> Agent:
    """The agent, if it is `owner_id`'s: another user's agent is as unknown as a missing one."""
    agent = await db.scalar(select(Agent).where(Agent.id == agent_id, agent_owned_by(owner_id)))
    if agent is None:
        raise AgentNotFound(f"No agent with id {agent_id!r}.")
    return agent


async def create(runtime: Runtime, *, owner_id: str, data: AgentCreate) -> AgentRead:
    settings = runtime.settings
    async with runtime.db.write() as db:
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
    return await _read(agent, runtime.provider)


async def get(runtime: Runtime, *, owner_id: str, agent_id: str) -> AgentRead:
    async with runtime.db.read() as db:
        agent = await owned_agent(db, owner_id=owner_id, agent_id=agent_id)
    return await _read(agent, runtime.provider)


async def list_agents(runtime: Runtime, *, owner_id: str, limit: int, cursor: str | None) -> Page[AgentRead]:
    """Newest first."""
    async with runtime.db.read() as db:
        agents, next_cursor = await keyset_page(
            db,
            select(Agent).where(agent_owned_by(owner_id)),
            key=(Agent.created_at, Agent.id),
            descending=True,
            limit=limit,
            cursor=cursor,
        )
    return Page[AgentRead](items=[await _read(agent, runtime.provider) for agent in agents], next_cursor=next_cursor)


async def update(runtime: Runtime, *, owner_id: str, agent_id: str, data: AgentUpdate) -> AgentRead:
    """Change the fields sent; `null` puts `model` or `voice` back to the server's default."""
    defaults = {"model": runtime.settings.chat_model, "voice": runtime.settings.tts_voice}
    async with runtime.db.write() as db:
        agent = await owned_agent(db, owner_id=owner_id, agent_id=agent_id)
        for field, value in data.model_dump(exclude_unset=True).items():
            setattr(agent, field, defaults.get(field) if value is None else value)
        await db.flush()
    return await _read(agent, runtime.provider)


async def delete_agent(runtime: Runtime, *, owner_id: str, agent_id: str) -> None:
    """Delete the agent with its sessions and messages, commit, then remove their audio."""
    async with runtime.db.write() as db:
        agent = await owned_agent(db, owner_id=owner_id, agent_id=agent_id)
        session_ids = list((await db.scalars(select(ChatSession.id).where(ChatSession.agent_id == agent.id))).all())
        await db.execute(delete(Agent).where(Agent.id == agent.id))
    await remove_session_media(runtime.settings, session_ids)


async def voices(runtime: Runtime) -> VoiceCatalogRead:
    """The voice names the active provider's speech engine accepts, and its default."""
    return VoiceCatalogRead.model_validate(await runtime.provider.voices())


async def _read(agent: Agent, provider: AIProvider) -> AgentRead:
    """The agent as clients see it: its stored fields, and what runs for them under `provider` (`runs_as`)."""
    runs_as = RunsAsRead.model_validate(await provider.runs_as(model=agent.model, voice=agent.voice))
    stored = {field: getattr(agent, field) for field in AgentRead.model_fields if field != "runs_as"}
    return AgentRead(**stored, runs_as=runs_as)
