"""Browser hardening (DESIGN §9): security headers on every response, a CSP with no inline script, htmx without eval,
relative redirects that never echo `Host`, `next=` only to local paths, and CSRF tokens bound to the session."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI

from tests.browser import browser, create_agent_by_page, form_token, meta_token, sign_up_in
from tests.helpers import PASSWORD, assert_problem, parse_sse
from webapp.http.security_headers import relative_location

HOSTILE_NAME = '"><script>alert(1)</script><img src=x onerror=alert(2)>'


# --- headers ---------------------------------------------------------------------------------------------------------


def csp_directives(response: httpx.Response) -> dict[str, list[str]]:
    policy = response.headers.get("content-security-policy")
    assert policy, (response.request.url, dict(response.headers))
    directives: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        directives[name.lower()] = values
    return directives


def assert_hardened(response: httpx.Response, *, html: bool) -> None:
    where = (response.request.method, str(response.request.url), response.status_code)
    assert response.headers.get("x-content-type-options") == "nosniff", where
    assert response.headers.get("referrer-policy") in ("same-origin", "strict-origin-when-cross-origin"), where
    assert response.headers.get("x-frame-options") == "DENY", where
    if html:
        assert response.headers["content-type"].startswith("text/html"), where
        directives = csp_directives(response)
        assert directives["script-src"] == ["'self'"], where
        assert directives["frame-ancestors"] == ["'none'"], where
        assert directives["object-src"] == ["'none'"], where
        for name in ("default-src", "script-src", "style-src"):
            assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "data:"} & set(directives[name]), (where, name)


async def test_every_kind_of_response_carries_the_security_headers(app: FastAPI) -> None:
    async with browser(app) as http:
        await sign_up_in(http, "ada@example.com")
        assert_hardened(await http.get("/", headers={"Accept": "text/html"}), html=True)  # a page
        assert_hardened(await http.get("/signin"), html=True)
        assert_hardened(await http.get("/docs"), html=True)
        missing = await http.get("/sessions/nope", headers={"Accept": "text/html"})  # an error page
        assert missing.status_code == 404
        assert_hardened(missing, html=True)
        fragment = await http.get("/sessions/nope", headers={"HX-Request": "true"})  # an error fragment for htmx
        assert fragment.status_code == 404
        assert_hardened(fragment, html=True)

        me = await http.get("/api/v1/me")  # API JSON
        assert me.status_code == 200 and me.headers["content-type"] == "application/json"
        assert_hardened(me, html=False)
        assert_hardened(await http.get("/openapi.json"), html=False)
        for path in ("/api/v1/nope", "/nope", "/a%00b"):  # problem documents: routing and middleware 404s
            problem = await http.get(path)
            assert_problem(problem, 404, "not_found")
            assert_hardened(problem, html=False)
        refused = await http.delete("/healthz")
        assert_problem(refused, 405, "method_not_allowed")
        assert_hardened(refused, html=False)
        for path in ("/static/app.css", "/static/app.js", "/static/swagger-init.js", "/static/htmx-2.0.11.min.js"):
            static = await http.get(path)
            assert static.status_code == 200, path
            assert_hardened(static, html=False)
        assert_hardened(await http.get("/static/nope.js"), html=False)
        head = await http.head("/healthz")
        assert head.status_code == 200
        assert_hardened(head, html=False)

    async with browser(app) as anonymous:
        redirect = await anonymous.get("/", headers={"Accept": "text/html"})
        assert redirect.status_code == 303
        assert_hardened(redirect, html=False)


async def test_scripts_are_served_with_script_types_so_nosniff_keeps_them_working(app: FastAPI) -> None:
    async with browser(app) as http:
        for path in ("/static/app.js", "/static/chat.js", "/static/swagger-init.js", "/static/htmx-2.0.11.min.js"):
            response = await http.get(path)
            assert response.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
        assert (await http.get("/static/app.css")).headers["content-type"].startswith("text/css")


async def test_a_route_may_set_its_own_policy(app: FastAPI) -> None:
    """The middleware fills in what is missing; it never overrides a header a route chose (here none do)."""
    async with browser(app) as http:
        page = await http.get("/signin")
    assert page.headers.get_list("content-security-policy") == [page.headers["content-security-policy"]]
    assert len(page.headers.get_list("x-content-type-options")) == 1


# --- no inline script, no eval ---------------------------------------------------------------------------------------


class InlineCodeFinder(HTMLParser):
    """Everything in a page that CSP (`script-src 'self'`, `style-src 'self'`) or htmx without eval would refuse."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self.htmx_config: dict[str, object] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script" and not attributes.get("src"):
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("inline <style>")
        if tag == "meta" and attributes.get("name") == "htmx-config":
            self.htmx_config = json.loads(attributes.get("content") or "{}")
        for name, value in attrs:
            if name.startswith("on") or name == "style":
                self.found.append(f"<{tag} {name}=...>")
            if name.startswith(("hx-on", "data-hx-on")) or name in ("hx-vars", "data-hx-vars"):
                self.found.append(f"<{tag} {name}> needs eval")
            if value and value.strip().lower().startswith(("js:", "javascript:")):
                self.found.append(f"<{tag} {name}={value!r}> needs eval")


def inline_code(html: str) -> InlineCodeFinder:
    finder = InlineCodeFinder()
    finder.feed(html)
    finder.close()
    return finder


async def test_no_page_has_inline_script_handlers_or_styles(app: FastAPI) -> None:
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        agent = await create_agent_by_page(http, token, name=HOSTILE_NAME)
        assert agent.status_code == 200, agent.text
        agent_id = re.search(r'data-agent-id="([^"]+)"', agent.text)
        assert agent_id
        started = await http.post(f"/agents/{agent_id[1]}/sessions", data={"csrf_token": token})
        assert started.status_code == 303, started.text
        chat = started.headers["location"]
        sent = await http.post(
            f"{chat}/send",
            data={"content": "<script>alert(3)</script> hello"},
            headers={"X-CSRF-Token": token, "Accept": "text/event-stream"},
        )
        assert sent.status_code == 200 and "event: done" in sent.text, sent.text

        pages = [
            "/",
            f"/agents/{agent_id[1]}",
            chat,
            f"/agents/{agent_id[1]}/edit",
            f"/agents/{agent_id[1]}/item",
            "/sessions/nope",  # an error page
            "/docs",
        ]
        for path in pages:
            response = await http.get(path, headers={"Accept": "text/html"})
            assert response.status_code == (404 if path == "/sessions/nope" else 200), (path, response.status_code)
            finder = inline_code(response.text)
            assert finder.found == [], (path, finder.found)
            if path == "/":
                assert finder.htmx_config is not None
                assert finder.htmx_config["allowEval"] is False
                assert finder.htmx_config["allowScriptTags"] is False
                assert finder.htmx_config["includeIndicatorStyles"] is False
        # The streamed reply's HTML, which chat.js swaps into the page, is clean too.
        done = dict(parse_sse(sent.text))["done"]["html"]
        assert inline_code(done).found == [], done
        assert "<script>alert" not in done

    async with browser(app) as anonymous:
        for path in ("/signin", "/signup", "/signin?next=/agents/x"):
            response = await anonymous.get(path)
            assert inline_code(response.text).found == [], path


def test_the_scanner_finds_what_csp_would_block() -> None:
    """The scan above must be able to fail: each of these is refused."""
    for html in (
        "<script>alert(1)</script>",
        '<button onclick="go()">Go</button>',
        '<form hx-on::after-request="this.reset()"></form>',
        '<div hx-vars="a:1"></div>',
        "<div hx-headers='js:{a: 1}'></div>",
        '<p style="color: red">x</p>',
        "<style>p {}</style>",
    ):
        assert inline_code(html).found, html
    assert inline_code('<script src="/static/app.js" defer></script>').found == []


# --- redirects -------------------------------------------------------------------------------------------------------


async def test_redirects_are_relative_whatever_host_the_client_sends(app: FastAPI) -> None:
    async with browser(app, Host="evil.example") as http:
        slash = await http.get("/signin/")  # Starlette's own trailing-slash redirect, built from `Host`
        assert slash.status_code in (307, 308), slash.text
        assert slash.headers["location"] == "/signin"
        with_query = await http.get("/signup/?next=/agents/x")
        assert with_query.headers["location"] == "/signup?next=/agents/x"
        home = await http.get("/", headers={"Accept": "text/html"})  # no account yet: sign-up is the way in
        assert home.status_code == 303 and home.headers["location"] == "/signup"
        deep = await http.get("/agents/abc", headers={"Accept": "text/html"})
        assert deep.status_code == 303 and deep.headers["location"] == "/signup?next=%2Fagents%2Fabc"

        token = await sign_up_in(http, "ada@example.com")
        agent = await create_agent_by_page(http, token)
        agent_id = re.search(r'data-agent-id="([^"]+)"', agent.text)
        assert agent_id
        started = await http.post(f"/agents/{agent_id[1]}/sessions", data={"csrf_token": token})
        assert started.status_code == 303 and re.fullmatch(r"/sessions/[^/]+", started.headers["location"])
        page = await http.get("/", headers={"Accept": "text/html"})
        assert "evil.example" not in page.text  # static assets are linked by path, not by `http://<Host>/...`
        signout = await http.post("/signout", data={"csrf_token": token})
        assert signout.status_code == 303 and signout.headers["location"] == "/signin"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://evil.example/signin", "/signin"),
        ("https://EVIL.example/signin?next=/x#top", "/signin?next=/x#top"),
        ("http://evil.example//other.example/", "/other.example/"),
        ("/signin", "/signin"),
        ("//evil.example/x", "/x"),
        ("https://elsewhere.example/x", "https://elsewhere.example/x"),  # another site, named on purpose: kept
    ],
)
def test_a_location_on_the_requests_own_host_becomes_a_path(location: str, expected: str) -> None:
    assert relative_location(location, {"evil.example"}) == expected


HOSTILE_NEXT = [
    "//evil.example",
    "//evil.example/agents",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "/\t/evil.example",  # browsers drop tabs and newlines from URLs: this is `//evil.example`
    "/\n/evil.example",
    "evil.example",
    "",
]


@pytest.mark.parametrize("hostile", HOSTILE_NEXT)
async def test_a_hostile_next_is_not_followed(client: httpx.AsyncClient, app: FastAPI, hostile: str) -> None:
    async with browser(app) as http:
        form_page = await http.get("/signin", params={"next": hostile})
        assert 'name="next"' not in form_page.text
        assert "evil.example" not in form_page.text
        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": form_token(form_page.text)}
        response = await http.post("/signin", data=form | {"next": hostile})
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/"


async def test_a_local_next_is_followed_after_signing_in(client: httpx.AsyncClient, app: FastAPI) -> None:
    async with browser(app) as http:
        redirect = await http.get("/agents/abc?tab=2", headers={"Accept": "text/html"})
        location = redirect.headers["location"]
        assert urlsplit(location).path == "/signin"
        assert parse_qs(urlsplit(location).query) == {"next": ["/agents/abc?tab=2"]}
        form_page = await http.get(location)
        assert '<input type="hidden" name="next" value="/agents/abc?tab=2">' in form_page.text
        assert 'href="/signup?next=%2Fagents%2Fabc%3Ftab%3D2"' in form_page.text  # carried to the other form
        form = {"email": "owner@example.com", "password": PASSWORD, "csrf_token": form_token(form_page.text)}
        response = await http.post("/signin", data=form | {"next": "/agents/abc?tab=2"})
        assert response.status_code == 303 and response.headers["location"] == "/agents/abc?tab=2"

        signup = await http.get("/signup", params={"next": "/agents/x"})
        form = {"email": "grace@example.com", "password": PASSWORD, "csrf_token": form_token(signup.text)}
        response = await http.post("/signup", data=form | {"next": "/agents/x"})
        assert response.status_code == 303 and response.headers["location"] == "/agents/x"


# --- CSRF bound to the session ---------------------------------------------------------------------------------------


async def test_a_csrf_token_works_only_in_the_session_it_was_made_for(app: FastAPI) -> None:
    async with browser(app) as ada, browser(app) as bob:
        ada_token = await sign_up_in(ada, "ada@example.com")
        bob_token = await sign_up_in(bob, "bob@example.com")
        assert ada_token != bob_token

        # Ada's token in Bob's session: refused, by the pages and by the API alike.
        assert_problem(await create_agent_by_page(bob, ada_token), 403, "csrf_failed")
        api = await bob.post("/api/v1/agents", json={"name": "X", "prompt": "Y"}, headers={"X-CSRF-Token": ada_token})
        assert_problem(api, 403, "csrf_failed")
        form = await bob.post("/signout", data={"csrf_token": ada_token})
        assert_problem(form, 403, "csrf_failed")
        assert (await bob.get("/api/v1/agents")).json()["items"] == []

        # Each session's own token works.
        assert (await create_agent_by_page(bob, bob_token)).status_code == 200
        api = await bob.post("/api/v1/agents", json={"name": "X", "prompt": "Y"}, headers={"X-CSRF-Token": bob_token})
        assert api.status_code == 201, api.text
        assert (await create_agent_by_page(ada, ada_token)).status_code == 200


async def test_a_token_from_before_signing_in_again_is_refused(app: FastAPI) -> None:
    """One browser, two sessions (the pre-session cookie stays the same): the first session's token dies with it."""
    async with browser(app) as http:
        ada_token = await sign_up_in(http, "ada@example.com")
        pre_session = http.cookies.get("parley_csrf")  # set by the sign-up form, kept across sign-ins
        assert pre_session and ada_token != pre_session  # signed in, the token is not the double-submit cookie
        assert (await http.post("/signout", data={"csrf_token": ada_token})).status_code == 303
        bob_token = await sign_up_in(http, "bob@example.com")
        assert bob_token != ada_token
        assert_problem(await create_agent_by_page(http, ada_token), 403, "csrf_failed")
        # The pre-session cookie's value is no good for a signed-in change either.
        assert http.cookies.get("parley_csrf") == pre_session
        assert_problem(await create_agent_by_page(http, pre_session), 403, "csrf_failed")
        assert (await create_agent_by_page(http, bob_token)).status_code == 200


async def test_the_signed_in_token_is_the_pages_everywhere(app: FastAPI) -> None:
    """The chat page's scripts read the meta tag: it carries the bound token, which the JSON API accepts."""
    async with browser(app) as http:
        token = await sign_up_in(http, "ada@example.com")
        agent = await create_agent_by_page(http, token)
        agent_id = re.search(r'data-agent-id="([^"]+)"', agent.text)
        assert agent_id
        sessions_page = await http.get(f"/agents/{agent_id[1]}")
        assert meta_token(sessions_page.text) == token == form_token(sessions_page.text)
        started = await http.post(f"/agents/{agent_id[1]}/sessions", data={"csrf_token": token})
        chat = await http.get(started.headers["location"])
        assert meta_token(chat.text) == token
