"""Shared by the page routes: templates, the CSRF cookie, and who is signed in."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from webapp.deps import CSRF_COOKIE, SESSION_COOKIE
from webapp.services import accounts
from webapp.services.accounts import Principal
from webapp.services.runtime import Runtime

templates = Jinja2Templates(directory=Path(__file__).resolve().parents[2] / "templates")


def csrf_token(request: Request) -> str:
    """The browser's CSRF token (from its cookie), or a new one that `render` will set."""
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if token is None:
        token = request.state.new_csrf = secrets.token_urlsafe(32)
    return token


def page_principal(request: Request, runtime: Runtime) -> Principal | None:
    cookie = request.cookies.get(SESSION_COOKIE)
    return accounts.read_token(secret=runtime.secret_key, token=cookie) if cookie else None


def render(
    request: Request, runtime: Runtime, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    context |= {"provider": runtime.provider.name, "csrf_token": csrf_token(request)}
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    new = getattr(request.state, "new_csrf", None)
    if new is not None:
        response.set_cookie(
            CSRF_COOKIE, new, samesite="lax", secure=runtime.settings.cookie_secure, path="/", max_age=30 * 86400
        )
    return response
