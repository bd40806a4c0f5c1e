"""ORM models. Relationships are `lazy="raise"`: load them explicitly with `selectinload`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from webapp.db import Base, UTCDateTime, new_id, utcnow


def _same_as_created(context: Any) -> datetime:
    created_at: datetime = context.get_current_parameters()["created_at"]
    return created_at


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=_same_as_created, onupdate=utcnow)


class User(TimestampMixin, Base):
    __tablename__ = "user_account"  # "user" is reserved in PostgreSQL

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    email: Mapped[str] = mapped_column(String(320))
    # Lower-cased: the unique key that makes sign-up and sign-in case-insensitive.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(100))
    password_hash: Mapped[str] = mapped_column(String(200))


class ApiKey(TimestampMixin, Base):
    __tablename__ = "api_key"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(32))
    # SHA-256 of the secret: keys are long and random, so a fast hash is safe and keeps every request cheap.
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Agent(TimestampMixin, Base):
    __tablename__ = "agent"
    __table_args__ = (
        Index("ix_agent_created_at_id", "created_at", "id"),
        Index("ix_agent_owner_id_created_at", "owner_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    # Null only for agents made before accounts existed; the first account made adopts them.
    owner_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    prompt: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(String(200))
    voice: Mapped[str] = mapped_column(String(100))
    temperature: Mapped[float | None] = mapped_column(Float)

    sessions: Mapped[list[ChatSession]] = relationship(
        back_populates="agent", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class ChatSession(TimestampMixin, Base):
    __tablename__ = "chat_session"
    __table_args__ = (Index("ix_chat_session_agent_id_activity_at", "agent_id", "activity_at", "id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    agent_id: Mapped[str] = mapped_column(ForeignKey("agent.id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(String(200))
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    last_message_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Sort key for "most recently active first": the last message's time, or the creation time.
    activity_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Cross-process turn lease (see services/turn_lock.py).
    lease_token: Mapped[str | None] = mapped_column(String(36))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    agent: Mapped[Agent] = relationship(back_populates="sessions", lazy="raise")
    messages: Mapped[list[Message]] = relationship(
        back_populates="session", lazy="raise", cascade="all, delete-orphan", passive_deletes=True
    )


class Message(TimestampMixin, Base):
    __tablename__ = "message"
    __table_args__ = (UniqueConstraint("session_id", "seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("chat_session.id", ondelete="CASCADE"))
    # Position in the session, from the session's message counter: history order never depends on clocks or ids.
    seq: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="text")
    status: Mapped[str] = mapped_column(String(16), default="complete")
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    audio_path: Mapped[str | None] = mapped_column(String(500))
    audio_content_type: Mapped[str | None] = mapped_column(String(100))
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)

    session: Mapped[ChatSession] = relationship(back_populates="messages", lazy="raise")


class VoiceTurn(TimestampMixin, Base):
    """One push-to-talk round trip. The recording is kept in `upload_path` from the moment it is accepted."""

    __tablename__ = "voice_turn"
    __table_args__ = (
        Index("ix_voice_turn_status_heartbeat_at", "status", "heartbeat_at"),
        Index("ix_voice_turn_status_runner", "status", "runner"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    session_id: Mapped[str] = mapped_column(ForeignKey("chat_session.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    upload_path: Mapped[str] = mapped_column(String(500))
    upload_format: Mapped[str] = mapped_column(String(16))
    user_message_id: Mapped[str | None] = mapped_column(String(36))
    assistant_message_id: Mapped[str | None] = mapped_column(String(36))
    transcript: Mapped[str | None] = mapped_column(Text)
    reply_text: Mapped[str | None] = mapped_column(Text)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    timings_ms: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    segments: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list, server_default="[]")
    """The reply's spoken sentences so far, in order: `{"text", "audio_path"}` each."""
    # Liveness of whichever worker runs the turn: a turn whose heartbeat stops is picked up by another (or at
    # start-up), so a crash never strands a recording.
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    runner: Mapped[str | None] = mapped_column(String(64))
    """The process running the turn (`Runner.name`); None while it waits in `queued` for a voice runner to claim it."""


class RateCount(Base):
    """How many events a key (a user's messages, an address's sign-in attempts) had in one fixed window, shared by
    every process (PostgreSQL). Rows of windows long past are deleted."""

    __tablename__ = "rate_count"

    key: Mapped[str] = mapped_column(String(300), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    """Unix seconds at which the window began."""
    count: Mapped[int] = mapped_column(Integer)
