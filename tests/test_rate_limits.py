"""Per-user rate limits on messages and voice turns: a 429 with `Retry-After`, nothing stored, zero means no limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.apps import api_client, make_settings, running, serve
from tests.helpers import assert_rate_limited, history, new_chat, sign_up
from tests.voice import finished, spoken, upload
from webapp.media import session_dir
from webapp.models import VoiceTurn
from webapp.services.limits import RateLimiter
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
