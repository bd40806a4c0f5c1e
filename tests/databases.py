"""Test databases: where the migrations are, and the PostgreSQL server named by `TEST_DATABASE_URL` (when set)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from alembic.config import Config

ROOT = Path(__file__).resolve().parents[1]
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def postgres_execute(database_url: str, sql: str) -> None:
    """Run `sql` on the PostgreSQL database at `database_url` (an SQLAlchemy asyncpg URL)."""

    async def run() -> None:
        import asyncpg

        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


def reset_postgres(database_url: str) -> None:
    """Drop everything in the test database (leaves it clean for the next run, too)."""
    postgres_execute(database_url, "DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
