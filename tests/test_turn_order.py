"""Turns in one session run one at a time, in arrival order, within a process and across processes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps import openai_settings, serve
from tests.fake_openai import CHAT, FakeOpenAI, Scripted
from tests.helpers import create_agent, create_session, history, new_chat
from webapp.config import Settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path, upstream: FakeOpenAI) -> Settings:
    return openai_settings(database_url, tmp_path, upstream)


def assert_alternates(messages: list[dict[str, object]]) -> None:
    assert [m["role"] for m in messages] == ["user", "assistant"] * (len(messages) // 2)
    for user, reply in zip(messages[::2], messages[1::2], strict=True):
        assert reply["content"] == f"Echo: {user['content']}"


async def test_concurrent_sends_do_not_interleave(
    client: httpx.AsyncClient, chat: dict[str, Any], upstream: FakeOpenAI
) -> None:
    upstream.reply_delay = 0.05

    async def send(i: int) -> httpx.Response:
        await asyncio.sleep(i * 0.005)  # arrive in a known order
        return await client.post(f"/sessions/{chat['id']}/messages", json={"content": f"m{i}"})

    responses = await asyncio.gather(*(send(i) for i in range(6)))
    assert [r.status_code for r in responses] == [201] * 6
    messages = await history(client, chat["id"])
    assert_alternates(messages)
    assert [m["content"] for m in messages[::2]] == [f"m{i}" for i in range(6)]  # arrival order
    # Every request upstream saw the complete history before it: no turn started before the previous one ended.
    for n, request in enumerate(upstream.received(CHAT)):
        assert len(request.json["messages"]) == 1 + 2 * n + 1


async def test_waiting_too_long_is_409_and_stores_nothing(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI
) -> None:
    settings = openai_settings(database_url, tmp_path, upstream, session_busy_timeout_seconds=0.3)
    async with serve(settings) as client:
        session = await new_chat(client)
        upstream.push(CHAT, Scripted(delay=2.0))
        slow = asyncio.create_task(client.post(f"/sessions/{session['id']}/messages", json={"content": "slow"}))
        await asyncio.sleep(0.1)
        busy = await client.post(f"/sessions/{session['id']}/messages", json={"content": "impatient"})
        assert busy.status_code == 409
        assert busy.json()["code"] == "session_busy"
        assert (await slow).status_code == 201
        messages = await history(client, session["id"])
    assert [m["content"] for m in messages] == ["slow", "Echo: slow"]


async def test_two_workers_sharing_a_database_serialise_turns(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI
) -> None:
    """Two apps with their own engines and lock tables stand in for two worker processes."""
    settings = openai_settings(database_url, tmp_path, upstream)
    upstream.reply_delay = 0.1
    async with serve(settings) as one, serve(settings) as two:
        session = await new_chat(one)
        url = f"/sessions/{session['id']}/messages"
        responses = await asyncio.gather(
            *(client.post(url, json={"content": f"m{i}"}) for i, client in enumerate([one, two, one, two]))
        )
        assert [r.status_code for r in responses] == [201] * 4
        messages = await history(two, session["id"])
    assert_alternates(messages)
    assert sorted(m["content"] for m in messages[::2]) == ["m0", "m1", "m2", "m3"]


async def test_different_sessions_do_not_wait_for_each_other(client: httpx.AsyncClient, upstream: FakeOpenAI) -> None:
    agent = await create_agent(client)
    first = await create_session(client, agent["id"])
    second = await create_session(client, agent["id"])
    upstream.push(CHAT, Scripted(delay=2.0))
    slow = asyncio.create_task(client.post(f"/sessions/{first['id']}/messages", json={"content": "slow"}))
    await asyncio.sleep(0.1)
    fast = await client.post(f"/sessions/{second['id']}/messages", json={"content": "fast"})
    assert fast.status_code == 201
    assert not slow.done()  # the other session's turn was still running when this one finished
    assert (await slow).status_code == 201
