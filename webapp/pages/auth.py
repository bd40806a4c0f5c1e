"""Sign-up, sign-in and sign-out forms; a signed-in browser holds an HttpOnly session cookie."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from starlette.datastructures import FormData

from webapp.deps import SESSION_COOKIE, RuntimeDep, check_csrf, client_address
from webapp.errors import AppError, ValidationFailed
from webapp.pages.rendering import local_path, render
from webapp.schemas import RegisterRequest
from webapp.services import accounts
from webapp.services.runtime import Runtime

router = APIRouter(include_in_schema=False)


def _next(request: Request, form: FormData | None = None) -> str:
    """Where to go after signing in: the `next` field or query parameter, if it is a path on this site."""
    submitted = form.get("next") if form is not None else request.query_params.get("next")
    return local_path(submitted if isinstance(submitted, str) else None)


def _signed_in(runtime: Runtime, token: str, next_path: str) -> Response:
    """To `next_path`, with the access token as the browser's session cookie."""
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=runtime.settings.cookie_secure,
        path="/",
        max_age=int(runtime.settings.access_token_hours * 3600),
    )
    return response


@router.get("/signin")
async def signin_form(request: Request, runtime: RuntimeDep) -> Response:
    return render(request, runtime, "auth.html", mode="signin", next=_next(request))


@router.get("/signup")
async def signup_form(request: Request, runtime: RuntimeDep) -> Response:
    return render(request, runtime, "auth.html", mode="signup", next=_next(request))


@router.post("/signin")
async def signin(request: Request, runtime: RuntimeDep) -> Response:
    form = await request.form()
    check_csrf(request, str(form.get("csrf_token", "")), secret=runtime.secret_key, account_form=True)
    email, next_path = str(form.get("email", "")), _next(request, form)
    try:
        address = client_address(request)
        token = await accounts.log_in(runtime, email=email, password=str(form.get("password", "")), address=address)
    except AppError as exc:  # wrong credentials (401), or throttled (429, with Retry-After)
        response = render(
            request,
            runtime,
            "auth.html",
            mode="signin",
            email=email,
            next=next_path,
            error=exc.detail,
            status_code=exc.status,
        )
        response.headers.update(exc.headers)
        return response
    return _signed_in(runtime, token.access_token, next_path)


@router.post("/signup")
async def signup(request: Request, runtime: RuntimeDep) -> Response:
    form = await request.form()
    check_csrf(request, str(form.get("csrf_token", "")), secret=runtime.secret_key, account_form=True)
    fields = {key: str(form.get(key, "")) for key in ("email", "password", "display_name")}
    next_path = _next(request, form)
    try:
        data = RegisterRequest(
            email=fields["email"], password=fields["password"], display_name=fields["display_name"] or None
        )
        account = await accounts.sign_up(runtime, data=data)
    except ValidationError as exc:
        return render(
            request,
            runtime,
            "auth.html",
            mode="signup",
            error=ValidationFailed.from_errors(exc.errors()).detail,
            status_code=422,
            email=fields["email"],
            display_name=fields["display_name"],
            next=next_path,
        )
    except AppError as exc:
        return render(
            request,
            runtime,
            "auth.html",
            mode="signup",
            error=exc.detail,
            status_code=exc.status,
            email=fields["email"],
            display_name=fields["display_name"],
            next=next_path,
        )
    return _signed_in(runtime, account.access_token, next_path)


@router.post("/signout")
async def signout(request: Request, runtime: RuntimeDep) -> Response:
    form = await request.form()
    check_csrf(request, str(form.get("csrf_token", "")), secret=runtime.secret_key, account_form=True)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
