"""Shared fixtures: a migrated database per test (SQLite file, or PostgreSQL with TEST_DATABASE_URL), an app built
from explicit settings, an in-process client and a chat of its account, a live uvicorn server, and the fake
OpenAI-compatible upstream.

Only fixtures live here; tests import helpers from the helper modules: `tests.helpers` (API calls, accounts,
assertions), `tests.apps` (settings, apps and clients for unusual settings), `tests.browser` (pages, cookies, CSRF),
`tests.voice` (clips and voice turns), `tests.databases`, `tests.live_server` (a server in a subprocess)."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from alembic import command
from fastapi import FastAPI

from tests.apps import api_client, free_port, make_settings, running
from tests.databases import TEST_DATABASE_URL, alembic_config, postgres_execute, reset_postgres
from tests.fake_openai import FakeOpenAI
from tests.helpers import new_chat
from webapp.config import Settings
from webapp.main import create_app
from webapp.services.runtime import Runtime


@pytest.fixture(scope="session")
def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A database brought to head once per test run by the real migrations."""
    if TEST_DATABASE_URL:
        reset_postgres(TEST_DATABASE_URL)
        command.upgrade(alembic_config(TEST_DATABASE_URL), "head")
        yield TEST_DATABASE_URL
        reset_postgres(TEST_DATABASE_URL)
        return
    path = tmp_path_factory.mktemp("template") / "template.db"
    url = f"sqlite+aiosqlite:///{path}"
    command.upgrade(alembic_config(url), "head")
    yield url


@pytest.fixture
def database_url(migrated_database: str, tmp_path: Path) -> str:
    """A fresh, migrated database for this test."""
    if TEST_DATABASE_URL:
        tables = "user_account, api_key, agent, chat_session, message, voice_turn, rate_count"
        postgres_execute(TEST_DATABASE_URL, f"TRUNCATE {tables} CASCADE")
        return TEST_DATABASE_URL
    template = Path(migrated_database.removeprefix("sqlite+aiosqlite:///"))
    copy = tmp_path / "parley.db"
    shutil.copyfile(template, copy)
    return f"sqlite+aiosqlite:///{copy}"


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def upstream(fake_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The fake OpenAI server, with no scripted answers and no recorded requests."""
    fake_openai_server.reset()
    yield fake_openai_server
    fake_openai_server.reset()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Offline provider; modules that test the openai path override this fixture."""
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    async with running(settings) as application:
        yield application


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    result: Runtime = app.state.runtime
    return result


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Signed in as owner@example.com."""
    async with api_client(app) as http:
        yield http


@pytest.fixture
async def anon(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Not signed in."""
    async with api_client(app, signed_in=False) as http:
        yield http


@pytest.fixture
async def chat(client: httpx.AsyncClient) -> dict[str, Any]:
    """A chat session of the signed-in `client`, with a new agent (its id is the session's `agent_id`)."""
    return await new_chat(client)


@pytest.fixture
async def live_url(settings: Settings) -> AsyncIterator[str]:
    """The app served by a real uvicorn on 127.0.0.1 (for tests that need real connections and disconnects)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    await task


@pytest.fixture
def empty_database(tmp_path: Path) -> Iterator[str]:
    """A new, empty database of the kind under test (its own PostgreSQL database when TEST_DATABASE_URL is set)."""
    if not TEST_DATABASE_URL:
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"parley_migrations_{uuid.uuid4().hex[:8]}"
    postgres_execute(TEST_DATABASE_URL, f'CREATE DATABASE "{name}"')
    try:
        yield TEST_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        postgres_execute(TEST_DATABASE_URL, f'DROP DATABASE "{name}" WITH (FORCE)')
