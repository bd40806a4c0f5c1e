"""Stored audio of voice messages."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from webapp.deps import AUTHENTICATED, DbDep, PrincipalDep, SettingsDep
from webapp.errors import AudioNotFound
from webapp.media import media_path
from webapp.problems import PROBLEM_SCHEMA
from webapp.services import chats

router = APIRouter(tags=["messages"], dependencies=AUTHENTICATED)


@router.get(
    "/messages/{message_id}/audio",
    response_class=FileResponse,
    responses={
        200: {"description": "The audio, byte for byte as stored.", "content": {"audio/*": {}}},
        206: {"description": "The requested byte range."},
        404: {
            "description": "No such message, or it has no audio.",
            "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}},
        },
    },
)
async def get_message_audio(message_id: str, db: DbDep, settings: SettingsDep, principal: PrincipalDep) -> Any:
    """A voice message's audio: the user's recording as uploaded, or the agent's spoken reply (Range supported)."""
    message = await chats.get_message(db=db, owner_id=principal.user_id, message_id=message_id)
    if message.audio_path is None or message.audio_content_type is None:
        raise AudioNotFound(f"Message {message_id!r} has no audio.")
    path = media_path(settings, message.audio_path)
    if not path.is_file():
        raise AudioNotFound(f"The audio of message {message_id!r} is missing from storage.")
    return FileResponse(path, media_type=message.audio_content_type)
