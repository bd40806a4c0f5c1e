"""Opaque keyset cursors: a page ends at a row, and the cursor names that row's sort key.

A cursor comes back from the client, so decoding trusts nothing: its size is bounded before it is parsed, and each
part must be exactly the type the query needs, in the range the database can compare (anything else is 422).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from webapp.errors import ValidationFailed

MAX_CURSOR_CHARS = 256
"""Far above any cursor we issue (~80 characters), and small enough to bound the JSON nesting depth."""
_MAX_INT = 2**63 - 1  # a signed 64-bit column
_MAX_TEXT = 64  # ids are 26-36 characters


def encode_cursor(*key: Any) -> str:
    plain = [value.isoformat() if isinstance(value, datetime) else value for value in key]
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The key encoded in `cursor`, each part checked against the given type; 422 for anything malformed."""
    try:
        if len(cursor) > MAX_CURSOR_CHARS:
            raise ValueError("too long")
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)), parse_constant=_no_constant)
        if not isinstance(raw, list) or len(raw) != len(types):
            raise ValueError("wrong shape")
        return tuple(_part(kind, value) for kind, value in zip(types, raw, strict=True))
    except (ValueError, OverflowError, binascii.Error, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValidationFailed(
            "The cursor is not valid; pass a `next_cursor` from a previous page.",
            errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "value_error"}],
        ) from exc


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid cursor value")


def _part(kind: type, value: Any) -> Any:
    if kind is int:
        if type(value) is not int or not 0 <= value <= _MAX_INT:
            raise ValueError("not a sequence number")
        return value
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_TEXT or "\x00" in value:
        raise ValueError("not a key")
    value.encode()  # a lone surrogate cannot be sent to the database
    if kind is datetime:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            raise ValueError("a time without its offset")
        return moment.astimezone(UTC)  # OverflowError at the ends of the calendar
    if kind is str:
        return value
    raise TypeError(f"no cursor part of type {kind.__name__}")  # a programming error, not the client's


async def keyset_page(
    db: AsyncSession,
    query: Select[Any],
    *,
    key: Sequence[InstrumentedAttribute[Any]],
    descending: bool,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of `query` ordered by `key` (unique together), after the row the cursor names; and the next cursor.

    The cursor holds the last row's key, so a page costs one indexed range scan however deep it is.
    """
    if cursor:
        after = decode_cursor(cursor, *(column.type.python_type for column in key))
        position = tuple_(*key) < tuple_(*after) if descending else tuple_(*key) > tuple_(*after)
        query = query.where(position)
    order = [column.desc() if descending else column.asc() for column in key]
    rows = list((await db.scalars(query.order_by(*order).limit(limit + 1))).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(*(getattr(rows[-1], column.key) for column in key))
