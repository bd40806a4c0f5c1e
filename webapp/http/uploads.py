"""Receive a multipart file field straight to disk, enforcing a size cap while the bytes arrive.

Starlette's form parser would spool the whole upload before we could look at its size; this writes only the named
field, chunk by chunk, and stops reading the moment the cap is passed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

from webapp.errors import AudioTooLarge, ValidationFailed

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

MULTIPART_OVERHEAD = 64 * 1024
"""Room for boundaries, headers and small fields when judging a request by its Content-Length."""


def _missing(field: str, why: str) -> ValidationFailed:
    return ValidationFailed(why, errors=[{"loc": ["body", field], "msg": why, "type": "missing"}])


class _FieldWriter:
    """python-multipart callbacks that copy one field's data into a file."""

    def __init__(self, field: str, dest: Path, max_bytes: int) -> None:
        self.field, self.dest, self.max_bytes = field, dest, max_bytes
        self.size = 0
        self.found = False
        self.too_large = False
        self._file: IO[bytes] | None = None
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_part,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_part(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = self._header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        if options.get(b"name") == self.field.encode() and not self.found:
            self._file = self.dest.open("wb")

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self._file is None or self.too_large:
            return
        self.size += end - start
        if self.size > self.max_bytes:
            self.too_large = True
            return
        self._file.write(data[start:end])

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.found = True

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def audio_receiver(request: Request, *, max_bytes: int) -> Callable[[Path], Awaitable[None]]:
    """What `voice.accept` calls to write the request's `audio` field to disk, under `max_bytes`."""

    async def receive(dest: Path) -> None:
        await receive_file(request, field="audio", dest=dest, max_bytes=max_bytes)

    return receive


async def receive_file(request: Request, *, field: str, dest: Path, max_bytes: int) -> int:
    """Write the multipart field `field` of the request body to `dest`; returns its size in bytes.

    Raises `AudioTooLarge` (413) past `max_bytes`, without reading the rest, and `ValidationFailed` (422) for a body
    that is not multipart or has no such field.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise _missing(field, f"Send the recording as multipart/form-data with a file field named {field!r}.")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes + MULTIPART_OVERHEAD:
        raise AudioTooLarge(_too_large(max_bytes))
    writer = _FieldWriter(field, dest, max_bytes)
    parser = MultipartParser(boundary, cast("MultipartCallbacks", writer.callbacks()))
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if writer.too_large:
                raise AudioTooLarge(_too_large(max_bytes))
        parser.finalize()
    except MultipartParseError as exc:
        raise ValidationFailed(f"The multipart body is malformed: {exc}") from exc
    finally:
        writer.close()
    if not writer.found:
        raise _missing(field, f"The form has no file field named {field!r}.")
    return writer.size


def _too_large(max_bytes: int) -> str:
    return f"The recording is larger than the limit of {max_bytes:,} bytes."
