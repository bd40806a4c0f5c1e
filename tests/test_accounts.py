"""Accounts: sign-up and sign-in, password storage, API keys, 401s, the signing secret, abuse limits, and the browser's
sign-in pages."""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import stat
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.conftest import PASSWORD, api_client, make_settings, serve, sign_up
from tests.helpers import assert_problem, bearer, create_agent, create_session, history
from tests.test_voice_pipeline import finished, spoken, upload
from webapp.config import Settings
from webapp.main import create_app
from webapp.media import session_dir
from webapp.models import ApiKey, User, VoiceTurn
from webapp.services import accounts
from webapp.services.limits import RateLimiter
from webapp.services.runtime import Runtime


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app built from these settings, started (for tests that need unusual settings and several clients)."""
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


async def register(client: httpx.AsyncClient, email: str, password: str = PASSWORD, **fields: Any) -> httpx.Response:
    return await client.post("/auth/register", json={"email": email, "password": password, **fields})


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> httpx.Response:
    return await client.post("/auth/login", json={"email": email, "password": password})


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() is not None, f"timestamp without a UTC offset: {value}"
    return moment


# --- sign-up and sign-in ---------------------------------------------------------------------------------------------


async def test_register_answers_the_user_and_a_bearer_token(anon: httpx.AsyncClient, settings: Settings) -> None:
    password = "Registration-Pa55word"
    response = await register(anon, "ada@example.com", password, display_name="Ada Lovelace")
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"user", "access_token", "token_type", "expires_at"}
    assert body["token_type"] == "bearer"
    assert set(body["user"]) == {"id", "email", "display_name", "created_at"}
    assert body["user"]["email"] == "ada@example.com" and body["user"]["display_name"] == "Ada Lovelace"
    expected_expiry = datetime.now(UTC) + timedelta(hours=settings.access_token_hours)
    assert abs(parse_time(body["expires_at"]) - expected_expiry) < timedelta(minutes=1)

    me = await anon.get("/me", headers=bearer(body["access_token"]))
    assert me.status_code == 200 and me.json() == body["user"]

    signed_in = await login(anon, "ada@example.com", password)
    assert signed_in.status_code == 200, signed_in.text
    assert set(signed_in.json()) == {"access_token", "token_type", "expires_at"}
    assert signed_in.json()["token_type"] == "bearer"
    assert parse_time(signed_in.json()["expires_at"]) > datetime.now(UTC)
    again = await anon.get("/me", headers=bearer(signed_in.json()["access_token"]))
    assert again.status_code == 200 and again.json()["id"] == body["user"]["id"]

    for answer in (response, me, signed_in, again):
        assert password not in answer.text and "password" not in answer.text


async def test_display_name_defaults_to_the_email_name(anon: httpx.AsyncClient) -> None:
    response = await register(anon, "grace@example.com")
    assert response.status_code == 201 and response.json()["user"]["display_name"] == "grace"


async def test_email_is_unique_whatever_its_case(anon: httpx.AsyncClient) -> None:
    assert (await register(anon, "Ada@Example.com")).status_code == 201
    taken = await register(anon, "ada@example.com", "another password")
    assert_problem(taken, 409, "email_taken")
    assert_problem(await register(anon, "ADA@EXAMPLE.COM"), 409, "email_taken")
    # Sign-in is case-insensitive too, and still reaches the first account.
    signed_in = await login(anon, "aDa@example.COM")
    assert signed_in.status_code == 200
    assert_problem(await login(anon, "ada@example.com", "another password"), 401, "invalid_credentials")


@pytest.mark.parametrize(
    "body",
    [
        {"email": "not-an-email", "password": PASSWORD},
        {"email": "ada@example", "password": PASSWORD},
        {"email": "", "password": PASSWORD},
        {"email": "ada@example.com", "password": "7 chars"},
        {"email": "ada@example.com"},
        {"password": PASSWORD},
        {"email": "ada@example.com", "password": PASSWORD, "is_admin": True},
    ],
    ids=["no-at", "no-dot", "empty-email", "short-password", "no-password", "no-email", "unknown-field"],
)
async def test_register_rejects_invalid_bodies(anon: httpx.AsyncClient, runtime: Runtime, body: dict[str, Any]) -> None:
    response = await anon.post("/auth/register", json=body)
    assert_problem(response, 422, "validation_failed")
    assert response.json()["errors"]
    assert PASSWORD not in response.text and "7 chars" not in response.text  # the input is not echoed back
    async with runtime.db.read() as db:
        assert await db.scalar(select(func.count()).select_from(User)) == 0


async def test_wrong_password_and_unknown_email_look_the_same(
    client: httpx.AsyncClient, anon: httpx.AsyncClient
) -> None:
    wrong_password = await login(anon, "owner@example.com", "not the password")
    unknown_email = await login(anon, "nobody@example.com", PASSWORD)
    first = assert_problem(wrong_password, 401, "invalid_credentials")
    second = assert_problem(unknown_email, 401, "invalid_credentials")
    assert first == second  # same title and detail: nothing says which of the two was wrong
    assert wrong_password.headers["www-authenticate"] == unknown_email.headers["www-authenticate"]


async def test_me_is_the_signed_in_account(client: httpx.AsyncClient) -> None:
    response = await client.get("/me")
    assert response.status_code == 200
    assert response.json()["email"] == "owner@example.com"


async def test_signup_can_be_closed_after_the_first_account(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, allow_signup=False)
    async with serve(settings, signed_in=False) as anon:
        assert (await register(anon, "owner@example.com")).status_code == 201  # the first one always
        assert_problem(await register(anon, "second@example.com"), 403, "signup_disabled")
        assert_problem(await login(anon, "second@example.com"), 401, "invalid_credentials")  # nothing was made
        assert (await login(anon, "owner@example.com")).status_code == 200


def lenient_client(app: FastAPI) -> httpx.AsyncClient:
    """A client that sees a crash as the 500 a real client would get (not as the app's exception)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test/api/v1")


async def test_concurrent_sign_ups_with_one_email_make_one_account(app: FastAPI, runtime: Runtime) -> None:
    async with lenient_client(app) as http:
        answers = await asyncio.gather(*(register(http, "Ada@Example.com") for _ in range(4)))
    assert sorted(a.status_code for a in answers) == [201, 409, 409, 409], [a.text for a in answers]
    for answer in answers:
        if answer.status_code == 409:
            assert_problem(answer, 409, "email_taken")
    async with runtime.db.read() as db:
        assert await db.scalar(select(func.count()).select_from(User)) == 1


async def test_concurrent_first_sign_ups_on_a_closed_server_make_one_account(database_url: str, tmp_path: Path) -> None:
    async with running(make_settings(database_url, tmp_path, allow_signup=False)) as app, lenient_client(app) as http:
        answers = await asyncio.gather(*(register(http, f"first{n}@example.com") for n in range(4)))
        assert sorted(a.status_code for a in answers) == [201, 403, 403, 403], [a.text for a in answers]
        runtime: Runtime = app.state.runtime
        async with runtime.db.read() as db:
            assert await db.scalar(select(func.count()).select_from(User)) == 1


# --- passwords are never kept or logged in clear ---------------------------------------------------------------------


async def test_password_is_stored_as_an_argon2id_hash(anon: httpx.AsyncClient, runtime: Runtime) -> None:
    password = "Stored-Pa55word-42"
    assert (await register(anon, "ada@example.com", password)).status_code == 201
    async with runtime.db.read() as db:
        user = await db.scalar(select(User).where(User.email == "ada@example.com"))
    assert user is not None
    assert user.password_hash.startswith("$argon2id$"), user.password_hash
    assert password not in user.password_hash
    assert PasswordHasher().verify(user.password_hash, password)  # a real hash of this password, not a placeholder
    assert password not in repr(vars(user))


async def test_passwords_never_reach_the_logs(
    anon: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, runtime: Runtime
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="sqlalchemy")  # SQL statements with their parameters, too
    password, wrong = "Logged-Pa55word-xyzzy", "Wrong-Pa55word-plugh"
    assert (await register(anon, "ada@example.com", password)).status_code == 201
    assert (await login(anon, "ada@example.com", password)).status_code == 200
    assert (await login(anon, "ada@example.com", wrong)).status_code == 401
    assert (await anon.post("/auth/register", json={"email": "bad", "password": password})).status_code == 422
    # The capture works: the INSERT of the account, with its (hashed) password, was logged.
    assert any("$argon2id$" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        text = record.getMessage() + repr(record.args) + repr(record.__dict__)
        assert password not in text and wrong not in text, record


# --- API keys --------------------------------------------------------------------------------------------------------


def key_items(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    body = response.json()
    items: list[dict[str, Any]] = body["items"] if isinstance(body, dict) else body
    return items


async def test_api_key_is_shown_once_stored_as_a_hash_and_works(
    client: httpx.AsyncClient, anon: httpx.AsyncClient, runtime: Runtime
) -> None:
    created = await client.post("/api-keys", json={"name": "laptop"})
    assert created.status_code == 201, created.text
    key = created.json()
    assert set(key) == {"id", "name", "prefix", "created_at", "secret"}
    secret, prefix = key["secret"], key["prefix"]
    assert key["name"] == "laptop" and "location" not in created.headers  # no GET for a single key
    assert secret.startswith("pk_") and secret.startswith(prefix) and 3 < len(prefix) < len(secret) - 20

    listed = await client.get("/api-keys")
    [item] = key_items(listed)
    assert "secret" not in item and secret not in listed.text
    assert item["id"] == key["id"] and item["prefix"] == prefix and item["name"] == "laptop"
    assert item["last_used_at"] is None

    async with runtime.db.read() as db:
        rows = (await db.execute(select(ApiKey.__table__))).all()
    assert len(rows) == 1
    stored = repr(tuple(rows[0]))
    assert secret not in stored and secret[len(prefix) :] not in stored  # only a hash (and the visible prefix)

    me = await anon.get("/me", headers=bearer(secret))
    assert me.status_code == 200 and me.json()["email"] == "owner@example.com"
    agents = await anon.post("/agents", headers=bearer(secret), json={"name": "Via key", "prompt": "Hi."})
    assert agents.status_code == 201  # a key can write, and needs no CSRF token
    [used] = key_items(await client.get("/api-keys"))
    assert used["last_used_at"] is not None
    assert parse_time(used["last_used_at"]) >= parse_time(used["created_at"])


async def test_deleted_api_key_is_refused_at_once(client: httpx.AsyncClient, anon: httpx.AsyncClient) -> None:
    key = (await client.post("/api-keys", json={"name": "ci"})).json()
    other = (await client.post("/api-keys", json={"name": "other"})).json()
    assert (await anon.get("/me", headers=bearer(key["secret"]))).status_code == 200
    deleted = await client.delete(f"/api-keys/{key['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    refused = await anon.get("/me", headers=bearer(key["secret"]))
    assert_problem(refused, 401, "unauthorized")
    assert refused.headers["www-authenticate"].startswith("Bearer")
    assert [item["id"] for item in key_items(await client.get("/api-keys"))] == [other["id"]]
    assert (await anon.get("/me", headers=bearer(other["secret"]))).status_code == 200  # the other key is untouched
    assert_problem(await client.delete(f"/api-keys/{key['id']}"), 404, "api_key_not_found")


async def test_another_users_api_key_cannot_be_seen_or_deleted(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with api_client(app, signed_in=False) as bob:
        await sign_up(bob, "bob@example.com")
        bobs = (await bob.post("/api-keys", json={"name": "bob's"})).json()
        assert_problem(await client.delete(f"/api-keys/{bobs['id']}"), 404, "api_key_not_found")
        assert_problem(await client.delete("/api-keys/no-such-key"), 404, "api_key_not_found")
        assert key_items(await client.get("/api-keys")) == []
        me = await bob.get("/me", headers=bearer(bobs["secret"]))
        assert me.status_code == 200 and me.json()["email"] == "bob@example.com"
        assert [item["id"] for item in key_items(await bob.get("/api-keys"))] == [bobs["id"]]


# --- 401s ------------------------------------------------------------------------------------------------------------


async def assert_all_refused(app: FastAPI, cases: Mapping[str, Mapping[str, str | bytes]]) -> None:
    """Each case's headers get a 401 `unauthorized` with `WWW-Authenticate` on a few paths; reports every miss."""
    wrong = []
    async with lenient_client(app) as anon:
        for case, headers in cases.items():
            for method, path, body in (
                ("GET", "/me", None),
                ("GET", "/agents", None),
                ("POST", "/agents", {"name": "Sneaky", "prompt": "Hello."}),
                ("GET", "/api-keys", None),
                ("POST", "/api-keys", {"name": "sneaky"}),
            ):
                response = await anon.request(method, path, headers=dict(headers), json=body)
                if (
                    response.status_code != 401
                    or not response.headers["content-type"].startswith("application/problem+json")
                    or response.json().get("code") != "unauthorized"
                    or not response.headers.get("www-authenticate", "").startswith("Bearer")
                ):
                    wrong.append((case, method, path, response.status_code, response.text[:100]))
    assert not wrong, "\n".join(map(str, wrong))


def _flip(text: str, index: int) -> str:
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


def _bad_headers(runtime: Runtime, user_id: str, other_user_id: str) -> dict[str, dict[str, str]]:
    token, _ = accounts.issue_token(secret=runtime.secret_key, user_id=user_id, hours=1)
    payload, signature = token.removeprefix("pat_").rsplit(".", 1)
    forged_payload = base64.urlsafe_b64encode(f'{{"sub": "{other_user_id}", "exp": 4102444800}}'.encode()).decode()
    expired, _ = accounts.issue_token(secret=runtime.secret_key, user_id=user_id, hours=-1)
    foreign, _ = accounts.issue_token(secret=b"another installation's secret key", user_id=user_id, hours=1)
    basic = base64.b64encode(f"owner@example.com:{PASSWORD}".encode()).decode()
    return {
        "no-header": {},
        "garbage": {"Authorization": "Bearer garbage"},
        "empty-bearer": {"Authorization": "Bearer "},
        "basic": {"Authorization": f"Basic {basic}"},
        "other-scheme": {"Authorization": f"Token {token}"},
        "unknown-api-key": {"Authorization": "Bearer pk_" + "x" * 43},
        "tampered-signature": bearer(f"pat_{payload}.{_flip(signature, len(signature) // 2)}"),
        "tampered-payload": bearer(f"pat_{forged_payload.rstrip('=')}.{signature}"),
        "no-signature": bearer(f"pat_{payload}"),
        "no-prefix": bearer(f"{payload}.{signature}"),
        "expired": bearer(expired),
        "other-secret": bearer(foreign),
        "bad-cookie": {"Cookie": "parley_session=garbage"},
        "expired-cookie": {"Cookie": f"parley_session={expired}"},
    }


async def test_bad_credentials_get_401_with_www_authenticate(
    client: httpx.AsyncClient, app: FastAPI, runtime: Runtime
) -> None:
    owner_id = (await client.get("/me")).json()["id"]
    async with api_client(app, signed_in=False) as bob:
        bob_id = (await sign_up(bob, "bob@example.com"))["user"]["id"]  # a forged token claims this real account
    # The well-formed token the forgeries start from works, so each 401 below is about its forgery alone.
    token, _ = accounts.issue_token(secret=runtime.secret_key, user_id=owner_id, hours=1)
    assert (await client.get("/me", headers=bearer(token))).status_code == 200

    await assert_all_refused(app, _bad_headers(runtime, owner_id, bob_id))
    assert (await client.get("/agents")).json()["items"] == []
    assert key_items(await client.get("/api-keys")) == []


async def test_non_ascii_credentials_get_401_not_a_crash(
    client: httpx.AsyncClient, app: FastAPI, runtime: Runtime
) -> None:
    """Header bytes are Latin-1, so anything can arrive: a stray non-ASCII character is a 401 like any other."""
    owner_id = (await client.get("/me")).json()["id"]
    token, _ = accounts.issue_token(secret=runtime.secret_key, user_id=owner_id, hours=1)
    payload, signature = token.rsplit(".", 1)
    forged = f"{payload}.\xe9{signature[1:]}"
    cases = {
        "non-ascii-signature": {"Authorization": f"Bearer {forged}".encode("latin-1")},
        "non-ascii-cookie": {"Cookie": f"parley_session={forged}".encode("latin-1")},
        "non-ascii-api-key": {"Authorization": "Bearer pk_caf\xe9".encode("latin-1")},
    }
    await assert_all_refused(app, cases)


async def test_public_paths_need_no_sign_in(anon: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
        response = await anon.get(f"http://test{path}")
        assert response.status_code == 200, (path, response.text)
    assert (await register(anon, "ada@example.com")).status_code == 201
    assert (await login(anon, "ada@example.com")).status_code == 200
    assert "Authorization" not in anon.headers


HTTP_METHODS = {"get", "put", "post", "patch", "delete", "head", "options"}


async def test_openapi_declares_bearer_auth_on_protected_operations(anon: httpx.AsyncClient) -> None:
    doc = (await anon.get("http://test/openapi.json")).json()
    schemes = doc["components"]["securitySchemes"]
    bearer_names = [
        name for name, scheme in schemes.items() if scheme["type"] == "http" and scheme["scheme"].lower() == "bearer"
    ]
    assert len(bearer_names) == 1, schemes
    [name] = bearer_names
    protected, public = [], []
    for path, operations in doc["paths"].items():
        if not path.startswith("/api/v1/") and path not in ("/healthz", "/readyz"):
            continue  # browser pages are not part of the API document's contract
        for method, operation in operations.items():
            if method not in HTTP_METHODS:
                continue
            security = operation.get("security", doc.get("security")) or []
            if path.startswith("/api/v1/auth/") or path in ("/healthz", "/readyz"):
                public.append(f"{method} {path}")
                assert not security, (method, path, security)
            else:
                protected.append(f"{method} {path}")
                assert any(name in requirement for requirement in security), (method, path, security)
    assert {"post /api/v1/auth/register", "post /api/v1/auth/login", "get /healthz", "get /readyz"} <= set(public)
    assert {
        "get /api/v1/me",
        "post /api/v1/api-keys",
        "delete /api/v1/api-keys/{key_id}",
        "post /api/v1/agents",
        "get /api/v1/sessions/{session_id}/messages",
        "post /api/v1/sessions/{session_id}/voice",
        "get /api/v1/voice-turns/{turn_id}/events",
        "get /api/v1/messages/{message_id}/audio",
    } <= set(protected)


# --- the signing secret ----------------------------------------------------------------------------------------------


async def test_generated_secret_key_is_kept_so_restarts_keep_sign_ins(database_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "secret_key"
    settings = make_settings(database_url, tmp_path, secret_key=None, secret_key_file=key_file)
    async with serve(settings, signed_in=False) as first:
        token = (await sign_up(first, "ada@example.com"))["access_token"]
        assert key_file.is_file()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        generated = key_file.read_bytes()
        assert len(generated.strip()) >= 32
    async with serve(settings, signed_in=False) as second:
        me = await second.get("/me", headers=bearer(token))
        assert me.status_code == 200 and me.json()["email"] == "ada@example.com"
    assert key_file.read_bytes() == generated
    # Another installation (another generated key) does not accept it: the key is random, not a built-in default.
    elsewhere = make_settings(database_url, tmp_path, secret_key=None, secret_key_file=tmp_path / "other" / "key")
    async with serve(elsewhere, signed_in=False) as third:
        assert_problem(await third.get("/me", headers=bearer(token)), 401, "unauthorized")
        assert (tmp_path / "other" / "key").read_bytes() != generated


async def test_configured_secret_key_is_used_and_no_file_is_written(database_url: str, tmp_path: Path) -> None:
    key_file = tmp_path / "state" / "secret_key"
    settings = make_settings(database_url, tmp_path, secret_key="a configured secret key!", secret_key_file=key_file)
    async with serve(settings, signed_in=False) as first:
        token = (await sign_up(first, "ada@example.com"))["access_token"]
    assert not key_file.exists()
    async with serve(settings, signed_in=False) as second:
        assert (await second.get("/me", headers=bearer(token))).status_code == 200
    other = make_settings(database_url, tmp_path, secret_key="some other secret key", secret_key_file=key_file)
    async with serve(other, signed_in=False) as third:
        assert_problem(await third.get("/me", headers=bearer(token)), 401, "unauthorized")


# --- rate limits -----------------------------------------------------------------------------------------------------


def assert_rate_limited(response: httpx.Response, *, max_seconds: int) -> None:
    assert_problem(response, 429, "rate_limited")
    retry_after = response.headers["retry-after"]
    assert re.fullmatch(r"\d+", retry_after), retry_after
    assert 1 <= int(retry_after) <= max_seconds


async def test_message_rate_limit_is_per_user_and_stores_nothing(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, rate_limit_messages_per_minute=3)
    async with running(settings) as app, api_client(app) as ada, api_client(app, signed_in=False) as bob:
        await sign_up(bob, "bob@example.com")
        session = await create_session(ada, (await create_agent(ada))["id"])
        for n in range(3):
            sent = await ada.post(f"/sessions/{session['id']}/messages", json={"content": f"message {n}"})
            assert sent.status_code == 201, sent.text
        refused = await ada.post(f"/sessions/{session['id']}/messages", json={"content": "one too many"})
        assert_rate_limited(refused, max_seconds=60)
        streamed = await ada.post(
            f"/sessions/{session['id']}/messages",
            json={"content": "one too many, streamed"},
            headers={"Accept": "text/event-stream"},
        )
        assert_rate_limited(streamed, max_seconds=60)

        messages = await history(ada, session["id"])
        assert [m["content"] for m in messages if m["role"] == "user"] == ["message 0", "message 1", "message 2"]
        assert len(messages) == 6
        assert (await ada.get(f"/sessions/{session['id']}")).json()["message_count"] == 6

        bobs = await create_session(bob, (await create_agent(bob))["id"])
        for n in range(3):
            sent = await bob.post(f"/sessions/{bobs['id']}/messages", json={"content": f"bob {n}"})
            assert sent.status_code == 201, sent.text


def test_a_zero_limit_is_no_limit() -> None:
    limiter = RateLimiter(0)
    for _ in range(1000):
        limiter.check("someone")
    assert not limiter.blocked("someone")
    one = RateLimiter(1)
    one.check("someone")
    assert one.blocked("someone") and not one.blocked("someone else")


async def test_message_rate_limit_zero_disables_it(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, rate_limit_messages_per_minute=0)
    async with serve(settings) as client:
        session = await create_session(client, (await create_agent(client))["id"])
        # More than the default limit (60 a minute).
        for n in range(61):
            sent = await client.post(f"/sessions/{session['id']}/messages", json={"content": f"n{n}"})
            assert sent.status_code == 201, (n, sent.text)


async def test_voice_rate_limit_is_per_user_and_stores_nothing(database_url: str, tmp_path: Path, clip: bytes) -> None:
    settings = make_settings(database_url, tmp_path, rate_limit_voice_per_minute=1)
    async with running(settings) as app, api_client(app) as ada, api_client(app, signed_in=False) as bob:
        await sign_up(bob, "bob@example.com")
        session = await create_session(ada, (await create_agent(ada))["id"])
        accepted = await upload(ada, session["id"], clip)
        assert accepted.status_code == 202, accepted.text
        refused = await upload(ada, session["id"], clip)
        assert_rate_limited(refused, max_seconds=60)
        assert_rate_limited(await upload(ada, session["id"], clip, params={"wait": "true"}), max_seconds=60)

        bobs = await create_session(bob, (await create_agent(bob))["id"])
        bobs_turn = await upload(bob, bobs["id"], clip)
        assert bobs_turn.status_code == 202, bobs_turn.text

        assert (await finished(ada, accepted.json()["id"]))["status"] == "done"
        assert (await finished(bob, bobs_turn.json()["id"]))["status"] == "done"
        assert len(await history(ada, session["id"])) == 2
        runtime: Runtime = app.state.runtime
        async with runtime.db.read() as db:
            turns = await db.scalar(
                select(func.count()).select_from(VoiceTurn).where(VoiceTurn.session_id == session["id"])
            )
        assert turns == 1
        files = sorted(p.name for p in session_dir(settings, session["id"]).iterdir())
        assert not [name for name in files if name.endswith(".part")], files
        assert len([name for name in files if ".recording" in name]) == 1, files


@pytest.fixture(scope="module")
def clip() -> bytes:
    return spoken("wav")


# --- sign-in throttling ----------------------------------------------------------------------------------------------


async def test_failed_sign_ins_lock_that_account_only(anon: httpx.AsyncClient) -> None:
    assert (await register(anon, "ada@example.com")).status_code == 201
    assert (await register(anon, "bob@example.com")).status_code == 201
    # One account whatever the spelling of its email.
    for email in ("ada@example.com", "ADA@example.com", "Ada@Example.com", "ada@EXAMPLE.com", "ada@example.COM"):
        assert_problem(await login(anon, email, "wrong password"), 401, "invalid_credentials")
    locked = await login(anon, "ada@example.com")  # even the right password
    assert_rate_limited(locked, max_seconds=15 * 60)
    assert "access_token" not in locked.text
    assert_rate_limited(await login(anon, "ada@example.com", "wrong password"), max_seconds=15 * 60)
    assert (await login(anon, "bob@example.com")).status_code == 200


async def test_a_successful_sign_in_clears_the_failures(anon: httpx.AsyncClient) -> None:
    assert (await register(anon, "ada@example.com")).status_code == 201
    for _ in range(4):
        assert_problem(await login(anon, "ada@example.com", "wrong password"), 401, "invalid_credentials")
    assert (await login(anon, "ada@example.com")).status_code == 200
    # Without the reset this would be the fifth failure in the window, and the next attempt would be refused.
    assert_problem(await login(anon, "ada@example.com", "wrong password"), 401, "invalid_credentials")
    assert (await login(anon, "ada@example.com")).status_code == 200


async def test_failed_sign_ins_from_one_address_are_throttled(anon: httpx.AsyncClient, app: FastAPI) -> None:
    assert (await register(anon, "ada@example.com")).status_code == 201
    for n in range(20):
        assert_problem(await login(anon, f"guess{n}@example.com", "wrong password"), 401, "invalid_credentials")
    assert_rate_limited(await login(anon, "ada@example.com"), max_seconds=15 * 60)
    # Another client address is not affected.
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4242))
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as elsewhere:
        assert (await login(elsewhere, "ada@example.com")).status_code == 200


# --- browser sign-in pages (HTML forms, cookie session, CSRF) --------------------------------------------------------


@asynccontextmanager
async def browser(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test", follow_redirects=False) as http:
        yield http


def set_cookie(response: httpx.Response, name: str) -> str | None:
    """The `Set-Cookie` header that sets `name`, if any."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header
    return None


def cookie_attributes(header: str) -> dict[str, str]:
    parts = [part.strip() for part in header.split(";")]
    return {part.split("=", 1)[0].lower(): (part.split("=", 1)[1] if "=" in part else "") for part in parts[1:]}


async def csrf_from_form(http: httpx.AsyncClient, page: str = "/signin") -> str:
    response = await http.get(page)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    header = set_cookie(response, "parley_csrf")
    assert header is not None, response.headers
    assert "httponly" not in cookie_attributes(header)  # scripts echo it in X-CSRF-Token
    token = http.cookies.get("parley_csrf")
    assert token and f'name="csrf_token" value="{token}"' in response.text
    return token


async def test_signin_page_signs_in_with_an_httponly_samesite_cookie(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http)
        again = await http.get("/signin")
        assert set_cookie(again, "parley_csrf") is None  # only set when missing
        response = await http.post(
            "/signin", data={"email": "owner@example.com", "password": PASSWORD, "csrf_token": csrf}
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/"
        header = set_cookie(response, "parley_session")
        assert header is not None
        attributes = cookie_attributes(header)
        assert "httponly" in attributes and attributes.get("samesite", "").lower() == "lax"
        assert attributes.get("path") == "/"
        session = http.cookies.get("parley_session")
        assert session and PASSWORD not in header
        me = await http.get("/api/v1/me")
        assert me.status_code == 200 and me.json()["email"] == "owner@example.com"


async def test_signin_page_with_wrong_credentials_rerenders_with_401(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http)
        for email, password in (("owner@example.com", "wrong password"), ("nobody@example.com", PASSWORD)):
            response = await http.post("/signin", data={"email": email, "password": password, "csrf_token": csrf})
            assert response.status_code == 401, response.text
            assert response.headers["content-type"].startswith("text/html")
            assert '<form method="post" action="/signin">' in response.text
            assert set_cookie(response, "parley_session") is None
            assert password not in response.text
        assert_problem(await http.get("/api/v1/me"), 401, "unauthorized")


async def test_signin_page_is_throttled_like_the_api(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http)
        for _ in range(5):
            form = {"email": "owner@example.com", "password": "wrong password", "csrf_token": csrf}
            assert (await http.post("/signin", data=form)).status_code == 401
        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": csrf}
        locked = await http.post("/signin", data=form)
        assert locked.status_code == 429, locked.text
        assert set_cookie(locked, "parley_session") is None


async def test_signup_page_creates_the_account_and_signs_in(app: FastAPI) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http, "/signup")
        form = {"email": "ada@example.com", "password": PASSWORD, "display_name": "Ada", "csrf_token": csrf}
        response = await http.post("/signup", data=form)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/"
        assert "httponly" in cookie_attributes(set_cookie(response, "parley_session") or "")
        me = await http.get("/api/v1/me")
        assert me.status_code == 200 and me.json()["email"] == "ada@example.com" and me.json()["display_name"] == "Ada"
    async with api_client(app, signed_in=False) as api:
        assert (await login(api, "ada@example.com")).status_code == 200


async def test_signout_clears_the_cookie(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http)
        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": csrf}
        assert (await http.post("/signin", data=form)).status_code == 303
        response = await http.post("/signout", data={"csrf_token": csrf})
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/signin"
        header = set_cookie(response, "parley_session")
        assert header is not None
        attributes = cookie_attributes(header)
        assert header.startswith(('parley_session="";', "parley_session=;")) or attributes.get("max-age") == "0"
        assert http.cookies.get("parley_session") is None
        assert_problem(await http.get("/api/v1/me"), 401, "unauthorized")


@pytest.mark.parametrize(
    "submitted", [None, "", "not-the-cookie", "caf\xe9"], ids=["missing", "empty", "wrong", "non-ascii"]
)
async def test_form_posts_need_the_csrf_token(
    client: httpx.AsyncClient, app: FastAPI, runtime: Runtime, submitted: str | None
) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http)
        extra = {} if submitted is None else {"csrf_token": submitted}
        signin = await http.post("/signin", data={"email": "owner@example.com", "password": PASSWORD, **extra})
        assert signin.status_code == 403, signin.text
        assert set_cookie(signin, "parley_session") is None
        signup = await http.post("/signup", data={"email": "eve@example.com", "password": PASSWORD, **extra})
        assert signup.status_code == 403, signup.text
        async with runtime.db.read() as db:
            assert await db.scalar(select(func.count()).select_from(User)) == 1  # only owner@example.com

        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": csrf}
        assert (await http.post("/signin", data=form)).status_code == 303
        signout = await http.post("/signout", data=extra)
        assert signout.status_code == 403, signout.text
        assert set_cookie(signout, "parley_session") is None
        assert (await http.get("/api/v1/me")).status_code == 200  # still signed in


async def test_form_csrf_token_must_match_this_browsers_cookie(client: httpx.AsyncClient, app: FastAPI) -> None:
    """A token read from another browser's form is no good: the field must equal this browser's own cookie."""
    async with browser(app) as attacker, browser(app) as victim:
        attackers_token = await csrf_from_form(attacker)
        await csrf_from_form(victim)
        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": attackers_token}
        assert (await victim.post("/signin", data=form)).status_code == 403
    async with browser(app) as cookieless:
        response = await cookieless.post("/signin", data=form)  # no csrf cookie at all
        assert response.status_code == 403


async def test_signup_page_respects_allow_signup(database_url: str, tmp_path: Path) -> None:
    async with running(make_settings(database_url, tmp_path, allow_signup=False)) as app:
        async with api_client(app):  # the first account
            pass
        async with browser(app) as http:
            csrf = await csrf_from_form(http, "/signup")
            form = {"email": "eve@example.com", "password": PASSWORD, "csrf_token": csrf}
            response = await http.post("/signup", data=form)
            assert response.status_code == 403, response.text
            assert set_cookie(response, "parley_session") is None
        async with api_client(app, signed_in=False) as api:
            assert_problem(await login(api, "eve@example.com"), 401, "invalid_credentials")


async def test_pages_need_a_signed_in_browser(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        anonymous = await http.get("/", headers={"Accept": "text/html"})
        assert anonymous.status_code == 303 and anonymous.headers["location"] == "/signin"
        csrf = await csrf_from_form(http)
        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": csrf}
        assert (await http.post("/signin", data=form)).status_code == 303
        home = await http.get("/", headers={"Accept": "text/html"})
        assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")


async def test_a_fresh_install_sends_the_browser_to_sign_up(app: FastAPI) -> None:
    """With no account yet, signing up is the only way in: pages redirect there (keeping `next`), then to sign-in."""
    async with browser(app) as http:
        home = await http.get("/", headers={"Accept": "text/html"})
        assert home.status_code == 303 and home.headers["location"] == "/signup"
        deep = await http.get("/agents/abc", headers={"Accept": "text/html"})
        assert deep.status_code == 303 and deep.headers["location"] == "/signup?next=%2Fagents%2Fabc"
        htmx = await http.get("/agents/abc", headers={"HX-Request": "true"})
        assert htmx.status_code == 204 and htmx.headers["hx-redirect"] == "/signup"
    async with api_client(app, signed_in=False) as api:
        await sign_up(api)
    async with browser(app) as http:
        home = await http.get("/", headers={"Accept": "text/html"})
        assert home.status_code == 303 and home.headers["location"] == "/signin"
        htmx = await http.get("/agents/abc", headers={"HX-Request": "true"})
        assert htmx.status_code == 204 and htmx.headers["hx-redirect"] == "/signin"
