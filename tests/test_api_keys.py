"""API keys: shown once, stored as a hash, usable as a bearer token, deleted at once, private to their owner."""

from __future__ import annotations

import httpx
from fastapi import FastAPI
from sqlalchemy import select

from tests.apps import api_client
from tests.helpers import assert_problem, bearer, key_items, parse_time, sign_up
from webapp.models import ApiKey
from webapp.services.runtime import Runtime


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
