"""Browser hardening headers on every response, and redirects that never echo the client's `Host` header.

A pure ASGI middleware (no `BaseHTTPMiddleware`), so streamed responses (SSE, audio) pass through untouched: only the
`http.response.start` message is rewritten.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import Message, Receive, Scope, Send

from webapp.http.asgi import HttpMiddleware

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",  # no inline script, no eval: htmx runs with allowEval off (templates/base.html)
        "style-src 'self'",  # no inline styles either: htmx's indicator <style> is off, its rules are in app.css
        "img-src 'self' data:",  # data: for the blank favicon and Swagger UI's icons
        "media-src 'self' blob:",
        "connect-src 'self'",  # fetch, EventSource
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "object-src 'none'",
    )
)
"""For HTML documents. A route that needs another policy sets its own `Content-Security-Policy`; it is kept."""

ALWAYS: dict[str, str] = {
    "X-Content-Type-Options": "nosniff",
    # `same-origin`: a full referrer on our own requests, none at all to other sites. Page URLs name agents and chat
    # sessions; nothing outside needs to learn them, and nothing here needs a cross-site referrer.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # `frame-ancestors 'none'` for browsers that predate CSP 2
}


class SecurityHeaders(HttpMiddleware):
    """Adds `ALWAYS` to every response and the CSP to HTML ones; makes a `Location` built from `Host` relative.

    Starlette builds some redirects itself (`/signin/` → `/signin`) as absolute URLs from the request's `Host`
    header, so a forged `Host` would name another site in `Location`. A `Location` on our own host loses its
    scheme and host here, whoever built it.
    """

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in ALWAYS.items():
                    if name not in headers:
                        headers[name] = value
                content_type = headers.get("content-type", "")
                if content_type.startswith("text/html") and "content-security-policy" not in headers:
                    headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
                location = headers.get("location")
                if location is not None:
                    headers["Location"] = relative_location(location, _own_hosts(scope))  # redirects only
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _own_hosts(scope: Scope) -> set[str]:
    """The authorities an absolute URL for this request would have been built from: `Host`, or the server address."""
    hosts = set()
    host = Headers(scope=scope).get("host")
    if host:
        hosts.add(host.lower())
    server = scope.get("server")
    if server:
        hosts.add(f"{server[0]}:{server[1]}".lower())
        hosts.add(str(server[0]).lower())
    return hosts


def relative_location(location: str, own_hosts: set[str]) -> str:
    """`location` as a local path if it names this site (or echoes the request's `Host`); other sites are kept."""
    parts = urlsplit(location)
    if parts.scheme not in ("", "http", "https") or (parts.netloc and parts.netloc.lower() not in own_hosts):
        return location
    path = "/" + parts.path.lstrip("/\\")  # one leading slash: `//host` or `/\\host` would be another site
    return path + (f"?{parts.query}" if parts.query else "") + (f"#{parts.fragment}" if parts.fragment else "")
