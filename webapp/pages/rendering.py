"""Shared by the page routes: templates, the signed-in browser, CSRF, and errors as fragments or pages."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from pydantic import BaseModel, ValidationError

from webapp.deps import CSRF_COOKIE, SESSION_COOKIE, RuntimeDep, browser_principal, session_principal
from webapp.errors import AppError, ValidationFailed
from webapp.http import problems
from webapp.markdown import render_markdown
from webapp.pages.charts import activity_chart, duration, voice_timeline
from webapp.schemas import AgentCreate, MessageCreate, RegisterRequest
from webapp.services import accounts
from webapp.services.accounts import Principal
from webapp.services.runtime import Runtime

templates = Jinja2Templates(directory=Path(__file__).resolve().parents[2] / "templates")


def _utc_text(value: Any) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else ""


def _time_element(value: datetime | None) -> Markup:
    """A `<time>` reading in UTC; static/app.js rewrites its text in the reader's time zone (UTC stays the tooltip)."""
    if value is None:
        return Markup("")
    moment = value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    text = _utc_text(value)
    return Markup('<time datetime="{}" title="{}">{}</time>').format(moment, text, text)


def _constraints(model: type[BaseModel], field: str) -> dict[str, Any]:
    """The JSON-schema constraints of a model's text field (`minLength`, `maxLength`, …), optional or not."""
    schema: dict[str, Any] = model.model_json_schema()["properties"][field]
    return next((option for option in schema.get("anyOf", [schema]) if option.get("type") == "string"), schema)


FIELD_LIMITS = {
    "agent_name": _constraints(AgentCreate, "name"),
    "prompt": _constraints(AgentCreate, "prompt"),
    "message": _constraints(MessageCreate, "content"),
    "display_name": _constraints(RegisterRequest, "display_name"),
    "password": _constraints(RegisterRequest, "password"),
}
"""The forms' length limits, from the input models the routes validate with (`limits.prompt.maxLength`)."""

templates.env.filters["timestamp"] = _time_element
templates.env.filters["markdown"] = render_markdown  # an assistant reply, sanitised (webapp/markdown.py)
templates.env.globals["limits"] = FIELD_LIMITS
templates.env.globals["voice_timeline"] = voice_timeline  # _timings.html: a voice reply's stage bar
templates.env.globals["activity_chart"] = activity_chart  # _activity.html: an agent's last 30 days
templates.env.filters["duration"] = duration


M = TypeVar("M", bound=BaseModel)


class SignInRequired(Exception):
    """A page needs a signed-in browser: answered with a redirect to the sign-in form."""


def csrf_token(request: Request, runtime: Runtime) -> str:
    """The token this page's forms and scripts send back.

    Signed in: bound to the session cookie (`accounts.csrf_token`). Signed out: the pre-session `parley_csrf`
    cookie's value, or a new one that `render` will set.
    """
    session = request.cookies.get(SESSION_COOKIE)
    if session and session_principal(request, runtime) is not None:
        return accounts.csrf_token(secret=runtime.secret_key, session=session)
    token = request.cookies.get(CSRF_COOKIE) or getattr(request.state, "new_csrf", None)
    if token is None:
        token = request.state.new_csrf = secrets.token_urlsafe(32)
    return token


async def require_browser(request: Request, runtime: RuntimeDep) -> Principal:
    """The signed-in browser (the API's own cookie check, CSRF included); else to the sign-in page."""
    principal = await browser_principal(request, runtime)
    if principal is None:
        raise SignInRequired
    return principal


def validated(model: type[M], fields: Mapping[str, Any]) -> M:
    """A form's fields as the API's input model, or the API's 422 `validation_failed`."""
    try:
        return model.model_validate(dict(fields))
    except ValidationError as exc:
        raise ValidationFailed.from_errors(exc.errors()) from None


def local_path(target: str | None, default: str = "/") -> str:
    """`target` if it is a path on this site (`/…`, not `//host` or `/\\host`), else `default`: for `next=`."""
    if (
        not target
        or not target.startswith("/")
        or target[1:2] == "/"
        or any(char == "\\" or ord(char) < 0x20 or ord(char) == 0x7F for char in target)
    ):
        return default
    return target


BrowserDep = Annotated[Principal, Depends(require_browser)]


def render(
    request: Request, runtime: Runtime, template: str, *, status_code: int = 200, **context: Any
) -> HTMLResponse:
    """A page or fragment; sets the CSRF cookie the first time a browser comes by."""
    context |= {"provider": runtime.provider.name, "csrf_token": csrf_token(request, runtime)}
    response = templates.TemplateResponse(request, template, context, status_code=status_code)
    new = getattr(request.state, "new_csrf", None)
    if new is not None:
        response.set_cookie(
            CSRF_COOKIE, new, samesite="lax", secure=runtime.settings.cookie_secure, path="/", max_age=30 * 86400
        )
    return response


def wants_page(request: Request) -> bool:
    return not request.url.path.startswith("/api/") and (
        "HX-Request" in request.headers or "text/html" in request.headers.get("accept", "")
    )


def page_errors(request: Request, error: AppError) -> Response | None:
    """`http.problems`' hook: a browser on a page gets the problem as a fragment or a page; API clients get None."""
    return error_page(request, error) if wants_page(request) else None


def install(app: FastAPI) -> None:
    """The pages' own error handling: errors as HTML for browsers, and a redirect to sign in."""
    problems.install(app, page_errors=page_errors)
    app.add_exception_handler(SignInRequired, sign_in_redirect)


def error_page(request: Request, error: AppError) -> Response:
    """An error for a browser: a fragment into the page's alert area for HTMX, else a small page."""
    context = {"problem": error.problem(), "provider": "", "csrf_token": ""}
    if "HX-Request" in request.headers:
        headers = {**error.headers, "HX-Retarget": "#page-error", "HX-Reswap": "innerHTML"}
        return templates.TemplateResponse(request, "_error.html", context, status_code=error.status, headers=headers)
    return templates.TemplateResponse(request, "error.html", context, status_code=error.status, headers=error.headers)


async def account_page(runtime: Runtime, next_path: str = "/") -> str:
    """Where a signed-out browser goes: the sign-in form, or on a fresh install (no account yet) the sign-up form."""
    async with runtime.db.read() as db:
        page = "/signin" if await accounts.any_account(db=db) else "/signup"
    return page if next_path == "/" else f"{page}?{urlencode({'next': next_path})}"


async def sign_in_redirect(request: Request, _exc: Exception) -> Response:
    """To the sign-in (or first sign-up) form, which comes back here afterwards (`next=`, a relative path: `Host` is
    never echoed)."""
    runtime: Runtime = request.app.state.runtime
    if "HX-Request" in request.headers:
        return Response(status_code=204, headers={"HX-Redirect": await account_page(runtime)})
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = local_path(here) if request.method == "GET" else "/"
    return RedirectResponse(await account_page(runtime, target), status_code=303)
