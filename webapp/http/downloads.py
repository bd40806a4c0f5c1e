"""Serving a stored file over HTTP: validators (`ETag`, `Last-Modified`), conditional requests and byte ranges.

Starlette's `FileResponse` serves ranges and sets the validators; this adds what it leaves out: `304 Not Modified`,
`Cache-Control`, Range requests ignored as RFC 9110 says (an unknown unit, a stale `If-Range`), and problem documents
instead of plain-text errors for ranges it cannot serve.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Header
from starlette.responses import FileResponse, MalformedRangeHeader, RangeNotSatisfiable, Response
from starlette.types import Receive, Scope, Send

from webapp.errors import AppError, InvalidRange, UnsatisfiableRange
from webapp.http.openapi import AUDIO_MEDIA_TYPES, audio_response, problems

# Private to the account that asked (a shared cache must not keep it), and checked with the validators on reuse.
CACHE_CONTROL = "private, no-cache"


@dataclass(frozen=True)
class Conditions:
    """A download request's `Range` and validators."""

    byte_range: str | None = None
    if_range: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None


def _conditions(
    byte_range: Annotated[str | None, Header(alias="Range", description="For example `bytes=0-1023`.")] = None,
    if_range: Annotated[str | None, Header(description="Serve the `Range` only if this is still the `ETag`.")] = None,
    if_none_match: Annotated[str | None, Header(description="The `ETag` of your copy.")] = None,
    if_modified_since: Annotated[str | None, Header(description="The `Last-Modified` of your copy.")] = None,
) -> Conditions:
    return Conditions(byte_range, if_range, if_none_match, if_modified_since)


ConditionsDep = Annotated[Conditions, Depends(_conditions)]


def audio_download(description: str, *errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route serving stored audio through `file_response`: 200, 206, 304, the range errors and
    the route's own `errors`."""
    return {
        200: audio_response(f"{description} (with `ETag`, `Last-Modified`, `Accept-Ranges`)."),
        206: audio_response(
            "The byte range asked for with `Range` (`multipart/byteranges` for several ranges).",
            [*AUDIO_MEDIA_TYPES, "multipart/byteranges"],
        ),
        304: {"description": "Not modified: the `If-None-Match` or `If-Modified-Since` copy is current."},
        **problems(InvalidRange, UnsatisfiableRange, *errors),
    }


def file_response(path: Path, media_type: str, conditions: Conditions) -> Response:
    """The file, all of it or a range, or `304` when the client's copy is current (RFC 9110 §13)."""
    byte_range, if_range = conditions.byte_range, conditions.if_range
    if_none_match, if_modified_since = conditions.if_none_match, conditions.if_modified_since
    stat = path.stat()
    response = FileResponse(path, media_type=media_type, stat_result=stat, headers={"Cache-Control": CACHE_CONTROL})
    etag, last_modified = response.headers["etag"], response.headers["last-modified"]
    if _not_modified(etag, last_modified, if_none_match, if_modified_since):
        return Response(
            status_code=304, headers={"ETag": etag, "Last-Modified": last_modified, "Cache-Control": CACHE_CONTROL}
        )
    if byte_range is None:
        return response
    unit = byte_range.split("=", 1)[0].strip().lower() if "=" in byte_range else None
    stale = if_range is not None and if_range.strip() not in (etag, last_modified)
    if unit not in (None, "bytes") or stale:  # an unknown unit or another version: the Range is ignored (§14.2)
        return WholeFile(path, media_type=media_type, stat_result=stat, headers={"Cache-Control": CACHE_CONTROL})
    _check_range(byte_range, size=stat.st_size)
    return response


class WholeFile(FileResponse):
    """The whole file, whatever `Range` the request carried."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(name, value) for name, value in scope["headers"] if name != b"range"]
        await super().__call__({**scope, "headers": headers}, receive, send)


def _not_modified(etag: str, last_modified: str, if_none_match: str | None, if_modified_since: str | None) -> bool:
    if if_none_match is not None:  # it wins over If-Modified-Since; compared weakly (§13.1.2)
        tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
        return "*" in tags or etag.removeprefix("W/") in tags
    if if_modified_since is not None:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):  # an unparseable date is ignored (§13.1.3)
            return False
        return parsedate_to_datetime(last_modified) <= (since if since.tzinfo else since.replace(tzinfo=UTC))
    return False


def _check_range(header: str, *, size: int) -> None:
    try:
        FileResponse._parse_range_header(header, size)  # Starlette's own parser, so both agree on what is valid
    except MalformedRangeHeader as exc:
        raise InvalidRange(f"{exc.content} Send for example `Range: bytes=0-1023`.") from None
    except RangeNotSatisfiable:
        raise UnsatisfiableRange(
            f"The file has {size} bytes; the range starts beyond it.", headers={"Content-Range": f"bytes */{size}"}
        ) from None
