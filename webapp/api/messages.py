"""Stored audio of voice messages."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import FileResponse, Response

from webapp.deps import AUTHENTICATED, PrincipalDep, RuntimeDep
from webapp.errors import AudioNotFound, InvalidRange, MessageNotFound, UnsatisfiableRange
from webapp.http.downloads import file_response
from webapp.http.openapi import AUDIO_MEDIA_TYPES, audio_response, problems
from webapp.services import messages

router = APIRouter(tags=["messages"], dependencies=AUTHENTICATED)


@router.get(
    "/messages/{message_id}/audio",
    response_class=FileResponse,
    summary="Download a message's audio",
    responses={
        200: audio_response("The audio, byte for byte as stored (with `ETag`, `Last-Modified`, `Accept-Ranges`)."),
        206: audio_response(
            "The byte range asked for with `Range` (`multipart/byteranges` for several ranges).",
            [*AUDIO_MEDIA_TYPES, "multipart/byteranges"],
        ),
        304: {"description": "Not modified: the `If-None-Match` or `If-Modified-Since` copy is current."},
        **problems(InvalidRange, MessageNotFound, AudioNotFound, UnsatisfiableRange),
    },
)
async def get_message_audio(
    message_id: str,
    runtime: RuntimeDep,
    principal: PrincipalDep,
    byte_range: Annotated[str | None, Header(alias="Range", description="For example `bytes=0-1023`.")] = None,
    if_range: Annotated[str | None, Header(description="Serve the `Range` only if this is still the `ETag`.")] = None,
    if_none_match: Annotated[str | None, Header(description="The `ETag` of your copy.")] = None,
    if_modified_since: Annotated[str | None, Header(description="The `Last-Modified` of your copy.")] = None,
) -> Response:
    """A voice message's audio: the user's recording as uploaded, or the agent's spoken reply (Range supported)."""
    path, content_type = await messages.audio(runtime, owner_id=principal.user_id, message_id=message_id)
    return file_response(
        path,
        content_type,
        byte_range=byte_range,
        if_range=if_range,
        if_none_match=if_none_match,
        if_modified_since=if_modified_since,
    )
