"""Chat sessions: one conversation with one agent — each a use case with its own short transaction."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from webapp.errors import SessionNotFound
from webapp.media import remove_session_media
from webapp.models import Agent, ChatSession
from webapp.schemas import Page, SessionRead
from webapp.services.agents import owned_agent
from webapp.services.ownership import agent_owned_by
from webapp.services.pagination import keyset_page
from webapp.services.runtime import Runtime


async def owned_session(db: AsyncSession, *, owner_id: str, session_id: str) -> tuple[ChatSession, Agent]:
    """The session and its agent, if the agent is `owner_id`'s: another user's session is as unknown as none."""
    query = select(ChatSession, Agent).join(Agent).where(ChatSession.id == session_id, agent_owned_by(owner_id))
    row = (await db.execute(query)).one_or_none()
    if row is None:
        raise SessionNotFound(f"No chat session with id {session_id!r}.")
    return row[0], row[1]


async def create(runtime: Runtime, *, owner_id: str, agent_id: str, title: str | None = None) -> SessionRead:
    async with runtime.db.write() as db:
        agent = await owned_agent(db, owner_id=owner_id, agent_id=agent_id)
        chat = ChatSession(agent_id=agent.id, title=title)
        db.add(chat)
        await db.flush()
        return SessionRead.of(chat, agent_name=agent.name)


async def get(runtime: Runtime, *, owner_id: str, session_id: str) -> SessionRead:
    async with runtime.db.read() as db:
        chat, agent = await owned_session(db, owner_id=owner_id, session_id=session_id)
        return SessionRead.of(chat, agent_name=agent.name)


async def list_sessions(
    runtime: Runtime, *, owner_id: str, agent_id: str, limit: int, cursor: str | None
) -> Page[SessionRead]:
    """The agent's sessions, most recently active first."""
    async with runtime.db.read() as db:
        agent = await owned_agent(db, owner_id=owner_id, agent_id=agent_id)
        chats, next_cursor = await keyset_page(
            db,
            select(ChatSession).where(ChatSession.agent_id == agent.id),
            key=(ChatSession.activity_at, ChatSession.id),
            descending=True,
            limit=limit,
            cursor=cursor,
        )
        items = [SessionRead.of(chat, agent_name=agent.name) for chat in chats]
    return Page[SessionRead](items=items, next_cursor=next_cursor)


async def rename(runtime: Runtime, *, owner_id: str, session_id: str, title: str) -> SessionRead:
    async with runtime.db.write() as db:
        chat, agent = await owned_session(db, owner_id=owner_id, session_id=session_id)
        chat.title = title
        await db.flush()
        return SessionRead.of(chat, agent_name=agent.name)


async def delete_session(runtime: Runtime, *, owner_id: str, session_id: str) -> None:
    """Delete the session with its messages, commit, then remove its audio."""
    async with runtime.db.write() as db:
        chat, _ = await owned_session(db, owner_id=owner_id, session_id=session_id)
        await db.execute(delete(ChatSession).where(ChatSession.id == chat.id))
    await remove_session_media(runtime.settings, [session_id])
