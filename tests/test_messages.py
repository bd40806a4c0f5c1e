"""Text messages with the offline provider: storage, order, pagination, validation, and the labelled local reply."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tests.helpers import create_agent, create_session, history


async def test_send_stores_and_returns_both_messages(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client, prompt="You are Captain Nemo. Speak like a sailor.")
    session = await create_session(client, agent["id"])
    started = time.perf_counter()
    response = await client.post(f"/sessions/{session['id']}/messages", json={"content": "Where are we going?"})
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert response.status_code == 201
    body = response.json()
    user, reply = body["user_message"], body["assistant_message"]
    assert user["role"] == "user" and user["content"] == "Where are we going?" and user["source"] == "text"
    assert user["status"] == "complete" and user["error"] is None and user["audio_url"] is None
    assert reply["role"] == "assistant" and reply["status"] == "complete" and reply["model"] == "offline"
    # The offline reply is honest about what it is and shows it got the prompt and the message.
    assert "Offline mode" in reply["content"]
    assert "Where are we going?" in reply["content"] and "Captain Nemo" in reply["content"]
    # Measured around the offline model's call (which may take under a millisecond), so within the request's time.
    assert isinstance(reply["latency_ms"], int) and 0 <= reply["latency_ms"] <= elapsed_ms
    assert reply["usage"]["completion_tokens"] > 0
    assert await history(client, session["id"]) == [user, reply]


async def test_history_is_chronological_and_paginated(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    for i in range(4):
        await client.post(f"/sessions/{chat['id']}/messages", json={"content": f"message {i}"})
    everything = await history(client, chat["id"])
    assert [m["role"] for m in everything] == ["user", "assistant"] * 4
    assert [m["content"] for m in everything[::2]] == [f"message {i}" for i in range(4)]
    assert everything == sorted(everything, key=lambda m: m["created_at"])

    pages, cursor = [], None
    while True:
        params: dict[str, str | int] = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        page = (await client.get(f"/sessions/{chat['id']}/messages", params=params)).json()
        pages += page["items"]
        if (cursor := page["next_cursor"]) is None:
            break
    assert pages == everything


@pytest.mark.parametrize("body", [{}, {"content": ""}, {"content": "x" * 32_001}, {"content": 5}, {"text": "hi"}])
async def test_invalid_message_is_422_and_stores_nothing(
    client: httpx.AsyncClient, chat: dict[str, Any], body: dict[str, object]
) -> None:
    response = await client.post(f"/sessions/{chat['id']}/messages", json=body)
    assert response.status_code == 422 and response.json()["code"] == "validation_failed"
    assert await history(client, chat["id"]) == []


async def test_unicode_round_trips(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client, name="Übersetzer 🌍")
    session = await create_session(client, agent["id"])
    text = "Ça va? 日本語 — emoji 🎙️ and\nnew lines"
    sent = (await client.post(f"/sessions/{session['id']}/messages", json={"content": text})).json()
    assert sent["user_message"]["content"] == text
    assert (await history(client, session["id"]))[0]["content"] == text
