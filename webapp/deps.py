"""Dependencies as `Annotated` aliases; the `*Dep` loaders fetch a resource or raise its 404.

Every dependency is `async def`, even the trivial ones: FastAPI runs plain functions in a thread pool, which costs a
thread hop per request and lets requests overtake each other.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from webapp.config import Settings
from webapp.errors import CsrfFailed, Unauthorized
from webapp.services import accounts
from webapp.services.accounts import Principal
from webapp.services.runtime import Runtime


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> Settings:
    return runtime.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


@dataclass(frozen=True)
class PageParams:
    limit: int
    cursor: str | None


async def get_page_params(
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = 20,
    cursor: Annotated[str | None, Query(description="`next_cursor` from the previous page.")] = None,
) -> PageParams:
    return PageParams(limit=limit, cursor=cursor)


PageDep = Annotated[PageParams, Depends(get_page_params)]


# --- who is calling --------------------------------------------------------------------------------------------------

SESSION_COOKIE = "parley_session"
CSRF_COOKIE = "parley_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_TYPE = "application/x-www-form-urlencoded"
"""The forms whose `csrf_token` field is read: never a multipart upload, which must send the header (reading its
form would swallow the recording, past its size cap)."""

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="An API key (`pk_…`, from `POST /api/v1/api-keys`) or an access token (`pat_…`, from "
    "`POST /api/v1/auth/login`).",
)


def check_csrf(request: Request, submitted: str | None, *, secret: bytes, account_form: bool = False) -> None:
    """A cookie-authenticated change must carry the CSRF token of this browser's session, which other sites cannot
    read: `accounts.csrf_token` of the session cookie, so a token minted for one session fails in any other.

    The account forms (sign-in, sign-up, sign-out) are also posted from a signed-out page, whose token is the
    pre-session `parley_csrf` cookie's value (double-submit).
    """
    session = request.cookies.get(SESSION_COOKIE)
    accepted = [accounts.csrf_token(secret=secret, session=session)] if session else []
    if account_form:
        accepted.append(request.cookies.get(CSRF_COOKIE) or "")
    given = (submitted or "").encode()
    # Every candidate is compared (no early exit), each in constant time.
    matched = [bool(given) and bool(token) and secrets.compare_digest(token.encode(), given) for token in accepted]
    if not any(matched):
        raise CsrfFailed(
            "Send this session's CSRF token (the page's `csrf-token` meta tag) in the X-CSRF-Token header "
            "(or the form's csrf_token field)."
        )


async def get_principal(
    request: Request,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """The caller, from `Authorization: Bearer …` or the browser's session cookie; 401 otherwise."""
    if credentials is not None:
        token = credentials.credentials
        if token.startswith(accounts.API_KEY_PREFIX):
            principal = await accounts.principal_for_api_key(database=runtime.db, secret=token)
        else:
            principal = accounts.read_token(secret=runtime.secret_key, token=token)
        if principal is None:
            raise Unauthorized("The bearer token is not valid: expired, revoked or mistyped.")
        return principal
    principal = await browser_principal(request, runtime)
    if principal is None:
        raise Unauthorized("Sign in, or send `Authorization: Bearer <API key or access token>`.")
    return principal


def client_address(request: Request) -> str:
    """The caller's address (the proxy's client, with `--proxy-headers`): what sign-in attempts are counted by."""
    return request.client.host if request.client else "unknown"


def session_principal(request: Request, runtime: Runtime) -> Principal | None:
    """Whose valid session cookie this is, if any (no CSRF check: for reading, or for `browser_principal`)."""
    cookie = request.cookies.get(SESSION_COOKIE)
    return accounts.read_token(secret=runtime.secret_key, token=cookie) if cookie else None


async def browser_principal(request: Request, runtime: Runtime) -> Principal | None:
    """The signed-in browser, from its session cookie (None without a valid one); a change must also carry the
    session's CSRF token, in the `X-CSRF-Token` header or a form's `csrf_token` field. The API and the pages both
    come here: the one cookie check."""
    principal = session_principal(request, runtime)
    if principal is not None and request.method not in SAFE_METHODS:
        submitted = request.headers.get(CSRF_HEADER)
        if submitted is None and request.headers.get("content-type", "").startswith(FORM_TYPE):
            # Starlette keeps the parsed form for the route; it is read before any transaction opens.
            submitted = str((await request.form()).get("csrf_token", ""))
        check_csrf(request, submitted, secret=runtime.secret_key)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]
AUTHENTICATED = [Depends(get_principal)]
"""Router dependencies: authentication runs before anything else the route needs (notably its transaction)."""
