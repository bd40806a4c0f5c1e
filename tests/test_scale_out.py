"""Scale-out (DESIGN §11): real server processes on one PostgreSQL database, one media volume and one secret key.

A follower on another process sees every event of a voice turn, in order and close behind; a process killed mid-turn
has its turn finished by another; rate limits and the sign-in throttle hold across processes; a web process with
`VOICE_RUNNER=off` leaves its voice turns to a worker process. Measured figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command

from e2e.server import scratch_postgres_database
from tests.audio_samples import QUESTION_WAV
from tests.databases import TEST_DATABASE_URL, alembic_config
from tests.fake_openai import CHAT, TRANSCRIBE, FakeOpenAI
from tests.helpers import PASSWORD, assert_problem, assert_rate_limited, new_chat, sign_up
from tests.live_server import new_session, running_server, running_worker, signed_in
from tests.scale_out import Arrival, Cluster, api, cluster_env, execute, follow, sync_api, until

pytestmark = pytest.mark.skipif(
    not (TEST_DATABASE_URL or "").startswith("postgresql"),
    reason="several server processes share one PostgreSQL database: set TEST_DATABASE_URL=postgresql+asyncpg://... "
    "(SQLite is the single-process setup)",
)

HEARTBEAT = 0.5
"""VOICE_HEARTBEAT_SECONDS of every process here: a dead process's turns and session leases lapse within 3 beats."""
MAX_LAG = 0.250
"""How far behind a follower on the process running the turn a follower on another process may be."""
TAKEOVER_SLACK = 2.0
REPLY = (
    "Five comes after four. Counting is a fine habit to practise every day. "
    "Try counting backwards from five next time. Then go on to ten."
)
RECORDING = QUESTION_WAV.read_bytes()
HOLD_SESSION = (
    "UPDATE chat_session SET lease_token = 'held-by-the-test', lease_expires_at = now() + interval '10 minutes' "
    "WHERE id = $1"
)
FREE_SESSION = "UPDATE chat_session SET lease_token = NULL, lease_expires_at = NULL WHERE id = $1"


@pytest.fixture(scope="module")
def shared(fake_openai_server: FakeOpenAI, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """One database of its own (other modules' apps must not hear its notifications), migrated, for the module."""
    assert TEST_DATABASE_URL
    root = tmp_path_factory.mktemp("scale-out")
    with scratch_postgres_database(TEST_DATABASE_URL, prefix="parley_scale_out") as url, ExitStack() as stack:
        command.upgrade(alembic_config(url), "head")  # before any server starts: each test empties the tables
        env = cluster_env(
            url,
            root / "media",
            fake_openai_server,
            voice_heartbeat_seconds=str(HEARTBEAT),
            rate_limit_messages_per_minute="6",
        )
        yield Cluster(root=root, database_url=url, env=env, stack=stack)


@pytest.fixture
def cluster(shared: Cluster, upstream: FakeOpenAI) -> Cluster:
    """Servers `a` and `b` (started on first use, kept for the module) on a database emptied for this test."""
    shared.empty_database()
    return shared


async def upload_recording(client: httpx.AsyncClient, session_id: str) -> str:
    response = await client.post(
        f"/sessions/{session_id}/voice", files={"audio": ("question.wav", RECORDING, "audio/wav")}
    )
    assert response.status_code == 202, response.text
    turn_id: str = response.json()["id"]
    return turn_id


# --- a follower on another process ----------------------------------------------------------------------------------


async def test_a_follower_on_b_sees_every_event_of_a_turn_running_on_a(cluster: Cluster, upstream: FakeOpenAI) -> None:
    a, b = cluster.start("a", "b")
    upstream.transcribe_delay, upstream.token_delay, upstream.speech_delay = 0.3, 0.03, 0.05
    upstream.reply_text = REPLY
    async with api(a) as on_a:
        token = (await sign_up(on_a, "follower@example.com"))["access_token"]
        session_id = (await new_chat(on_a))["id"]
        # The session is busy, as if another process ran a turn in it: the voice turn waits in `queued` until both
        # followers are listening, so both see the whole turn from its first stage.
        await execute(cluster.database_url, HOLD_SESSION, session_id)
        turn_id = await upload_recording(on_a, session_id)
        seen_a: list[Arrival] = []
        seen_b: list[Arrival] = []
        async with api(b, token=token) as on_b:
            followers = asyncio.gather(follow(on_a, turn_id, seen_a), follow(on_b, turn_id, seen_b))
            try:
                await until(lambda: seen_a and seen_b, within=30, what="both followers connected")
                assert labels(seen_a[:1]) == labels(seen_b[:1]) == ["status queued"], (seen_a, seen_b)
                await execute(cluster.database_url, FREE_SESSION, session_id)
                await asyncio.wait_for(asyncio.shield(followers), 30)
            except (TimeoutError, AssertionError) as failure:
                followers.cancel()
                await asyncio.gather(followers, return_exceptions=True)
                pytest.fail(f"{failure!r}: A {labels(seen_a)}, B {labels(seen_b)}\n{cluster.log_tails()}")

    report = lag_report(seen_a, seen_b)
    print(f"\nfollower on B behind the follower on A (turn running on A):\n{report}")
    context = f"\nA: {labels(seen_a)}\nB: {labels(seen_b)}\n{report}\n{cluster.log_tails()}"
    stages = ["queued", "transcribing", "thinking", "speaking"]
    assert [e.data["status"] for e in seen_a if e.name == "status"] == stages, context
    assert seen_a[-1].name == "done" and any(e.name == "token" for e in seen_a), context
    assert sum(e.name == "audio" for e in seen_a) == 4, context
    # Every event, in order: the same names and data (token events as their text, as pieces may be cut differently).
    assert [e.label for e in seen_b if e.name != "token"] == [e.label for e in seen_a if e.name != "token"], context
    assert reply_text(seen_b) == reply_text(seen_a) == REPLY, context
    for on_a_event, on_b_event in zip(untokened(seen_a), untokened(seen_b), strict=True):
        assert same_event(on_a_event, on_b_event), f"{on_b_event.label} differs:\n{on_a_event}\n{on_b_event}{context}"
    # The first event is the turn as each follower found it when it connected: not a change passed on.
    worst = max(abs(lag) for _, lag in lags(seen_a, seen_b)[1:])
    assert worst <= MAX_LAG, f"an event reached B {worst * 1000:.0f} ms after (or before) A{context}"


def same_event(on_a: Arrival, on_b: Arrival) -> bool:
    """Whether B's event says what A's does. A segment and the last event must be the same (`updated_at` aside:
    every heartbeat moves it). A `status` or `transcript` event carries the whole turn, which B reads from the
    database when told of the change, so it may be a little newer than A's: more segments spoken (each with its
    own event, which follows), `timings_ms` to match; the same turn, stage and transcript all the same."""
    if on_a.name not in ("status", "transcript"):
        return bool(without(on_a.data, "updated_at") == without(on_b.data, "updated_at"))
    spoken = len(on_a.data["segments"])
    return bool(
        without(on_a.data, "updated_at", "segments", "timings_ms")
        == without(on_b.data, "updated_at", "segments", "timings_ms")
        and on_b.data["segments"][:spoken] == on_a.data["segments"]
    )


def without(data: Any, *keys: str) -> Any:
    return {key: value for key, value in data.items() if key not in keys} if isinstance(data, dict) else data


def labels(events: list[Arrival]) -> list[str]:
    return [e.label for e in events]


def untokened(events: list[Arrival]) -> list[Arrival]:
    return [e for e in events if e.name != "token"]


def reply_text(events: list[Arrival]) -> str:
    return "".join(e.data["delta"] for e in events if e.name == "token")


def lags(on_a: list[Arrival], on_b: list[Arrival]) -> list[tuple[str, float]]:
    """(event, seconds B got it after A) for each event; a token by when each had the reply's text up to its end."""
    rows = [(b.label, b.at - a.at) for a, b in zip(untokened(on_a), untokened(on_b), strict=False)]
    a_text: list[tuple[int, float]] = []
    length = 0
    for event in on_a:
        if event.name == "token":
            length += len(event.data["delta"])
            a_text.append((length, event.at))
    length = 0
    for event in on_b:
        if event.name == "token":
            length += len(event.data["delta"])
            at_a = next((at for reached, at in a_text if reached >= length), None)
            if at_a is not None:
                rows.append(("token", event.at - at_a))
    return rows


def lag_report(on_a: list[Arrival], on_b: list[Arrival]) -> str:
    rows = lags(on_a, on_b)
    lines = [f"  {label:<20} B {lag * 1000:+6.1f} ms" for label, lag in rows if label != "token"]
    if lines:
        lines[0] += "  (each follower's first event: the turn as it found it on connecting)"
    token_lags = [lag * 1000 for label, lag in rows if label == "token"]
    if token_lags:
        lines.append(
            f"  {len(token_lags)} tokens{'':<11} B median {statistics.median(token_lags):+.1f} ms, "
            f"max {max(token_lags):+.1f} ms"
        )
    return "\n".join(lines)


# --- limits across processes ----------------------------------------------------------------------------------------


def test_the_message_rate_limit_holds_across_processes(cluster: Cluster) -> None:
    a, b = cluster.start("a", "b")
    # Counts are kept in fixed one-minute windows: do not straddle two.
    if (left := 60 - time.time() % 60) < 5:
        time.sleep(left + 0.1)
    with signed_in(a, "limited@example.com") as on_a:
        token = on_a.headers["Authorization"].removeprefix("Bearer ")
        session_id = new_session(on_a)
        with sync_api(b, token=token) as on_b:
            sent = [
                (on_a, on_b)[n % 2].post(f"/sessions/{session_id}/messages", json={"content": f"message {n}"})
                for n in range(10)
            ]
    statuses = [response.status_code for response in sent]
    print(f"\nmessages sent alternately to A and B with a limit of 6 a minute: {statuses}")
    assert statuses == [201] * 6 + [429] * 4, f"{statuses}\n{cluster.log_tails()}"
    for response in sent[6:]:
        assert_rate_limited(response, max_seconds=60)


def test_the_sign_in_throttle_holds_across_processes(cluster: Cluster) -> None:
    a, b = cluster.start("a", "b")
    with signed_in(a, "guessed@example.com"), sync_api(a) as on_a, sync_api(b) as on_b:
        attempts = []
        for n in range(5):
            guess = (on_a, on_b)[n % 2].post("/auth/login", json={"email": "guessed@example.com", "password": f"x{n}"})
            attempts.append(guess.status_code)
            assert_problem(guess, 401, "invalid_credentials")
        for client in (on_b, on_a):
            refused = client.post("/auth/login", json={"email": "guessed@example.com", "password": "wrong"})
            attempts.append(refused.status_code)
            assert_rate_limited(refused, max_seconds=15 * 60)
        # Even the right password, now: the account is locked on every process.
        locked = on_b.post("/auth/login", json={"email": "guessed@example.com", "password": PASSWORD})
        attempts.append(locked.status_code)
        assert_rate_limited(locked, max_seconds=15 * 60)
    print(f"\nsign-ins alternately on A and B (5 wrong, 2 wrong, the right one): {attempts}")


# --- a process killed mid-turn --------------------------------------------------------------------------------------
# (Kills A: a test using A after this one starts it again.)


async def test_b_finishes_the_turn_of_a_process_killed_mid_turn(cluster: Cluster, upstream: FakeOpenAI) -> None:
    a, b = cluster.start("a", "b")
    upstream.transcribe_delay, upstream.token_delay, upstream.speech_delay = 3.0, 0.01, 0.02
    upstream.reply_text = "One, two. Three, four, five."
    async with api(a) as on_a:
        token = (await sign_up(on_a, "survivor@example.com"))["access_token"]
        session_id = (await new_chat(on_a))["id"]
        turn_id = await upload_recording(on_a, session_id)  # A runs it
    async with api(b, token=token) as on_b:
        seen: list[Arrival] = []
        follower = asyncio.create_task(follow(on_b, turn_id, seen))
        await until(lambda: upstream.received(TRANSCRIBE), within=10, what="A asked for the transcription")
        upstream.transcribe_delay = 0.2  # B's own transcription, when it resumes the turn
        a.process.kill()
        killed_at = time.monotonic()
        a.process.wait(timeout=10)
        try:
            await asyncio.wait_for(follower, 60)
        except TimeoutError:
            pytest.fail(f"the turn did not end on B: {labels(seen)}\n{cluster.log_tails()}")
        end = seen[-1]
        context = f"\nB: {labels(seen)}, {end.data}\n{cluster.log_tails()}"
        assert end.name == "done", context
        took = end.at - killed_at
        timings: dict[str, int] = end.data["timings_ms"]
        pipeline = sum(timings.get(stage, 0) for stage in ("transcribing", "thinking", "speaking")) / 1000
        bound = 3 * HEARTBEAT + pipeline + TAKEOVER_SLACK
        figures = (
            f"done on B {took:.2f} s after kill -9 of A (heartbeat {HEARTBEAT:g} s; B's own pipeline {pipeline:.2f} s "
            f"{timings}; bound 3 × {HEARTBEAT:g} + {pipeline:.2f} + {TAKEOVER_SLACK:g} = {bound:.2f} s)"
        )
        print(f"\n{figures}")
        assert took <= bound, figures + context
        assert len(upstream.received(TRANSCRIBE)) == 2, "transcribed once by A, once again by B" + context
        recording = await on_b.get(f"/messages/{end.data['user_message_id']}/audio")
        assert recording.status_code == 200, recording.text
        assert recording.content == RECORDING, "the recording kept on the shared volume is not the one uploaded"
        reply = await on_b.get(f"/messages/{end.data['assistant_message_id']}/audio")
        assert reply.status_code == 200 and reply.content, reply.text


# --- a web process and a voice worker -------------------------------------------------------------------------------


async def test_a_worker_runs_the_voice_turns_of_a_web_process_that_runs_none(
    upstream: FakeOpenAI, tmp_path: Path
) -> None:
    assert TEST_DATABASE_URL
    upstream.transcribe_delay, upstream.token_delay, upstream.speech_delay = 0.1, 0.01, 0.02
    upstream.reply_text = "One, two. Three, four, five."
    with ExitStack() as stack:
        url = stack.enter_context(scratch_postgres_database(TEST_DATABASE_URL, prefix="parley_scale_out_worker"))
        env = cluster_env(url, tmp_path / "media", upstream, voice_heartbeat_seconds=str(HEARTBEAT), voice_runner="off")
        # Migrated here, in a thread of this process (alembic runs its own loop): quicker than in one more process.
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
        web = stack.enter_context(running_server(tmp_path / "web", extra_env=env, migrate=False))
        async with api(web) as client:
            await sign_up(client, "worked@example.com")
            session_id = (await new_chat(client))["id"]
            first = await upload_recording(client, session_id)
            seen: list[Arrival] = []
            follower = asyncio.create_task(follow(client, first, seen))
            # No runner anywhere: the turn waits, past the beats at which a runner would have claimed it.
            waited = time.monotonic() + 3 * HEARTBEAT
            while time.monotonic() < waited:
                assert (await client.get(f"/voice-turns/{first}")).json()["status"] == "queued", web.log_tail()
                await asyncio.sleep(0.1)
            assert labels(seen) == ["status queued"]
            assert not upstream.requests, "nothing ran the turn, yet the provider was asked"

            started = time.monotonic()
            worker = await asyncio.to_thread(stack.enter_context, running_worker(tmp_path / "worker", extra_env=env))
            context = f"\n--- web ---\n{web.log_tail()}\n--- worker ---\n{worker.log_tail()}"
            try:
                await asyncio.wait_for(follower, 30)
            except TimeoutError:
                pytest.fail(f"the queued turn did not finish: {labels(seen)}{context}")
            assert labels(seen)[-1] == "done", f"{labels(seen)}{seen[-1].data}{context}"
            statuses = [e.data["status"] for e in seen if e.name == "status"]
            assert statuses == ["queued", "transcribing", "thinking", "speaking"], context
            waiting = seen[-1].at - started

            # With the worker running, a new turn is claimed at once (the web process announces it).
            posted = time.monotonic()
            second = await upload_recording(client, session_id)
            more: list[Arrival] = []
            await asyncio.wait_for(follow(client, second, more), 30)
            assert labels(more)[-1] == "done", f"{labels(more)}{context}"
            direct = more[-1].at - posted

    print(
        f"\nqueued turn done {waiting:.2f} s after the worker was started (its start-up included); "
        f"a turn sent with the worker running done {direct:.2f} s after its upload"
    )
    assert len(upstream.received(TRANSCRIBE)) == 2, "each turn transcribed once"
    web_log = web.log_path.read_text(errors="replace")
    worker_log = worker.log_path.read_text(errors="replace")
    assert "/v1/audio/transcriptions" not in web_log, web_log
    assert "/v1/audio/transcriptions" in worker_log, worker_log


# --- stopping a turn that runs on another process ------------------------------------------------------------------


async def test_a_barge_in_sent_to_b_stops_the_turn_running_on_a(cluster: Cluster, upstream: FakeOpenAI) -> None:
    a, b = cluster.start("a", "b")
    upstream.token_delay, upstream.reply_text = 0.1, REPLY * 3  # several seconds of writing
    async with api(a) as on_a:
        token = (await sign_up(on_a, "barge@example.com"))["access_token"]
        session_id = (await new_chat(on_a))["id"]
        turn_id = await upload_recording(on_a, session_id)  # A runs it
    async with api(b, token=token) as on_b:
        await until(lambda: upstream.received(CHAT), within=15, what="A asked for the reply")
        started = time.monotonic()
        stopped = await on_b.post(f"/voice-turns/{turn_id}/cancel")
        took = time.monotonic() - started
        assert stopped.status_code == 200, f"{stopped.text}\n{cluster.log_tails()}"
        assert stopped.json()["status"] == "cancelled"
        # The session is free at once, for a typed message on either process; the stop button with nothing running.
        typed = await on_b.post(f"/sessions/{session_id}/messages", json={"content": "never mind"})
        assert typed.status_code == 201, typed.text
        assert_problem(await on_b.post(f"/sessions/{session_id}/cancel"), 409, "no_turn_running")
        messages = (await on_b.get(f"/sessions/{session_id}/messages")).json()["items"]
    print(f"\nbarge-in on B stopped A's turn in {took * 1000:.0f} ms")
    assert [m["status"] for m in messages] == ["complete", "cancelled", "complete", "complete"]
    assert (REPLY * 3).startswith(messages[1]["content"]) and messages[1]["content"] != REPLY * 3
