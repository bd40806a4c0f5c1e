"""Messages and turns: store the user's message, ask the model with no transaction open, store the reply.

A turn runs as a background task (`start_turn`), so a client that disconnects mid-reply loses nothing: the reply is
still completed and stored. Turns in one session are serialised by `TurnLocks`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Row, Table, Update, bindparam, exists, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from webapp.ai.base import ChatMessage, ChatReply
from webapp.db import new_id, utcnow
from webapp.errors import AppError, MessageNotFound, SessionNotFound, TurnInterrupted, UpstreamError
from webapp.models import Agent, ChatSession, Message
from webapp.schemas import MessageRead, TurnRead
from webapp.services.pagination import decode_cursor, encode_cursor
from webapp.services.runtime import Runtime
from webapp.services.turn_lock import SESSION, Lease, LeaseTaken, TurnLocks

log = logging.getLogger(__name__)
AGENT = cast(Table, Agent.__table__)
MESSAGE = cast(Table, Message.__table__)
TITLE_LENGTH = 60
CONTEXT_MAX_MESSAGES = 400

# A turn's statements, built once; values come as parameters.
INSERT_MESSAGE = insert(MESSAGE)
SELECT_AGENT = select(AGENT.c.prompt, AGENT.c.model, AGENT.c.temperature).where(AGENT.c.id == bindparam("agent_id"))
SELECT_CONTEXT = (
    select(MESSAGE.c.role, MESSAGE.c.content)
    .where(MESSAGE.c.session_id == bindparam("session_id"), MESSAGE.c.status == "complete")
    .order_by(MESSAGE.c.seq.desc())
    .limit(CONTEXT_MAX_MESSAGES)
)


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


async def get_message(*, db: AsyncSession, owner_id: str, message_id: str) -> Message:
    message = await db.scalar(
        select(Message)
        .join(ChatSession, ChatSession.id == Message.session_id)
        .join(Agent, Agent.id == ChatSession.agent_id)
        .where(Message.id == message_id, Agent.owner_id == owner_id)
    )
    if message is None:
        raise MessageNotFound(f"No message with id {message_id!r}.")
    return message


@functools.cache
def _append_statement(*, claim: bool, release: bool, title: bool, owned: bool) -> Update:
    """The UPDATE that makes room for one more message (built once per variant, reused with parameters)."""
    values: dict[str, Any] = {
        "message_count": SESSION.c.message_count + 1,
        "last_message_at": bindparam("now"),
        "activity_at": bindparam("now"),
        "updated_at": bindparam("now"),
    }
    condition = SESSION.c.id == bindparam("session_id")
    if title:
        values["title"] = func.coalesce(SESSION.c.title, bindparam("new_title"))
    if owned:
        condition = condition & SESSION.c.agent_id.in_(select(AGENT.c.id).where(AGENT.c.owner_id == bindparam("owner")))
    if claim:
        condition = condition & TurnLocks.claim_condition()
        values.update(TurnLocks.claim_values())
    if release:
        values.update(TurnLocks.release_values())
    return update(SESSION).where(condition).values(values).returning(SESSION.c.message_count, SESSION.c.agent_id)


def append_message(
    connection: Connection,
    *,
    session_id: str,
    locks: TurnLocks | None = None,
    lease: Lease | None = None,
    claim: bool = False,
    release: bool = False,
    title_if_unset: str | None = None,
    owner_id: str | None = None,
    **fields: Any,
) -> tuple[Message, str]:
    """Add a message at the end of the session's history; returns it and the session's agent id.

    Its `seq` comes from the session's counter, bumped by the same UPDATE that can also `claim` or `release` the
    turn's lease: a turn's bookkeeping costs no statements of its own. Core statements built once, not ORM units of
    work: this runs twice per turn.
    """
    now = utcnow()
    params: dict[str, Any] = {"session_id": session_id, "now": now, "new_title": title_if_unset, "owner": owner_id}
    with_lease = lease is not None and locks is not None and (claim or release)
    if with_lease:
        assert lease is not None and locks is not None
        params.update(locks.lease_params(lease, now))
    statement = _append_statement(
        claim=with_lease and claim,
        release=with_lease and release,
        title=bool(title_if_unset),
        owned=owner_id is not None,
    )
    row = connection.execute(statement, params).one_or_none()
    if row is None:
        visible = SESSION.c.id == session_id
        if owner_id is not None:
            visible &= SESSION.c.agent_id.in_(select(AGENT.c.id).where(AGENT.c.owner_id == owner_id))
        if claim and connection.scalar(select(exists().where(visible))):
            raise LeaseTaken
        raise SessionNotFound(f"No chat session with id {session_id!r}.")
    fields.setdefault("source", "text")
    fields.setdefault("status", "complete")
    message = Message(
        id=new_id(), session_id=session_id, seq=row.message_count, created_at=now, updated_at=now, **fields
    )
    connection.execute(INSERT_MESSAGE, {column.key: getattr(message, column.key) for column in MESSAGE.columns})
    return message, row.agent_id


def build_context(connection: Connection, *, prompt: str, session_id: str, budget: int) -> list[ChatMessage]:
    """The agent's prompt, then the newest complete messages that fit the token budget, oldest first."""
    rows = connection.execute(SELECT_CONTEXT, {"session_id": session_id})
    remaining = budget - estimate_tokens(prompt)
    history: list[ChatMessage] = []
    for role, content in rows:
        cost = estimate_tokens(content)
        if history and cost > remaining:
            break
        history.append(ChatMessage(role="user" if role == "user" else "assistant", content=content))
        remaining -= cost
    history.reverse()
    return [{"role": "system", "content": prompt}, *history]


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
    lease: Lease,
    content: str,
    owner_id: str | None = None,
    source: str = "text",
    user_fields: dict[str, Any] | None = None,
    hooks: TurnHooks | None = None,
) -> TurnOutcome:
    """One exchange, inside `runtime.locks.hold(...)`: two short transactions around the call to the model."""
    hooks = hooks or TurnHooks()
    session_id, locks = lease.session_id, runtime.locks

    def store_user_message(connection: Connection) -> tuple[Message, Row[str, str, float | None], list[ChatMessage]]:
        user, agent_id = append_message(
            connection,
            session_id=session_id,
            locks=locks,
            lease=lease,
            claim=True,
            owner_id=owner_id,
            title_if_unset=_title_from(content),
            role="user",
            content=content,
            source=source,
            **(user_fields or {}),
        )
        agent = connection.execute(SELECT_AGENT, {"agent_id": agent_id}).one()
        context = build_context(
            connection, prompt=agent.prompt, session_id=session_id, budget=runtime.settings.context_token_budget
        )
        return user, agent, context

    while True:
        try:
            user, agent, context = await runtime.db.transaction(store_user_message)
            break
        except LeaseTaken:
            await locks.retry_later(lease)
    lease.held = True
    user_read = MessageRead.of(user)
    if hooks.on_user_stored is not None:
        hooks.on_user_stored.set_result(user_read)

    started = time.perf_counter()
    reply: ChatReply | None = None
    failure: UpstreamError | None = None
    try:
        on_token = hooks.on_token.put_nowait if hooks.on_token is not None else None
        reply = await runtime.provider.chat(
            context, model=agent.model, temperature=agent.temperature, on_token=on_token
        )
    except UpstreamError as exc:
        failure = exc
    latency_ms = round((time.perf_counter() - started) * 1000)

    if reply is not None:
        fields: dict[str, Any] = {
            "content": reply.text,
            "model": reply.model,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
        }
    else:
        assert failure is not None
        fields = {"content": "", "status": "failed", "error": failure.as_error_field(), "model": agent.model}
    assistant, _ = await runtime.db.transaction(
        functools.partial(
            append_message,
            session_id=session_id,
            locks=locks,
            lease=lease,
            release=True,
            role="assistant",
            source=source,
            latency_ms=latency_ms,
            **fields,
        )
    )
    lease.held = False
    return TurnOutcome(TurnRead(user_message=user_read, assistant_message=MessageRead.of(assistant)), failure)


# --- a text turn running in the background ---------------------------------------------------------------------------

END_OF_TOKENS = object()


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
        while (item := await self.tokens.get()) is not END_OF_TOKENS:
            yield TokenEvent(item)
        await asyncio.wait({self.task})
        if self.task.cancelled():  # the server is stopping
            yield ErrorEvent(TurnInterrupted("The server stopped before the reply was finished; send it again."))
            return
        error = self.task.exception()
        if error is None:
            yield DoneEvent(self.task.result())
        elif isinstance(error, AppError):
            yield ErrorEvent(error)
        else:
            log.error("chat turn failed", exc_info=error)
            yield ErrorEvent(AppError("An unexpected error occurred; it has been logged."))


def start_turn(runtime: Runtime, *, owner_id: str, session_id: str, content: str, stream: bool = False) -> RunningTurn:
    """Start a typed turn in the background: it waits for the session's turn lock, then runs to completion.

    With `stream`, the reply is requested as a stream and its pieces are offered through `RunningTurn.events`.
    """
    loop = asyncio.get_running_loop()
    stored: asyncio.Future[MessageRead] = loop.create_future()
    tokens: asyncio.Queue[Any] = asyncio.Queue()

    async def turn() -> TurnRead:
        try:
            async with runtime.locks.hold(session_id) as lease:
                hooks = TurnHooks(on_user_stored=stored, on_token=tokens if stream else None)
                outcome = await run_turn(runtime, lease=lease, owner_id=owner_id, content=content, hooks=hooks)
            if outcome.error is not None:
                raise outcome.error
            return outcome.turn
        finally:
            tokens.put_nowait(END_OF_TOKENS)
            if not stored.done():
                stored.cancel()

    return RunningTurn(task=runtime.spawn(turn()), stored=stored, tokens=tokens)
