"""Chat sessions: one conversation with one agent."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from webapp.errors import SessionNotFound
from webapp.models import Agent, ChatSession
from webapp.schemas import SessionRead
from webapp.services.pagination import decode_cursor, encode_cursor


async def create_session(*, db: AsyncSession, agent: Agent, title: str | None) -> SessionRead:
    chat = ChatSession(agent_id=agent.id, title=title)
    db.add(chat)
    await db.flush()
    return SessionRead.of(chat, agent_name=agent.name)


async def get_session(*, db: AsyncSession, owner_id: str, session_id: str) -> tuple[ChatSession, Agent]:
    """The session and its agent, if the agent is `owner_id`'s: another user's session is as unknown as none."""
    query = select(ChatSession, Agent).join(Agent).where(ChatSession.id == session_id, Agent.owner_id == owner_id)
    row = (await db.execute(query)).one_or_none()
    if row is None:
        raise SessionNotFound(f"No chat session with id {session_id!r}.")
    return row[0], row[1]


async def list_sessions(
    *, db: AsyncSession, agent: Agent, limit: int, cursor: str | None
) -> tuple[list[SessionRead], str | None]:
    """Most recently active first."""
    query = (
        select(ChatSession)
        .where(ChatSession.agent_id == agent.id)
        .order_by(ChatSession.activity_at.desc(), ChatSession.id.desc())
        .limit(limit + 1)
    )
    if cursor:
        activity_at, session_id = decode_cursor(cursor, datetime, str)
        query = query.where(tuple_(ChatSession.activity_at, ChatSession.id) < tuple_(activity_at, session_id))
    chats = list((await db.scalars(query)).all())
    next_cursor = None
    if len(chats) > limit:
        chats = chats[:limit]
        next_cursor = encode_cursor(chats[-1].activity_at, chats[-1].id)
    return [SessionRead.of(chat, agent_name=agent.name) for chat in chats], next_cursor


async def rename_session(*, db: AsyncSession, chat: ChatSession, agent: Agent, title: str) -> SessionRead:
    chat.title = title
    await db.flush()
    return SessionRead.of(chat, agent_name=agent.name)


async def delete_session(*, db: AsyncSession, chat: ChatSession) -> None:
    await db.execute(delete(ChatSession).where(ChatSession.id == chat.id))
