"""The ASGI application: `create_app(settings)` builds it; `app` is the module-level instance uvicorn serves."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from webapp.api import agents, auth, health, messages, sessions, voice
from webapp.config import Settings, load_settings
from webapp.http.disconnects import ClientGoneIsOneLine
from webapp.http.middleware import BodyLimit, HeadAsGet, NulInPathIsNotFound
from webapp.http.openapi import build_openapi, docs, operation_id
from webapp.http.paths import API_PREFIX
from webapp.http.security_headers import SecurityHeaders
from webapp.lifecycle import running
from webapp.pages import agents as agent_pages
from webapp.pages import auth as auth_pages
from webapp.pages import chat as chat_pages
from webapp.pages import rendering as page_rendering
from webapp.pages import sessions as session_pages

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

DESCRIPTION = f"""
Parley: create agents (a name and a system prompt), open chat sessions with them, and talk to them by text or by
voice.

**Start here:** `POST {API_PREFIX}/auth/register` (or `/auth/login`) returns an access token;
`POST {API_PREFIX}/api-keys` makes a long-lived key for scripts. Press **Authorize** and paste either one.

**Lists** return `{{"items": [...], "next_cursor": ...}}`; pass `next_cursor` back as `cursor` for the next page.

**Errors** are `application/problem+json` documents (RFC 9457) with a stable `code`; each operation lists the codes
it can answer with.
"""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or load_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with running(settings) as runtime:
            app.state.runtime = runtime
            yield

    app = FastAPI(
        title="Parley", version="0.1.0", description=DESCRIPTION, lifespan=lifespan, docs_url=None, redoc_url=None
    )
    page_rendering.install(app)  # problem documents, and HTML errors for browsers on pages
    app.add_middleware(NulInPathIsNotFound)
    app.add_middleware(BodyLimit, max_bytes=settings.max_json_bytes, exempt=_streams_its_own_body)
    app.add_middleware(HeadAsGet)
    app.add_middleware(ClientGoneIsOneLine)
    app.add_middleware(SecurityHeaders)  # outermost: every response, even HEAD's and a NUL path's 404
    app.include_router(health.router, generate_unique_id_function=operation_id)
    # The API's routes first: routes are tried in order, and API calls are the hot path.
    for router in (auth.public, auth.router, agents.router, sessions.router, voice.router, messages.router):
        app.include_router(router, prefix=API_PREFIX, generate_unique_id_function=operation_id)
    app.include_router(docs)
    for page in (auth_pages, agent_pages, session_pages, chat_pages):
        app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.openapi = lambda: build_openapi(app)  # type: ignore[method-assign]
    return app


def _streams_its_own_body(path: str) -> bool:
    """The audio uploads (the API's and the chat page's) stream to disk under `MAX_AUDIO_BYTES` (`http.uploads`);
    every other body is capped whole."""
    return path.removeprefix(API_PREFIX).startswith("/sessions/") and path.endswith("/voice")


app = create_app()
