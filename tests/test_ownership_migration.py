"""The accounts migration on a database that already holds data: nothing is lost, the schema matches the models, and
the first account made adopts what was there before accounts existed (and nobody else sees it)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command
from sqlalchemy import text

from tests.apps import make_settings, serve
from tests.databases import alembic_config
from tests.helpers import assert_problem, history, sign_up
from webapp.db import create_engine

AGENT, SESSION = "0d7c5a2e-0000-4000-8000-000000000001", "0d7c5a2e-0000-4000-8000-000000000002"
QUESTION, ANSWER = "What did we say before accounts?", "That this history must survive the upgrade."


async def insert_old_data(database_url: str) -> None:
    """Rows as a pre-accounts Parley wrote them, in plain SQL: an agent, a session, a question and its answer."""
    engine = create_engine(database_url)
    at = "'2025-06-01 12:00:00.000000'" if engine.dialect.name == "sqlite" else "'2025-06-01 12:00:00+00'"
    later = at.replace("12:00:00", "12:00:05")
    try:
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO agent (id, name, prompt, model, voice, temperature, created_at, updated_at) "
                    f"VALUES ('{AGENT}', 'Old agent', 'You were here first.', 'gpt-old', 'alloy', NULL, {at}, {at})"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO chat_session (id, agent_id, title, message_count, last_message_at, activity_at, "
                    "lease_token, lease_expires_at, created_at, updated_at) "
                    f"VALUES ('{SESSION}', '{AGENT}', 'Old chat', 2, {later}, {later}, NULL, NULL, {at}, {later})"
                )
            )
            for n, (role, content, moment) in enumerate((("user", QUESTION, at), ("assistant", ANSWER, later)), 1):
                await conn.execute(
                    text(
                        "INSERT INTO message (id, session_id, seq, role, content, source, status, error, audio_path, "
                        "audio_content_type, model, prompt_tokens, completion_tokens, latency_ms, created_at, "
                        "updated_at) VALUES (:id, :session, :seq, :role, :content, 'text', 'complete', NULL, NULL, "
                        f"NULL, 'gpt-old', NULL, NULL, NULL, {moment}, {moment})"
                    ),
                    {"id": f"0d7c5a2e-0000-4000-8000-00000000001{n}", "session": SESSION, "seq": n, "role": role}
                    | {"content": content},
                )
    finally:
        await engine.dispose()


async def row_counts(database_url: str) -> dict[str, int]:
    engine = create_engine(database_url)
    try:
        async with engine.connect() as conn:
            return {
                table: (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
                for table in ("agent", "chat_session", "message")
            }
    finally:
        await engine.dispose()


async def test_upgrade_keeps_old_data_and_the_first_account_adopts_it(empty_database: str, tmp_path: Path) -> None:
    config = alembic_config(empty_database)
    await asyncio.to_thread(command.upgrade, config, "0002")
    await insert_old_data(empty_database)
    assert await row_counts(empty_database) == {"agent": 1, "chat_session": 1, "message": 2}

    await asyncio.to_thread(command.upgrade, config, "head")
    # SQLite rebuilds `agent` to add its owner: with foreign keys enforced that would cascade-delete the rest.
    assert await row_counts(empty_database) == {"agent": 1, "chat_session": 1, "message": 2}
    await asyncio.to_thread(command.check, config)  # raises if the models and the migrated schema differ

    async with serve(make_settings(empty_database, tmp_path), signed_in=False) as first:
        await sign_up(first, "owner@example.com")
        agents = (await first.get("/agents")).json()["items"]
        assert [(a["id"], a["name"], a["prompt"]) for a in agents] == [(AGENT, "Old agent", "You were here first.")]
        sessions = (await first.get(f"/agents/{AGENT}/sessions")).json()["items"]
        assert [(s["id"], s["title"], s["message_count"]) for s in sessions] == [(SESSION, "Old chat", 2)]
        messages = await history(first, SESSION)
        assert [(m["role"], m["content"]) for m in messages] == [("user", QUESTION), ("assistant", ANSWER)]
        # The adopted agent works like any other: the history carries on.
        sent = await first.post(f"/sessions/{SESSION}/messages", json={"content": "And now?"})
        assert sent.status_code == 201, sent.text
        assert len(await history(first, SESSION)) == 4

        await sign_up(first, "second@example.com")  # the client now speaks for the second account
        assert (await first.get("/agents")).json()["items"] == []
        assert_problem(await first.get(f"/agents/{AGENT}"), 404, "agent_not_found")
        assert_problem(await first.get(f"/sessions/{SESSION}/messages"), 404, "session_not_found")
        first_message = messages[0]["id"]
        assert_problem(await first.get(f"/messages/{first_message}/audio"), 404, "message_not_found")

        await sign_up(first, "owner@example.com")  # and the first one still has it
        assert [a["id"] for a in (await first.get("/agents")).json()["items"]] == [AGENT]
