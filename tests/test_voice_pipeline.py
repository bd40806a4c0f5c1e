"""Voice turns end to end with real audio: offline engines, every upload format, SSE stages, wait=true, recovery."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from sqlalchemy import delete, update

from tests.apps import make_settings, serve
from tests.helpers import assert_problem, history, new_chat, parse_sse
from tests.stt_clips import words
from tests.voice import finished, spoken, upload
from webapp.config import Settings
from webapp.db import utcnow
from webapp.models import ChatSession, Message, VoiceTurn
from webapp.services.runtime import Runtime


def decoded_seconds(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return float(samples / stream.rate)


@pytest.mark.parametrize("fmt", ["webm", "ogg", "wav", "mp3", "mp4", "m4a", "flac"])
async def test_round_trip_in_every_format(client: httpx.AsyncClient, chat: dict[str, Any], fmt: str) -> None:
    recording = spoken(fmt)
    # A misleading file name and content type: the format is known by its bytes.
    response = await upload(client, chat["id"], recording, name="recording.txt", content_type="text/plain")
    assert response.status_code == 202, response.text
    queued = response.json()
    assert response.headers["location"] == f"/api/v1/voice-turns/{queued['id']}"
    assert queued["status"] == "queued" and queued["session_id"] == chat["id"]

    turn = await finished(client, queued["id"])
    assert turn["status"] == "done", turn
    # faster-whisper writes "One, two, three, four, five." or "1, 2, 3, 4, 5" depending on the encoding: word for word.
    assert words(turn["transcript"]) == ["one", "two", "three", "four", "five"], turn["transcript"]
    assert set(turn["timings_ms"]) == {"transcribing", "thinking", "speaking", "first_audio"}

    user, reply = await history(client, chat["id"])
    assert (user["id"], reply["id"]) == (turn["user_message_id"], turn["assistant_message_id"])
    assert user["source"] == reply["source"] == "voice"
    assert user["content"] == turn["transcript"] and reply["content"] == turn["reply_text"]
    assert turn["transcript"] in reply["content"]  # the reply was made from the transcript

    original = await client.get(user["audio_url"].removeprefix("/api/v1"))
    assert original.status_code == 200 and original.content == recording  # byte for byte as uploaded
    spoken_reply = await client.get(turn["reply_audio_url"].removeprefix("/api/v1"))
    assert spoken_reply.headers["content-type"] == "audio/mpeg"
    assert decoded_seconds(spoken_reply.content) > 2.0  # a real, decodable spoken reply


async def test_wait_true_answers_with_the_reply_audio(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    response = await upload(client, chat["id"], spoken("wav"), params={"wait": "true"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "audio/mpeg"
    assert int(response.headers["content-length"]) == len(response.content)
    assert decoded_seconds(response.content) > 2.0
    turn = (await client.get(f"/voice-turns/{response.headers['x-voice-turn-id']}")).json()
    assert turn["status"] == "done"
    assert response.headers["x-user-message-id"] == turn["user_message_id"]
    assert response.headers["x-assistant-message-id"] == turn["assistant_message_id"]


async def test_events_stream_every_stage_in_order(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    turn = (await upload(client, chat["id"], spoken("webm"))).json()
    response = await client.get(f"/voice-turns/{turn['id']}/events")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    names = [name for name, _ in events]
    stages = [(name, data) for name, data in events if name in ("status", "done")]
    statuses = [data["status"] for _, data in stages]
    assert names[-1] == "done" and names.count("done") == 1
    # Connected right after the 202: it may have missed "queued", but never a later stage, and never one twice.
    assert statuses[-4:] == ["transcribing", "thinking", "speaking", "done"]
    assert statuses in (["queued", "transcribing", "thinking", "speaking", "done"], statuses[-4:])
    assert all(data["id"] == turn["id"] for _, data in stages)
    done = events[-1][1]
    assert done["reply_audio_url"]
    # The transcript once, before the reply's pieces; the reply's text streamed; each spoken sentence in order.
    assert names.count("transcript") == 1 and names.index("transcript") < names.index("token")
    assert "".join(data["delta"] for name, data in events if name == "token") == done["reply_text"]
    audio = [data for name, data in events if name == "audio"]
    assert audio == done["segments"] and [a["index"] for a in audio] == list(range(len(audio))) and audio


async def test_late_listener_gets_the_final_state_and_the_stream_ends(
    client: httpx.AsyncClient, chat: dict[str, Any]
) -> None:
    turn = (await upload(client, chat["id"], spoken("wav"))).json()
    done = await finished(client, turn["id"])
    responses = await asyncio.gather(*(client.get(f"/voice-turns/{turn['id']}/events") for _ in range(3)))
    segments = [("audio", segment) for segment in done["segments"]]
    assert segments
    for response in responses:  # the state first, then everything so far, then the end
        assert parse_sse(response.text) == [("status", done), ("transcript", done), *segments, ("done", done)]


async def test_range_requests_and_etag(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    recording = spoken("ogg")
    turn = await finished(client, (await upload(client, chat["id"], recording)).json()["id"])
    url = f"/messages/{turn['user_message_id']}/audio"
    whole = await client.get(url)
    assert whole.headers["content-type"] == "audio/ogg" and whole.headers["accept-ranges"] == "bytes"
    assert int(whole.headers["content-length"]) == len(recording) and whole.headers["etag"]
    part = await client.get(url, headers={"range": "bytes=10-109"})
    assert part.status_code == 206
    assert part.content == recording[10:110]
    assert part.headers["content-range"] == f"bytes 10-109/{len(recording)}"
    tail = await client.get(url, headers={"range": "bytes=-20"})
    assert tail.status_code == 206 and tail.content == recording[-20:]

    # Conditional requests: the client's copy is current, so no body.
    for headers in ({"if-none-match": whole.headers["etag"]}, {"if-modified-since": whole.headers["last-modified"]}):
        cached = await client.get(url, headers=headers)
        assert cached.status_code == 304 and cached.content == b"", headers
        assert cached.headers["etag"] == whole.headers["etag"]
    weak = await client.get(url, headers={"if-none-match": f'"x", W/{whole.headers["etag"]}'})
    assert weak.status_code == 304  # If-None-Match compares weakly
    undated = whole.headers["last-modified"].replace("GMT", "-0000")
    assert (await client.get(url, headers={"if-modified-since": undated})).status_code == 304
    stale = await client.get(url, headers={"if-none-match": '"another-version"'})
    assert stale.status_code == 200 and stale.content == recording
    assert whole.headers["cache-control"] == stale.headers["cache-control"] == "private, no-cache"

    # If-Range: a range of the version the client has; for another version, the whole file.
    moved = await client.get(url, headers={"range": "bytes=10-19", "if-range": '"old"'})
    assert moved.status_code == 200 and moved.content == recording
    other_unit = await client.get(url, headers={"range": "pages=1-2"})  # a unit we do not know: ignored
    assert other_unit.status_code == 200 and other_unit.content == recording
    same = await client.get(url, headers={"range": "bytes=10-19", "if-range": whole.headers["etag"]})
    assert same.status_code == 206 and same.content == recording[10:20]
    head = await client.head(url)
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) == len(recording)

    # Ranges the file cannot serve are problem documents, not plain text.
    for bad in ("bytes 0-10", "bytes=50-10", "bytes="):
        assert_problem(await client.get(url, headers={"range": bad}), 400, "invalid_range")
    beyond = await client.get(url, headers={"range": f"bytes={len(recording)}-"})
    assert_problem(beyond, 416, "range_not_satisfiable")
    assert beyond.headers["content-range"] == f"bytes */{len(recording)}"


async def test_text_and_voice_turns_share_one_history(client: httpx.AsyncClient, chat: dict[str, Any]) -> None:
    await client.post(f"/sessions/{chat['id']}/messages", json={"content": "typed first"})
    turn = await finished(client, (await upload(client, chat["id"], spoken("webm"))).json()["id"])
    await client.post(f"/sessions/{chat['id']}/messages", json={"content": "typed last"})
    messages = await history(client, chat["id"])
    assert [(m["role"], m["source"]) for m in messages] == [
        ("user", "text"),
        ("assistant", "text"),
        ("user", "voice"),
        ("assistant", "voice"),
        ("user", "text"),
        ("assistant", "text"),
    ]
    assert messages[2]["id"] == turn["user_message_id"]
    # The voice turn's reply was made with the typed turn before it in context (offline replies count messages).
    assert "message number 2" in messages[3]["content"] and "message number 3" in messages[5]["content"]


async def test_text_message_sent_during_a_voice_turn_waits_its_turn(
    client: httpx.AsyncClient, chat: dict[str, Any]
) -> None:
    turn = (await upload(client, chat["id"], spoken("wav"))).json()
    typed = await client.post(f"/sessions/{chat['id']}/messages", json={"content": "typed meanwhile"})
    assert typed.status_code == 201
    await finished(client, turn["id"])
    roles = [m["role"] for m in await history(client, chat["id"])]
    assert roles == ["user", "assistant", "user", "assistant"]


async def test_deleting_the_session_deletes_its_audio(
    client: httpx.AsyncClient, chat: dict[str, Any], settings: Settings
) -> None:
    turn = await finished(client, (await upload(client, chat["id"], spoken("wav"))).json()["id"])
    folder = settings.media_dir / "sessions" / chat["id"]
    assert len(list(folder.iterdir())) == 2 + len(turn["segments"])  # the recording, the reply and its sentences
    assert (await client.delete(f"/agents/{chat['agent_id']}")).status_code == 204
    assert not folder.exists()


async def _crash_turn(runtime: Runtime, turn_id: str, status: str) -> None:
    """Make a finished turn look as if its worker died mid-stage: that status, a heartbeat long stopped, and (before
    `thinking`) none of the messages it stored yet."""
    async with runtime.db.write() as db:
        turn = await db.get(VoiceTurn, turn_id)
        assert turn is not None
        if status in ("queued", "transcribing"):
            await db.execute(delete(Message).where(Message.id.in_([turn.user_message_id, turn.assistant_message_id])))
            await db.execute(
                update(ChatSession)
                .where(ChatSession.id == turn.session_id)
                .values(message_count=ChatSession.message_count - 2)
            )
            turn.user_message_id = turn.assistant_message_id = None
            turn.segments = []
        turn.status, turn.heartbeat_at = status, utcnow().replace(year=2000)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [("queued", "done"), ("transcribing", "done"), ("thinking", "failed"), ("speaking", "failed")],
)
async def test_interrupted_turn_is_resumed_or_failed_at_start_up(
    database_url: str, tmp_path: Path, status: str, outcome: str
) -> None:
    settings = make_settings(database_url, tmp_path, voice_heartbeat_seconds=0.2)
    async with serve(settings) as client:
        session = await new_chat(client)
        turn = await finished(client, (await upload(client, session["id"], spoken("wav"))).json()["id"])
        # Pretend a second recording was accepted and then the server died before or during its pipeline.
        interrupted = await upload(client, session["id"], spoken("wav"), params={"wait": "true"})
        turn_id = interrupted.headers["x-voice-turn-id"]
        interrupted_turn = (await client.get(f"/voice-turns/{turn_id}")).json()
        runtime: Runtime = client._transport.app.state.runtime  # type: ignore[attr-defined]
        await _crash_turn(runtime, turn_id, status)
        before = await history(client, session["id"])
    async with serve(settings) as client:  # the restart
        recovered = await finished(client, turn_id)
        after = await history(client, session["id"])
        resumed_audio = (
            (await client.get("http://test" + after[-2]["audio_url"])).content if outcome == "done" else None
        )
        segments_played = [(await client.get("http://test" + s["url"])).status_code for s in recovered["segments"]]
    assert turn["status"] == "done"
    assert recovered["status"] == outcome
    if outcome == "failed":  # it was thinking or speaking: nothing is re-run, nothing is lost or doubled
        assert recovered["error"]["code"] == "interrupted"
        assert after == before
        assert recovered["segments"] == interrupted_turn["segments"] and recovered["segments"]  # what was spoken stays
        assert all(played == 200 for played in segments_played)
    else:  # it had not been transcribed: it runs again from the kept recording, once
        assert len(before) == 2 and len(after) == 4
        assert [m["id"] for m in after[2:]] == [recovered["user_message_id"], recovered["assistant_message_id"]]
        assert resumed_audio == spoken("wav")


async def test_five_second_clip_stage_timings(database_url: str, tmp_path: Path) -> None:
    """Not a speed test: proves the per-stage timings are recorded for a realistic clip (the bench prints them)."""
    settings = make_settings(database_url, tmp_path)
    text = "please tell me what the weather will be like tomorrow morning in the city, and whether to take an umbrella"
    clip = spoken("webm", text)
    assert 4.0 <= decoded_seconds(clip) <= 6.5  # about five seconds, as the example
    async with serve(settings) as client:
        session = await new_chat(client)
        started = time.perf_counter()
        turn = await finished(client, (await upload(client, session["id"], clip)).json()["id"])
        elapsed_ms = (time.perf_counter() - started) * 1000
    assert turn["status"] == "done"
    timings = turn["timings_ms"]
    assert set(timings) == {"transcribing", "thinking", "speaking", "first_audio"}
    assert timings["transcribing"] > 0 and timings["speaking"] > 0 and timings["thinking"] > 0
    stages = timings["transcribing"] + timings["thinking"] + timings["speaking"]
    assert stages <= elapsed_ms  # measured within the turn, not made up
    assert timings["transcribing"] < timings["first_audio"] <= elapsed_ms  # spoken after hearing, before the end


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path)
