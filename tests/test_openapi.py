"""The OpenAPI document tells clients the truth: every operation is described, every error is a problem document."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from webapp import errors

HTTP_METHODS = {"get", "put", "post", "patch", "delete"}
ERROR_CLASSES = errors.REGISTRY


@pytest.fixture
async def spec(anon: httpx.AsyncClient) -> dict[str, Any]:
    response = await anon.get("http://test/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def api_operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, operation)
        for path, operations in spec["paths"].items()
        if path.startswith("/api/v1/") or path in ("/healthz", "/readyz")
        for method, operation in operations.items()
        if method in HTTP_METHODS
    ]


async def test_every_operation_has_a_tag_summary_description_and_readable_id(spec: dict[str, Any]) -> None:
    operations = api_operations(spec)
    assert len(operations) == 28
    declared_tags = {tag["name"] for tag in spec["tags"]}
    assert all(tag.get("description") for tag in spec["tags"])
    ids = [operation["operationId"] for _, _, operation in operations]
    assert len(set(ids)) == len(ids) and all(i.isidentifier() and "api_v1" not in i for i in ids), ids
    for method, path, operation in operations:
        where = f"{method} {path}"
        assert operation["tags"] and set(operation["tags"]) <= declared_tags, where
        assert operation["summary"] and operation["description"], where


async def test_every_error_response_is_a_problem_with_real_codes(spec: dict[str, Any]) -> None:
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    assert spec["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status", "detail", "code"]
    for method, path, operation in api_operations(spec):
        for status, response in operation["responses"].items():
            if int(status) < 400:
                continue
            where = f"{method} {path} {status}"
            assert set(response["content"]) == {"application/problem+json"}, where
            media = response["content"]["application/problem+json"]
            assert media["schema"] == {"$ref": "#/components/schemas/Problem"}, where
            assert media["examples"], where
            for code, example in media["examples"].items():
                assert ERROR_CLASSES[code].status == int(status) == example["value"]["status"], (where, code)
                assert example["value"]["code"] == code and f"`{code}`" in response["description"], (where, code)


def codes(operation: dict[str, Any], status: int) -> set[str]:
    return set(
        operation["responses"]
        .get(str(status), {})
        .get("content", {})
        .get("application/problem+json", {})
        .get("examples", {})
    )


async def test_shared_errors_are_documented_where_they_apply(spec: dict[str, Any]) -> None:
    for method, path, operation in api_operations(spec):
        where = f"{method} {path}"
        if operation.get("security"):
            assert "unauthorized" in codes(operation, 401), where
            assert ("csrf_failed" in codes(operation, 403)) == (method != "get"), where
        if operation.get("parameters") or operation.get("requestBody"):
            assert "validation_failed" in codes(operation, 422), where
    voice = spec["paths"]["/api/v1/sessions/{session_id}/voice"]["post"]
    assert codes(voice, 415) == {"unsupported_audio"} and codes(voice, 413) == {"audio_too_large"}
    assert {"audio_too_long", "no_speech_detected", "validation_failed"} == codes(voice, 422)
    send = spec["paths"]["/api/v1/sessions/{session_id}/messages"]["post"]
    assert {"upstream_unavailable", "upstream_rejected", "upstream_auth_failed"} == codes(send, 502)
    assert codes(send, 504) == {"upstream_timeout"} and codes(send, 429) == {"rate_limited"}


async def test_uploads_and_audio_are_described_for_swagger_ui(spec: dict[str, Any]) -> None:
    voice = spec["paths"]["/api/v1/sessions/{session_id}/voice"]["post"]
    form = voice["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert form["required"] == ["audio"]
    assert form["properties"]["audio"]["contentMediaType"] == "application/octet-stream"  # Swagger UI: a file picker
    assert {"audio/mpeg", "audio/wav", "audio/ogg"} <= set(voice["responses"]["200"]["content"])
    assert voice["responses"]["202"]["content"]["application/json"]["schema"]["$ref"].endswith("/VoiceTurnRead")
    audio = spec["paths"]["/api/v1/messages/{message_id}/audio"]["get"]
    for status in ("200", "206"):
        assert {"audio/webm", "audio/mp4", "audio/mpeg", "audio/flac"} <= set(audio["responses"][status]["content"])
    assert {"Range", "if-none-match", "if-modified-since"} <= {p["name"] for p in audio["parameters"]}


async def test_event_streams_name_their_events(spec: dict[str, Any]) -> None:
    send = spec["paths"]["/api/v1/sessions/{session_id}/messages"]["post"]["responses"]["201"]["content"]
    assert send["application/json"]["schema"]["$ref"].endswith("/TurnRead")
    events = send["text/event-stream"]["schema"]["oneOf"]
    assert [event["properties"]["event"]["const"] for event in events] == ["token", "done", "cancelled", "error"]
    follow = spec["paths"]["/api/v1/voice-turns/{turn_id}/events"]["get"]["responses"]["200"]["content"]
    events = follow["text/event-stream"]["schema"]["oneOf"]
    names = [event["properties"]["event"]["const"] for event in events]
    assert names == ["status", "transcript", "token", "audio", "done", "failed", "cancelled"]
    audio = next(event for event in events if event["properties"]["event"]["const"] == "audio")
    assert audio["properties"]["data"]["contentSchema"]["$ref"].endswith("/VoiceSegmentRead")


async def test_request_bodies_have_examples(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    for name in (
        "AgentCreate",
        "AgentUpdate",
        "SessionCreate",
        "SessionUpdate",
        "MessageCreate",
        "RegisterRequest",
        "LoginRequest",
        "ApiKeyCreate",
    ):
        assert schemas[name].get("examples"), name


async def test_docs_page_is_served_from_our_own_static_files(anon: httpx.AsyncClient) -> None:
    page = await anon.get("http://test/docs")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assets = re.findall(r"""(?:src|href)=['"]([^'"]+)['"]""", page.text)
    assert assets and all(url.startswith("/static/") for url in assets), assets
    for url in assets:
        served = await anon.get(f"http://test{url}")
        assert served.status_code == 200 and served.content, url
    assert "/openapi.json" in page.text
    assert (await anon.get("http://test/redoc")).status_code == 404  # one documentation UI, no CDN
