"""Voice uploads that must be refused before the 202 (nothing stored), and the openai provider's voice path."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.apps import make_settings, openai_settings, serve
from tests.audio_samples import encode_clip, silence, speech_pcm, tone
from tests.fake_openai import CHAT, SPEECH, TRANSCRIBE, FakeOpenAI, Scripted, error_body
from tests.helpers import create_agent, create_session, history, new_chat, parse_sse
from tests.voice import finished, reached, spoken, upload
from webapp.config import Settings


def leftovers(settings: Settings) -> list[Path]:
    return [p for p in settings.media_dir.rglob("*") if p.is_file()] if settings.media_dir.exists() else []


BAD_UPLOADS = [
    (b"", 422, "no_speech_detected"),
    (b"just some text, not audio at all\n" * 20, 415, "unsupported_audio"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8, 415, "unsupported_audio"),
    (bytes(4096), 415, "unsupported_audio"),
]


@pytest.mark.parametrize(("data", "status", "code"), BAD_UPLOADS)
async def test_bad_upload_is_refused_and_stores_nothing(
    client: httpx.AsyncClient, chat: dict[str, Any], settings: Settings, data: bytes, status: int, code: str
) -> None:
    response = await upload(client, chat["id"], data, name="clip.webm", content_type="audio/webm")
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["code"] == code and problem["detail"]
    assert await history(client, chat["id"]) == []
    assert leftovers(settings) == []


@pytest.mark.parametrize("fmt", ["wav", "webm", "mp3"])
async def test_silence_is_no_speech(
    client: httpx.AsyncClient, chat: dict[str, Any], settings: Settings, fmt: str
) -> None:
    response = await upload(client, chat["id"], silence(fmt, 2.0))
    assert response.status_code == 422 and response.json()["code"] == "no_speech_detected"
    assert "silent" in response.json()["detail"]
    quiet = await upload(client, chat["id"], tone("wav", 1.0, dbfs=-60))
    assert quiet.status_code == 422 and quiet.json()["code"] == "no_speech_detected"
    assert leftovers(settings) == []


async def test_too_long_is_422(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, max_audio_seconds=1.0)
    async with serve(settings) as client:
        session = await new_chat(client)
        response = await upload(client, session["id"], spoken("webm"))
        assert response.status_code == 422 and response.json()["code"] == "audio_too_long"
        assert await history(client, session["id"]) == []
    assert leftovers(settings) == []


async def test_too_large_is_413_while_streaming(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, max_audio_bytes=50_000)
    async with serve(settings) as client:
        session = await new_chat(client)
        big = tone("wav", 3.0)  # ~130 kB
        response = await upload(client, session["id"], big)
        assert response.status_code == 413 and response.json()["code"] == "audio_too_large"

        # Without a Content-Length the cap still holds: the body is read chunk by chunk and abandoned, so of a
        # 20 MB upload no more than the cap (plus a chunk or two in flight) is ever pulled from the client.
        sent = 0

        async def chunks() -> Any:
            nonlocal sent
            boundary = "xyz"
            yield f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'.encode()
            for start in range(0, 20_000_000, 8192):
                piece = big[start : start + 8192] or bytes(8192)
                sent += len(piece)
                yield piece
            yield f"\r\n--{boundary}--\r\n".encode()

        streamed = await client.post(
            f"/sessions/{session['id']}/voice",
            content=chunks(),
            headers={"content-type": "multipart/form-data; boundary=xyz"},
        )
        assert streamed.status_code == 413 and streamed.json()["code"] == "audio_too_large"
        assert sent < 50_000 + 5 * 8192, sent
        assert await history(client, session["id"]) == []
    assert leftovers(settings) == []


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"data": {"other": "field"}}, "validation_failed"),
        ({"json": {"audio": "base64?"}}, "validation_failed"),
        ({"files": {"wrong_name": ("a.wav", b"RIFF", "audio/wav")}}, "validation_failed"),
        (
            {"content": b"--b\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=b"}},
            "validation_failed",
        ),
    ],
)
async def test_malformed_form_is_422(
    client: httpx.AsyncClient, chat: dict[str, Any], kwargs: dict[str, Any], code: str
) -> None:
    response = await client.post(f"/sessions/{chat['id']}/voice", **kwargs)
    assert response.status_code == 422 and response.json()["code"] == code


async def test_unknown_ids_are_404(client: httpx.AsyncClient) -> None:
    response = await upload(client, "no-such-session", spoken("wav"))
    assert response.status_code == 404 and response.json()["code"] == "session_not_found"
    for path in ("/voice-turns/nope", "/voice-turns/nope/events"):
        missing = await client.get(path)
        assert missing.status_code == 404 and missing.json()["code"] == "voice_turn_not_found"
    missing = await client.get("/messages/nope/audio")
    assert missing.status_code == 404 and missing.json()["code"] == "message_not_found"


async def test_text_message_has_no_audio(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    sent = (await client.post(f"/sessions/{chat['id']}/messages", json={"content": "hi"})).json()
    response = await client.get(f"/messages/{sent['user_message']['id']}/audio")
    assert response.status_code == 404 and response.json()["code"] == "audio_not_found"


# --- the openai provider ---------------------------------------------------------------------------------------------


@pytest.fixture
def openai_app_settings(database_url: str, tmp_path: Path, upstream: FakeOpenAI) -> Settings:
    return openai_settings(database_url, tmp_path, upstream, openai_max_retries=0)


async def test_openai_voice_turn_sends_the_recording_as_is(openai_app_settings: Settings, upstream: FakeOpenAI) -> None:
    recording = spoken("mp4")
    reply_audio = encode_clip(*speech_pcm("the answer"), "mp3")
    upstream.transcript = "What is the capital of France?"
    upstream.speech_audio = reply_audio
    async with serve(openai_app_settings) as client:
        agent = await create_agent(client, voice="nova", model="gpt-x")
        session = await create_session(client, agent["id"])
        response = await upload(client, session["id"], recording, name="x.bin", params={"wait": "true"})
        assert response.status_code == 200, response.text
        assert response.content == reply_audio
        messages = await history(client, session["id"])

    (transcription,) = upstream.received(TRANSCRIBE)
    filename, content_type, data = transcription.files["file"]
    assert data == recording  # not transcoded
    assert filename.endswith(".m4a") and content_type == "audio/mp4"
    assert transcription.form["model"] == openai_app_settings.stt_model
    (chat,) = upstream.received(CHAT)
    assert chat.json["messages"][-1] == {"role": "user", "content": "What is the capital of France?"}
    (speech,) = upstream.received(SPEECH)
    assert speech.json["voice"] == "nova" and speech.json["model"] == openai_app_settings.tts_model
    assert speech.json["response_format"] == "mp3"
    assert speech.json["input"] == "Echo: What is the capital of France?"
    assert [m["content"] for m in messages] == [
        "What is the capital of France?",
        "Echo: What is the capital of France?",
    ]


async def test_openai_transcription_failure_stores_no_message_and_keeps_the_recording(
    openai_app_settings: Settings, upstream: FakeOpenAI
) -> None:
    upstream.push(TRANSCRIBE, Scripted(status=401, body=error_body("bad key")))
    async with serve(openai_app_settings) as client:
        session = await new_chat(client)
        response = await upload(client, session["id"], spoken("wav"), params={"wait": "true"})
        assert response.status_code == 502 and response.json()["code"] == "upstream_auth_failed"
        assert await history(client, session["id"]) == []
        turns = list((openai_app_settings.media_dir / "sessions" / session["id"]).glob("*.recording.wav"))
        assert len(turns) == 1


async def test_openai_chat_failure_stores_both_messages_and_fails_the_turn(
    openai_app_settings: Settings, upstream: FakeOpenAI
) -> None:
    upstream.push(CHAT, Scripted(status=429, body=error_body("slow"), headers={"retry-after": "9"}))
    async with serve(openai_app_settings) as client:
        session = await new_chat(client)
        turn = (await upload(client, session["id"], spoken("wav"))).json()
        failed = await finished(client, turn["id"])
        messages = await history(client, session["id"])
    assert failed["status"] == "failed" and failed["error"]["code"] == "upstream_rate_limited"
    assert failed["user_message_id"] == messages[0]["id"] and failed["assistant_message_id"] == messages[1]["id"]
    assert [m["status"] for m in messages] == ["complete", "failed"]
    assert failed["error"] == {"code": "upstream_rate_limited", "detail": failed["error"]["detail"]}
    assert messages[0]["audio_url"] == f"/api/v1/messages/{messages[0]['id']}/audio"  # the recording is kept


async def test_waiting_for_a_rate_limited_turn_passes_the_providers_retry_after(
    openai_app_settings: Settings, upstream: FakeOpenAI
) -> None:
    upstream.push(CHAT, *[Scripted(status=429, body=error_body("slow"), headers={"retry-after": "9"})] * 3)
    async with serve(openai_app_settings) as client:
        session = await new_chat(client)
        response = await upload(client, session["id"], spoken("wav"), params={"wait": "true"})
    assert response.status_code == 503 and response.json()["code"] == "upstream_rate_limited"
    assert response.headers["retry-after"] == "9"


async def test_openai_speech_failure_keeps_both_messages_without_reply_audio(
    openai_app_settings: Settings, upstream: FakeOpenAI
) -> None:
    upstream.push(SPEECH, Scripted(status=500, body=error_body("tts down")))
    async with serve(openai_app_settings) as client:
        session = await new_chat(client)
        response = await upload(client, session["id"], spoken("wav"), params={"wait": "true"})
        assert response.status_code == 502 and response.json()["code"] == "upstream_unavailable"
        user, reply = await history(client, session["id"])
    assert reply["status"] == "complete" and reply["content"].startswith("Echo:")
    assert reply["audio_url"] is None and user["audio_url"] == f"/api/v1/messages/{user['id']}/audio"


async def test_empty_transcript_fails_the_turn_with_no_speech(
    openai_app_settings: Settings, upstream: FakeOpenAI
) -> None:
    upstream.transcript = "   "
    async with serve(openai_app_settings) as client:
        session = await new_chat(client)
        response = await upload(client, session["id"], spoken("wav"), params={"wait": "true"})
        assert response.status_code == 422 and response.json()["code"] == "no_speech_detected"
        assert await history(client, session["id"]) == []


async def test_several_listeners_see_the_same_stages(openai_app_settings: Settings, upstream: FakeOpenAI) -> None:
    upstream.push(TRANSCRIBE, Scripted(delay=0.3))
    async with serve(openai_app_settings) as client:
        session = await new_chat(client)
        turn = (await upload(client, session["id"], spoken("wav"))).json()
        await reached(client, turn["id"], "transcribing")  # all listeners join during the slow transcription
        streams = await asyncio.gather(*(client.get(f"/voice-turns/{turn['id']}/events") for _ in range(3)))
    events = [[(name, data) for name, data in parse_sse(r.text) if name in ("status", "done")] for r in streams]
    seen = [[data["status"] for _, data in stream] for stream in events]
    assert all(s[-3:] == ["thinking", "speaking", "done"] for s in seen)
    assert all(s == sorted(s, key=["queued", "transcribing", "thinking", "speaking", "done"].index) for s in seen)
    assert seen[0] == ["transcribing", "thinking", "speaking", "done"], seen
    assert seen[1] == seen[0] and seen[2] == seen[0], seen  # the same stages, in the same order, for every listener
    assert events[1][-1] == events[0][-1] and events[2][-1] == events[0][-1]  # and the same final state


async def test_deleting_the_session_ends_its_turns_stream_with_failed(
    openai_app_settings: Settings, upstream: FakeOpenAI
) -> None:
    upstream.push(TRANSCRIBE, Scripted(delay=1.5))
    async with serve(openai_app_settings) as client:
        session = await new_chat(client)
        turn = (await upload(client, session["id"], spoken("wav"))).json()
        await reached(client, turn["id"], "transcribing")
        stream = asyncio.create_task(client.get(f"/voice-turns/{turn['id']}/events"))
        await asyncio.sleep(0.2)  # the follower is listening
        assert (await client.delete(f"/sessions/{session['id']}")).status_code == 204
        events = parse_sse((await asyncio.wait_for(stream, timeout=10)).text)
    name, last = events[-1]
    assert name == "failed" and last["status"] == "failed", events
    assert last["error"]["code"] == "voice_turn_not_found", last


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)
