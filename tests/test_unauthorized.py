"""401s: every bad, forged, expired or foreign credential is refused with `WWW-Authenticate`; public paths need no
sign-in; the OpenAPI document declares bearer auth on every protected operation."""

from __future__ import annotations

import base64
from collections.abc import Mapping

import httpx
from fastapi import FastAPI

from tests.apps import api_client, lenient_client
from tests.helpers import PASSWORD, bearer, key_items, login, register, sign_up
from webapp.services import accounts
from webapp.services.runtime import Runtime


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
