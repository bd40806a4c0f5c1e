"""Chat sessions: create under an agent, list by recent activity, rename, delete; titles from first messages."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.helpers import create_agent, create_session, history, parse_time


async def test_create_get_rename_delete(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    response = await client.post(f"/agents/{agent['id']}/sessions", json={"title": "Algebra"})
    assert response.status_code == 201
    session = response.json()
    assert response.headers["location"] == f"/api/v1/sessions/{session['id']}"
    assert session["agent_id"] == agent["id"] and session["agent_name"] == agent["name"]
    assert session["title"] == "Algebra" and session["message_count"] == 0 and session["last_message_at"] is None

    assert (await client.get(f"/sessions/{session['id']}")).json() == session
    renamed = await client.patch(f"/sessions/{session['id']}", json={"title": "Geometry"})
    assert renamed.status_code == 200 and renamed.json()["title"] == "Geometry"

    assert (await client.delete(f"/sessions/{session['id']}")).status_code == 204
    gone = await client.get(f"/sessions/{session['id']}")
    assert gone.status_code == 404 and gone.json()["code"] == "session_not_found"


async def test_session_body_is_optional_and_title_defaults(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    response = await client.post(f"/agents/{agent['id']}/sessions")
    assert response.status_code == 201
    assert response.json()["title"] == "New chat"


async def test_untitled_session_takes_title_from_first_message(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    untitled = await create_session(client, agent["id"])
    titled = await create_session(client, agent["id"], title="Kept")
    long_text = "Explain   the difference between weather and climate in a way a child would understand please"
    for session in (untitled, titled):
        assert (
            await client.post(f"/sessions/{session['id']}/messages", json={"content": long_text})
        ).status_code == 201
    await client.post(f"/sessions/{untitled['id']}/messages", json={"content": "A second message"})
    after = (await client.get(f"/sessions/{untitled['id']}")).json()
    assert after["title"].startswith("Explain the difference between weather")
    assert len(after["title"]) <= 60 and after["title"].endswith("…")
    assert after["message_count"] == 4
    last_reply = (await history(client, untitled["id"]))[-1]
    assert parse_time(after["last_message_at"]) == parse_time(last_reply["created_at"])
    assert (await client.get(f"/sessions/{titled['id']}")).json()["title"] == "Kept"


async def test_sessions_listed_most_recently_active_first(client: httpx.AsyncClient) -> None:
    agent = await create_agent(client)
    first, second, third = [await create_session(client, agent["id"], title=f"S{i}") for i in range(3)]
    await client.post(f"/sessions/{first['id']}/messages", json={"content": "wake up"})
    page1 = (await client.get(f"/agents/{agent['id']}/sessions", params={"limit": 2})).json()
    page2 = (await client.get(f"/agents/{agent['id']}/sessions", params={"cursor": page1["next_cursor"]})).json()
    order = [s["id"] for s in page1["items"] + page2["items"]]
    assert order == [first["id"], third["id"], second["id"]]
    assert page2["next_cursor"] is None


@pytest.mark.parametrize("body", [{"title": ""}, {"title": "x" * 201}, {}, {"title": None}])
async def test_invalid_rename_is_422(client: httpx.AsyncClient, chat: dict[str, Any], body: dict[str, object]) -> None:
    response = await client.patch(f"/sessions/{chat['id']}", json=body)
    assert response.status_code == 422 and response.json()["code"] == "validation_failed"


async def test_sessions_of_unknown_agent_are_404(client: httpx.AsyncClient) -> None:
    for method in ("GET", "POST"):
        response = await client.request(method, "/agents/missing/sessions")
        assert response.status_code == 404 and response.json()["code"] == "agent_not_found"


async def test_unknown_session_is_404_everywhere(client: httpx.AsyncClient) -> None:
    for method, path, body in [
        ("GET", "/sessions/x", None),
        ("PATCH", "/sessions/x", {"title": "t"}),
        ("DELETE", "/sessions/x", None),
        ("GET", "/sessions/x/messages", None),
        ("POST", "/sessions/x/messages", {"content": "hello"}),
    ]:
        response = await client.request(method, path, json=body)
        assert response.status_code == 404, (method, path)
        assert response.json()["code"] == "session_not_found"
    streamed = await client.post(
        "/sessions/x/messages", json={"content": "hello"}, headers={"accept": "text/event-stream"}
    )
    assert streamed.status_code == 404 and streamed.json()["code"] == "session_not_found"
