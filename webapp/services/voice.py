"""Voice turns: accept a recording, then transcribe → think → speak in the background, committing each stage.

`accept` validates the recording before anything is stored (size is checked by the upload reader, format, length
and silence here) and queues the turn. `process` runs the pipeline: the text reply comes from `turns.run`, the same
engine as typed messages, streamed; each sentence is spoken as soon as it is written (`_Speaker`), and at the end
the segments are joined into the reply's one audio file. `cancel` stops a turn (barge-in); `recover` picks up turns
whose worker stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Row, Table, insert, select, update

from webapp.ai.sentences import SentenceSplitter
from webapp.audio import AudioClip, content_type_for, extension_for, join_speech, load_clip
from webapp.db import utcnow
from webapp.errors import (
    AppError,
    NoSpeechDetected,
    NoTurnRunning,
    SegmentNotFound,
    SessionNotFound,
    TurnFinished,
    TurnInterrupted,
    UpstreamUnavailable,
    VoiceTurnNotFound,
)
from webapp.media import media_key, media_path, session_dir
from webapp.models import Agent, ChatSession, VoiceTurn
from webapp.schemas import VoiceTurnRead
from webapp.services import turns
from webapp.services.ownership import agent_owned_by, in_session_owned_by
from webapp.services.runtime import Runtime, cancel_and_wait
from webapp.services.sessions import owned_session
from webapp.services.stops import finishes_first
from webapp.services.turns import AGENT, MESSAGE, SESSION
from webapp.services.voice_events import UNFINISHED, End, VoiceEvent, finished, follow

log = logging.getLogger(__name__)
T = TypeVar("T")
VOICE_TURN = cast(Table, VoiceTurn.__table__)


# --- accepting a recording -------------------------------------------------------------------------------------------


Receive = Callable[[Path], Awaitable[None]]
"""Writes the upload's audio to the given path (the HTTP layer's streaming reader, with its size cap)."""


async def accept(runtime: Runtime, *, owner_id: str, session_id: str, receive: Receive) -> VoiceTurnRead:
    """A recording: counted against the sender's rate limit, checked for its session (404 before reading it),
    received, validated and queued. On any error its file is deleted and nothing is stored."""
    await runtime.voice_limiter.check(owner_id)
    async with runtime.db.read() as db:
        await owned_session(db, owner_id=owner_id, session_id=session_id)
    folder = session_dir(runtime.settings, session_id)
    folder.mkdir(parents=True, exist_ok=True)
    upload = folder / f"incoming-{uuid.uuid4().hex}.part"
    try:
        await receive(upload)
        return await _submit(runtime, owner_id=owner_id, session_id=session_id, upload=upload)
    finally:
        upload.unlink(missing_ok=True)  # renamed away when accepted


async def _submit(runtime: Runtime, *, owner_id: str, session_id: str, upload: Path) -> VoiceTurnRead:
    settings = runtime.settings
    received_at = time.perf_counter()
    async with runtime.voice_slots:
        clip = await asyncio.to_thread(load_clip, upload, max_seconds=settings.max_audio_seconds)
    turn_id = str(uuid.uuid4())
    key = media_key(session_id, f"{turn_id}.recording{extension_for(clip.format)}")
    await asyncio.to_thread(upload.rename, media_path(settings, key))
    clip = dataclasses.replace(clip, path=media_path(settings, key))
    runner = runtime.name if settings.voice_runner else None  # else left for a voice runner to claim

    def store(connection: Connection) -> tuple[VoiceTurnRead, str]:
        voice = connection.scalar(  # the session may have been deleted while the upload arrived
            select(AGENT.c.voice)
            .join(SESSION, SESSION.c.agent_id == AGENT.c.id)
            .where(SESSION.c.id == session_id, agent_owned_by(owner_id))
        )
        if voice is None:
            raise SessionNotFound(f"No chat session with id {session_id!r}.")
        turn = insert(VOICE_TURN).values(
            id=turn_id, session_id=session_id, upload_path=key, upload_format=clip.format, runner=runner
        )
        row = connection.execute(turn.returning(*VOICE_TURN.c)).one()
        return VoiceTurnRead.of(row), voice

    snapshot, voice = await runtime.db.transaction(store)
    if runner is not None:
        job = _Job(turn_id, session_id, key, voice, accepted_at=received_at)
        runtime.spawn(process(runtime, turn_id=turn_id, job=job, clip=clip))
    else:
        runtime.voice_events.job_queued(turn_id)
    return snapshot


# --- reading, following, stopping -----------------------------------------------------------------------------------


async def get_turn(runtime: Runtime, *, owner_id: str, turn_id: str) -> VoiceTurnRead:
    async with runtime.db.read() as db:
        turn = await db.scalar(
            select(VoiceTurn).where(VoiceTurn.id == turn_id, in_session_owned_by(VoiceTurn.session_id, owner_id))
        )
        if turn is None:
            raise VoiceTurnNotFound(f"No voice turn with id {turn_id!r}.")
        return VoiceTurnRead.of(turn)


def follow_turn(runtime: Runtime, *, owner_id: str, turn_id: str) -> AsyncIterator[VoiceEvent]:
    """The turn's current state, its transcript and segments so far, then what follows, ending with `End`."""
    return follow(runtime.voice_events, turn_id, lambda: get_turn(runtime, owner_id=owner_id, turn_id=turn_id))


async def wait_for(runtime: Runtime, *, owner_id: str, turn_id: str) -> VoiceTurnRead:
    """The turn once it has finished."""
    async for event in follow_turn(runtime, owner_id=owner_id, turn_id=turn_id):
        if isinstance(event, End):
            return event.turn
    raise AssertionError("a followed turn ended without a terminal state")  # pragma: no cover


async def segment_audio(runtime: Runtime, *, owner_id: str, turn_id: str, index: int) -> tuple[Path, str]:
    """Where segment `index` of the turn's spoken reply is stored, and its content type."""
    async with runtime.db.read() as db:
        row = (
            await db.execute(
                select(VoiceTurn.segments).where(
                    VoiceTurn.id == turn_id, in_session_owned_by(VoiceTurn.session_id, owner_id)
                )
            )
        ).one_or_none()
    if row is None:
        raise VoiceTurnNotFound(f"No voice turn with id {turn_id!r}.")
    segments = row.segments or []
    if not 0 <= index < len(segments):
        raise SegmentNotFound(f"The voice turn has {len(segments)} spoken segments so far; {index} is not one.")
    key = segments[index]["audio_path"]
    return media_path(runtime.settings, key), content_type_for(runtime.settings.tts_format)


async def cancel(runtime: Runtime, *, owner_id: str, turn_id: str) -> VoiceTurnRead:
    """Barge-in: stop the turn's thinking and speaking; it ends `cancelled`, its session free at once.

    What was said and written stays: the user's message, the reply so far (`cancelled`), the segments spoken.
    """
    turn = await get_turn(runtime, owner_id=owner_id, turn_id=turn_id)
    if finished(turn):
        raise TurnFinished(f"The voice turn has already ended ({turn.status}).")
    if not await runtime.stops.stop_anywhere(voice_turn_id=turn_id):
        raise NoTurnRunning("The voice turn is waiting for a voice runner, or its runner stopped; try again.")
    return await get_turn(runtime, owner_id=owner_id, turn_id=turn_id)


# --- the pipeline ----------------------------------------------------------------------------------------------------


async def _save(
    runtime: Runtime, turn_id: str, *, message: tuple[str, dict[str, Any]] | None = None, **changes: Any
) -> VoiceTurnRead | None:
    """Commit changes to the turn (and to a `message`: its id and values, in the same transaction) and publish the
    turn's new state (None if the turn was deleted meanwhile). One statement, one hop to the database's thread."""
    statement = update(VOICE_TURN).where(VOICE_TURN.c.id == turn_id).values({**changes, "heartbeat_at": utcnow()})

    def save(connection: Connection) -> Row[Any] | None:
        if message is not None:
            message_id, values = message
            connection.execute(update(MESSAGE).where(MESSAGE.c.id == message_id).values(values))
        return connection.execute(statement.returning(*VOICE_TURN.c)).one_or_none()

    row = await runtime.db.transaction(save)
    if row is None:
        runtime.voice_events.publish_gone(turn_id)
        return None
    snapshot = VoiceTurnRead.of(row)
    runtime.voice_events.publish(snapshot)
    return snapshot


async def _heartbeat(runtime: Runtime, turn_id: str) -> None:
    statement = update(VOICE_TURN).where(VOICE_TURN.c.id == turn_id)
    while True:
        await asyncio.sleep(runtime.settings.voice_heartbeat_seconds)
        await runtime.db.transaction(lambda connection: connection.execute(statement.values(heartbeat_at=utcnow())))


@dataclass(frozen=True)
class _Job:
    turn_id: str
    session_id: str
    recording: str
    voice: str
    accepted_at: float
    """`time.perf_counter()` when the upload ended (or the turn was resumed): where `first_audio` counts from."""


async def process(runtime: Runtime, *, turn_id: str, job: _Job | None = None, clip: AudioClip | None = None) -> None:
    """Run one turn to `done`, `failed` or `cancelled` (`job` and `clip` are known when it was just accepted here,
    looked up and decoded again when it was claimed or resumed). Never raises for a failure it can record."""
    heartbeat = asyncio.create_task(_heartbeat(runtime, turn_id))
    try:
        job = job or await _job(runtime, turn_id, time.perf_counter())
        if job is None:
            return  # deleted with its session
        with runtime.stops.track(job.session_id, voice_turn_id=turn_id) as stop:
            await _pipeline(runtime, job, clip, stop.requested)
    except AppError as exc:
        await _save(runtime, turn_id, status="failed", error=exc.as_error_field())
    except Exception as exc:  # a bug must still end the turn, or its listeners would wait forever
        log.exception("voice turn %s failed", turn_id)
        await _save(runtime, turn_id, status="failed", error=AppError(f"Internal error: {exc}").as_error_field())
    finally:
        await cancel_and_wait(heartbeat)


async def _job(runtime: Runtime, turn_id: str, accepted_at: float) -> _Job | None:
    async with runtime.db.read() as db:
        row = (
            await db.execute(
                select(VoiceTurn.session_id, VoiceTurn.upload_path, Agent.voice)
                .join(ChatSession, ChatSession.id == VoiceTurn.session_id)
                .join(Agent, Agent.id == ChatSession.agent_id)
                .where(VoiceTurn.id == turn_id)
            )
        ).one_or_none()
    return None if row is None else _Job(turn_id, row.session_id, row.upload_path, row.voice, accepted_at)


class _Stopped(Exception):
    """The client asked the turn to stop."""


async def _unless_stopped(work: Awaitable[T], stop: asyncio.Event) -> T:
    """`work`'s result, or `_Stopped` (and `work` cancelled) when `stop` is set first."""
    task = asyncio.ensure_future(work)
    try:
        if not await finishes_first(task, stop):
            raise _Stopped
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


@contextlib.contextmanager
def _timed(timings: dict[str, int], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round((time.perf_counter() - started) * 1000)


async def _pipeline(runtime: Runtime, job: _Job, clip: AudioClip | None, stop: asyncio.Event) -> None:
    settings = runtime.settings
    if clip is None:  # resumed after a restart: decode the kept recording again
        async with runtime.voice_slots:
            clip = await asyncio.to_thread(
                load_clip, media_path(settings, job.recording), max_seconds=settings.max_audio_seconds
            )

    timings: dict[str, int] = {}
    speaker = _Speaker(runtime, job, timings)
    try:
        async with runtime.locks.hold(job.session_id) as lease:
            await runtime.locks.claim(lease)  # before transcribing: a turn sent meanwhile waits for this one
            if stop.is_set():
                raise _Stopped
            with _timed(timings, "transcribing"):
                transcript = await _transcribe(runtime, job, clip, stop)
            if not transcript:
                raise NoSpeechDetected("No speech was recognised in the recording.")
            await _save(runtime, job.turn_id, status="thinking", transcript=transcript, timings_ms=dict(timings))
            question = turns.Draft(
                role="user",
                content=transcript,
                source="voice",
                audio_path=job.recording,
                audio_content_type=clip.content_type,
            )
            with _timed(timings, "thinking"):
                exchange = await turns.run(
                    runtime,
                    lease=lease,
                    question=question,
                    on_token=speaker.hear if settings.stream_voice_replies else None,
                    on_answer=speaker.say_the_rest,
                    stop=stop,
                )
    except _Stopped:
        await speaker.abort()
        await _save(runtime, job.turn_id, status="cancelled", timings_ms=dict(timings))
        return
    except BaseException:
        await speaker.abort()
        raise

    user, assistant = exchange.user_message, exchange.assistant_message
    ids: dict[str, Any] = {"user_message_id": user.id, "assistant_message_id": assistant.id}
    if assistant.status != "complete":
        await speaker.abort()
        if assistant.error is not None:
            await _save(runtime, job.turn_id, status="failed", error=assistant.error.as_field(), **ids)
        else:  # stopped while the model wrote: the reply so far is stored, `cancelled`
            await _save(runtime, job.turn_id, status="cancelled", reply_text=assistant.content, **ids)
        return
    await _save(runtime, job.turn_id, status="speaking", reply_text=assistant.content, timings_ms=dict(timings), **ids)
    try:
        with _timed(timings, "speaking"):
            parts = await _unless_stopped(speaker.finish(), stop)
            audio = await _joined(runtime, parts)
    except _Stopped:
        await speaker.abort()
        cancelled = (assistant.id, {"status": "cancelled"})
        await _save(runtime, job.turn_id, message=cancelled, status="cancelled", timings_ms=dict(timings))
        return
    except BaseException:
        await speaker.abort()
        raise
    key = media_key(job.session_id, f"{assistant.id}.reply{extension_for(settings.tts_format)}")
    await asyncio.to_thread(_write, media_path(settings, key), audio)
    reply_audio = {"audio_path": key, "audio_content_type": content_type_for(settings.tts_format)}
    await _save(runtime, job.turn_id, message=(assistant.id, reply_audio), status="done", timings_ms=dict(timings))


async def _transcribe(runtime: Runtime, job: _Job, clip: AudioClip, stop: asyncio.Event) -> str:
    """The recording's transcript; the `transcribing` stage is saved while the request is under way."""
    heard = asyncio.ensure_future(runtime.provider.transcribe(clip))
    try:
        await _save(runtime, job.turn_id, status="transcribing")
        return (await _unless_stopped(heard, stop)).strip()
    finally:
        if not heard.done():  # the save failed
            heard.cancel()
            await asyncio.gather(heard, return_exceptions=True)


async def _joined(runtime: Runtime, parts: list[bytes]) -> bytes:
    """The segments as the reply's one file (CPU work: decoding and encoding again)."""
    try:
        async with runtime.voice_slots:
            return await asyncio.to_thread(join_speech, parts, fmt=runtime.settings.tts_format)
    except ValueError as exc:
        raise UpstreamUnavailable("The AI provider sent speech that could not be decoded.") from exc


class _Speaker:
    """Speaks a reply sentence by sentence as it is written: a bounded number of speech requests in flight, each
    segment stored with the turn and published in order as soon as it and those before it are ready."""

    def __init__(self, runtime: Runtime, job: _Job, timings: dict[str, int]) -> None:
        self._runtime = runtime
        self._job = job
        self._timings = timings
        self._splitter = SentenceSplitter()
        self._in_flight = asyncio.Semaphore(runtime.settings.speech_requests_in_flight)
        self._spoken: list[asyncio.Task[bytes]] = []
        self._ready: asyncio.Queue[tuple[str, asyncio.Task[bytes]] | None] = asyncio.Queue()
        self._publisher: asyncio.Task[list[bytes]] | None = None
        self._heard = False

    def hear(self, piece: str) -> None:
        """A piece of the reply as the model writes it: passed on to followers, spoken once a sentence is complete."""
        self._heard = True
        self._runtime.voice_events.publish_token(self._job.turn_id, piece)
        for sentence in self._splitter.feed(piece):
            self._say(sentence)

    def say_the_rest(self, reply: str) -> None:
        """The model has written the whole `reply` (`turns.run`'s `on_answer`, before the reply is stored): speak what
        is left of it, or all of it in one request when it was not streamed."""
        rest = self._splitter.flush() if self._heard else [reply.strip()] if reply.strip() else []
        for sentence in rest:
            self._say(sentence)

    async def finish(self) -> list[bytes]:
        """Every segment's audio, in order, once the whole reply (`say_the_rest`) has been spoken."""
        if self._publisher is None:  # nothing to say: an empty reply
            return []
        self._ready.put_nowait(None)
        return await self._publisher

    async def abort(self) -> None:
        """Stop speaking; the segments already stored stay."""
        for task in (*self._spoken, *([self._publisher] if self._publisher else [])):
            task.cancel()
        await asyncio.gather(*self._spoken, *([self._publisher] if self._publisher else []), return_exceptions=True)

    def _say(self, sentence: str) -> None:
        task = asyncio.create_task(self._synthesize(sentence))
        self._spoken.append(task)
        self._ready.put_nowait((sentence, task))
        if self._publisher is None:
            self._publisher = asyncio.create_task(self._publish_in_order())

    async def _synthesize(self, sentence: str) -> bytes:
        async with self._in_flight:
            return await self._runtime.provider.speak(sentence, voice=self._job.voice)

    async def _publish_in_order(self) -> list[bytes]:
        runtime, job = self._runtime, self._job
        extension = extension_for(runtime.settings.tts_format)
        segments: list[dict[str, str]] = []
        parts: list[bytes] = []
        while (item := await self._ready.get()) is not None:
            sentence, task = item
            audio = await task
            key = media_key(job.session_id, f"{job.turn_id}.segment{len(segments)}{extension}")
            await asyncio.to_thread(_write, media_path(runtime.settings, key), audio)
            segments.append({"text": sentence, "audio_path": key})
            if len(segments) == 1:
                self._timings["first_audio"] = round((time.perf_counter() - job.accepted_at) * 1000)
            await _save(runtime, job.turn_id, segments=list(segments), timings_ms=dict(self._timings))
            parts.append(audio)
        return parts


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# --- recovery --------------------------------------------------------------------------------------------------------


async def claim_jobs(runtime: Runtime, *, at_most: int = 16) -> int:
    """Claim turns queued by processes that run no voice pipelines (`VOICE_RUNNER=off`), and run them here.

    On PostgreSQL `FOR UPDATE SKIP LOCKED` lets every runner claim at once without waiting for, or taking, another's.
    """
    query = (
        select(VoiceTurn.id)
        .where(VoiceTurn.status == "queued", VoiceTurn.runner.is_(None))
        .order_by(VoiceTurn.created_at)
        .limit(at_most)
    )
    if not runtime.db.is_sqlite:
        query = query.with_for_update(skip_locked=True)
    async with runtime.db.write() as db:
        claimed = list(await db.scalars(query))
        if claimed:
            await db.execute(
                update(VoiceTurn).where(VoiceTurn.id.in_(claimed)).values(runner=runtime.name, heartbeat_at=utcnow())
            )
    for turn_id in claimed:
        runtime.spawn(process(runtime, turn_id=turn_id))
    return len(claimed)


async def recover(runtime: Runtime) -> int:
    """Take over unfinished turns whose runner stopped beating: resume those not yet transcribed, fail the rest.

    Runs at start-up and then periodically, so with several runners a turn is never run twice (the claim is one
    conditional UPDATE) and a crashed runner's turns are picked up by the others.
    """
    stale_before = utcnow() - timedelta(seconds=3 * runtime.settings.voice_heartbeat_seconds)
    async with runtime.db.read() as db:
        orphans = (
            await db.execute(
                select(VoiceTurn.id, VoiceTurn.status).where(
                    VoiceTurn.status.in_(UNFINISHED), VoiceTurn.heartbeat_at < stale_before
                )
            )
        ).all()
    taken = 0
    for turn_id, status in orphans:
        async with runtime.db.write() as db:
            claimed = await db.execute(
                update(VoiceTurn)
                .where(VoiceTurn.id == turn_id, VoiceTurn.heartbeat_at < stale_before)
                .values(heartbeat_at=utcnow(), runner=runtime.name)
            )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another runner took it
        taken += 1
        if status in ("queued", "transcribing"):
            log.info("resuming voice turn %s (was %s)", turn_id, status)
            runtime.spawn(process(runtime, turn_id=turn_id))
        else:
            error = TurnInterrupted(f"The server stopped while this turn was {status}; please try again.")
            await _save(runtime, turn_id, status="failed", error=error.as_error_field())
    return taken


async def run_voice_jobs(runtime: Runtime) -> None:
    """A voice runner's loop: take over abandoned turns and claim waiting ones, every heartbeat or when woken."""
    while True:
        try:
            await recover(runtime)
            await claim_jobs(runtime)
        except Exception:  # a passing database error must not stop the runner
            log.exception("voice runner failed to look for work")
        await runtime.voice_events.wait_for_job(runtime.settings.voice_heartbeat_seconds)
