"""A client that goes away mid-request is one line in the log, never a traceback (DESIGN §9, Disconnects)."""

from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from webapp.http.asgi import HttpMiddleware

log = logging.getLogger(__name__)


class ClientGoneIsOneLine(HttpMiddleware):
    """Log a client that hung up before its request body or its response was complete, in one line, and end the
    request quietly.

    A handler reading the body learns of it as `ClientDisconnect` (which would otherwise reach the 500 handler and
    uvicorn's "Exception in ASGI application"); a stream learns of it as an `http.disconnect` message and stops.
    Either way there is no one left to answer. Handlers clean up their own partial work (the upload route deletes its
    partial file) as the exception passes through them.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        received = 0
        body_complete = declared in ("", "0") and b"transfer-encoding" not in headers  # no body: nothing to miss
        response_started = response_complete = gone = False

        async def watched_receive() -> Message:
            nonlocal received, body_complete, gone
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_complete = not message.get("more_body", False)
            elif message["type"] == "http.disconnect":
                gone = True
            return message

        async def watched_send(message: Message) -> None:
            nonlocal response_started, response_complete
            if message["type"] == "http.response.start":
                response_started = True
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                response_complete = True
            await send(message)

        try:
            await self.app(scope, watched_receive, watched_send)
        except ClientDisconnect:
            gone = True
        if not gone or response_complete:
            return
        request = f"{scope['method']} {scope['path']}"
        if not body_complete:
            of = f" of {int(declared):,}" if declared.isdigit() else ""
            log.warning("client went away mid-upload: %s after %s%s bytes", request, f"{received:,}", of)
        elif response_started:
            log.warning("client went away mid-stream: %s", request)
        else:
            log.warning("client went away before the response: %s", request)
