"""Message queries: a session's history and one message's audio. (Messages are written by `turns` only.)"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select

from webapp.errors import AudioNotFound, MessageNotFound
from webapp.media import media_path
from webapp.models import Message, VoiceTurn
from webapp.schemas import MessageRead, Page
from webapp.services.ownership import in_session_owned_by
from webapp.services.pagination import keyset_page
from webapp.services.runtime import Runtime
from webapp.services.sessions import owned_session


async def list_messages(
    runtime: Runtime, *, owner_id: str, session_id: str, limit: int, cursor: str | None
) -> Page[MessageRead]:
    """Chronological history."""
    async with runtime.db.read() as db:
        await owned_session(db, owner_id=owner_id, session_id=session_id)
        messages, next_cursor = await keyset_page(
            db,
            select(Message).where(Message.session_id == session_id),
            key=(Message.seq,),
            descending=False,
            limit=limit,
            cursor=cursor,
        )
    return Page[MessageRead](items=[MessageRead.of(message) for message in messages], next_cursor=next_cursor)


async def whole_history(runtime: Runtime, *, owner_id: str, session_id: str) -> list[MessageRead]:
    """Every message of the session, oldest first (for the chat page): one read, the owner checked once."""
    async with runtime.db.read() as db:
        await owned_session(db, owner_id=owner_id, session_id=session_id)
        found = await db.scalars(select(Message).where(Message.session_id == session_id).order_by(Message.seq))
        return [MessageRead.of(message) for message in found]


async def voice_timings(runtime: Runtime, *, owner_id: str, session_id: str) -> dict[str, dict[str, int]]:
    """`assistant message id → timings_ms` of the session's voice turns that have a reply: one query for the page's
    stage bars, whatever the number of messages."""
    async with runtime.db.read() as db:
        rows = await db.execute(
            select(VoiceTurn.assistant_message_id, VoiceTurn.timings_ms).where(
                VoiceTurn.session_id == session_id,
                VoiceTurn.assistant_message_id.is_not(None),
                in_session_owned_by(VoiceTurn.session_id, owner_id),
            )
        )
        return {str(message_id): dict(timings or {}) for message_id, timings in rows}


async def get_many(runtime: Runtime, *, owner_id: str, ids: Iterable[str | None]) -> list[MessageRead]:
    """These messages (those that exist and are `owner_id`'s), in the order of their history."""
    wanted = [message_id for message_id in ids if message_id is not None]
    async with runtime.db.read() as db:
        found = await db.scalars(
            select(Message)
            .where(Message.id.in_(wanted), in_session_owned_by(Message.session_id, owner_id))
            .order_by(Message.seq)
        )
        return [MessageRead.of(message) for message in found]


async def audio(runtime: Runtime, *, owner_id: str, message_id: str) -> tuple[Path, str]:
    """The stored file and content type of a voice message's audio (the recording, or the spoken reply)."""
    async with runtime.db.read() as db:
        message = await db.scalar(
            select(Message).where(Message.id == message_id, in_session_owned_by(Message.session_id, owner_id))
        )
    if message is None:
        raise MessageNotFound(f"No message with id {message_id!r}.")
    if message.audio_path is None or message.audio_content_type is None:
        raise AudioNotFound(f"Message {message_id!r} has no audio.")
    path = media_path(runtime.settings, message.audio_path)
    if not path.is_file():
        raise AudioNotFound(f"The audio of message {message_id!r} is missing from storage.")
    return path, message.audio_content_type
