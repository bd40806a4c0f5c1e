"""ASGI middleware for HTTP details that FastAPI's routing leaves out."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webapp.errors import RouteNotFound
from webapp.problems import problem_response


class HeadAsGet:
    """Answer `HEAD` as `GET` without the body (RFC 9110 §9.3.2): FastAPI routes serve only the methods they name.

    Load balancers and uptime checkers probe `/healthz` this way, and download tools ask an audio file's size.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        answered = False

        async def headers_only(message: Message) -> None:
            # The status and headers go out, then at once the end of an empty body: a client asking for the head of
            # an event stream is not kept waiting for the stream to end. Whatever the app sends later is dropped.
            nonlocal answered
            if answered:
                return
            await send(message)
            if message["type"] == "http.response.start":
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                answered = True

        await self.app({**scope, "method": "GET"}, receive, headers_only)


class NulInPathIsNotFound:
    """A path with a NUL character names nothing here (no id holds one), and PostgreSQL could not even compare it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "\x00" in scope["path"]:
            await problem_response(RouteNotFound("No resource has a NUL character in its path."))(scope, receive, send)
            return
        await self.app(scope, receive, send)
