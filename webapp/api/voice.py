"""Voice turns: upload a recording, follow its stages, fetch the spoken reply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import FileResponse, JSONResponse
from sse_starlette import EventSourceResponse, ServerSentEvent

from webapp.audio import FORMATS, SPEECH_FORMATS
from webapp.deps import AUTHENTICATED, PrincipalDep, RuntimeDep
from webapp.errors import (
    AudioTooLarge,
    AudioTooLong,
    NoSpeechDetected,
    RateLimited,
    SessionBusy,
    SessionNotFound,
    TurnInterrupted,
    UnsupportedAudio,
    UpstreamAuthFailed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    VoiceTurnNotFound,
)
from webapp.http.openapi import audio_response, problems, schema_ref, sse_response, upload_body
from webapp.http.paths import API_PREFIX
from webapp.http.uploads import audio_receiver
from webapp.schemas import VoiceTurnRead
from webapp.services import messages, voice
from webapp.services.voice_events import STAGE_ORDER, TERMINAL

router = APIRouter(tags=["voice"], dependencies=AUTHENTICATED)


@router.post(
    "/sessions/{session_id}/voice",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a recording",
    openapi_extra=upload_body("audio", "A recording: webm, ogg, wav, mp3, m4a/mp4 or flac (known by its bytes)."),
    responses={
        200: audio_response(
            "With `wait=true`: the spoken reply, with `X-Voice-Turn-Id`, `X-User-Message-Id` and "
            "`X-Assistant-Message-Id` headers. The 5xx problems below apply only with `wait=true`.",
            sorted({FORMATS[name][1] for name in SPEECH_FORMATS}),
        ),
        202: {"description": "The turn was accepted and queued; `Location` names it.", "model": VoiceTurnRead},
        **problems(
            SessionNotFound,
            SessionBusy,
            AudioTooLarge,
            UnsupportedAudio,
            AudioTooLong,
            NoSpeechDetected,
            RateLimited,
            UpstreamUnavailable,
            UpstreamRejected,
            UpstreamAuthFailed,
            UpstreamRateLimited,
            TurnInterrupted,
            UpstreamTimeout,
        ),
    },
)
async def create_voice_turn(
    session_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    wait: Annotated[bool, Query(description="Answer only when the turn has finished, with the reply audio.")] = False,
) -> Any:
    """Send a recording; the agent's spoken reply follows through the voice turn."""
    receive = audio_receiver(request, max_bytes=runtime.settings.max_audio_bytes)
    turn = await voice.accept(runtime, owner_id=principal.user_id, session_id=session_id, receive=receive)
    if not wait:
        return JSONResponse(
            turn.model_dump(mode="json"),
            status_code=status.HTTP_202_ACCEPTED,
            headers={"Location": f"{API_PREFIX}/voice-turns/{turn.id}"},
        )
    finished = await voice.wait_for(runtime, owner_id=principal.user_id, turn_id=turn.id)
    if finished.error is not None:
        raise finished.error.as_error()
    assert finished.assistant_message_id is not None  # a done turn has its reply
    path, media_type = await messages.audio(
        runtime, owner_id=principal.user_id, message_id=finished.assistant_message_id
    )
    headers = {
        "X-Voice-Turn-Id": finished.id,
        "X-User-Message-Id": finished.user_message_id or "",
        "X-Assistant-Message-Id": finished.assistant_message_id or "",
    }
    return FileResponse(path, media_type=media_type, headers=headers)


@router.get("/voice-turns/{turn_id}", summary="Get a voice turn", responses=problems(VoiceTurnNotFound))
async def get_voice_turn(turn_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> VoiceTurnRead:
    """The voice turn's current state."""
    return await voice.get_turn(runtime, owner_id=principal.user_id, turn_id=turn_id)


@router.get(
    "/voice-turns/{turn_id}/events",
    summary="Follow a voice turn (SSE)",
    responses={
        200: sse_response(
            "The current state, then a `status` event per later stage, then one `done` or `failed` event, after "
            "which the stream ends. Every event's data is the whole voice turn.",
            {name: schema_ref("VoiceTurnRead") for name in ("status", "done", "failed")},
        ),
        **problems(VoiceTurnNotFound),
    },
)
async def follow_voice_turn(turn_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> EventSourceResponse:
    """Follow the voice turn's stages as server-sent events."""
    await voice.get_turn(runtime, owner_id=principal.user_id, turn_id=turn_id)  # a 404 before the stream starts

    async def events() -> AsyncIterator[ServerSentEvent]:
        async for snapshot in voice.follow_turn(runtime, owner_id=principal.user_id, turn_id=turn_id):
            name = snapshot.status if STAGE_ORDER[snapshot.status] == TERMINAL else "status"
            yield ServerSentEvent(snapshot.model_dump_json(), event=name)

    return EventSourceResponse(events(), ping=15)
