"""The openai provider through the real SDK against the fake server: what is sent, what is stored, every failure."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from tests.apps import api_client, free_port, openai_settings, serve
from tests.fake_openai import CHAT, FakeOpenAI, Scripted, error_body
from tests.helpers import create_agent, create_session, history, new_chat, parse_sse
from webapp.config import Settings
from webapp.main import create_app


@pytest.fixture
def settings(database_url: str, tmp_path: Path, upstream: FakeOpenAI) -> Settings:
    return openai_settings(database_url, tmp_path, upstream)


async def send(client: httpx.AsyncClient, session_id: str, content: str) -> httpx.Response:
    return await client.post(f"/sessions/{session_id}/messages", json={"content": content})


async def test_sends_prompt_history_and_model_and_stores_usage(client: httpx.AsyncClient, upstream: FakeOpenAI) -> None:
    agent = await create_agent(client, prompt="You are terse.", model="gpt-test")
    session = await create_session(client, agent["id"])
    first = (await send(client, session["id"], "one")).json()
    second = (await send(client, session["id"], "two")).json()

    requests = upstream.received(CHAT)
    assert len(requests) == 2
    assert requests[0].headers["Authorization"] == "Bearer sk-test"
    body = requests[1].json
    assert body["model"] == "gpt-test"
    assert "temperature" not in body  # only sent when the agent sets one
    assert "stream" not in body or body["stream"] is False
    assert body["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "Echo: one"},
        {"role": "user", "content": "two"},
    ]
    reply = second["assistant_message"]
    assert reply["content"] == "Echo: two" and reply["model"] == "gpt-test"
    assert reply["usage"] == {"prompt_tokens": 7, "completion_tokens": 2}
    assert first["assistant_message"]["content"] == "Echo: one"


async def test_temperature_and_edited_prompt_take_effect(client: httpx.AsyncClient, upstream: FakeOpenAI) -> None:
    agent = await create_agent(client, prompt="Old prompt.", temperature=0.3)
    session = await create_session(client, agent["id"])
    await send(client, session["id"], "hi")
    await client.patch(f"/agents/{agent['id']}", json={"prompt": "New prompt.", "temperature": None})
    await send(client, session["id"], "again")
    first, second = (r.json for r in upstream.received(CHAT))
    assert first["temperature"] == 0.3 and first["messages"][0]["content"] == "Old prompt."
    assert "temperature" not in second and second["messages"][0] == {"role": "system", "content": "New prompt."}


async def test_context_budget_drops_oldest_turns(database_url: str, tmp_path: Path, upstream: FakeOpenAI) -> None:
    settings = openai_settings(database_url, tmp_path, upstream, context_token_budget=300)
    async with serve(settings) as client:
        agent = await create_agent(client, prompt="Short prompt.")
        session = await create_session(client, agent["id"])
        for i in range(6):
            await send(client, session["id"], f"message {i} " + "word " * 40)
        sent = upstream.received(CHAT)[-1].json["messages"]
    assert sent[0] == {"role": "system", "content": "Short prompt."}
    assert sent[-1]["content"].startswith("message 5")
    assert 1 < len(sent) - 1 < 11  # some history kept, the oldest dropped
    assert not any(m["content"].startswith("message 0") for m in sent)
    kept = [int(m["content"].split()[1]) for m in sent[1:] if m["role"] == "user"]
    assert kept == sorted(kept) and kept[-1] == 5 and kept == list(range(kept[0], 6))


async def test_newest_message_is_sent_even_if_over_budget(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI
) -> None:
    settings = openai_settings(database_url, tmp_path, upstream, context_token_budget=256)
    async with serve(settings) as client:
        session = await new_chat(client)
        await send(client, session["id"], "short")
        await send(client, session["id"], "long " * 500)
    messages = upstream.received(CHAT)[-1].json["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"].startswith("long long")


ERROR_CASES = [
    # (scripted answers, expected status, expected code, requests the SDK makes)
    (
        [Scripted(status=429, body=error_body("slow down", "rate_limit"), headers={"retry-after-ms": "5"})] * 3,
        503,
        "upstream_rate_limited",
        3,
    ),
    (
        [Scripted(status=500, body=error_body("boom", "server_error"), headers={"retry-after-ms": "5"})] * 3,
        502,
        "upstream_unavailable",
        3,
    ),
    (
        [Scripted(status=503, raw=b"<html>down</html>", headers={"retry-after-ms": "5"})] * 3,
        502,
        "upstream_unavailable",
        3,
    ),
    (
        [Scripted(status=401, body=error_body("bad key", "invalid_request_error", "invalid_api_key"))],
        502,
        "upstream_auth_failed",
        1,
    ),
    ([Scripted(status=403, body=error_body("no access"))], 502, "upstream_auth_failed", 1),
    ([Scripted(status=400, body=error_body("Unsupported parameter: 'temperature'"))], 502, "upstream_rejected", 1),
    ([Scripted(status=404, body=error_body("The model does not exist"))], 502, "upstream_rejected", 1),
    ([Scripted(raw=b'{"id": "chatcmpl", "choices": [')], 502, "upstream_unavailable", 1),
    (
        [Scripted(body={"id": "x", "object": "chat.completion", "created": 1, "model": "m", "choices": []})],
        502,
        "upstream_unavailable",
        1,
    ),
    ([Scripted(drop_connection=True)] * 3, 502, "upstream_unavailable", 3),
]


@pytest.mark.parametrize(("answers", "status", "code", "attempts"), ERROR_CASES)
async def test_provider_failure_is_mapped_and_recorded(
    client: httpx.AsyncClient, upstream: FakeOpenAI, answers: list[Scripted], status: int, code: str, attempts: int
) -> None:
    chat = await new_chat(client)
    upstream.push(CHAT, *answers)
    response = await send(client, chat["id"], "Are you there?")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert len(upstream.received(CHAT)) == attempts
    user, failed = await history(client, chat["id"])
    assert user["content"] == "Are you there?" and user["status"] == "complete"
    assert failed["role"] == "assistant" and failed["status"] == "failed"
    assert failed["error"]["code"] == code and failed["error"]["detail"]


STREAM_ERROR_CASES = [case for case in ERROR_CASES if case[0][0].status != 200 or case[0][0].drop_connection]
"""The failures that happen before a stream starts: the same mapping must reach a streamed turn's `error` event."""


@pytest.mark.parametrize(("answers", "status", "code", "attempts"), STREAM_ERROR_CASES)
async def test_streamed_provider_failure_ends_with_an_error_event_and_is_recorded(
    client: httpx.AsyncClient, upstream: FakeOpenAI, answers: list[Scripted], status: int, code: str, attempts: int
) -> None:
    chat = await new_chat(client)
    upstream.push(CHAT, *answers)
    response = await client.post(
        f"/sessions/{chat['id']}/messages", json={"content": "hi"}, headers={"Accept": "text/event-stream"}
    )
    assert response.status_code == 201 and response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert [name for name, _ in events] == ["error"]
    problem = events[0][1]
    assert problem["code"] == code and problem["status"] == status
    assert len(upstream.received(CHAT)) == attempts
    user, failed = await history(client, chat["id"])
    assert user["status"] == "complete" and failed["status"] == "failed" and failed["error"]["code"] == code


async def test_rate_limit_passes_the_providers_retry_after(
    client: httpx.AsyncClient, chat: dict[str, Any], upstream: FakeOpenAI
) -> None:
    upstream.push(
        CHAT, *[Scripted(status=429, body=error_body("slow"), headers={"retry-after-ms": "5", "retry-after": "17"})] * 3
    )
    response = await send(client, chat["id"], "hi")
    assert response.status_code == 503 and response.headers["retry-after"] == "17"


async def test_timeout_is_504(database_url: str, tmp_path: Path, upstream: FakeOpenAI) -> None:
    settings = openai_settings(database_url, tmp_path, upstream, openai_timeout_seconds=0.3, openai_max_retries=0)
    async with serve(settings) as client:
        session = await new_chat(client)
        upstream.push(CHAT, Scripted(delay=2))
        response = await send(client, session["id"], "hello?")
        assert response.status_code == 504 and response.json()["code"] == "upstream_timeout"
        messages = await history(client, session["id"])
    assert [m["status"] for m in messages] == ["complete", "failed"]


async def test_transient_failure_is_retried_by_the_sdk(
    client: httpx.AsyncClient, chat: dict[str, Any], upstream: FakeOpenAI
) -> None:
    upstream.push(CHAT, Scripted(status=500, body=error_body("hiccup"), headers={"retry-after-ms": "5"}))
    response = await send(client, chat["id"], "hi")
    assert response.status_code == 201
    assert response.json()["assistant_message"]["content"] == "Echo: hi"
    assert len(upstream.received(CHAT)) == 2


async def test_failed_replies_are_never_sent_as_context(client: httpx.AsyncClient, upstream: FakeOpenAI) -> None:
    agent = await create_agent(client)
    session = await create_session(client, agent["id"])
    upstream.push(CHAT, Scripted(status=400, body=error_body("nope")))
    assert (await send(client, session["id"], "first")).status_code == 502
    assert (await send(client, session["id"], "second")).status_code == 201
    messages = upstream.received(CHAT)[-1].json["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("system", agent["prompt"]),
        ("user", "first"),
        ("user", "second"),
    ]


async def test_unreachable_provider_is_502(database_url: str, tmp_path: Path, upstream: FakeOpenAI) -> None:
    settings = openai_settings(
        database_url, tmp_path, upstream, openai_base_url=f"http://127.0.0.1:{free_port()}/v1", openai_max_retries=0
    )
    async with serve(settings) as client:
        session = await new_chat(client)
        response = await send(client, session["id"], "anyone?")
        assert response.status_code == 502 and response.json()["code"] == "upstream_unavailable"
        assert [m["status"] for m in await history(client, session["id"])] == ["complete", "failed"]


async def test_user_message_is_stored_first_and_no_transaction_waits_on_the_model(
    client: httpx.AsyncClient, chat: dict[str, Any], upstream: FakeOpenAI
) -> None:
    upstream.push(CHAT, Scripted(delay=1.0))
    sending = asyncio.create_task(send(client, chat["id"], "slow one"))
    while not (stored := await history(client, chat["id"])):
        assert not sending.done(), sending
        await asyncio.sleep(0.02)
    # Stored and committed while the model is still thinking...
    assert [(m["role"], m["content"], m["status"]) for m in stored] == [("user", "slow one", "complete")]
    # ...and no transaction is held meanwhile: another write goes through before the reply comes back.
    renamed = await client.patch(f"/agents/{chat['agent_id']}", json={"name": "Renamed"})
    assert renamed.status_code == 200 and not sending.done()
    reply = (await sending).json()["assistant_message"]
    assert reply["status"] == "complete" and reply["latency_ms"] >= 1000  # the model's time, measured


async def test_one_sdk_client_per_app_closed_on_shutdown(settings: Settings) -> None:
    application = create_app(settings)
    async with LifespanManager(application), api_client(application) as http:
        ready = await http.get("http://test/readyz")
        assert ready.status_code == 200 and ready.json()["provider"] == "openai"
        provider = application.state.runtime.provider
        sdk_client = provider._client
        session = await new_chat(http)
        for text in ("one", "two"):
            assert (await send(http, session["id"], text)).status_code == 201
        assert application.state.runtime.provider._client is sdk_client and not sdk_client.is_closed()
    assert sdk_client.is_closed()
