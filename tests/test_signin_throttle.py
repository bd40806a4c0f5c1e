"""Sign-in throttling: failed sign-ins lock that account only, a success clears them, one address is throttled;
the throttle's rules hold alike in memory and counted in PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

import httpx
import pytest
from fastapi import FastAPI

from tests.helpers import assert_problem, assert_rate_limited, login, register
from tests.limiters import KINDS, Clock, MakeLimiter, limiters
from webapp.errors import RateLimited
from webapp.services.limits import SIGN_IN_WINDOW_SECONDS, SignInThrottle


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


# --- the throttle itself, on both kinds of count ----------------------------------------------------------------------


def throttle(make: MakeLimiter, *, per_account: int, per_address: int) -> SignInThrottle:
    window = {"window_seconds": SIGN_IN_WINDOW_SECONDS, "what": "sign-in attempts"}
    return SignInThrottle(
        account=make("sign-in-account", per_account, **window), address=make("sign-in-address", per_address, **window)
    )


async def refused(attempt: Awaitable[None]) -> int:
    """The Retry-After of an attempt that must be refused."""
    with pytest.raises(RateLimited) as error:
        await attempt
    return int(error.value.headers["Retry-After"])


@pytest.mark.parametrize("kind", KINDS)
async def test_a_refused_attempt_counts_nothing(kind: str, database_url: str) -> None:
    async with limiters(kind, database_url, Clock()) as make:
        guard = throttle(make, per_account=3, per_address=5)
        for _ in range(3):
            await guard.attempt(account="ada", address="A")
        assert 1 <= await refused(guard.attempt(account="ada", address="A")) <= SIGN_IN_WINDOW_SECONDS
        assert 1 <= await refused(guard.attempt(account="ada", address="B")) <= SIGN_IN_WINDOW_SECONDS
        # The account's refusals did not count against the addresses: A has 3 attempts, B none.
        await guard.attempt(account="bob", address="A")
        await guard.attempt(account="bob", address="A")
        assert 1 <= await refused(guard.attempt(account="carol", address="A")) <= SIGN_IN_WINDOW_SECONDS
        # Nor did the address's refusal count against carol's account.
        for _ in range(3):
            await guard.attempt(account="carol", address="B")
        await refused(guard.attempt(account="carol", address="B"))


@pytest.mark.parametrize("kind", KINDS)
async def test_a_success_clears_the_account_and_gives_the_address_its_attempt_back(
    kind: str, database_url: str
) -> None:
    async with limiters(kind, database_url, Clock()) as make:
        guard = throttle(make, per_account=3, per_address=3)
        await guard.attempt(account="ada", address="A")
        await guard.attempt(account="ada", address="A")
        await guard.succeeded(account="ada", address="A")  # ada: 0; A: 1
        for _ in range(3):
            await guard.attempt(account="ada", address="B")
        await refused(guard.attempt(account="ada", address="B"))
        await guard.attempt(account="bob", address="A")
        await guard.attempt(account="bob", address="A")
        await refused(guard.attempt(account="bob", address="A"))


@pytest.mark.parametrize("kind", KINDS)
async def test_parallel_attempts_cannot_overrun_the_limit(kind: str, database_url: str) -> None:
    async with limiters(kind, database_url, Clock()) as make:
        guard = throttle(make, per_account=5, per_address=20)
        results = await asyncio.gather(
            *(guard.attempt(account="ada", address="A") for _ in range(16)), return_exceptions=True
        )
        assert results.count(None) == 5, results
        assert all(isinstance(result, RateLimited) for result in results if result is not None), results
        # Only the 5 counted attempts count against the address.
        results = await asyncio.gather(
            *(guard.attempt(account=f"guess{n}", address="A") for n in range(20)), return_exceptions=True
        )
        assert results.count(None) == 15, results


@pytest.mark.parametrize("kind", KINDS)
async def test_the_throttle_lifts_when_its_window_has_passed(kind: str, database_url: str) -> None:
    clock = Clock()
    async with limiters(kind, database_url, clock) as make:
        guard = throttle(make, per_account=2, per_address=20)
        await guard.attempt(account="ada", address="A")
        await guard.attempt(account="ada", address="A")
        await refused(guard.attempt(account="ada", address="A"))
        clock.advance(SIGN_IN_WINDOW_SECONDS)
        await guard.attempt(account="ada", address="A")
