"""Sign-in throttling: failed sign-ins lock that account only, a success clears them, one address is throttled."""

from __future__ import annotations

import httpx
from fastapi import FastAPI

from tests.helpers import assert_problem, assert_rate_limited, login, register


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
