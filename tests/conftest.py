"""Shared fixtures: a migrated database per test (SQLite file, or PostgreSQL with TEST_DATABASE_URL), an app built
from explicit settings, an in-process client, a live uvicorn server, and the fake OpenAI-compatible upstream."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from alembic import command
from alembic.config import Config
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from tests.fake_openai import FakeOpenAI
from webapp.config import Settings
from webapp.main import create_app
from webapp.services.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def reset_postgres(database_url: str) -> None:
    """Drop everything in the test database (leaves it clean for the next run, too)."""

    async def drop() -> None:
        import asyncpg

        conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public;")
        finally:
            await conn.close()

    asyncio.run(drop())


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

        async def truncate() -> None:
            import asyncpg

            conn = await asyncpg.connect(TEST_DATABASE_URL.replace("postgresql+asyncpg", "postgresql"))
            try:
                await conn.execute("TRUNCATE user_account, api_key, agent, chat_session, message, voice_turn CASCADE")
            finally:
                await conn.close()

        asyncio.run(truncate())
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


def make_settings(database_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "media_dir": tmp_path / "media",
        "ai_provider": "offline",
        "session_busy_timeout_seconds": 10,
        "secret_key_file": tmp_path / "secret_key",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def openai_settings(database_url: str, tmp_path: Path, upstream: FakeOpenAI, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "ai_provider": "openai",
        "openai_api_key": "sk-test",
        "openai_base_url": upstream.base_url,
        "openai_timeout_seconds": 5,
        "openai_max_retries": 2,
    }
    values.update(overrides)
    return make_settings(database_url, tmp_path, **values)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    """Offline provider; modules that test the openai path override this fixture."""
    return make_settings(database_url, tmp_path)


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[FastAPI]:
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


@pytest.fixture
def runtime(app: FastAPI) -> Runtime:
    result: Runtime = app.state.runtime
    return result


PASSWORD = "correct horse battery"


async def sign_up(client: httpx.AsyncClient, email: str = "owner@example.com") -> dict[str, Any]:
    """Register an account (or sign in, if it exists) and make `client` send its access token from now on."""
    credentials = {"email": email, "password": PASSWORD}
    response = await client.post("/auth/register", json=credentials)
    if response.status_code == 409:
        response = await client.post("/auth/login", json=credentials)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    client.headers["Authorization"] = f"Bearer {body['access_token']}"
    return body


@asynccontextmanager
async def api_client(app: FastAPI, *, signed_in: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the app's API, signed in as a fresh account unless `signed_in` is false."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test/api/v1") as http:
        if signed_in:
            await sign_up(http)
        yield http


@asynccontextmanager
async def serve(settings: Settings, *, signed_in: bool = True) -> AsyncIterator[httpx.AsyncClient]:
    """An app with these settings, started, and a client for its API (for tests that need unusual settings)."""
    application = create_app(settings)
    async with LifespanManager(application), api_client(application, signed_in=signed_in) as http:
        yield http


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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


async def _admin(sql: str) -> None:
    import asyncpg

    assert TEST_DATABASE_URL
    conn = await asyncpg.connect(TEST_DATABASE_URL.replace("postgresql+asyncpg", "postgresql"))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def empty_database(tmp_path: Path) -> Iterator[str]:
    """A new, empty database of the kind under test (its own PostgreSQL database when TEST_DATABASE_URL is set)."""
    if not TEST_DATABASE_URL:
        yield f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"parley_migrations_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield TEST_DATABASE_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE "{name}" WITH (FORCE)'))
