"""Two accounts on one server: user B reaches none of user A's agents, sessions, messages, voice turns or audio, by
any path and with any kind of credentials; anonymous callers reach nothing; cookie-authenticated changes need the
CSRF token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.apps import api_client
from tests.helpers import assert_problem, bearer, create_agent, create_session, history, sign_up
from tests.voice import finished, spoken, upload
from webapp.models import Agent, ApiKey, ChatSession, Message, VoiceTurn
from webapp.services import accounts
from webapp.services.runtime import Runtime

CSRF = "csrf-token-of-this-browser"


@pytest.fixture(scope="module")
def clip() -> bytes:
    return spoken("wav")


@dataclass
class World:
    """User A's resources, as A saw them when they were made."""

    agent: dict[str, Any]
    session: dict[str, Any]
    text_message_id: str
    turn: dict[str, Any] | None
    history: list[dict[str, Any]]

    @property
    def voice_message_ids(self) -> tuple[str, str]:
        assert self.turn is not None
        return self.turn["user_message_id"], self.turn["assistant_message_id"]


async def make_world(client: httpx.AsyncClient, clip: bytes, *, voice: bool = True) -> World:
    """A (the `client` fixture's account) owns an agent, a session, a text exchange and a finished voice turn."""
    agent = await create_agent(client, name="A's secret agent", prompt="A's private system prompt.")
    session = await create_session(client, agent["id"], title="A's private chat")
    sent = await client.post(f"/sessions/{session['id']}/messages", json={"content": "A's private question"})
    assert sent.status_code == 201, sent.text
    turn = None
    if voice:
        accepted = await upload(client, session["id"], clip)
        assert accepted.status_code == 202, accepted.text
        turn = await finished(client, accepted.json()["id"])
        assert turn["status"] == "done", turn
    return World(
        agent=(await client.get(f"/agents/{agent['id']}")).json(),
        session=(await client.get(f"/sessions/{session['id']}")).json(),
        text_message_id=sent.json()["user_message"]["id"],
        turn=turn,
        history=await history(client, session["id"]),
    )


@pytest.fixture
async def world(client: httpx.AsyncClient, clip: bytes) -> World:
    return await make_world(client, clip)


@pytest.fixture
async def text_world(client: httpx.AsyncClient, clip: bytes) -> World:
    """The same without the voice turn (for tests that never reach A's voice resources)."""
    return await make_world(client, clip, voice=False)


def paths(world: World, clip: bytes) -> list[tuple[str, str, dict[str, Any], str]]:
    """Every path that names one of A's resources: (method, path, request arguments, expected 404 code)."""
    assert world.turn is not None
    agent, session, turn = world.agent["id"], world.session["id"], world.turn["id"]
    user_voice, reply_voice = world.voice_message_ids
    upload_body = {"files": {"audio": ("clip.wav", clip, "audio/wav")}}
    return [
        ("GET", f"/agents/{agent}", {}, "agent_not_found"),
        ("PATCH", f"/agents/{agent}", {"json": {"name": "Taken over"}}, "agent_not_found"),
        ("DELETE", f"/agents/{agent}", {}, "agent_not_found"),
        ("GET", f"/agents/{agent}/sessions", {}, "agent_not_found"),
        ("POST", f"/agents/{agent}/sessions", {"json": {"title": "Intruder"}}, "agent_not_found"),
        ("GET", f"/sessions/{session}", {}, "session_not_found"),
        ("PATCH", f"/sessions/{session}", {"json": {"title": "Taken over"}}, "session_not_found"),
        ("DELETE", f"/sessions/{session}", {}, "session_not_found"),
        ("GET", f"/sessions/{session}/messages", {}, "session_not_found"),
        ("POST", f"/sessions/{session}/messages", {"json": {"content": "Intruder"}}, "session_not_found"),
        (
            "POST",
            f"/sessions/{session}/messages",
            {"json": {"content": "Intruder"}, "headers": {"Accept": "text/event-stream"}},
            "session_not_found",
        ),
        ("POST", f"/sessions/{session}/voice", upload_body, "session_not_found"),
        ("POST", f"/sessions/{session}/voice?wait=true", upload_body, "session_not_found"),
        ("GET", f"/voice-turns/{turn}", {}, "voice_turn_not_found"),
        ("GET", f"/voice-turns/{turn}/events", {"headers": {"Accept": "text/event-stream"}}, "voice_turn_not_found"),
        ("GET", f"/messages/{world.text_message_id}/audio", {}, "message_not_found"),
        ("GET", f"/messages/{user_voice}/audio", {}, "message_not_found"),
        ("GET", f"/messages/{user_voice}/audio", {"headers": {"Range": "bytes=0-99"}}, "message_not_found"),
        ("GET", f"/messages/{reply_voice}/audio", {}, "message_not_found"),
    ]


async def assert_intact(client: httpx.AsyncClient, world: World, runtime: Runtime) -> None:
    """A still sees everything exactly as before."""
    assert (await client.get(f"/agents/{world.agent['id']}")).json() == world.agent
    assert (await client.get(f"/sessions/{world.session['id']}")).json() == world.session
    assert await history(client, world.session["id"]) == world.history
    sessions = (await client.get(f"/agents/{world.agent['id']}/sessions")).json()["items"]
    assert [s["id"] for s in sessions] == [world.session["id"]]
    if world.turn is not None:
        assert (await client.get(f"/voice-turns/{world.turn['id']}")).json() == world.turn
        for message_id in world.voice_message_ids:
            audio = await client.get(f"/messages/{message_id}/audio")
            assert audio.status_code == 200 and audio.content
    async with runtime.db.read() as db:
        assert await db.scalar(select(func.count()).select_from(VoiceTurn)) == (world.turn is not None)
        assert await db.scalar(select(func.count()).select_from(Message)) == len(world.history)
    assert len(world.history) == (4 if world.turn is not None else 2)


@pytest.fixture
async def bob(app: FastAPI, runtime: Runtime) -> AsyncIterator[dict[str, Any]]:
    """User B, a separate account on the same server: its id, access token and an API key."""
    async with api_client(app, signed_in=False) as http:
        signed_up = await sign_up(http, "bob@example.com")
        key = await http.post("/api-keys", json={"name": "bob's key"})
        assert key.status_code == 201
        yield {"id": signed_up["user"]["id"], "token": signed_up["access_token"], "api_key": key.json()["secret"]}


def browser_headers(runtime: Runtime, user_id: str, *, csrf: str | None = CSRF) -> dict[str, str]:
    """What a signed-in browser sends: the session cookie and the CSRF cookie (and, from our scripts, the header)."""
    session, _ = accounts.issue_token(secret=runtime.secret_key, user_id=user_id, hours=1)
    headers = {"Cookie": f"parley_session={session}; parley_csrf={CSRF}"}
    if csrf == CSRF:  # the token the pages carry: bound to this session cookie
        headers["X-CSRF-Token"] = accounts.csrf_token(secret=runtime.secret_key, session=session)
    elif csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return headers


@pytest.fixture(params=["access-token", "api-key", "cookie"])
async def intruder(request: pytest.FixtureRequest, app: FastAPI, runtime: Runtime, bob: dict[str, Any]) -> Any:
    """A client for user B with one kind of credentials."""
    if request.param == "access-token":
        headers = bearer(bob["token"])
    elif request.param == "api-key":
        headers = bearer(bob["api_key"])
    else:
        headers = browser_headers(runtime, bob["id"])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1", headers=headers) as http:
        me = await http.get("/me")
        assert me.status_code == 200 and me.json()["email"] == "bob@example.com"  # B is really signed in
        yield http


async def test_another_user_gets_404_on_every_path(
    client: httpx.AsyncClient, intruder: httpx.AsyncClient, world: World, runtime: Runtime, clip: bytes
) -> None:
    for method, path, arguments, code in paths(world, clip):
        response = await intruder.request(method, path, **arguments)
        assert_problem(response, 404, code)
        for private in ("A's secret agent", "A's private", world.agent["prompt"]):
            assert private not in response.text, (method, path)

    listed = await intruder.get("/agents")
    assert listed.status_code == 200 and listed.json()["items"] == []
    # B can use the server normally, and still sees only B's own agent.
    own = await create_agent(intruder, name="B's agent")
    assert [a["id"] for a in (await intruder.get("/agents")).json()["items"]] == [own["id"]]
    assert [a["id"] for a in (await client.get("/agents")).json()["items"]] == [world.agent["id"]]

    await assert_intact(client, world, runtime)


async def test_anonymous_gets_401_and_the_owner_gets_through_on_every_path(
    anon: httpx.AsyncClient, client: httpx.AsyncClient, world: World, runtime: Runtime, clip: bytes
) -> None:
    everything = [
        *paths(world, clip),
        ("GET", "/agents", {}, ""),
        ("POST", "/agents", {"json": {"name": "Anon", "prompt": "Hi."}}, ""),
        ("GET", "/me", {}, ""),
        ("GET", "/api-keys", {}, ""),
        ("POST", "/api-keys", {"json": {"name": "anon"}}, ""),
        ("DELETE", "/api-keys/anything", {}, ""),
    ]
    for method, path, arguments, _ in everything:
        response = await anon.request(method, path, **arguments)
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
    await assert_intact(client, world, runtime)
    assert len((await client.get("/agents")).json()["items"]) == 1

    # The control: the same reads by A succeed, so the refusals above are about who asks.
    for method, path, arguments, _ in paths(world, clip):
        if method != "GET":
            continue
        response = await client.request(method, path, **arguments)
        if path == f"/messages/{world.text_message_id}/audio":
            assert_problem(response, 404, "audio_not_found")  # A learns it has no audio; B only that it is unknown
        else:
            assert response.status_code in (200, 206), (path, response.status_code, response.text)


# --- CSRF on cookie-authenticated changes ----------------------------------------------------------------------------


async def counts(runtime: Runtime) -> dict[str, int]:
    async with runtime.db.read() as db:
        return {
            model.__name__: await db.scalar(select(func.count()).select_from(model)) or 0
            for model in (Agent, ChatSession, Message, VoiceTurn, ApiKey)
        }


def changes(world: World, clip: bytes) -> list[tuple[str, str, dict[str, Any], int]]:
    """Every kind of change A can make with the browser cookie, and its success status."""
    agent, session = world.agent["id"], world.session["id"]
    return [
        ("POST", "/agents", {"json": {"name": "New", "prompt": "Hello."}}, 201),
        ("PATCH", f"/agents/{agent}", {"json": {"name": "Renamed"}}, 200),
        ("POST", f"/agents/{agent}/sessions", {"json": {}}, 201),
        ("PATCH", f"/sessions/{session}", {"json": {"title": "Renamed"}}, 200),
        ("POST", f"/sessions/{session}/messages", {"json": {"content": "By cookie"}}, 201),
        (
            "POST",
            f"/sessions/{session}/messages",
            {"json": {"content": "By cookie, streamed"}, "headers": {"Accept": "text/event-stream"}},
            201,
        ),
        ("POST", f"/sessions/{session}/voice", {"files": {"audio": ("clip.wav", clip, "audio/wav")}}, 202),
        ("POST", "/api-keys", {"json": {"name": "by cookie"}}, 201),
        ("DELETE", f"/sessions/{session}", {}, 204),
        ("DELETE", f"/agents/{agent}", {}, 204),
    ]


CSRF_FAILURES = {
    "no-header": (None, CSRF),
    "wrong-header": ("wrong-token", CSRF),
    "empty-header": ("", CSRF),
    "no-cookie": (CSRF, None),
    "no-cookie-no-header": (None, None),
}


async def test_cookie_changes_without_the_csrf_token_are_refused(
    app: FastAPI, client: httpx.AsyncClient, text_world: World, runtime: Runtime, clip: bytes
) -> None:
    world = text_world
    owner_id = (await client.get("/me")).json()["id"]
    session, _ = accounts.issue_token(secret=runtime.secret_key, user_id=owner_id, hours=1)
    before = await counts(runtime)
    transport = httpx.ASGITransport(app=app)
    for case, (csrf_header, csrf_cookie) in CSRF_FAILURES.items():
        cookie = f"parley_session={session}" + (f"; parley_csrf={csrf_cookie}" if csrf_cookie else "")
        headers = {"Cookie": cookie} | ({"X-CSRF-Token": csrf_header} if csrf_header is not None else {})
        async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1", headers=headers) as http:
            assert (await http.get(f"/agents/{world.agent['id']}")).status_code == 200  # reading needs no token
            for method, path, arguments, _ in changes(world, clip):
                response = await http.request(method, path, **arguments)
                assert response.status_code == 403, (case, method, path, response.text)
                assert_problem(response, 403, "csrf_failed")
    assert await counts(runtime) == before
    await assert_intact(client, world, runtime)


async def test_a_non_ascii_csrf_header_is_refused_not_a_crash(
    app: FastAPI, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Header bytes are Latin-1, so a browser extension or a proxy can send any byte: still a 403, never a 500."""
    owner_id = (await client.get("/me")).json()["id"]
    headers = browser_headers(runtime, owner_id) | {"X-CSRF-Token": "caf\xe9".encode("latin-1")}
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1", headers=headers) as http:
        assert_problem(await http.post("/agents", json={"name": "New", "prompt": "Hello."}), 403, "csrf_failed")
    assert (await client.get("/agents")).json()["items"] == []


async def test_cookie_changes_with_the_csrf_token_work(
    app: FastAPI, client: httpx.AsyncClient, text_world: World, runtime: Runtime, clip: bytes
) -> None:
    world = text_world
    owner_id = (await client.get("/me")).json()["id"]
    transport = httpx.ASGITransport(app=app)
    headers = browser_headers(runtime, owner_id)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1", headers=headers) as http:
        for method, path, arguments, status in changes(world, clip):
            response = await http.request(method, path, **arguments)
            assert response.status_code == status, (method, path, response.text)
            if status == 202:
                assert (await finished(http, response.json()["id"]))["status"] == "done"
    assert_problem(await client.get(f"/agents/{world.agent['id']}"), 404, "agent_not_found")  # deleted at the end


async def test_bearer_changes_need_no_csrf_token(
    client: httpx.AsyncClient, anon: httpx.AsyncClient, text_world: World, clip: bytes
) -> None:
    world = text_world
    key = (await client.post("/api-keys", json={"name": "script"})).json()["secret"]
    token = client.headers["Authorization"].removeprefix("Bearer ")
    for credential in (token, key):
        # A stray cookie from a browser does not turn a bearer request into a cookie one.
        headers = bearer(credential) | {"Cookie": f"parley_csrf={CSRF}"}
        for method, path, arguments, status in changes(world, clip)[:-2]:
            if status == 202:
                continue  # voice uploads by bearer, without a CSRF token, are what every voice test does
            response = await anon.request(method, path, headers=headers | arguments.pop("headers", {}), **arguments)
            assert response.status_code == status, (method, path, response.text)
