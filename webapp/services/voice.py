"""Voice turns: accept a recording, then transcribe → think → speak in the background, committing each stage.

`submit` validates the recording before anything is stored (size is checked by the upload reader, format, length
and silence here) and queues the turn. `process` runs the pipeline; `recover` picks up turns whose worker stopped.
The text reply comes from `chats.run_turn`, the same code as typed messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select, update

from webapp.audio import AudioClip, content_type_for, extension_for, load_clip
from webapp.db import utcnow
from webapp.errors import AppError, NoSpeechDetected, TurnInterrupted, VoiceTurnNotFound
from webapp.media import media_key, media_path, session_dir
from webapp.models import Agent, ChatSession, Message, VoiceTurn
from webapp.schemas import VoiceTurnRead
from webapp.services import turns
from webapp.services.ownership import in_session_owned_by
from webapp.services.runtime import Runtime, cancel_and_wait
from webapp.services.sessions import owned_session
from webapp.services.voice_events import STAGE_ORDER, TERMINAL, follow

log = logging.getLogger(__name__)
UNFINISHED = ("queued", "transcribing", "thinking", "speaking")
"""The statuses of a turn still under way: listed, not negated, so the (status, heartbeat_at) index serves recovery."""


# --- accepting a recording -------------------------------------------------------------------------------------------


Receive = Callable[[Path], Awaitable[None]]
"""Writes the upload's audio to the given path (the HTTP layer's streaming reader, with its size cap)."""


async def accept(runtime: Runtime, *, owner_id: str, session_id: str, receive: Receive) -> VoiceTurnRead:
    """A recording: counted against the sender's rate limit, checked for its session (404 before reading it),
    received, validated and queued. On any error its file is deleted and nothing is stored."""
    runtime.voice_limiter.check(owner_id)
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
    clip = await asyncio.to_thread(load_clip, upload, max_seconds=settings.max_audio_seconds)
    turn_id = str(uuid.uuid4())
    key = media_key(session_id, f"{turn_id}.recording{extension_for(clip.format)}")
    await asyncio.to_thread(upload.rename, media_path(settings, key))
    clip = dataclasses.replace(clip, path=media_path(settings, key))
    async with runtime.db.write() as db:
        await owned_session(db, owner_id=owner_id, session_id=session_id)  # deleted while the upload arrived?
        turn = VoiceTurn(id=turn_id, session_id=session_id, upload_path=key, upload_format=clip.format)
        db.add(turn)
        await db.flush()
    snapshot = VoiceTurnRead.of(turn)
    runtime.spawn(process(runtime, turn_id=turn_id, clip=clip))
    return snapshot


# --- reading and following -------------------------------------------------------------------------------------------


async def get_turn(runtime: Runtime, *, owner_id: str, turn_id: str) -> VoiceTurnRead:
    async with runtime.db.read() as db:
        turn = await db.scalar(
            select(VoiceTurn).where(VoiceTurn.id == turn_id, in_session_owned_by(VoiceTurn.session_id, owner_id))
        )
        if turn is None:
            raise VoiceTurnNotFound(f"No voice turn with id {turn_id!r}.")
        return VoiceTurnRead.of(turn)


def follow_turn(runtime: Runtime, *, owner_id: str, turn_id: str) -> AsyncIterator[VoiceTurnRead]:
    """The turn's current state, then every later stage, ending with `done` or `failed`."""
    return follow(runtime.voice_events, turn_id, lambda: get_turn(runtime, owner_id=owner_id, turn_id=turn_id))


async def wait_for(runtime: Runtime, *, owner_id: str, turn_id: str) -> VoiceTurnRead:
    """The turn once it has finished."""
    async for snapshot in follow_turn(runtime, owner_id=owner_id, turn_id=turn_id):
        if STAGE_ORDER[snapshot.status] == TERMINAL:
            return snapshot
    raise AssertionError("a followed turn ended without a terminal state")  # pragma: no cover


# --- the pipeline ----------------------------------------------------------------------------------------------------


async def _save(runtime: Runtime, turn_id: str, **changes: Any) -> VoiceTurnRead | None:
    """Commit changes to the turn and publish its new state (None if the turn was deleted meanwhile)."""
    async with runtime.db.write() as db:
        turn = await db.get(VoiceTurn, turn_id)
        if turn is None:
            return None
        for name, value in changes.items():
            setattr(turn, name, value)
        turn.heartbeat_at = utcnow()
        await db.flush()
        snapshot = VoiceTurnRead.of(turn)
    runtime.voice_events.publish(snapshot)
    return snapshot


async def _heartbeat(runtime: Runtime, turn_id: str) -> None:
    while True:
        await asyncio.sleep(runtime.settings.voice_heartbeat_seconds)
        async with runtime.db.write() as db:
            await db.execute(update(VoiceTurn).where(VoiceTurn.id == turn_id).values(heartbeat_at=utcnow()))


async def process(runtime: Runtime, *, turn_id: str, clip: AudioClip | None = None) -> None:
    """Run one turn to `done` or `failed`. Never raises for a failure it can record on the turn."""
    heartbeat = asyncio.create_task(_heartbeat(runtime, turn_id))
    try:
        async with runtime.voice_slots:
            await _pipeline(runtime, turn_id, clip)
    except AppError as exc:
        await _save(runtime, turn_id, status="failed", error=exc.as_error_field())
    except Exception as exc:  # a bug must still end the turn, or its listeners would wait forever
        log.exception("voice turn %s failed", turn_id)
        await _save(runtime, turn_id, status="failed", error=AppError(f"Internal error: {exc}").as_error_field())
    finally:
        await cancel_and_wait(heartbeat)


@contextlib.contextmanager
def _timed(timings: dict[str, int], stage: str) -> Iterator[None]:
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = round((time.perf_counter() - started) * 1000)


async def _pipeline(runtime: Runtime, turn_id: str, clip: AudioClip | None) -> None:
    settings = runtime.settings
    async with runtime.db.read() as db:
        row = (
            await db.execute(
                select(VoiceTurn, Agent.voice)
                .join(ChatSession, ChatSession.id == VoiceTurn.session_id)
                .join(Agent, Agent.id == ChatSession.agent_id)
                .where(VoiceTurn.id == turn_id)
            )
        ).one_or_none()
    if row is None:
        return  # deleted with its session
    turn, voice = row
    session_id, recording = turn.session_id, turn.upload_path
    if clip is None:  # resumed after a restart: decode the kept recording again
        clip = await asyncio.to_thread(
            load_clip, media_path(settings, recording), max_seconds=settings.max_audio_seconds
        )

    timings: dict[str, int] = {}
    async with runtime.locks.hold(session_id) as lease:
        await runtime.locks.claim(lease)  # before transcribing: a turn sent meanwhile waits for this one
        await _save(runtime, turn_id, status="transcribing")
        with _timed(timings, "transcribing"):
            transcript = (await runtime.provider.transcribe(clip)).strip()
        if not transcript:
            raise NoSpeechDetected("No speech was recognised in the recording.")
        await _save(runtime, turn_id, status="thinking", transcript=transcript, timings_ms=dict(timings))
        question = turns.Draft(
            role="user",
            content=transcript,
            source="voice",
            audio_path=recording,
            audio_content_type=clip.content_type,
        )
        with _timed(timings, "thinking"):
            exchange = await turns.run(runtime, lease=lease, question=question)
    user, assistant = exchange.user_message, exchange.assistant_message
    ids = {"user_message_id": user.id, "assistant_message_id": assistant.id}
    if assistant.error is not None:
        await _save(runtime, turn_id, status="failed", error=assistant.error.as_field(), **ids)
        return
    reply = assistant.content
    await _save(runtime, turn_id, status="speaking", reply_text=reply, timings_ms=dict(timings), **ids)
    with _timed(timings, "speaking"):
        audio = await runtime.provider.speak(reply, voice=voice)
    key = media_key(session_id, f"{assistant.id}.reply{extension_for(settings.tts_format)}")
    await asyncio.to_thread(_write, media_path(settings, key), audio)
    async with runtime.db.write() as db:
        await db.execute(
            update(Message)
            .where(Message.id == assistant.id)
            .values(audio_path=key, audio_content_type=content_type_for(settings.tts_format))
        )
    await _save(runtime, turn_id, status="done", timings_ms=dict(timings))


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


# --- recovery --------------------------------------------------------------------------------------------------------


async def recover(runtime: Runtime) -> int:
    """Take over unfinished turns whose worker stopped beating: resume those not yet transcribed, fail the rest.

    Runs at start-up and then periodically, so with several workers a turn is never run twice (the claim is one
    conditional UPDATE) and a crashed worker's turns are picked up by the others.
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
                .values(heartbeat_at=utcnow())
            )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another worker took it
        taken += 1
        if status in ("queued", "transcribing"):
            log.info("resuming voice turn %s (was %s)", turn_id, status)
            runtime.spawn(process(runtime, turn_id=turn_id))
        else:
            error = TurnInterrupted(f"The server stopped while this turn was {status}; please try again.")
            await _save(runtime, turn_id, status="failed", error=error.as_error_field())
    return taken


async def recover_forever(runtime: Runtime) -> None:
    while True:
        try:
            await recover(runtime)
        except Exception:  # a passing database error must not stop future recovery
            log.exception("voice turn recovery failed")
        await asyncio.sleep(runtime.settings.voice_heartbeat_seconds)
