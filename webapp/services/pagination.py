"""Opaque keyset cursors: a page ends at a row, and the cursor names that row's sort key."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from webapp.errors import ValidationFailed


def encode_cursor(*key: Any) -> str:
    plain = [value.isoformat() if isinstance(value, datetime) else value for value in key]
    return base64.urlsafe_b64encode(json.dumps(plain, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *types: type) -> tuple[Any, ...]:
    """The key encoded in `cursor`, each part converted to the given type; 422 for anything malformed."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(types):
            raise ValueError
        return tuple(
            datetime.fromisoformat(value) if kind is datetime else kind(value)
            for kind, value in zip(types, raw, strict=True)
        )
    except (ValueError, TypeError, UnicodeDecodeError) as exc:
        raise ValidationFailed(
            "The cursor is not valid; pass a `next_cursor` from a previous page.",
            errors=[{"loc": ["query", "cursor"], "msg": "invalid cursor", "type": "value_error"}],
        ) from exc
