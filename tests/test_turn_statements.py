"""A text turn costs a fixed, small number of SQL statements, whatever the history's length: the engine's budget."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import event

from webapp.services.runtime import Runtime

TURN_STATEMENTS = [
    "UPDATE chat_session",  # the user's message: its seq, the session's title and activity, the lease taken
    "INSERT INTO message",
    "SELECT agent",  # the agent's prompt, model and temperature
    "SELECT message",  # the context: the newest complete messages
    "UPDATE chat_session",  # the reply: its seq, the lease given back
    "INSERT INTO message",
]


@contextmanager
def recorded(runtime: Runtime) -> Iterator[list[str]]:
    """The data statements (SELECT, INSERT, UPDATE, DELETE) run while the block runs, as `VERB table`."""
    seen: list[str] = []

    def note(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        words = re.match(r"\s*(SELECT|INSERT INTO|UPDATE|DELETE FROM)\b.*?(?:FROM\s+)?\b(\w+)\b", statement, re.S)
        if words and words[1] == "SELECT":
            table = re.search(r"\bFROM\s+(\w+)", statement)
            seen.append(f"SELECT {table[1] if table else '?'}")
        elif words:
            seen.append(f"{words[1]} {words[2]}")

    engines = runtime.db.sync_engines
    for engine in engines:
        event.listen(engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", note)


async def test_a_text_turn_runs_six_statements_however_long_the_history(
    client: httpx.AsyncClient, chat: dict[str, Any], runtime: Runtime
) -> None:
    for n in range(12):  # a history long enough that a per-message cost would show
        assert (await client.post(f"/sessions/{chat['id']}/messages", json={"content": f"hi {n}"})).status_code == 201
    with recorded(runtime) as statements:
        response = await client.post(f"/sessions/{chat['id']}/messages", json={"content": "and one more"})
    assert response.status_code == 201, response.text
    # On PostgreSQL the message is first counted against the sender's rate limit, shared by every process: one more
    # statement, before the turn's own (on SQLite the count is kept in memory).
    limit = [] if runtime.db.is_sqlite else ["INSERT INTO rate_count"]
    assert statements == limit + TURN_STATEMENTS
