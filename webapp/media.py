"""Where audio files live: `MEDIA_DIR/sessions/<session id>/…`, so deleting a session's folder deletes its audio."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterable
from email.utils import parsedate_to_datetime
from pathlib import Path

from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable, Response

from webapp.config import Settings
from webapp.errors import InvalidRange, UnsatisfiableRange


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


def file_response(
    path: Path,
    media_type: str,
    *,
    byte_range: str | None = None,
    if_none_match: str | None = None,
    if_modified_since: str | None = None,
) -> Response:
    """A stored file with `ETag`/`Last-Modified`: 304 when the client's copy is current, ranges checked up front."""
    response = FileResponse(path, media_type=media_type, stat_result=path.stat())
    if _not_modified(response, if_none_match, if_modified_since):
        kept = ("etag", "last-modified")
        return Response(status_code=304, headers={k: v for k, v in response.headers.items() if k in kept})
    if byte_range is not None:
        _check_range(byte_range, size=int(response.headers["content-length"]))
    return response


def _not_modified(response: FileResponse, if_none_match: str | None, if_modified_since: str | None) -> bool:
    if if_none_match is not None:  # it wins over If-Modified-Since (RFC 9110 §13.1.3)
        tags = [tag.strip() for tag in if_none_match.split(",")]
        return "*" in tags or response.headers["etag"] in tags
    if if_modified_since is not None:
        try:
            return parsedate_to_datetime(response.headers["last-modified"]) <= parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):  # an unparseable date is ignored, as RFC 9110 says
            return False
    return False


def _check_range(header: str, *, size: int) -> None:
    """Reject a `Range` header that `FileResponse` would refuse in plain text, as a problem document instead."""
    try:
        FileResponse._parse_range_header(header, size)  # Starlette's own parser, so both agree on what is valid
    except MalformedRangeHeader as exc:
        raise InvalidRange(f"{exc.content} Send for example `Range: bytes=0-1023`.") from None
    except RangeNotSatisfiable:
        raise UnsatisfiableRange(
            f"The audio has {size} bytes; the range starts beyond it.", headers={"Content-Range": f"bytes */{size}"}
        ) from None
