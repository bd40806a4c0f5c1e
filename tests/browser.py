"""A browser's view of the app for page tests: a cookie-keeping client, the CSRF token in forms and pages, and
signing in or up through the forms."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from tests.helpers import PASSWORD


@asynccontextmanager
async def browser(app: FastAPI, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    """A client for the app's pages that keeps cookies and does not follow redirects."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://test", follow_redirects=False, headers=headers
    ) as http:
        yield http


def set_cookie(response: httpx.Response, name: str) -> str | None:
    """The `Set-Cookie` header that sets `name`, if any."""
    for header in response.headers.get_list("set-cookie"):
        if header.startswith(f"{name}="):
            return header
    return None


def cookie_attributes(header: str) -> dict[str, str]:
    parts = [part.strip() for part in header.split(";")]
    return {part.split("=", 1)[0].lower(): (part.split("=", 1)[1] if "=" in part else "") for part in parts[1:]}


def form_token(html: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert match, html
    return match.group(1)


def meta_token(html: str) -> str:
    match = re.search(r'<meta name="csrf-token" content="([^"]+)">', html)
    assert match, html
    return match.group(1)


async def through_form(http: httpx.AsyncClient, email: str, page: str = "/signin") -> str:
    """Sign in (or up, with `page="/signup"`) through the form, as a browser does; returns the CSRF token the
    signed-in pages then carry."""
    form = {"email": email, "password": PASSWORD, "csrf_token": form_token((await http.get(page)).text)}
    response = await http.post(page, data=form)
    assert response.status_code == 303, response.text
    return await page_token(http)


async def sign_up_in(http: httpx.AsyncClient, email: str) -> str:
    return await through_form(http, email, "/signup")


async def page_token(http: httpx.AsyncClient) -> str:
    home = await http.get("/", headers={"Accept": "text/html"})
    assert home.status_code == 200, home.text
    token = meta_token(home.text)
    # One token per page: the meta tag (chat.js), htmx's headers and every form field carry the same one.
    assert f'hx-headers=\'{{"X-CSRF-Token": "{token}"}}\'' in home.text
    assert form_token(home.text) == token
    return token


async def create_agent_by_page(http: httpx.AsyncClient, token: str, name: str = "Tutor") -> httpx.Response:
    return await http.post("/agents", data={"name": name, "prompt": "Answer briefly."}, headers={"X-CSRF-Token": token})
