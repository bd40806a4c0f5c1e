"""The turn engine: one exchange in a chat session, text or voice, from the user's message to the stored reply.

Everything a turn does to the database is here: appending messages (the session's counter gives each its `seq`),
building the context sent to the model, and the session's turn lease. Turns in one session run one at a time, in
arrival order, across tasks and worker processes:
- within a process they queue on a per-session `asyncio.Lock` (FIFO);
- across processes a turn holds a lease on the session row, taken by its first write (in the same UPDATE that stores
  the user's message) or by `TurnLocks.claim`, renewed while the turn runs, given back by its last write, and left to
  expire if a worker dies mid-turn.
No transaction is open while the model is asked: a turn is two short transactions around that call.

A typed turn runs as a background task (`send`), so a client that disconnects mid-reply loses nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    Update,
    bindparam,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from webapp.ai.base import ChatMessage, ChatReply, TokenSink
from webapp.db import Database, new_id, utcnow
from webapp.errors import AppError, NoTurnRunning, SessionBusy, SessionNotFound, TurnInterrupted, UpstreamError
from webapp.models import Agent, ChatSession, Message, VoiceTurn
from webapp.schemas import MessageRead, TurnRead
from webapp.services.ownership import session_owned_by
from webapp.services.runtime import Runtime
from webapp.services.sessions import owned_session
from webapp.services.stops import finishes_first
from webapp.services.voice_events import UNFINISHED

log = logging.getLogger(__name__)
AGENT = cast(Table, Agent.__table__)
MESSAGE = cast(Table, Message.__table__)
SESSION = cast(Table, ChatSession.__table__)
TITLE_LENGTH = 60
CONTEXT_MAX_MESSAGES = 400

# A turn's statements, built once; values come as parameters.
INSERT_MESSAGE = insert(MESSAGE)
SELECT_AGENT = select(AGENT.c.prompt, AGENT.c.model, AGENT.c.temperature).where(AGENT.c.id == bindparam("agent_id"))
SELECT_CONTEXT = (
    select(MESSAGE.c.role, MESSAGE.c.content)
    .where(MESSAGE.c.session_id == bindparam("session_id"), MESSAGE.c.status.in_(("complete", "cancelled")))
    .order_by(MESSAGE.c.seq.desc())
    .limit(CONTEXT_MAX_MESSAGES)
)


# --- the session's turn: one at a time, in arrival order ------------------------------------------------------------


class LeaseTaken(Exception):
    """Another worker process is running a turn in this session; retry after `TurnLocks.retry_later`."""


@dataclass
class Lease:
    session_id: str
    token: str
    deadline: float
    """Event-loop time after which waiting for the turn fails with 409 `session_busy`."""
    held: bool = False


class TurnLocks:
    def __init__(
        self, database: Database, *, busy_timeout: float, lease_seconds: float = 30.0, poll_seconds: float = 0.05
    ) -> None:
        self._db = database
        self._busy_timeout = busy_timeout
        self._lease = timedelta(seconds=lease_seconds)
        self._poll_seconds = poll_seconds
        self._local: dict[str, tuple[asyncio.Lock, int]] = {}
        self._holding: dict[str, Lease] = {}
        """The leases of this process's turns under way, by token: renewed together by one task."""
        self._renewer: asyncio.Task[None] | None = None

    @contextlib.asynccontextmanager
    async def hold(self, session_id: str) -> AsyncIterator[Lease]:
        """Wait for the session's turn in this process (409 `session_busy` after the timeout) and hold it."""
        loop = asyncio.get_running_loop()
        lease = Lease(session_id, str(uuid.uuid4()), loop.time() + self._busy_timeout)
        lock = self._enter(session_id)
        try:
            if lock.locked():
                try:
                    async with asyncio.timeout_at(lease.deadline):
                        await lock.acquire()
                except TimeoutError:
                    raise self._busy() from None
            else:  # the usual case: no turn under way, no timer to set up
                await lock.acquire()
            self._holding[lease.token] = lease
            self._start_renewing()
            try:
                yield lease
            finally:
                del self._holding[lease.token]
                if lease.held:
                    await asyncio.shield(self._release(lease))
                lock.release()
        finally:
            self._leave(session_id)

    async def aclose(self) -> None:
        """Stop renewing leases (at shutdown, after the turns have drained)."""
        if self._renewer is not None:
            self._renewer.cancel()
            await asyncio.gather(self._renewer, return_exceptions=True)
            self._renewer = None

    # --- the lease, as parts of a turn's own statements --------------------------------------------------------------
    # Fragments with bound parameters (`lease_owner`, `now`, `lease_until`), so statements built from them can be
    # built once and reused; `lease_params` supplies the values.

    @staticmethod
    def claim_condition() -> ColumnElement[bool]:
        """True on a session row whose lease is free, expired, or already this turn's."""
        token, expires_at = SESSION.c.lease_token, SESSION.c.lease_expires_at
        return or_(token.is_(None), token == bindparam("lease_owner"), expires_at < bindparam("now"))

    @staticmethod
    def claim_values() -> dict[str, Any]:
        return {"lease_token": bindparam("lease_owner"), "lease_expires_at": bindparam("lease_until")}

    @staticmethod
    def release_values() -> dict[str, Any]:
        mine = SESSION.c.lease_token == bindparam("lease_owner")
        return {
            "lease_token": case((mine, None), else_=SESSION.c.lease_token),
            "lease_expires_at": case((mine, None), else_=SESSION.c.lease_expires_at),
        }

    def lease_params(self, lease: Lease, now: datetime) -> dict[str, Any]:
        return {"lease_owner": lease.token, "now": now, "lease_until": now + self._lease}

    async def retry_later(self, lease: Lease) -> None:
        """Wait a moment before trying to claim again, or give up with 409 once the deadline has passed."""
        if asyncio.get_running_loop().time() + self._poll_seconds > lease.deadline:
            raise self._busy()
        await asyncio.sleep(self._poll_seconds)

    async def claim(self, lease: Lease) -> None:
        """Take the lease in a transaction of its own (for turns that work before their first write)."""
        statement = (
            update(SESSION).where(SESSION.c.id == lease.session_id, self.claim_condition()).values(self.claim_values())
        )
        session_exists = select(exists().where(SESSION.c.id == lease.session_id))

        def claim(connection: Connection) -> bool:
            if connection.execute(statement, self.lease_params(lease, utcnow())).rowcount == 1:
                return True
            if not connection.scalar(session_exists):
                raise SessionNotFound(f"No chat session with id {lease.session_id!r}.")
            return False

        while not await self._db.transaction(claim):
            await self.retry_later(lease)
        lease.held = True

    # --- internals ---------------------------------------------------------------------------------------------------

    def _busy(self) -> SessionBusy:
        return SessionBusy(
            f"Another turn in this session has been running for over {self._busy_timeout:g} s; try again later."
        )

    def _enter(self, session_id: str) -> asyncio.Lock:
        lock, users = self._local.get(session_id) or (asyncio.Lock(), 0)
        self._local[session_id] = (lock, users + 1)
        return lock

    def _leave(self, session_id: str) -> None:
        lock, users = self._local[session_id]
        if users == 1:
            del self._local[session_id]
        else:
            self._local[session_id] = (lock, users - 1)

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.create_task(self._renew_forever())

    async def _renew_forever(self) -> None:
        """Every third of the lease's length, extend every held lease of this process in one statement."""
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 3)
            tokens = [lease.token for lease in self._holding.values() if lease.held]
            if not tokens:
                continue
            try:
                await self._extend(tokens)
            except Exception:  # a passing database error must not stop later renewals
                log.exception("renewing turn leases failed")

    async def _extend(self, tokens: list[str]) -> None:
        statement = (
            update(SESSION).where(SESSION.c.lease_token.in_(tokens)).values(lease_expires_at=utcnow() + self._lease)
        )
        await self._db.transaction(lambda connection: connection.execute(statement))

    async def _release(self, lease: Lease) -> None:
        statement = update(SESSION).where(SESSION.c.id == lease.session_id).values(self.release_values())
        params = self.lease_params(lease, utcnow())
        await self._db.transaction(lambda connection: connection.execute(statement, params))
        lease.held = False


# --- appending messages, the context, one exchange ------------------------------------------------------------


def estimate_tokens(text: str) -> int:
    """A deliberately high estimate (about 3 characters a token, plus per-message overhead): never overfill."""
    return len(text) // 3 + 4


@functools.cache
def _append_statement(*, lease: str | None, title: bool, owned: bool) -> Update:
    """The UPDATE that makes room for one more message (built once per variant, reused with parameters).

    `lease` is "claim" or "release" to take or give back the turn's lease in the same statement, or None.
    """
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
        condition = condition & session_owned_by(bindparam("owner"))
    if lease == "claim":
        condition = condition & TurnLocks.claim_condition()
        values.update(TurnLocks.claim_values())
    elif lease == "release":
        values.update(TurnLocks.release_values())
    return update(SESSION).where(condition).values(values).returning(SESSION.c.message_count, SESSION.c.agent_id)


@dataclass
class Draft:
    """A message about to be appended: its fields besides id, session, seq and times."""

    role: str
    content: str
    source: str = "text"
    status: str = "complete"
    error: dict[str, str] | None = None
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int | None = None
    audio_path: str | None = None
    audio_content_type: str | None = None


def append_message(
    connection: Connection, locks: TurnLocks, lease: Lease, draft: Draft, *, owner_id: str | None = None
) -> tuple[MessageRead, str]:
    """Add a message at the end of the session's history; returns it and the session's agent id.

    Its `seq` comes from the session's counter, bumped by the same UPDATE that takes the turn's lease (a user's
    message, unless the lease is held already) or gives it back (the reply): a turn's bookkeeping costs no statements
    of its own. The first message names an untitled session. Core statements built once, not ORM units of work.
    """
    now = utcnow()
    lease_op = ("claim" if not lease.held else None) if draft.role == "user" else "release"
    title = _title_from(draft.content) if draft.role == "user" else None
    params = {"session_id": lease.session_id, "now": now, "new_title": title, "owner": owner_id}
    params |= locks.lease_params(lease, now)
    statement = _append_statement(lease=lease_op, title=title is not None, owned=owner_id is not None)
    row = connection.execute(statement, params).one_or_none()
    if row is None:
        visible = SESSION.c.id == lease.session_id
        if owner_id is not None:
            visible &= session_owned_by(owner_id)
        if lease_op == "claim" and connection.scalar(select(exists().where(visible))):
            raise LeaseTaken
        raise SessionNotFound(f"No chat session with id {lease.session_id!r}.")
    # A plain row, not an ORM object: this runs twice per turn, and instrumented attributes cost more than the INSERT.
    values = {
        "id": new_id(),
        "session_id": lease.session_id,
        "seq": row.message_count,
        "created_at": now,
        "updated_at": now,
        **vars(draft),
    }
    connection.execute(INSERT_MESSAGE, values)
    return MessageRead.of(SimpleNamespace(**values)), row.agent_id


def build_context(connection: Connection, *, prompt: str, session_id: str, budget: int) -> list[ChatMessage]:
    """The agent's prompt, then the newest messages that fit the token budget, oldest first: complete ones, and the
    part of a stopped reply that was written (so "go on" can continue it)."""
    rows = connection.execute(SELECT_CONTEXT, {"session_id": session_id})
    remaining = budget - estimate_tokens(prompt)
    history: list[ChatMessage] = []
    for role, content in rows:
        if not content:  # a reply stopped before its first word
            continue
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


async def run(
    runtime: Runtime,
    *,
    lease: Lease,
    question: Draft,
    owner_id: str | None = None,
    on_user_stored: asyncio.Future[MessageRead] | None = None,
    on_token: TokenSink | None = None,
    on_answer: Callable[[str], None] | None = None,
    stop: asyncio.Event | None = None,
) -> TurnRead:
    """One exchange, inside `runtime.locks.hold(...)`: store the question, ask the model, store the answer.

    A provider failure is stored as the assistant's `failed` message (its `error` says which); it is not raised.
    `on_user_stored` learns the question once it is stored; `on_token` gets the reply's pieces as they arrive (and
    asks for a streamed reply); `on_answer` gets the whole reply as soon as the model has written it, before it is
    stored. When `stop` is set while the model writes, the reply so far is stored `cancelled`.
    """
    user, agent, context = await _store_question(runtime, lease, question, owner_id)
    if on_user_stored is not None:
        on_user_stored.set_result(user)
    answer = await _ask(runtime, agent, context, source=question.source, on_token=on_token, stop=stop)
    if on_answer is not None and answer.status == "complete":
        on_answer(answer.content)
    assistant, _ = await runtime.db.transaction(
        lambda connection: append_message(connection, runtime.locks, lease, answer)
    )
    lease.held = False
    return TurnRead(user_message=user, assistant_message=assistant)


async def _store_question(
    runtime: Runtime, lease: Lease, question: Draft, owner_id: str | None
) -> tuple[MessageRead, Any, list[ChatMessage]]:
    """Store the user's message (taking the lease, waiting while another process holds it); the agent and context."""

    def store(connection: Connection) -> tuple[MessageRead, Any, list[ChatMessage]]:
        user, agent_id = append_message(connection, runtime.locks, lease, question, owner_id=owner_id)
        agent = connection.execute(SELECT_AGENT, {"agent_id": agent_id}).one()
        budget = runtime.settings.context_token_budget
        return user, agent, build_context(connection, prompt=agent.prompt, session_id=lease.session_id, budget=budget)

    while True:
        try:
            stored = await runtime.db.transaction(store)
        except LeaseTaken:
            await runtime.locks.retry_later(lease)
            continue
        lease.held = True
        return stored


async def _ask(
    runtime: Runtime,
    agent: Any,
    context: list[ChatMessage],
    *,
    source: str,
    on_token: TokenSink | None,
    stop: asyncio.Event | None,
) -> Draft:
    """The model's answer as a message to store: the reply, the provider's failure, or what was written when the
    turn was stopped."""
    started = time.perf_counter()
    written: list[str] = []

    def received(piece: str) -> None:
        written.append(piece)
        if on_token is not None:
            on_token(piece)

    asking = asyncio.ensure_future(
        runtime.provider.chat(
            context,
            model=agent.model,
            temperature=agent.temperature,
            on_token=received if on_token is not None else None,
        )
    )
    try:
        if stop is not None and not await finishes_first(asking, stop):
            asking.cancel()
            await asyncio.gather(asking, return_exceptions=True)
            return Draft(
                role="assistant",
                content="".join(written),
                source=source,
                status="cancelled",
                model=agent.model,
                latency_ms=round((time.perf_counter() - started) * 1000),
            )
        reply: ChatReply = await asking
    except UpstreamError as failure:
        return Draft(
            role="assistant",
            content="",
            source=source,
            status="failed",
            error=failure.as_error_field(),
            model=agent.model,
            latency_ms=round((time.perf_counter() - started) * 1000),
        )
    finally:
        if not asking.done():  # this task itself was cancelled (the server is stopping)
            asking.cancel()
    return Draft(
        role="assistant",
        content=reply.text,
        source=source,
        model=reply.model,
        prompt_tokens=reply.prompt_tokens,
        completion_tokens=reply.completion_tokens,
        latency_ms=round((time.perf_counter() - started) * 1000),
    )


def failure_of(turn: TurnRead) -> AppError | None:
    """The error a stored turn's reply failed with, as raised (None for a complete reply)."""
    error = turn.assistant_message.error
    return error.as_error() if error is not None else None


# --- a text turn running in the background ---------------------------------------------------------------------------

END_OF_TOKENS = object()


@dataclass
class TokenEvent:
    delta: str


@dataclass
class DoneEvent:
    turn: TurnRead


@dataclass
class CancelledEvent:
    turn: TurnRead
    """The stored turn: its reply is `cancelled`, with the text written before the stop."""


@dataclass
class ErrorEvent:
    error: AppError
    turn: TurnRead | None = None
    """The stored turn when the reply failed at the provider (its failure is stored with the question)."""


TurnEvent = TokenEvent | DoneEvent | CancelledEvent | ErrorEvent


@dataclass
class RunningTurn:
    task: asyncio.Task[TurnRead]
    stored: asyncio.Future[MessageRead]
    tokens: asyncio.Queue[Any]

    async def user_message(self) -> MessageRead:
        """The stored user message; raises what stopped the turn before it was stored (404, 409)."""
        waiting: set[asyncio.Future[Any]] = {self.stored, self.task}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if self.stored.done() and not self.stored.cancelled():
            return self.stored.result()
        self.task.result()
        raise AssertionError("a turn ended without storing its user message")  # pragma: no cover

    async def result(self) -> TurnRead:
        """The finished turn, or the error its reply failed with. Waiting can be cancelled (client gone) without
        cancelling the turn."""
        turn = await asyncio.shield(self.task)
        if (failure := failure_of(turn)) is not None:
            raise failure
        return turn

    async def events(self) -> AsyncIterator[TurnEvent]:
        """Tokens as they arrive, then exactly one `DoneEvent`, `CancelledEvent` or `ErrorEvent`."""
        while (item := await self.tokens.get()) is not END_OF_TOKENS:
            yield TokenEvent(item)
        await asyncio.wait({self.task})
        if self.task.cancelled():  # the server is stopping
            yield ErrorEvent(TurnInterrupted("The server stopped before the reply was finished; send it again."))
            return
        crash = self.task.exception()
        if crash is None:
            turn = self.task.result()
            failure = failure_of(turn)
            if failure is not None:
                yield ErrorEvent(failure, turn)
            elif turn.assistant_message.status == "cancelled":
                yield CancelledEvent(turn)
            else:
                yield DoneEvent(turn)
        elif isinstance(crash, AppError):
            yield ErrorEvent(crash)
        else:
            log.error("chat turn failed", exc_info=crash)
            yield ErrorEvent(AppError("An unexpected error occurred; it has been logged."))


async def send(runtime: Runtime, *, owner_id: str, session_id: str, content: str, stream: bool = False) -> RunningTurn:
    """A typed message: counted against the sender's rate limit, then its turn starts in the background, waiting
    for the session's turn, and runs to completion.

    With `stream`, the reply is requested as a stream and its pieces are offered through `RunningTurn.events`.
    The turn takes its place in the session's queue before the limit is counted (on PostgreSQL, a round trip), so
    messages keep their arrival order; a refused one leaves the queue without storing anything.
    """
    loop = asyncio.get_running_loop()
    admitted: asyncio.Future[None] = loop.create_future()
    stored: asyncio.Future[MessageRead] = loop.create_future()
    tokens: asyncio.Queue[Any] = asyncio.Queue()

    async def turn() -> TurnRead:
        try:
            async with runtime.locks.hold(session_id) as lease:
                await admitted
                with runtime.stops.track(session_id) as stop:
                    return await run(
                        runtime,
                        lease=lease,
                        question=Draft(role="user", content=content),
                        owner_id=owner_id,
                        on_user_stored=stored,
                        on_token=tokens.put_nowait if stream else None,
                        stop=stop.requested,
                    )
        finally:
            tokens.put_nowait(END_OF_TOKENS)
            if not stored.done():
                stored.cancel()

    running = RunningTurn(task=runtime.spawn(turn()), stored=stored, tokens=tokens)
    try:
        await runtime.message_limiter.check(owner_id)
    except Exception as refused:
        admitted.set_exception(refused)
        raise
    except BaseException:  # the request was cancelled (the client went away) before the count
        admitted.cancel()
        raise
    admitted.set_result(None)
    return running


async def stop(runtime: Runtime, *, owner_id: str, session_id: str) -> None:
    """Stop whatever turn is running in the session, typed or spoken (409 `no_turn_running` when none is).

    Returns once the turn has stored what it had: the session is free for the next turn.
    """
    async with runtime.db.read() as db:
        chat, _ = await owned_session(db, owner_id=owner_id, session_id=session_id)
        leased = chat.lease_token is not None and chat.lease_expires_at is not None and chat.lease_expires_at > utcnow()
        speaking = await db.scalar(
            select(exists().where(VoiceTurn.session_id == session_id, VoiceTurn.status.in_(UNFINISHED)))
        )
    # Another process may run it (PostgreSQL): it is asked only when the session shows a turn under way.
    if not await runtime.stops.stop_anywhere(session_id=session_id, elsewhere=leased or bool(speaking)):
        raise NoTurnRunning("No turn is running in this session.")
