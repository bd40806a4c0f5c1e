"""ASGI middleware for HTTP details that FastAPI's routing leaves out."""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webapp.errors import NotFound, RequestTooLarge
from webapp.http.asgi import HttpMiddleware
from webapp.http.problems import problem_response


class HeadAsGet(HttpMiddleware):
    """Answer `HEAD` as `GET` without the body (RFC 9110 §9.3.2): FastAPI routes serve only the methods they name.

    Load balancers and uptime checkers probe `/healthz` this way, and download tools ask an audio file's size.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "HEAD":
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


class NulInPathIsNotFound(HttpMiddleware):
    """A path with a NUL character names nothing here (no id holds one), and PostgreSQL could not even compare it."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if "\x00" in scope["path"]:
            await problem_response(NotFound("No resource has a NUL character in its path."))(scope, receive, send)
            return
        await self.app(scope, receive, send)


class BodyLimit(HttpMiddleware):
    """Refuse a request body over `max_bytes` (413 `request_too_large`) before any route, authentication or parser.

    A declared `Content-Length` is judged at once; a chunked body is read here up to the cap, then handed on, so a
    route never sees more than `max_bytes`. Paths for which `exempt` is true (the audio upload, which streams to disk
    under its own cap) pass untouched.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int, exempt: Callable[[str], bool]) -> None:
        super().__init__(app)
        self.max_bytes, self.exempt = max_bytes, exempt

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.exempt(scope["path"]):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        if length is not None:
            # The HTTP server has checked that it is a number, and delivers exactly that many bytes.
            if length.isdigit() and int(length) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if b"transfer-encoding" not in headers:  # no length and not chunked: there is no body
            await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": bytes(body), "more_body": False}
        await self.app(scope, _replay([whole], receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        error = RequestTooLarge(f"The request body is larger than the {self.max_bytes:,}-byte limit (MAX_JSON_BYTES).")
        error.headers["Connection"] = "close"  # the rest of the body is never read
        await problem_response(error)(scope, receive, send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that first gives back `messages`, then the real one's (a disconnect, later)."""
    pending = list(messages)

    async def replayed() -> Message:
        return pending.pop(0) if pending else await receive()

    return replayed
