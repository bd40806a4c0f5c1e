"""Helpers for voice-turn tests: a spoken clip, its upload, and waiting for the turn to finish."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.audio_samples import encode_clip, question_pcm, speech_pcm


def spoken(fmt: str, text: str | None = None) -> bytes:
    """A spoken clip in `fmt`: the recorded "one two three four five", or `text` freshly synthesised."""
    pcm, rate = speech_pcm(text) if text else question_pcm()
    return encode_clip(pcm, rate, fmt)


async def upload(
    client: httpx.AsyncClient,
    session_id: str,
    data: bytes,
    *,
    name: str = "clip.bin",
    content_type: str = "application/octet-stream",
    params: dict[str, Any] | None = None,
) -> httpx.Response:
    return await client.post(
        f"/sessions/{session_id}/voice", files={"audio": (name, data, content_type)}, params=params or {}
    )


async def finished(client: httpx.AsyncClient, turn_id: str) -> dict[str, Any]:
    # Up to 30 s: a server's first offline turn starts a recognition process and loads faster-whisper in it (~3 s on
    # an idle 2-core machine, several times that while other test processes share the cores).
    for _ in range(1200):
        turn: dict[str, Any] = (await client.get(f"/voice-turns/{turn_id}")).json()
        if turn["status"] in ("done", "failed", "cancelled"):
            return turn
        await asyncio.sleep(0.025)
    raise AssertionError(f"voice turn {turn_id} did not finish: {turn}")


async def reached(client: httpx.AsyncClient, turn_id: str, status: str) -> dict[str, Any]:
    """The voice turn once its status is `status`."""
    for _ in range(800):
        turn: dict[str, Any] = (await client.get(f"/voice-turns/{turn_id}")).json()
        if turn["status"] == status:
            return turn
        await asyncio.sleep(0.005)
    raise AssertionError(f"voice turn {turn_id} never reached {status!r}")


async def spoken_so_far(client: httpx.AsyncClient, turn_id: str, count: int = 1) -> dict[str, Any]:
    """The voice turn once at least `count` of its reply's sentences have been spoken."""
    for _ in range(800):
        turn: dict[str, Any] = (await client.get(f"/voice-turns/{turn_id}")).json()
        if len(turn["segments"]) >= count:
            return turn
        await asyncio.sleep(0.005)
    raise AssertionError(f"voice turn {turn_id} never spoke {count} sentences: {turn}")
