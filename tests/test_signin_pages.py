"""The browser's sign-in pages: HTML forms, the cookie session, CSRF on form posts, and where pages send a browser
that is not signed in."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from tests.apps import api_client, make_settings, running
from tests.browser import browser, cookie_attributes, set_cookie
from tests.helpers import PASSWORD, assert_problem, login, sign_up
from webapp.models import User
from webapp.services.runtime import Runtime


async def csrf_from_form(http: httpx.AsyncClient, page: str = "/signin") -> str:
    response = await http.get(page)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    header = set_cookie(response, "parley_csrf")
    assert header is not None, response.headers
    assert "httponly" not in cookie_attributes(header)  # scripts echo it in X-CSRF-Token
    token = http.cookies.get("parley_csrf")
    assert token and f'name="csrf_token" value="{token}"' in response.text
    return token


async def test_signin_page_signs_in_with_an_httponly_samesite_cookie(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http)
        again = await http.get("/signin")
        assert set_cookie(again, "parley_csrf") is None  # only set when missing
        response = await http.post(
            "/signin", data={"email": "owner@example.com", "password": PASSWORD, "csrf_token": csrf}
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/"
        header = set_cookie(response, "parley_session")
        assert header is not None
        attributes = cookie_attributes(header)
        assert "httponly" in attributes and attributes.get("samesite", "").lower() == "lax"
        assert attributes.get("path") == "/"
        session = http.cookies.get("parley_session")
        assert session and PASSWORD not in header
        me = await http.get("/api/v1/me")
        assert me.status_code == 200 and me.json()["email"] == "owner@example.com"


async def test_signin_page_with_wrong_credentials_rerenders_with_401(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http)
        for email, password in (("owner@example.com", "wrong password"), ("nobody@example.com", PASSWORD)):
            response = await http.post("/signin", data={"email": email, "password": password, "csrf_token": csrf})
            assert response.status_code == 401, response.text
            assert response.headers["content-type"].startswith("text/html")
            assert '<form method="post" action="/signin">' in response.text
            assert set_cookie(response, "parley_session") is None
            assert password not in response.text
        assert_problem(await http.get("/api/v1/me"), 401, "unauthorized")


async def test_signin_page_is_throttled_like_the_api(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http)
        for _ in range(5):
            form = {"email": "owner@example.com", "password": "wrong password", "csrf_token": csrf}
            assert (await http.post("/signin", data=form)).status_code == 401
        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": csrf}
        locked = await http.post("/signin", data=form)
        assert locked.status_code == 429, locked.text
        assert set_cookie(locked, "parley_session") is None


async def test_signup_page_creates_the_account_and_signs_in(app: FastAPI) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http, "/signup")
        form = {"email": "ada@example.com", "password": PASSWORD, "display_name": "Ada", "csrf_token": csrf}
        response = await http.post("/signup", data=form)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/"
        assert "httponly" in cookie_attributes(set_cookie(response, "parley_session") or "")
        me = await http.get("/api/v1/me")
        assert me.status_code == 200 and me.json()["email"] == "ada@example.com" and me.json()["display_name"] == "Ada"
    async with api_client(app, signed_in=False) as api:
        assert (await login(api, "ada@example.com")).status_code == 200


async def test_signout_clears_the_cookie(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http)
        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": csrf}
        assert (await http.post("/signin", data=form)).status_code == 303
        response = await http.post("/signout", data={"csrf_token": csrf})
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/signin"
        header = set_cookie(response, "parley_session")
        assert header is not None
        attributes = cookie_attributes(header)
        assert header.startswith(('parley_session="";', "parley_session=;")) or attributes.get("max-age") == "0"
        assert http.cookies.get("parley_session") is None
        assert_problem(await http.get("/api/v1/me"), 401, "unauthorized")


@pytest.mark.parametrize(
    "submitted", [None, "", "not-the-cookie", "caf\xe9"], ids=["missing", "empty", "wrong", "non-ascii"]
)
async def test_form_posts_need_the_csrf_token(
    client: httpx.AsyncClient, app: FastAPI, runtime: Runtime, submitted: str | None
) -> None:
    async with browser(app) as http:
        csrf = await csrf_from_form(http)
        extra = {} if submitted is None else {"csrf_token": submitted}
        signin = await http.post("/signin", data={"email": "owner@example.com", "password": PASSWORD, **extra})
        assert signin.status_code == 403, signin.text
        assert set_cookie(signin, "parley_session") is None
        signup = await http.post("/signup", data={"email": "eve@example.com", "password": PASSWORD, **extra})
        assert signup.status_code == 403, signup.text
        async with runtime.db.read() as db:
            assert await db.scalar(select(func.count()).select_from(User)) == 1  # only owner@example.com

        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": csrf}
        assert (await http.post("/signin", data=form)).status_code == 303
        signout = await http.post("/signout", data=extra)
        assert signout.status_code == 403, signout.text
        assert set_cookie(signout, "parley_session") is None
        assert (await http.get("/api/v1/me")).status_code == 200  # still signed in


async def test_form_csrf_token_must_match_this_browsers_cookie(client: httpx.AsyncClient, app: FastAPI) -> None:
    """A token read from another browser's form is no good: the field must equal this browser's own cookie."""
    async with browser(app) as attacker, browser(app) as victim:
        attackers_token = await csrf_from_form(attacker)
        await csrf_from_form(victim)
        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": attackers_token}
        assert (await victim.post("/signin", data=form)).status_code == 403
    async with browser(app) as cookieless:
        response = await cookieless.post("/signin", data=form)  # no csrf cookie at all
        assert response.status_code == 403


async def test_signup_page_respects_allow_signup(database_url: str, tmp_path: Path) -> None:
    async with running(make_settings(database_url, tmp_path, allow_signup=False)) as app:
        async with api_client(app):  # the first account
            pass
        async with browser(app) as http:
            csrf = await csrf_from_form(http, "/signup")
            form = {"email": "eve@example.com", "password": PASSWORD, "csrf_token": csrf}
            response = await http.post("/signup", data=form)
            assert response.status_code == 403, response.text
            assert set_cookie(response, "parley_session") is None
        async with api_client(app, signed_in=False) as api:
            assert_problem(await login(api, "eve@example.com"), 401, "invalid_credentials")


async def test_pages_need_a_signed_in_browser(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        anonymous = await http.get("/", headers={"Accept": "text/html"})
        assert anonymous.status_code == 303 and anonymous.headers["location"] == "/signin"
        csrf = await csrf_from_form(http)
        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": csrf}
        assert (await http.post("/signin", data=form)).status_code == 303
        home = await http.get("/", headers={"Accept": "text/html"})
        assert home.status_code == 200 and home.headers["content-type"].startswith("text/html")


async def test_a_fresh_install_sends_the_browser_to_sign_up(app: FastAPI) -> None:
    """With no account yet, signing up is the only way in: pages redirect there (keeping `next`), then to sign-in."""
    async with browser(app) as http:
        home = await http.get("/", headers={"Accept": "text/html"})
        assert home.status_code == 303 and home.headers["location"] == "/signup"
        deep = await http.get("/agents/abc", headers={"Accept": "text/html"})
        assert deep.status_code == 303 and deep.headers["location"] == "/signup?next=%2Fagents%2Fabc"
        htmx = await http.get("/agents/abc", headers={"HX-Request": "true"})
        assert htmx.status_code == 204 and htmx.headers["hx-redirect"] == "/signup"
    async with api_client(app, signed_in=False) as api:
        await sign_up(api)
    async with browser(app) as http:
        home = await http.get("/", headers={"Accept": "text/html"})
        assert home.status_code == 303 and home.headers["location"] == "/signin"
        htmx = await http.get("/agents/abc", headers={"HX-Request": "true"})
        assert htmx.status_code == 204 and htmx.headers["hx-redirect"] == "/signin"
