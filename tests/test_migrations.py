"""Alembic: `upgrade head` builds the schema on an empty database, `check` finds no drift, `downgrade` undoes it;
`/readyz` says when the schema is missing or behind."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.apps import make_settings, serve
from tests.databases import ROOT, alembic_config


def run_alembic(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_upgrade_check_downgrade_with_the_cli(empty_database: str) -> None:
    upgraded = run_alembic(empty_database, "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    checked = run_alembic(empty_database, "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "No new upgrade operations detected" in checked.stdout + checked.stderr
    assert run_alembic(empty_database, "downgrade", "base").returncode == 0
    assert run_alembic(empty_database, "upgrade", "head").returncode == 0  # and back up again


async def test_readyz_reports_missing_and_behind_schema(empty_database: str, tmp_path: Path) -> None:
    from alembic import command

    settings = make_settings(empty_database, tmp_path)
    async with serve(settings, signed_in=False) as client:
        missing = await client.get("http://test/readyz")
        assert missing.status_code == 503
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["code"] == "not_ready" and "missing" in missing.json()["detail"]

        await asyncio.to_thread(command.upgrade, alembic_config(empty_database), "head")
        ready = await client.get("http://test/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ready",
            "database": "ok",
            "schema": "current",
            "provider": "offline",
            "speech_recognition": "whisper (loads on first use)",
        }

        await asyncio.to_thread(command.downgrade, alembic_config(empty_database), "base")
        await asyncio.to_thread(command.stamp, alembic_config(empty_database), "base")
        gone = await client.get("http://test/readyz")
        assert gone.status_code == 503


async def test_readyz_reports_unreachable_database(tmp_path: Path) -> None:
    settings = make_settings("postgresql+asyncpg://nobody@127.0.0.1:1/none", tmp_path)
    async with serve(settings, signed_in=False) as client:
        response = await client.get("http://test/readyz")
        assert response.status_code == 503 and "unreachable" in response.json()["detail"]
        assert (await client.get("http://test/healthz")).json() == {"status": "ok"}
