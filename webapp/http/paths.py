"""Where the JSON API lives: the one place that spells its prefix (routers are mounted under it, `Location`s use it)."""

from __future__ import annotations

API_PREFIX = "/api/v1"
