"""Readiness: can we reach the database, and is its schema the one this code expects?"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from webapp.services.runtime import Runtime

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"


@lru_cache
def expected_revision() -> str | None:
    from alembic.script import ScriptDirectory  # on the first readiness check, not at start-up

    return ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()


async def check(runtime: Runtime) -> str | None:
    """None when ready, else one sentence saying what is wrong."""
    try:
        async with runtime.db.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            try:
                current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            except SQLAlchemyError:
                current = None
    except (SQLAlchemyError, OSError) as exc:
        return f"The database is unreachable: {type(exc).__name__}."
    head = await asyncio.to_thread(expected_revision)  # parses the migration scripts on the first call
    if current is None:
        return "The database schema is missing: run `alembic upgrade head`."
    if current != head:
        return f"The database schema is behind (at {current}, this code needs {head}): run `alembic upgrade head`."
    return None
