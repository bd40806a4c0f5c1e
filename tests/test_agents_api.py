"""Agents: create, read, list (newest first, cursor pages), update, delete with everything under it."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request

from tests.apps import openai_settings, serve
from tests.fake_openai import FakeOpenAI
from tests.helpers import assert_problem, create_agent, create_session
from webapp.config import Settings
from webapp.http import problems


async def test_create_returns_201_location_and_defaults(client: httpx.AsyncClient, settings: Settings) -> None:
    response = await client.post("/agents", json={"name": "  Tutor ", "prompt": "Be brief."})
    assert response.status_code == 201
    agent = response.json()
    assert response.headers["location"] == f"/api/v1/agents/{agent['id']}"
    assert agent["name"] == "Tutor"
    assert agent["model"] == settings.chat_model
    assert agent["voice"] == settings.tts_voice
    assert agent["temperature"] is None
    assert agent["created_at"].endswith(("Z", "+00:00"))
    assert len(agent["id"]) >= 32 and not agent["id"].isdigit()
    fetched = await client.get(response.headers["location"].removeprefix("/api/v1"))
    assert fetched.json() == agent


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "p"}, "name"),
        ({"name": "", "prompt": "p"}, "name"),
        ({"name": "   ", "prompt": "p"}, "name"),
        ({"name": "x" * 101, "prompt": "p"}, "name"),
        ({"name": "n", "prompt": ""}, "prompt"),
        ({"name": "n", "prompt": "p" * 20_001}, "prompt"),
        ({"name": "n", "prompt": "p", "temperature": 2.5}, "temperature"),
        ({"name": "n", "prompt": "p", "temperature": -0.1}, "temperature"),
        ({"name": "n", "prompt": "p", "surprise": 1}, "surprise"),
    ],
)
async def test_invalid_agent_is_a_422_problem(client: httpx.AsyncClient, body: dict[str, object], field: str) -> None:
    response = await client.post("/agents", json=body)
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert problem["status"] == 422
    assert {"type", "title", "detail"} <= problem.keys()
    assert any(error["loc"][-1] == field for error in problem["errors"])


@pytest.mark.parametrize("payload", [b"{not json", b"[]", b'"text"', b"\xff\xfe{\x00", "{é}".encode("latin-1")])
async def test_malformed_body_is_a_422_problem(client: httpx.AsyncClient, payload: bytes) -> None:
    response = await client.post("/agents", content=payload, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"


@pytest.mark.parametrize("agent_id", ["nope", "0", "00000000-0000-0000-0000-000000000000", "%20", "a" * 300])
async def test_unknown_agent_is_404(client: httpx.AsyncClient, agent_id: str) -> None:
    for method in ("GET", "PATCH", "DELETE"):
        response = await client.request(method, f"/agents/{agent_id}", json={} if method == "PATCH" else None)
        assert response.status_code == 404, (method, response.text)
        assert response.json()["code"] == "agent_not_found"
        assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/nothing-here")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    wrong = await client.put("/agents")
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
    # `Allow` names every method of the path, though each is a separate route.
    assert wrong.headers["allow"] == "GET, HEAD, POST"
    assert (await client.options("/agents/any-id")).headers["allow"] == "GET, HEAD, PATCH, DELETE"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "n", "prompt": "p", "temperature": False},
        {"name": "n", "prompt": "p", "temperature": "0.5"},
        {"name": 5, "prompt": "p"},
        {"name": "n", "prompt": ["p"]},
    ],
)
async def test_values_of_the_wrong_type_are_not_coerced(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    response = await client.post("/agents", json=body)
    assert response.status_code == 422 and response.json()["code"] == "validation_failed", response.text
    assert (await client.get("/agents")).json()["items"] == []


async def test_list_is_newest_first_and_paginates(client: httpx.AsyncClient) -> None:
    created = [await create_agent(client, name=f"Agent {i}") for i in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, str | int] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/agents", params=params)).json()
        assert len(page["items"]) <= 2
        seen += [a["id"] for a in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [a["id"] for a in reversed(created)]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"limit": "x"}, {"cursor": "garbage!"}])
async def test_bad_page_parameters_are_422(client: httpx.AsyncClient, params: dict[str, object]) -> None:
    response = await client.get("/agents", params=params)
    assert response.status_code == 422
    assert response.json()["code"] == "validation_failed"


async def test_patch_changes_only_what_is_sent(client: httpx.AsyncClient, settings: Settings) -> None:
    agent = await create_agent(client, temperature=0.5, model="custom-model")
    response = await client.patch(f"/agents/{agent['id']}", json={"prompt": "New prompt."})
    assert response.status_code == 200
    updated = response.json()
    assert updated["prompt"] == "New prompt."
    assert updated["name"] == agent["name"] and updated["temperature"] == 0.5 and updated["model"] == "custom-model"
    assert updated["updated_at"] > agent["updated_at"]

    reset = (await client.patch(f"/agents/{agent['id']}", json={"temperature": None, "model": None})).json()
    assert reset["temperature"] is None
    assert reset["model"] == settings.chat_model


async def test_runs_as_tells_what_runs_offline(client: httpx.AsyncClient, settings: Settings) -> None:
    agent = await create_agent(client)
    # The stored fields stay what they are (the openai provider will use them); runs_as says what runs instead.
    assert (agent["model"], agent["voice"]) == (settings.chat_model, settings.tts_voice) == ("gpt-5.4-mini", "alloy")
    assert agent["runs_as"] == {"provider": "offline", "model": "offline", "voice": "en-us"}

    british = (await client.patch(f"/agents/{agent['id']}", json={"voice": "EN-GB", "model": "gpt-x"})).json()
    assert (british["model"], british["voice"]) == ("gpt-x", "EN-GB")
    assert british["runs_as"] == {"provider": "offline", "model": "offline", "voice": "en-gb"}
    variant = await create_agent(client, name="Variant", voice="de+f3")
    assert variant["runs_as"]["voice"] == "de+f3"
    listed = {item["id"]: item["runs_as"] for item in (await client.get("/agents")).json()["items"]}
    assert listed == {agent["id"]: british["runs_as"], variant["id"]: variant["runs_as"]}
    assert (await client.get(f"/agents/{agent['id']}")).json()["runs_as"] == british["runs_as"]


async def test_voices_lists_what_the_offline_engine_accepts(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    response = await client.get("/voices")
    assert response.status_code == 200
    catalog = response.json()
    assert catalog["provider"] == "offline" and catalog["default"] == "en-us"
    assert {"en-us", "en-gb", "de", "fr", "en-us+f3"} <= set(catalog["voices"])
    assert "alloy" not in catalog["voices"] and len(set(catalog["voices"])) == len(catalog["voices"])
    for name in catalog["voices"][:5]:  # each one is spoken as itself, not as the fallback
        assert (await create_agent(client, voice=name))["runs_as"]["voice"] == name
    assert_problem(await anon.get("/voices"), 401, "unauthorized")


async def test_openai_runs_the_stored_model_and_voice(database_url: str, tmp_path: Path, upstream: FakeOpenAI) -> None:
    async with serve(openai_settings(database_url, tmp_path, upstream, tts_voice="coral")) as client:
        agent = await create_agent(client, model="gpt-custom", voice="en-gb")
        assert agent["runs_as"] == {"provider": "openai", "model": "gpt-custom", "voice": "en-gb"}
        catalog = (await client.get("/voices")).json()
    assert catalog == {
        "provider": "openai",
        "default": "coral",
        "voices": [
            *("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"),
            *("marin", "cedar"),
        ],
    }


@pytest.mark.parametrize("body", [{"name": None}, {"prompt": None}, {"name": ""}, {"temperature": 3}, {"x": 1}])
async def test_invalid_patch_is_422_and_changes_nothing(client: httpx.AsyncClient, body: dict[str, object]) -> None:
    agent = await create_agent(client)
    response = await client.patch(f"/agents/{agent['id']}", json=body)
    assert response.status_code == 422
    assert (await client.get(f"/agents/{agent['id']}")).json() == agent


async def test_delete_removes_agent_sessions_and_messages(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    other = await create_agent(client, name="Other")
    session = await create_session(client, agent["id"])
    kept = await create_session(client, other["id"])
    sent = await client.post(f"/sessions/{session['id']}/messages", json={"content": "hi"})
    assert sent.status_code == 201
    message_id = sent.json()["user_message"]["id"]

    response = await client.delete(f"/agents/{agent['id']}")
    assert response.status_code == 204 and response.content == b""
    assert (await client.get(f"/agents/{agent['id']}")).status_code == 404
    assert (await client.get(f"/sessions/{session['id']}")).json()["code"] == "session_not_found"
    assert (await client.get(f"/sessions/{session['id']}/messages")).status_code == 404
    assert (await client.get(f"/messages/{message_id}/audio")).status_code == 404
    assert (await client.get(f"/sessions/{kept['id']}")).status_code == 200
    assert (await client.delete(f"/agents/{agent['id']}")).status_code == 404


async def test_nul_characters_are_refused_everywhere(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    # PostgreSQL cannot store or even compare text holding NUL: refused up front, on SQLite and PostgreSQL alike.
    for body in (
        {"name": "a\x00b", "prompt": "p"},
        {"name": "n", "prompt": "p\x00"},
        {"name": "n", "prompt": "p", "model": "\x00"},
    ):
        response = await client.post("/agents", json=body)
        assert response.status_code == 422 and response.json()["code"] == "validation_failed", body
    agent = await create_agent(client)
    session = (await client.post(f"/agents/{agent['id']}/sessions")).json()
    message = await client.post(f"/sessions/{session['id']}/messages", json={"content": "hi\x00"})
    assert message.status_code == 422
    signin = await anon.post("http://test/api/v1/auth/login", json={"email": "a\x00@b.co", "password": "x\x00"})
    assert signin.status_code == 422
    for path in ("/agents/%00", f"/sessions/{session['id']}%00/messages", "/voice-turns/%00", "/messages/a%00b/audio"):
        response = await client.get(path)
        assert response.status_code == 404 and response.json()["code"] == "not_found", path
    assert (await client.get(f"/sessions/{session['id']}/messages")).json()["items"] == []


async def test_head_is_answered_like_get_without_a_body(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    for path in ("http://test/healthz", "http://test/readyz", "http://test/static/app.css"):
        get, head = await anon.get(path), await anon.head(path)
        assert head.status_code == get.status_code == 200 and head.content == b"", path
        assert head.headers["content-length"] == get.headers["content-length"], path
    assert (await client.head("/agents")).status_code == 200
    assert (await anon.head("http://test/api/v1/agents")).status_code == 401  # still signed in or not
    assert (await client.post("http://test/healthz")).headers["allow"] == "GET, HEAD"
    assert (await client.post("http://test/static/app.css")).headers["allow"] == "GET, HEAD"


async def test_any_other_http_error_keeps_its_status_as_a_problem(app: FastAPI) -> None:
    # A fallback no known request reaches: called directly, as Starlette would for an HTTPException of another status.
    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b"", "app": app}
    response = await problems._http_error(Request(scope), HTTPException(418, "I'm a teapot"))
    assert response.status_code == 418 and response.media_type == "application/problem+json"
    body = json.loads(bytes(response.body))
    assert body == {
        "type": "urn:parley:problem:http_error",
        "title": "HTTP error",
        "status": 418,
        "detail": "I'm a teapot",
        "code": "http_error",
    }
