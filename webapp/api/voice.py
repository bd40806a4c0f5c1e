"""Voice turns: upload a recording, follow its stages, fetch the spoken reply."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import FileResponse, JSONResponse, Response
from sse_starlette import EventSourceResponse

from webapp.audio import FORMATS, SPEECH_FORMATS
from webapp.deps import AUTHENTICATED, PrincipalDep, RuntimeDep
from webapp.errors import (
    AudioTooLarge,
    AudioTooLong,
    NoSpeechDetected,
    NoTurnRunning,
    RateLimited,
    SegmentNotFound,
    SessionBusy,
    SessionNotFound,
    TurnCancelled,
    TurnFinished,
    TurnInterrupted,
    UnsupportedAudio,
    UpstreamAuthFailed,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    VoiceTurnNotFound,
)
from webapp.http.downloads import ConditionsDep, audio_download, file_response
from webapp.http.openapi import TOKEN_EVENT, audio_response, problems, schema_ref, sse_response, upload_body
from webapp.http.paths import API_PREFIX
from webapp.http.sse import voice_events
from webapp.http.uploads import audio_receiver
from webapp.schemas import VoiceTurnRead
from webapp.services import messages, voice

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
            TurnCancelled,
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
    if finished.status == "cancelled":
        raise TurnCancelled("The voice turn was stopped before its reply was spoken.")
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
            "First the turn's current state (a `status` event, even when it has finished), its transcript and every "
            "segment spoken so far; then what follows: `status` per stage, `transcript` once transcribed, `token` "
            "per piece of the reply as it is written, `audio` per spoken sentence (in order, each playable at its "
            "`url`), and last one `done`, `failed` or `cancelled`, after which the stream ends. `status`, "
            "`transcript` and the last event carry the whole voice turn.",
            {
                "status": schema_ref("VoiceTurnRead"),
                "transcript": schema_ref("VoiceTurnRead"),
                "token": TOKEN_EVENT,
                "audio": schema_ref("VoiceSegmentRead"),
                **{name: schema_ref("VoiceTurnRead") for name in ("done", "failed", "cancelled")},
            },
        ),
        **problems(VoiceTurnNotFound),
    },
)
async def follow_voice_turn(turn_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> EventSourceResponse:
    """Follow the voice turn as server-sent events: its stages, the reply's text and its spoken sentences."""
    await voice.get_turn(runtime, owner_id=principal.user_id, turn_id=turn_id)  # a 404 before the stream starts
    events = voice.follow_turn(runtime, owner_id=principal.user_id, turn_id=turn_id)
    return EventSourceResponse(voice_events(events), ping=15)


@router.get(
    "/voice-turns/{turn_id}/segments/{index}",
    response_class=FileResponse,
    summary="Download a spoken segment",
    responses=audio_download(
        "Segment `index` (from 0) of the spoken reply, in the configured `TTS_FORMAT`",
        VoiceTurnNotFound,
        SegmentNotFound,
    ),
)
async def get_voice_segment(
    turn_id: str,
    index: Annotated[int, Path(ge=0, le=100_000)],
    runtime: RuntimeDep,
    principal: PrincipalDep,
    conditions: ConditionsDep,
) -> Response:
    """One spoken sentence of the reply, as soon as it exists (404 `segment_not_found` until then)."""
    path, content_type = await voice.segment_audio(runtime, owner_id=principal.user_id, turn_id=turn_id, index=index)
    return file_response(path, content_type, conditions)


@router.post(
    "/voice-turns/{turn_id}/cancel",
    summary="Stop a voice turn (barge-in)",
    responses=problems(VoiceTurnNotFound, TurnFinished, NoTurnRunning),
)
async def cancel_voice_turn(turn_id: str, runtime: RuntimeDep, principal: PrincipalDep) -> VoiceTurnRead:
    """Stop the turn's thinking and speaking. It ends `cancelled` (its followers get a `cancelled` event); the user's
    message, the reply written so far (stored with status `cancelled`) and the segments spoken stay. The session is
    free for the next turn when this answers."""
    return await voice.cancel(runtime, owner_id=principal.user_id, turn_id=turn_id)
