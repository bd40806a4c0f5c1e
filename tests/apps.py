"""The app under test, built from explicit settings: settings builders, an in-process app started by its lifespan,
and httpx clients for its API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from e2e.server import free_port
from tests.fake_openai import FakeOpenAI
from tests.helpers import sign_up
from webapp.config import Settings
from webapp.main import create_app

__all__ = ["api_client", "free_port", "lenient_client", "make_settings", "openai_settings", "running", "serve"]


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


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[FastAPI]:
    """An app built from these settings, started (for tests that need unusual settings and several clients)."""
    application = create_app(settings)
    async with LifespanManager(application):
        yield application


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
    async with running(settings) as application, api_client(application, signed_in=signed_in) as http:
        yield http


def lenient_client(app: FastAPI) -> httpx.AsyncClient:
    """A client that sees a crash as the 500 a real client would get (not as the app's exception)."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://test/api/v1")
