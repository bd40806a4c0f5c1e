"""Hostile requests get a clear 4xx and cost little: body caps, crafted cursors, raced sign-ins, blank messages, and
an error vocabulary in which every code names exactly one class (DESIGN §9)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.apps import make_settings, serve
from tests.helpers import assert_problem, create_agent, new_chat, sign_up
from webapp import errors
from webapp.services.pagination import decode_cursor, encode_cursor

MiB = 1024 * 1024


# --- body caps -------------------------------------------------------------------------------------------------------


class CountingBody:
    """A 100 MiB request body produced on demand, counting how much of it the server pulled."""

    def __init__(self, size: int = 100 * MiB, chunk: int = 64 * 1024) -> None:
        self.size, self.chunk, self.pulled = size, chunk, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while self.pulled < self.size:
            self.pulled += self.chunk
            yield b" " * self.chunk


@pytest.mark.parametrize("path", ["/agents", "/auth/login", "/auth/register", "/sessions/x/messages"])
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_a_huge_body_is_refused_before_authentication_and_parsing(
    anon: httpx.AsyncClient, path: str, declared: bool
) -> None:
    body = CountingBody()
    headers = {"Content-Type": "application/json"}
    if declared:
        headers["Content-Length"] = str(body.size)
    response = await anon.post(path, content=body, headers=headers)
    # Anonymous, yet 413 rather than 401: the size is judged first.
    problem = assert_problem(response, 413, "request_too_large")
    assert "1,048,576" in problem["detail"]
    assert response.headers["connection"] == "close"
    assert body.pulled <= (0 if declared else MiB + body.chunk), body.pulled


async def test_the_json_cap_is_a_setting_and_a_body_under_it_goes_through(database_url: str, tmp_path: Path) -> None:
    async with serve(make_settings(database_url, tmp_path, max_json_bytes=2048)) as client:
        agent = await create_agent(client, prompt="p" * 1500)
        assert agent["prompt"] == "p" * 1500

        async def chunked(text: str) -> AsyncIterator[bytes]:
            yield text.encode()

        small = json.dumps({"name": "Chunked", "prompt": "fits"})
        response = await client.post("/agents", content=chunked(small), headers={"Content-Type": "application/json"})
        assert response.status_code == 201, response.text
        large = json.dumps({"name": "Chunked", "prompt": "p" * 3000})
        response = await client.post("/agents", content=chunked(large), headers={"Content-Type": "application/json"})
        assert_problem(response, 413, "request_too_large")


async def test_the_audio_upload_keeps_its_own_larger_cap(database_url: str, tmp_path: Path) -> None:
    async with serve(make_settings(database_url, tmp_path, max_json_bytes=1024)) as client:
        chat = await new_chat(client)
        clip = (Path(__file__).parent / "data" / "hello-world.wav").read_bytes()
        assert len(clip) > 1024
        response = await client.post(f"/sessions/{chat['id']}/voice", files={"audio": ("a.wav", clip, "audio/wav")})
        assert response.status_code == 202, response.text


# --- cursors ---------------------------------------------------------------------------------------------------------


def _cursor(raw: str) -> str:
    return base64.urlsafe_b64encode(raw.encode("utf-8", "surrogatepass")).decode().rstrip("=")


CRAFTED = {
    "nan": "[NaN]",
    "infinity": "[Infinity]",
    "minus infinity": "[-Infinity]",
    "float": "[1.5]",
    "huge float": "[1e400]",
    "beyond 64 bits": f"[{2**64}]",
    "negative": "[-1]",
    "boolean": "[true]",
    "deep nesting": "[" * 5000 + "]" * 5000,
    "lone surrogate": '["\\ud800"]',
    "raw lone surrogate": '["\ud800"]',
    "naive time": '["2026-01-01T00:00:00", "x"]',
    "time at the end of the calendar": '["0001-01-01T00:00:00+05:00", "x"]',
    "time as a number": '[1700000000, "x"]',
    "id as a number": '["2026-01-01T00:00:00+00:00", 7]',
    "nul in an id": '["2026-01-01T00:00:00+00:00", "a\\u0000b"]',
    "surrogate in an id": '["2026-01-01T00:00:00+00:00", "\\udfff"]',
    "object": '{"a": 1}',
    "not json": "{{{",
    "too long": json.dumps(["x" * 400]),
}


@pytest.mark.parametrize("raw", CRAFTED.values(), ids=CRAFTED.keys())
async def test_a_crafted_cursor_is_a_422_on_every_list(
    client: httpx.AsyncClient, chat: dict[str, Any], raw: str
) -> None:
    cursor = _cursor(raw)
    for path in ("/agents", f"/agents/{chat['agent_id']}/sessions", f"/sessions/{chat['id']}/messages"):
        assert_problem(await client.get(path, params={"cursor": cursor}), 422, "validation_failed")
    for text in ("\ud800", "%%%", "a" * 5000):  # not even base64
        response = await client.get("/agents", params={"cursor": text.encode("utf-8", "surrogatepass")})
        assert_problem(response, 422, "validation_failed")


async def test_cursors_we_issue_still_page_through(client: httpx.AsyncClient) -> None:
    for n in range(3):
        await create_agent(client, name=f"Agent {n}")
    first = (await client.get("/agents", params={"limit": 2})).json()
    second = (await client.get("/agents", params={"limit": 2, "cursor": first["next_cursor"]})).json()
    assert [a["name"] for a in first["items"] + second["items"]] == ["Agent 2", "Agent 1", "Agent 0"]


JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers() | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    max_leaves=30,
)


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=400), JSON.map(lambda value: _cursor(json.dumps(value)))))
def test_decoding_any_cursor_gives_the_right_types_or_a_validation_failure(cursor: str) -> None:
    for types in ((int,), (str,), (_datetime(), str)):
        try:
            decoded = decode_cursor(cursor, *types)
        except errors.ValidationFailed:
            continue
        assert [type(part) for part in decoded] == list(types)


@settings(max_examples=150, deadline=None)
@given(JSON)
def test_decoding_any_json_cursor_never_raises_anything_else(value: Any) -> None:
    cursor = _cursor(json.dumps([value]))
    try:
        (part,) = decode_cursor(cursor, int)
    except errors.ValidationFailed:
        return
    assert type(part) is int and 0 <= part < 2**63 and encode_cursor(part) == cursor


def _datetime() -> type:
    from datetime import datetime

    return datetime


# --- the sign-in throttle --------------------------------------------------------------------------------------------


async def test_parallel_wrong_passwords_cannot_overrun_the_throttle(anon: httpx.AsyncClient) -> None:
    await sign_up(anon, "ada@example.com")
    anon.headers.pop("Authorization")
    guesses = [
        anon.post("/auth/login", json={"email": "ada@example.com", "password": f"guess {n}!"}) for n in range(16)
    ]
    answers = await asyncio.gather(*guesses)
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [401] * 5 + [429] * 11, statuses
    for answer in answers:
        assert_problem(
            answer, answer.status_code, "invalid_credentials" if answer.status_code == 401 else "rate_limited"
        )


# --- blank content ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("blank", [" ", "\n\t  \r\n", "\u3000\u2003"])
async def test_a_blank_message_or_prompt_is_refused(
    client: httpx.AsyncClient, chat: dict[str, Any], blank: str
) -> None:
    response = await client.post(f"/sessions/{chat['id']}/messages", json={"content": blank})
    assert_problem(response, 422, "validation_failed")
    assert (await client.get(f"/sessions/{chat['id']}/messages")).json()["items"] == []
    assert_problem(await client.post("/agents", json={"name": "Blank", "prompt": blank}), 422, "validation_failed")
    # Text around the blanks is kept exactly as sent.
    response = await client.post(f"/sessions/{chat['id']}/messages", json={"content": f"{blank}hi{blank}"})
    assert response.json()["user_message"]["content"] == f"{blank}hi{blank}"


# --- the error vocabulary --------------------------------------------------------------------------------------------


def _concrete(cls: type[errors.AppError]) -> list[type[errors.AppError]]:
    found = [cls] if "code" in cls.__dict__ else []
    for sub in cls.__subclasses__():
        found += _concrete(sub)
    return found


def test_every_error_code_names_exactly_one_class() -> None:
    classes = _concrete(errors.AppError)
    codes = [cls.code for cls in classes]
    assert len(codes) == len(set(codes)), sorted(codes)
    assert dict(zip(codes, classes, strict=True)) == errors.REGISTRY
    assert errors.REGISTRY["not_found"] is errors.NotFound
    assert errors.REGISTRY["internal_error"] is errors.AppError


def test_a_class_without_its_own_code_or_with_a_taken_one_is_refused_at_definition() -> None:
    with pytest.raises(TypeError, match="must declare its own"):
        type("Forgetful", (errors.NotFound,), {})
    with pytest.raises(TypeError, match="already SessionNotFound's"):
        type("Copycat", (errors.NotFound,), {"code": "session_not_found"})
    assert "Forgetful" not in {cls.__name__ for cls in errors.REGISTRY.values()}


def test_a_stored_crash_comes_back_as_a_500_not_a_mapped_4xx() -> None:
    crash = errors.error_from_field({"code": "internal_error", "detail": "boom"})
    assert (type(crash), crash.status, crash.code) == (errors.AppError, 500, "internal_error")
    for code, cls in errors.REGISTRY.items():
        if cls is errors.HttpError:  # a framework refusal, answered at once and never stored
            continue
        rebuilt = errors.error_from_field({"code": code, "detail": "d"})
        assert type(rebuilt) is cls and rebuilt.code == code
