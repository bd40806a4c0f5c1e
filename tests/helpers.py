"""Small helpers for API tests."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import httpx

PASSWORD = "correct horse battery"


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD, **fields: Any) -> httpx.Response:
    return await client.post("/auth/register", json={"email": email, "password": password, **fields})


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/auth/login", json={"email": email, "password": password})


async def sign_up(client: httpx.AsyncClient, email: str = "owner@example.com") -> dict[str, Any]:
    """Register an account (or sign in, if it exists) and make `client` send its access token from now on."""
    response = await register(client, email)
    if response.status_code == 409:
        response = await login(client, email)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    client.headers["Authorization"] = f"Bearer {body['access_token']}"
    return body


async def create_agent(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"name": "Tutor", "prompt": "You are a patient tutor. Answer briefly.", **fields}
    response = await client.post("/agents", json=body)
    assert response.status_code == 201, response.text
    agent: dict[str, Any] = response.json()
    return agent


async def create_session(client: httpx.AsyncClient, agent_id: str, **fields: Any) -> dict[str, Any]:
    response = await client.post(f"/agents/{agent_id}/sessions", json=fields)
    assert response.status_code == 201, response.text
    session: dict[str, Any] = response.json()
    return session


async def new_chat(client: httpx.AsyncClient) -> dict[str, Any]:
    """A chat session with a new agent of `client`'s account (the `chat` fixture, for clients of other apps)."""
    return await create_session(client, (await create_agent(client))["id"])


async def history(client: httpx.AsyncClient, session_id: str) -> list[dict[str, Any]]:
    response = await client.get(f"/sessions/{session_id}/messages", params={"limit": 100})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def parse_sse(body: str) -> list[tuple[str, Any]]:
    """`(event, data)` pairs from an SSE body (comments and pings skipped)."""
    events = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            events.append((name, json.loads("\n".join(data))))
    return events


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert an RFC 9457 problem document with this status and machine code; returns its body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status and body["code"] == code, body
    return body


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() is not None, f"timestamp without a UTC offset: {value}"
    return moment


def key_items(response: httpx.Response) -> list[dict[str, Any]]:
    """The API keys in a `GET /api-keys` answer."""
    assert response.status_code == 200, response.text
    body = response.json()
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return items


def assert_rate_limited(response: httpx.Response, *, max_seconds: int) -> None:
    assert_problem(response, 429, "rate_limited")
    retry_after = response.headers["retry-after"]
    assert re.fullmatch(r"\d+", retry_after), retry_after
    assert 1 <= int(retry_after) <= max_seconds
