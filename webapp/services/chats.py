"""Messages and turns: store the user's message, ask the model with no transaction open, store the reply.

A turn runs as a background task (`start_turn`), so a client that disconnects mid-reply loses nothing: the reply is
still completed and stored. Turns in one session are serialised by `TurnLocks`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from webapp.ai.base import ChatMessage, ChatReply
from webapp.db import utcnow
from webapp.errors import AppError, MessageNotFound, SessionNotFound, UpstreamError
from webapp.models import Agent, ChatSession, Message
from webapp.schemas import MessageRead, TurnRead
from webapp.services.pagination import decode_cursor, encode_cursor
from webapp.services.runtime import Runtime
from webapp.services.sessions import get_session

TITLE_LENGTH = 60
CONTEXT_MAX_MESSAGES = 400


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate (about 3 characters a token, plus per-message overhead): never overfill."""
    return len(text) // 3 + 4


async def list_messages(
    *, db: AsyncSession, chat: ChatSession, limit: int, cursor: str | None
) -> tuple[list[MessageRead], str | None]:
    """Chronological history."""
    query = select(Message).where(Message.session_id == chat.id).order_by(Message.seq).limit(limit + 1)
    if cursor:
        (after,) = decode_cursor(cursor, int)
        query = query.where(Message.seq > after)
    messages = list((await db.scalars(query)).all())
    next_cursor = None
    if len(messages) > limit:
        messages = messages[:limit]
        next_cursor = encode_cursor(messages[-1].seq)
    return [MessageRead.of(message) for message in messages], next_cursor


async def get_message(*, db: AsyncSession, message_id: str) -> Message:
    message = await db.get(Message, message_id)
    if message is None:
        raise MessageNotFound(f"No message with id {message_id!r}.")
    return message


async def append_message(
    db: AsyncSession, *, session_id: str, title_if_unset: str | None = None, **fields: Any
) -> Message:
    """Add a message at the end of the session's history (its `seq` comes from the session's counter)."""
    now = fields.setdefault("created_at", utcnow())
    values: dict[str, Any] = {
        "message_count": ChatSession.message_count + 1,
        "last_message_at": now,
        "activity_at": now,
    }
    if title_if_unset:
        values["title"] = func.coalesce(ChatSession.title, title_if_unset)
    seq = await db.scalar(
        update(ChatSession).where(ChatSession.id == session_id).values(values).returning(ChatSession.message_count)
    )
    if seq is None:
        raise SessionNotFound(f"No chat session with id {session_id!r}.")
    message = Message(session_id=session_id, seq=seq, updated_at=now, **fields)
    db.add(message)
    await db.flush()
    return message


async def build_context(db: AsyncSession, *, agent: Agent, session_id: str, budget: int) -> list[ChatMessage]:
    """The agent's prompt, then the newest complete messages that fit the token budget, oldest first."""
    rows = await db.execute(
        select(Message.role, Message.content)
        .where(Message.session_id == session_id, Message.status == "complete")
        .order_by(Message.seq.desc())
        .limit(CONTEXT_MAX_MESSAGES)
    )
    remaining = budget - estimate_tokens(agent.prompt)
    history: list[ChatMessage] = []
    for role, content in rows:
        cost = estimate_tokens(content)
        if history and cost > remaining:
            break
        history.append(ChatMessage(role="user" if role == "user" else "assistant", content=content))
        remaining -= cost
    history.reverse()
    return [{"role": "system", "content": agent.prompt}, *history]


def _title_from(content: str) -> str:
    words = " ".join(content.split())
    return words if len(words) <= TITLE_LENGTH else words[: TITLE_LENGTH - 1].rstrip() + "…"


@dataclass
class TurnHooks:
    """Optional observers of a running turn."""

    on_user_stored: asyncio.Future[MessageRead] | None = None
    on_token: asyncio.Queue[str] | None = None


@dataclass
class TurnOutcome:
    turn: TurnRead
    error: UpstreamError | None
    """Set when the provider failed; `turn.assistant_message` then records that failure."""


async def run_turn(
    runtime: Runtime,
    *,
    session_id: str,
    content: str,
    source: str = "text",
    user_fields: dict[str, Any] | None = None,
    hooks: TurnHooks | None = None,
) -> TurnOutcome:
    """One exchange, with the caller holding the session's turn lock."""
    hooks = hooks or TurnHooks()
    async with runtime.db.write() as db:
        _, agent = await get_session(db=db, session_id=session_id)
        user = await append_message(
            db,
            session_id=session_id,
            title_if_unset=_title_from(content),
            role="user",
            content=content,
            source=source,
            **(user_fields or {}),
        )
        context = await build_context(
            db, agent=agent, session_id=session_id, budget=runtime.settings.context_token_budget
        )
        model, temperature = agent.model, agent.temperature
    user_read = MessageRead.of(user)
    if hooks.on_user_stored is not None:
        hooks.on_user_stored.set_result(user_read)

    started = time.perf_counter()
    reply: ChatReply | None = None
    failure: UpstreamError | None = None
    try:
        on_token = hooks.on_token.put_nowait if hooks.on_token is not None else None
        reply = await runtime.provider.chat(context, model=model, temperature=temperature, on_token=on_token)
    except UpstreamError as exc:
        failure = exc
    latency_ms = round((time.perf_counter() - started) * 1000)

    async with runtime.db.write() as db:
        if reply is not None:
            assistant = await append_message(
                db,
                session_id=session_id,
                role="assistant",
                content=reply.text,
                source=source,
                model=reply.model,
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                latency_ms=latency_ms,
            )
        else:
            assert failure is not None
            assistant = await append_message(
                db,
                session_id=session_id,
                role="assistant",
                content="",
                source=source,
                status="failed",
                error=failure.as_error_field(),
                model=model,
                latency_ms=latency_ms,
            )
    return TurnOutcome(TurnRead(user_message=user_read, assistant_message=MessageRead.of(assistant)), failure)


# --- a text turn running in the background ---------------------------------------------------------------------------

_END = object()


@dataclass
class TokenEvent:
    delta: str


@dataclass
class DoneEvent:
    turn: TurnRead


@dataclass
class ErrorEvent:
    error: AppError


TurnEvent = TokenEvent | DoneEvent | ErrorEvent


@dataclass
class RunningTurn:
    task: asyncio.Task[TurnRead]
    stored: asyncio.Future[MessageRead]
    tokens: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)

    async def user_message(self) -> MessageRead:
        """The stored user message; raises what stopped the turn before it was stored (404, 409)."""
        waiting: set[asyncio.Future[Any]] = {self.stored, self.task}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self.stored.done() and not self.stored.cancelled():
            return self.stored.result()
        self.task.result()
        raise AssertionError("a turn ended without storing its user message")  # pragma: no cover

    async def result(self) -> TurnRead:
        """The finished turn. Waiting can be cancelled (client gone) without cancelling the turn."""
        return await asyncio.shield(self.task)

    async def events(self) -> AsyncIterator[TurnEvent]:
        """Tokens as they arrive, then exactly one `DoneEvent` or `ErrorEvent`."""
        while (item := await self.tokens.get()) is not _END:
            yield TokenEvent(item)
        await asyncio.wait({self.task})
        error = self.task.exception()
        if error is None:
            yield DoneEvent(self.task.result())
        elif isinstance(error, AppError):
            yield ErrorEvent(error)
        else:
            raise error


def start_turn(runtime: Runtime, *, session_id: str, content: str, stream: bool = False) -> RunningTurn:
    """Start a typed turn in the background: it waits for the session's turn lock, then runs to completion.

    With `stream`, the reply is requested as a stream and its pieces are offered through `RunningTurn.events`.
    """
    loop = asyncio.get_running_loop()
    stored: asyncio.Future[MessageRead] = loop.create_future()
    tokens: asyncio.Queue[Any] = asyncio.Queue()

    async def turn() -> TurnRead:
        try:
            async with runtime.locks.hold(session_id):
                hooks = TurnHooks(on_user_stored=stored, on_token=tokens if stream else None)
                outcome = await run_turn(runtime, session_id=session_id, content=content, hooks=hooks)
            if outcome.error is not None:
                raise outcome.error
            return outcome.turn
        finally:
            tokens.put_nowait(_END)
            if not stored.done():
                stored.cancel()

    return RunningTurn(task=runtime.spawn(turn()), stored=stored, tokens=tokens)
