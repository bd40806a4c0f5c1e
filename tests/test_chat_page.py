"""The chat page is a thin adapter over the same use cases as the API: a recording sent through the page is stored
as through the API, and its stream ends with those messages rendered by the page's template; the page carries the
voice stages and the input limits from Python, not copies."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, get_args

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from tests.apps import openai_settings, running
from tests.audio_samples import silence
from tests.browser import browser, create_agent_by_page, sign_up_in
from tests.fake_openai import CHAT, FakeOpenAI, Scripted, error_body
from tests.helpers import assert_problem, parse_sse
from tests.voice import spoken
from webapp.schemas import AgentCreate, MessageCreate, RegisterRequest
from webapp.services.voice_events import STAGE_ORDER, TERMINAL


@pytest.fixture(scope="module")
def clip() -> bytes:
    return spoken("wav")


async def new_chat_by_page(http: httpx.AsyncClient, token: str) -> str:
    """A new chat of the signed-in browser, started through the pages; returns its session id."""
    agent = await create_agent_by_page(http, token)
    agent_id = re.search(r'data-agent-id="([^"]+)"', agent.text)
    assert agent_id, agent.text
    started = await http.post(f"/agents/{agent_id[1]}/sessions", data={"csrf_token": token})
    assert started.status_code == 303, started.text
    return str(started.headers["location"]).rsplit("/", 1)[1]


async def send_by_page(http: httpx.AsyncClient, token: str, session_id: str, data: bytes) -> httpx.Response:
    files = {"audio": ("clip.wav", data, "audio/wav")}
    return await http.post(f"/sessions/{session_id}/voice", files=files, headers={"X-CSRF-Token": token})


async def stored(http: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    response = await http.get(f"/api/v1/sessions/{session_id}/messages", params={"limit": 100})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def essentials(messages: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(m["role"], m["source"], m["content"], m["status"], m["audio_url"] is not None) for m in messages]


async def test_a_recording_through_the_page_is_stored_as_through_the_api(app: FastAPI, clip: bytes) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        by_page, by_api = await new_chat_by_page(http, token), await new_chat_by_page(http, token)

        accepted = await send_by_page(http, token, by_page, clip)
        assert accepted.status_code == 202, accepted.text
        follow = accepted.headers["location"]
        assert re.fullmatch(r"/voice-turns/[^/]+/events", follow), follow
        streamed = await http.get(follow, headers={"Accept": "text/event-stream"})
        assert streamed.status_code == 200, streamed.text
        events = parse_sse(streamed.text)
        stages = [data["status"] for name, data in events if name == "status"]
        assert stages == sorted(stages, key=STAGE_ORDER.__getitem__) and stages
        names = [name for name, _ in events]
        assert names.index("transcript") < names.index("token") < names.index("audio"), names
        assert {name for name, _ in events[:-1]} == {"status", "transcript", "token", "audio"}, names
        transcript = next(data for name, data in events if name == "transcript")
        segments = [data for name, data in events if name == "audio"]
        assert [s["index"] for s in segments] == list(range(len(segments)))
        name, done = events[-1]
        assert name == "done", events

        api = await http.post(
            f"/api/v1/sessions/{by_api}/voice",
            files={"audio": ("clip.wav", clip, "audio/wav")},
            params={"wait": "true"},
            headers={"X-CSRF-Token": token},
        )
        assert api.status_code == 200, api.text

        page_messages, api_messages = await stored(http, by_page), await stored(http, by_api)
        assert len(page_messages) == 2
        assert essentials(page_messages) == essentials(api_messages)

        # The terminal event carries those messages, rendered by the template the history uses, and the title the
        # first message gave the session, and the reply to play.
        chat = await http.get(f"/sessions/{by_page}", headers={"Accept": "text/html"})
        for message in page_messages:
            assert f'data-message-id="{message["id"]}"' in done["html"]
        assert done["html"].strip() in chat.text
        title = (await http.get(f"/api/v1/sessions/{by_page}")).json()["title"]
        assert done["title"] == title != "New chat"
        assert done["reply_audio_url"] == page_messages[1]["audio_url"]
        # The live parts: what was heard, and the reply's sentences to play (which together say the whole reply).
        assert transcript == {"text": page_messages[0]["content"]}
        assert segments and all(s["text"] in page_messages[1]["content"] for s in segments)
        for segment in segments:
            played = await http.get(segment["url"])
            assert played.status_code == 200 and played.headers["content-type"] == "audio/mpeg"


async def test_the_stop_button_needs_a_running_turn_and_the_csrf_token(app: FastAPI) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        session_id = await new_chat_by_page(http, token)
        assert (await http.post(f"/sessions/{session_id}/cancel")).status_code == 403
        idle = await http.post(f"/sessions/{session_id}/cancel", headers={"X-CSRF-Token": token})
        assert_problem(idle, 409, "no_turn_running")


async def test_a_refused_recording_keeps_its_problem_code(app: FastAPI) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        session_id = await new_chat_by_page(http, token)
        refused = await send_by_page(http, token, session_id, silence("wav", 2.0))
        assert_problem(refused, 422, "no_speech_detected")
        assert await stored(http, session_id) == []


async def test_another_users_session_or_turn_is_not_found(app: FastAPI, clip: bytes) -> None:
    async with browser(app) as ada, browser(app) as bob:
        ada_token = await sign_up_in(ada, "ada@example.com")
        bob_token = await sign_up_in(bob, "bob@example.com")
        session_id = await new_chat_by_page(ada, ada_token)
        assert_problem(await send_by_page(bob, bob_token, session_id, clip), 404, "session_not_found")
        assert await stored(ada, session_id) == []

        accepted = await send_by_page(ada, ada_token, session_id, clip)
        assert accepted.status_code == 202, accepted.text
        events = accepted.headers["location"]
        assert_problem(await bob.get(events, headers={"Accept": "text/event-stream"}), 404, "voice_turn_not_found")
        assert parse_sse((await ada.get(events, headers={"Accept": "text/event-stream"})).text)[-1][0] == "done"


async def test_a_recording_without_the_csrf_token_is_refused(app: FastAPI, clip: bytes) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        session_id = await new_chat_by_page(http, token)
        files = {"audio": ("clip.wav", clip, "audio/wav")}
        assert_problem(await http.post(f"/sessions/{session_id}/voice", files=files), 403, "csrf_failed")
        assert await stored(http, session_id) == []


def attribute_values(html: str, name: str) -> dict[str, str]:
    """`id → value` of attribute `name` on the elements that have both."""
    values = {}
    for tag in re.findall(r"<(?:input|textarea)\b[^>]*>", html):
        found_id, found = re.search(r'\bid="([^"]+)"', tag), re.search(rf'\b{name}="([^"]+)"', tag)
        if found_id and found:
            values[found_id[1]] = found[1]
    return values


def limit(model: type[BaseModel], field: str, which: str = "max_length") -> str:
    """A model field's length constraint (`StringConstraints`), as the page should spell it."""
    annotation = model.model_fields[field]
    metadata = annotation.metadata or get_args(get_args(annotation.annotation)[0])[1:]  # `Name | None`: inside
    return str(next(getattr(meta, which) for meta in metadata if getattr(meta, which, None) is not None))


async def test_the_page_carries_the_stages_and_limits_from_python(app: FastAPI) -> None:
    async with browser(app) as http:
        signup = await http.get("/signup")
        assert attribute_values(signup.text, "maxlength") == {"display_name": limit(RegisterRequest, "display_name")}
        assert attribute_values(signup.text, "minlength") == {
            "password": limit(RegisterRequest, "password", "min_length")
        }

        token = await sign_up_in(http, "ada@example.com")
        home = await http.get("/", headers={"Accept": "text/html"})
        assert attribute_values(home.text, "maxlength") == {
            "agent-name": limit(AgentCreate, "name"),
            "agent-prompt": limit(AgentCreate, "prompt"),
        }
        session_id = await new_chat_by_page(http, token)
        chat = await http.get(f"/sessions/{session_id}", headers={"Accept": "text/html"})
        assert attribute_values(chat.text, "maxlength") == {"message-input": limit(MessageCreate, "content")}

        stages = re.search(r"data-stages='([^']+)'", chat.text)
        assert stages, chat.text
        expected = sorted((s for s, rank in STAGE_ORDER.items() if rank < TERMINAL), key=STAGE_ORDER.__getitem__)
        assert json.loads(stages[1]) == expected


async def test_a_failed_typed_reply_comes_back_as_html_with_its_problem(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI
) -> None:
    upstream.push(CHAT, Scripted(status=401, body=error_body("bad key", "invalid_request_error", "invalid_api_key")))
    async with running(openai_settings(database_url, tmp_path, upstream)) as app, browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        session_id = await new_chat_by_page(http, token)
        sent = await http.post(
            f"/sessions/{session_id}/send",
            data={"content": "hello"},
            headers={"X-CSRF-Token": token, "Accept": "text/event-stream"},
        )
        assert sent.status_code == 200, sent.text
        name, error = parse_sse(sent.text)[-1]
        assert name == "error" and error["code"] == "upstream_auth_failed", error
        question, reply = await stored(http, session_id)
        assert reply["status"] == "failed"
        for message in (question, reply):
            assert f'data-message-id="{message["id"]}"' in error["html"]
        assert error["title"] == "hello"
