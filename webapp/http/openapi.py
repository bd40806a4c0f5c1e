"""The OpenAPI document: tag descriptions, the problem schema on every error response, audio media types.

Routes name the errors they can answer with (`responses=problems(AgentNotFound, ...)`); `build_openapi` adds what
applies to every operation of a kind: `validation_failed` wherever there is input, `request_too_large` wherever there
is a JSON body, `unauthorized` wherever a credential is required, `csrf_failed` on authenticated changes.
"""

from __future__ import annotations

import html
import json
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute

from webapp.audio import FORMATS
from webapp.errors import AppError, CsrfFailed, RequestTooLarge, Unauthorized, ValidationFailed
from webapp.http.problems import PROBLEM_JSON

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An RFC 9457 problem document. More members may be added; clients should ignore unknown ones.",
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string", "description": "`urn:parley:problem:<code>`."},
        "title": {"type": "string", "description": "A short summary, the same for every problem with this code."},
        "status": {"type": "integer", "description": "The HTTP status code."},
        "detail": {"type": "string", "description": "What went wrong this time, for people."},
        "code": {"type": "string", "description": "Stable machine-readable error code."},
        "errors": {
            "type": "array",
            "description": "`validation_failed` only: one entry per invalid field.",
            "items": {
                "type": "object",
                "required": ["loc", "msg", "type"],
                "properties": {
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
                    "msg": {"type": "string"},
                    "type": {"type": "string"},
                },
            },
        },
    },
}

TAGS: list[dict[str, str]] = [
    {"name": "accounts", "description": "Sign up, sign in, and API keys for scripts."},
    {"name": "agents", "description": "Agents: a name, a system prompt, a chat model and a voice."},
    {"name": "sessions", "description": "Chat sessions with an agent."},
    {"name": "messages", "description": "Text turns (optionally streamed as SSE), history, and stored audio."},
    {
        "name": "voice",
        "description": "Push-to-talk: upload a recording, follow it through transcribing, thinking and "
        "speaking, get the spoken reply.",
    },
    {"name": "health", "description": "Liveness and readiness probes for load balancers and orchestrators."},
]

TOKEN_EVENT = {"type": "object", "required": ["delta"], "properties": {"delta": {"type": "string"}}}
"""The data of a `token` event: a piece of a reply as it is written."""
AUDIO_MEDIA_TYPES = sorted({media for _, media in FORMATS.values()})
BINARY = {"type": "string", "contentMediaType": "application/octet-stream"}

_EXAMPLE_DETAILS: dict[str, str] = {
    "validation_failed": "body.name: Field required",
    "unauthorized": "Sign in, or send `Authorization: Bearer <API key or access token>`.",
}
_EXAMPLE_EXTRAS: dict[str, dict[str, Any]] = {
    "validation_failed": {"errors": [{"loc": ["body", "name"], "msg": "Field required", "type": "missing"}]},
}


def problems(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status these errors answer with, as a problem document listing their codes."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        _add_problem(responses, error)
    return responses


def audio_response(description: str, media_types: list[str] = AUDIO_MEDIA_TYPES) -> dict[str, Any]:
    """A `responses=` entry for a binary audio body in any of these media types."""
    return {"description": description, "content": {media: {"schema": BINARY} for media in media_types}}


def sse_response(description: str, events: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A `responses=` entry for an SSE stream: each event's name, and the schema of its JSON `data`."""
    event_schemas = [
        {
            "type": "object",
            "required": ["event", "data"],
            "properties": {
                "event": {"const": name},
                "data": {"type": "string", "contentMediaType": "application/json", "contentSchema": data},
            },
        }
        for name, data in events.items()
    ]
    return {"description": description, "content": {"text/event-stream": {"schema": {"oneOf": event_schemas}}}}


def schema_ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def upload_body(field: str, description: str) -> dict[str, Any]:
    """`openapi_extra=` for a route that streams a one-file multipart upload itself (Swagger UI shows a picker)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": [field],
                        "properties": {field: {**BINARY, "description": description}},
                    },
                }
            },
        }
    }


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (cached on the app), with the shared error responses filled in."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes, tags=TAGS
    )
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    schemas["Problem"] = PROBLEM_SCHEMA
    for operations in schema["paths"].values():
        for method, operation in operations.items():
            responses: dict[str, dict[str, Any]] = operation["responses"]
            default_422 = responses.get("422", {}).get("content", {}).get("application/json")
            if default_422 is not None:  # FastAPI's own validation error shape; ours is a problem document
                del responses["422"]
            if default_422 is not None or operation.get("requestBody") or operation.get("parameters"):
                _add_problem(responses, ValidationFailed)
            if "application/json" in operation.get("requestBody", {}).get("content", {}):
                _add_problem(responses, RequestTooLarge)
            if operation.get("security"):
                _add_problem(responses, Unauthorized)
                if method != "get":
                    _add_problem(responses, CsrfFailed)
            operation["responses"] = dict(sorted(responses.items(), key=lambda item: str(item[0])))
    app.openapi_schema = schema
    return schema


docs = APIRouter(include_in_schema=False)
SWAGGER_UI = "/static/swagger-ui-5.35.0"  # vendored from npm's swagger-ui-dist: /docs works with no internet


SWAGGER_UI_PARAMETERS: dict[str, Any] = {
    "dom_id": "#swagger-ui",
    "layout": "BaseLayout",
    "deepLinking": True,
    "showExtensions": True,
    "showCommonExtensions": True,
    "persistAuthorization": True,
    "displayRequestDuration": True,
    "tryItOutEnabled": True,
}


@docs.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI for `/openapi.json`, served from our own static files rather than a CDN.

    FastAPI's own page starts Swagger UI with an inline script, which the Content-Security-Policy forbids: here
    `static/swagger-init.js` starts it, with its settings in a data attribute.
    """
    root = request.scope.get("root_path", "")
    config = html.escape(json.dumps({"url": f"{root}/openapi.json", **SWAGGER_UI_PARAMETERS}), quote=True)
    return HTMLResponse(
        f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Parley API</title>
<link rel="stylesheet" href="{root}{SWAGGER_UI}/swagger-ui.css">
<link rel="icon" href="{root}{SWAGGER_UI}/favicon-32x32.png">
<script src="{root}{SWAGGER_UI}/swagger-ui-bundle.js" defer></script>
<script src="{root}/static/swagger-init.js" defer></script>
</head>
<body>
<div id="swagger-ui" data-config="{config}"></div>
</body>
</html>
"""
    )


def operation_id(route: APIRoute) -> str:
    """Operation ids are the route functions' names (`create_agent`): stable and readable in generated clients."""
    return route.name


def _add_problem(responses: dict[Any, dict[str, Any]], error: type[AppError]) -> None:
    entry = responses.setdefault(str(error.status), {"description": ""})
    content = entry.setdefault("content", {}).setdefault(PROBLEM_JSON, {"schema": schema_ref("Problem")})
    examples = content.setdefault("examples", {})
    if error.code not in examples:
        examples[error.code] = {"summary": error.title, "value": _example(error)}
        entry["description"] = f"{entry['description']}\n\n`{error.code}`: {error.title}.".strip()


def _example(error: type[AppError]) -> dict[str, Any]:
    return {
        "type": f"urn:parley:problem:{error.code}",
        "title": error.title,
        "status": error.status,
        "detail": _EXAMPLE_DETAILS.get(error.code, error.title + "."),
        "code": error.code,
        **_EXAMPLE_EXTRAS.get(error.code, {}),
    }
