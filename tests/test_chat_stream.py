"""Streaming replies over SSE: token events then `done` (or `error`), and a disconnect that loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps import make_settings, openai_settings, serve
from tests.fake_openai import CHAT, FakeOpenAI, Scripted
from tests.helpers import history, new_chat, parse_sse, sign_up
from webapp.config import Settings
from webapp.errors import UpstreamTimeout
from webapp.services.turns import END_OF_TOKENS, ErrorEvent, RunningTurn, TokenEvent

SSE = {"accept": "text/event-stream"}


@pytest.fixture
def settings(database_url: str, tmp_path: Path, upstream: FakeOpenAI) -> Settings:
    return openai_settings(database_url, tmp_path, upstream)


async def test_stream_sends_tokens_then_done_with_the_stored_turn(
    client: httpx.AsyncClient, chat: dict[str, Any], upstream: FakeOpenAI
) -> None:
    upstream.push(CHAT, Scripted(stream=["Hel", "lo", " there", "!"]))
    response = await client.post(f"/sessions/{chat['id']}/messages", json={"content": "hi"}, headers=SSE)
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert events[:4] == [("token", {"delta": d}) for d in ["Hel", "lo", " there", "!"]]
    name, done = events[-1]
    assert name == "done" and len(events) == 5
    assert done["assistant_message"]["content"] == "Hello there!"
    assert done["assistant_message"]["usage"]["completion_tokens"] > 0  # from the stream's usage chunk
    assert upstream.received(CHAT)[0].json["stream"] is True
    assert upstream.received(CHAT)[0].json["stream_options"] == {"include_usage": True}
    assert await history(client, chat["id"]) == [done["user_message"], done["assistant_message"]]


async def test_offline_provider_streams_too(database_url: str, tmp_path: Path) -> None:
    async with serve(make_settings(database_url, tmp_path)) as client:
        session = await new_chat(client)
        response = await client.post(f"/sessions/{session['id']}/messages", json={"content": "hi"}, headers=SSE)
    events = parse_sse(response.text)
    tokens = "".join(data["delta"] for name, data in events if name == "token")
    assert len(events) > 3 and events[-1][0] == "done"
    assert tokens == events[-1][1]["assistant_message"]["content"]


async def test_malformed_stream_chunk_ends_with_error_event(
    client: httpx.AsyncClient, chat: dict[str, Any], upstream: FakeOpenAI
) -> None:
    upstream.push(CHAT, Scripted(stream=["partial "], broken_chunk=True))
    response = await client.post(f"/sessions/{chat['id']}/messages", json={"content": "hi"}, headers=SSE)
    events = parse_sse(response.text)
    assert events[0] == ("token", {"delta": "partial "})
    assert events[-1][0] == "error" and events[-1][1]["code"] == "upstream_unavailable"
    failed = (await history(client, chat["id"]))[-1]
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_unavailable"


async def test_client_disconnect_mid_stream_still_stores_the_reply(live_url: str, upstream: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=f"{live_url}/api/v1") as client:
        await sign_up(client)
        session = await new_chat(client)
        words = [f"w{i} " for i in range(20)]
        upstream.push(CHAT, Scripted(stream=words, chunk_delay=0.05))
        async with client.stream(
            "POST", f"/sessions/{session['id']}/messages", json={"content": "tell me"}, headers=SSE
        ) as response:
            assert response.status_code == 201
            async for line in response.aiter_lines():
                if line.startswith("event: token"):
                    break  # leave after the first token: the client goes away
        for _ in range(100):
            messages = await history(client, session["id"])
            if len(messages) == 2:
                break
            await asyncio.sleep(0.05)
        assert [m["role"] for m in messages] == ["user", "assistant"]
        assert messages[1]["content"] == "".join(words) and messages[1]["status"] == "complete"


async def test_nul_characters_from_the_provider_are_dropped(
    client: httpx.AsyncClient, chat: dict[str, Any], upstream: FakeOpenAI
) -> None:
    # They mean nothing in text, and PostgreSQL cannot store them: the reply must still be stored, without them.
    upstream.push(CHAT, Scripted(stream=["Hel\x00lo", "\x00", " there"]))
    streamed = await client.post(f"/sessions/{chat['id']}/messages", json={"content": "hi"}, headers=SSE)
    events = parse_sse(streamed.text)
    assert [data["delta"] for name, data in events if name == "token"] == ["Hello", " there"]
    assert events[-1][1]["assistant_message"]["content"] == "Hello there"
    completion = {
        "id": "chatcmpl-nul",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "a\x00b"}}],
    }
    upstream.push(CHAT, Scripted(body=completion))
    plain = await client.post(f"/sessions/{chat['id']}/messages", json={"content": "again"})
    assert plain.status_code == 201 and plain.json()["assistant_message"]["content"] == "ab"
    assert [m["content"] for m in await history(client, chat["id"])][1::2] == ["Hello there", "ab"]


@pytest.mark.parametrize(
    ("ending", "code"), [("cancelled", "interrupted"), ("crashed", "internal_error"), ("failed", "upstream_timeout")]
)
async def test_a_stream_always_ends_with_exactly_one_final_event(ending: str, code: str) -> None:
    # A turn cancelled by a stopping server, or one that crashed on a bug, still closes its stream with an `error`.
    async def turn() -> Any:
        await asyncio.sleep(0)
        if ending == "crashed":
            raise RuntimeError("a bug")
        if ending == "failed":
            raise UpstreamTimeout("too slow")
        await asyncio.sleep(3600)

    task = asyncio.create_task(turn())
    tokens: asyncio.Queue[Any] = asyncio.Queue()
    running = RunningTurn(task=task, stored=asyncio.get_running_loop().create_future(), tokens=tokens)
    tokens.put_nowait("partial ")
    await asyncio.sleep(0.01)
    task.cancel()
    tokens.put_nowait(END_OF_TOKENS)

    events = [event async for event in running.events()]

    assert events[0] == TokenEvent("partial ")
    assert len(events) == 2 and isinstance(events[1], ErrorEvent) and events[1].error.code == code
