"""Small helpers for API tests."""

from __future__ import annotations

import json
from typing import Any

import httpx


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
