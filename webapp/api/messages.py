"""Stored audio of voice messages."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response

from webapp.deps import AUTHENTICATED, PrincipalDep, RuntimeDep
from webapp.errors import AudioNotFound, MessageNotFound
from webapp.http.downloads import ConditionsDep, audio_download, file_response
from webapp.services import messages

router = APIRouter(tags=["messages"], dependencies=AUTHENTICATED)


@router.get(
    "/messages/{message_id}/audio",
    response_class=FileResponse,
    summary="Download a message's audio",
    responses=audio_download("The audio, byte for byte as stored", MessageNotFound, AudioNotFound),
)
async def get_message_audio(
    message_id: str, runtime: RuntimeDep, principal: PrincipalDep, conditions: ConditionsDep
) -> Response:
    """A voice message's audio: the user's recording as uploaded, or the agent's spoken reply (Range supported)."""
    path, content_type = await messages.audio(runtime, owner_id=principal.user_id, message_id=message_id)
    return file_response(path, content_type, conditions)
