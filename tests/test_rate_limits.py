"""Per-user rate limits on messages and voice turns: a 429 with `Retry-After`, nothing stored, zero means no limit;
on PostgreSQL one count shared by every process, exact under concurrency, reset at the window's end, old rows pruned."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, insert, select

from tests.apps import api_client, make_settings, running, serve
from tests.databases import TEST_DATABASE_URL
from tests.helpers import assert_rate_limited, history, new_chat, sign_up
from tests.limiters import KINDS, Clock, limiters, opened, postgres_only
from tests.voice import finished, spoken, upload
from webapp.db import Database
from webapp.errors import RateLimited
from webapp.media import session_dir
from webapp.models import RateCount, VoiceTurn
from webapp.services.limits import MemoryRateLimiter, PostgresRateLimiter
from webapp.services.runtime import Runtime


async def test_message_rate_limit_is_per_user_and_stores_nothing(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, rate_limit_messages_per_minute=3)
    async with running(settings) as app, api_client(app) as ada, api_client(app, signed_in=False) as bob:
        await sign_up(bob, "bob@example.com")
        session = await new_chat(ada)
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

        bobs = await new_chat(bob)
        for n in range(3):
            sent = await bob.post(f"/sessions/{bobs['id']}/messages", json={"content": f"bob {n}"})
            assert sent.status_code == 201, sent.text


async def test_limits_are_counted_in_postgresql_or_else_in_memory(runtime: Runtime) -> None:
    expected = PostgresRateLimiter if TEST_DATABASE_URL else MemoryRateLimiter
    assert isinstance(runtime.message_limiter, expected) and isinstance(runtime.voice_limiter, expected)


@pytest.mark.parametrize("kind", KINDS)
async def test_a_zero_limit_is_no_limit(kind: str, database_url: str) -> None:
    async with limiters(kind, database_url, Clock()) as make:
        off = make("messages", 0)
        for _ in range(1000):
            await off.check("someone")
        assert not await off.blocked("someone")
        one = make("messages", 1)
        await one.check("someone")
        assert await one.blocked("someone") and not await one.blocked("someone else")


@pytest.mark.parametrize("kind", KINDS)
async def test_a_full_window_refuses_until_it_ends(kind: str, database_url: str) -> None:
    clock = Clock()
    async with limiters(kind, database_url, clock) as make:
        limiter = make("messages", 2, window_seconds=60)
        await limiter.check("ada")
        clock.advance(10.5)
        await limiter.check("ada")
        with pytest.raises(RateLimited) as refused:
            await limiter.check("ada")
        assert 1 <= int(refused.value.headers["Retry-After"]) <= 60
        await limiter.check("bob")
        clock.advance(60)
        await limiter.check("ada")


async def test_message_rate_limit_zero_disables_it(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, rate_limit_messages_per_minute=0)
    async with serve(settings) as client:
        session = await new_chat(client)
        # More than the default limit (60 a minute).
        for n in range(61):
            sent = await client.post(f"/sessions/{session['id']}/messages", json={"content": f"n{n}"})
            assert sent.status_code == 201, (n, sent.text)


async def test_voice_rate_limit_is_per_user_and_stores_nothing(database_url: str, tmp_path: Path, clip: bytes) -> None:
    settings = make_settings(database_url, tmp_path, rate_limit_voice_per_minute=1)
    async with running(settings) as app, api_client(app) as ada, api_client(app, signed_in=False) as bob:
        await sign_up(bob, "bob@example.com")
        session = await new_chat(ada)
        accepted = await upload(ada, session["id"], clip)
        assert accepted.status_code == 202, accepted.text
        refused = await upload(ada, session["id"], clip)
        assert_rate_limited(refused, max_seconds=60)
        assert_rate_limited(await upload(ada, session["id"], clip, params={"wait": "true"}), max_seconds=60)

        bobs = await new_chat(bob)
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


# --- counted in PostgreSQL: one count for every process ---------------------------------------------------------------


@postgres_only
async def test_two_processes_share_one_count(database_url: str) -> None:
    clock = Clock()
    async with opened(database_url) as here, opened(database_url) as there:
        one, other = (
            PostgresRateLimiter(database, name="messages", limit=3, what="messages", clock=clock)
            for database in (here, there)
        )
        await one.check("ada")
        await other.check("ada")
        await one.check("ada")
        for limiter in (one, other):
            assert await limiter.blocked("ada")
            with pytest.raises(RateLimited):
                await limiter.check("ada")
        await other.check("bob")  # per key
        voice = PostgresRateLimiter(there, name="voice", limit=1, clock=clock)
        await voice.check("ada")  # per limiter: the same key in another limit has its own count
        window = 1_800_000_000
        assert await counts(here) == {
            ("messages:ada", window): 3,
            ("messages:bob", window): 1,
            ("voice:ada", window): 1,
        }


@postgres_only
async def test_concurrent_checks_let_exactly_the_limit_through(database_url: str) -> None:
    clock = Clock()
    async with opened(database_url) as here, opened(database_url) as there:
        both = [PostgresRateLimiter(database, name="messages", limit=6, clock=clock) for database in (here, there)]
        results = await asyncio.gather(*(both[n % 2].check("ada") for n in range(50)), return_exceptions=True)
        assert results.count(None) == 6, results
        assert all(isinstance(result, RateLimited) for result in results if result is not None), results
        assert await counts(here) == {("messages:ada", 1_800_000_000): 6}  # refused checks counted nothing


@postgres_only
async def test_a_window_end_resets_the_count(database_url: str) -> None:
    clock = Clock(1_800_000_000 + 10.5)  # 10.5 s into a minute
    async with opened(database_url) as database:
        limiter = PostgresRateLimiter(database, name="messages", limit=2, window_seconds=60, clock=clock)
        await limiter.check("ada")
        await limiter.check("ada")
        with pytest.raises(RateLimited) as refused:
            await limiter.check("ada")
        assert refused.value.headers["Retry-After"] == "50"  # the window's end, rounded up
        clock.advance(49.4)
        with pytest.raises(RateLimited) as refused:
            await limiter.check("ada")
        assert refused.value.headers["Retry-After"] == "1"
        clock.advance(0.1)  # the next window
        await limiter.check("ada")
        await limiter.check("ada")
        with pytest.raises(RateLimited) as refused:
            await limiter.check("ada")
        assert refused.value.headers["Retry-After"] == "60"


@postgres_only
async def test_prune_deletes_old_windows_and_keeps_current_ones(database_url: str) -> None:
    start = 1_800_000_000
    async with opened(database_url) as database:
        await add_counts(
            database,
            ("messages:ada", start - 180),
            ("messages:ada", start - 120),
            ("messages:bob", start - 120),
            ("messages:ada", start - 60),  # the previous window
            ("messages:ada", start),  # the current one
            ("messages-2:ada", start - 120),  # another limiter's
            ("sign-in-address:203.0.113.7", start - 900),  # another limiter's, with longer windows
        )
        limiter = PostgresRateLimiter(database, name="messages", limit=5, clock=Clock(start + 30))
        assert await limiter.prune() == 3
        assert set(await counts(database)) == {
            ("messages:ada", start - 60),
            ("messages:ada", start),
            ("messages-2:ada", start - 120),
            ("sign-in-address:203.0.113.7", start - 900),
        }
        assert await limiter.prune() == 0


@postgres_only
async def test_checks_prune_at_most_once_a_minute(database_url: str) -> None:
    start = 1_800_000_000
    clock = Clock(start)
    async with opened(database_url) as database:
        limiter = PostgresRateLimiter(database, name="messages", limit=5, clock=clock)
        await add_counts(database, ("messages:old", start - 600))
        await limiter.check("ada")  # the first check prunes
        assert set(await counts(database)) == {("messages:ada", start)}
        await add_counts(database, ("messages:old", start - 600))
        clock.advance(59)
        await limiter.check("ada")
        assert ("messages:old", start - 600) in await counts(database)
        clock.advance(1)
        await limiter.check("ada")
        assert set(await counts(database)) == {("messages:ada", start), ("messages:ada", start + 60)}


@postgres_only
async def test_keys_postgresql_cannot_store_are_counted_by_their_hash(database_url: str) -> None:
    async with opened(database_url) as database:
        limiter = PostgresRateLimiter(database, name="sign-in-account", limit=1, clock=Clock())
        for key in ("a" * 400 + "@example.com", "nul\x00@example.com", "lone\ud800@example.com"):
            await limiter.check(key)
            with pytest.raises(RateLimited):
                await limiter.check(key)
        assert all(key.startswith("sign-in-account:sha256:") for key, _ in await counts(database))


async def counts(database: Database) -> dict[tuple[str, int], int]:
    async with database.read() as db:
        rows = await db.execute(select(RateCount.key, RateCount.window_start, RateCount.count))
    return {(key, window_start): count for key, window_start, count in rows}


async def add_counts(database: Database, *rows: tuple[str, int]) -> None:
    async with database.write() as db:
        await db.execute(insert(RateCount), [{"key": key, "window_start": start, "count": 1} for key, start in rows])
