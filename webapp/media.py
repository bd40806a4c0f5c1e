"""Where audio files live: `MEDIA_DIR/sessions/<session id>/…`, so deleting a session's folder deletes its audio."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable
from pathlib import Path

from webapp.config import Settings


def session_dir(settings: Settings, session_id: str) -> Path:
    return settings.media_dir / "sessions" / session_id


def media_key(session_id: str, name: str) -> str:
    """The path stored in the database: relative to MEDIA_DIR, so the folder can move."""
    return f"sessions/{session_id}/{name}"


def media_path(settings: Settings, key: str) -> Path:
    return settings.media_dir / key


async def remove_session_media(settings: Settings, session_ids: Iterable[str]) -> None:
    folders = [session_dir(settings, session_id) for session_id in session_ids]

    def remove() -> None:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)

    await asyncio.to_thread(remove)
