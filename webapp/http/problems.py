"""The one place errors become responses: RFC 9457 problem documents (`application/problem+json`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from webapp.errors import AppError, HttpError, MethodNotAllowed, NotFound, ValidationFailed
from webapp.http.security_headers import ALWAYS

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"


def problem_response(error: AppError) -> JSONResponse:
    return JSONResponse(error.problem(), status_code=error.status, headers=error.headers, media_type=PROBLEM_JSON)


PageErrors = Callable[[Request, AppError], Response | None]
"""The pages' own rendering of an error (a fragment or a page for a browser), or None to answer a problem document."""


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    page_errors: PageErrors | None = getattr(request.app.state, "page_errors", None)
    if page_errors is not None and (page := page_errors(request, exc)) is not None:
        return page
    return problem_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem_response(ValidationFailed.from_errors(exc.errors()))


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's and FastAPI's own HTTP errors, through the same problem rendering."""
    assert isinstance(exc, StarletteHTTPException)
    error: AppError
    match exc.status_code:
        case 400:  # FastAPI could not decode the body (not UTF-8, say): the design's "invalid body"
            errors = [{"loc": ["body"], "msg": str(exc.detail), "type": "body_decode_error"}]
            error = ValidationFailed(f"body: {exc.detail}", errors=errors)
        case 404:
            error = NotFound(str(exc.detail))
        case 405:
            error = MethodNotAllowed(str(exc.detail), headers={"Allow": ", ".join(_allowed_methods(request))})
        case _:
            error = HttpError(exc.status_code, str(exc.detail), headers=exc.headers)
    return await _app_error(request, error)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's `Allow` names only the first matching route's)."""
    app_root = request.scope.get("app_root_path", "")
    if request.scope.get("root_path", "") != app_root:  # inside a mount: the static files
        return ["GET", "HEAD"]
    scope = {**request.scope, "root_path": app_root}
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    methods = [
        method
        for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
        if any(route.matches({**scope, "method": method})[0] == Match.FULL for route in routes)
    ]
    return [*methods[:1], "HEAD", *methods[1:]] if "GET" in methods else methods  # HEAD: middleware.HeadAsGet


async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled error", exc_info=exc)
    response = problem_response(AppError("An unexpected error occurred; it has been logged."))
    # Starlette sends this one from outside every middleware, so it carries the always-on headers itself.
    response.headers.update(ALWAYS)
    return response


def install(app: FastAPI, *, page_errors: PageErrors | None = None) -> None:
    """Render every error as a problem document, except where `page_errors` renders it for a browser."""
    app.state.page_errors = page_errors
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
