"""Who owns what: every owner-scoped lookup goes through these conditions, so no query can forget the owner.

Another user's agent, session, message or voice turn is as unknown as a missing one (404), never a 403.
"""

from __future__ import annotations

from sqlalchemy import BindParameter, ColumnElement, select
from sqlalchemy.orm import QueryableAttribute

from webapp.models import Agent, ChatSession


def agent_owned_by(owner_id: str | BindParameter[str]) -> ColumnElement[bool]:
    return Agent.owner_id == owner_id


def session_owned_by(owner_id: str | BindParameter[str]) -> ColumnElement[bool]:
    """True on a chat session whose agent is `owner_id`'s."""
    return ChatSession.agent_id.in_(select(Agent.id).where(agent_owned_by(owner_id)))


def in_session_owned_by(session_id_column: QueryableAttribute[str], owner_id: str) -> ColumnElement[bool]:
    """True on a row (message, voice turn) of a session that is `owner_id`'s."""
    return session_id_column.in_(select(ChatSession.id).where(session_owned_by(owner_id)))
