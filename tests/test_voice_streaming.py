"""Streamed voice replies (DESIGN §10): sentences spoken while the model writes, segments, barge-in and the stop button.

The openai provider talks to the fake server, which streams the reply a word at a time and answers each speech
request with real audio as long as its text; the offline engines are tested in test_voice_pipeline.py.
"""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import av
import pytest

from tests.apps import openai_settings, serve
from tests.fake_openai import CHAT, SPEECH, TRANSCRIBE, FakeOpenAI, Scripted, speech_seconds
from tests.helpers import assert_problem, history, new_chat, parse_sse
from tests.voice import finished, spoken, spoken_so_far, upload
from webapp.ai.sentences import split_text
from webapp.config import Settings

SSE = {"Accept": "text/event-stream"}
REPLY = (
    "Paris is the capital of France. It has been the capital for centuries, with a short break. "
    "About two million people live in the city itself. The wider region is home to twelve million. "
    "It sits on the Seine, in the north of the country. Would you like to know more?"
)


def seconds_of(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        return float(sum(frame.samples for frame in container.decode(stream)) / stream.rate)


@pytest.fixture
def streaming(database_url: str, tmp_path: Path, upstream: FakeOpenAI) -> Settings:
    upstream.transcript = "Tell me about Paris."
    upstream.reply_text = REPLY
    return openai_settings(database_url, tmp_path, upstream, openai_max_retries=0)


async def test_the_first_sentence_is_spoken_while_the_model_is_still_writing(
    streaming: Settings, upstream: FakeOpenAI
) -> None:
    upstream.token_delay = 0.02
    async with serve(streaming) as client:
        session = await new_chat(client)
        turn = (await upload(client, session["id"], spoken("wav"))).json()
        events = parse_sse((await client.get(f"/voice-turns/{turn['id']}/events")).text)
        names = [name for name, _ in events]
        done = events[-1][1]
        assert names[-1] == "done", names
        # An `audio` event came before the last piece of the reply: it was spoken before the reply was written.
        last_token = max(i for i, name in enumerate(names) if name == "token")
        assert names.index("audio") < last_token, names

        sentences = split_text(REPLY)
        assert len(sentences) >= 6
        audio = [data for name, data in events if name == "audio"]
        assert [a["text"] for a in audio] == sentences == [s["text"] for s in done["segments"]]
        # One speech request per sentence, in order, each with the agent's voice.
        assert [r.json["input"] for r in upstream.received(SPEECH)] == sentences
        assert {r.json["voice"] for r in upstream.received(SPEECH)} == {"alloy"}
        assert done["timings_ms"]["first_audio"] < done["timings_ms"]["transcribing"] + done["timings_ms"]["thinking"]

        # Each segment plays on its own; the whole reply is one file with the duration of them all.
        lengths = []
        for segment in audio:
            response = await client.get(segment["url"].removeprefix("/api/v1"))
            assert response.status_code == 200 and response.headers["content-type"] == "audio/mpeg"
            lengths.append(seconds_of(response.content))
        assert lengths == pytest.approx([speech_seconds(s) for s in sentences], abs=0.06)
        whole = await client.get(done["reply_audio_url"].removeprefix("/api/v1"))
        # (Each MP3 segment ends with its encoder's padding, a few tens of ms, which the joined file keeps.)
        assert seconds_of(whole.content) == pytest.approx(sum(lengths), abs=0.06 * len(lengths))
        reply = (await history(client, session["id"]))[-1]
        assert reply["content"] == REPLY and reply["status"] == "complete" and reply["audio_url"]


async def test_a_segment_is_served_with_ranges_and_is_404_until_it_exists(
    streaming: Settings, upstream: FakeOpenAI
) -> None:
    async with serve(streaming) as client:
        session = await new_chat(client)
        turn = await finished(client, (await upload(client, session["id"], spoken("wav"))).json()["id"])
        url = f"/voice-turns/{turn['id']}/segments/0"
        whole = await client.get(url)
        assert whole.status_code == 200 and whole.headers["accept-ranges"] == "bytes"
        part = await client.get(url, headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and part.content == whole.content[:100]
        not_modified = await client.get(url, headers={"If-None-Match": whole.headers["etag"]})
        assert not_modified.status_code == 304
        beyond = await client.get(f"/voice-turns/{turn['id']}/segments/{len(turn['segments'])}")
        assert_problem(beyond, 404, "segment_not_found")
        assert_problem(await client.get("/voice-turns/nope/segments/0"), 404, "voice_turn_not_found")
        assert (await client.get(f"/voice-turns/{turn['id']}/segments/-1")).status_code == 422


async def test_the_whole_reply_path_speaks_once_when_streaming_is_off(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI
) -> None:
    upstream.reply_text = REPLY
    settings = openai_settings(database_url, tmp_path, upstream, stream_voice_replies=False)
    async with serve(settings) as client:
        session = await new_chat(client)
        turn = await finished(client, (await upload(client, session["id"], spoken("wav"))).json()["id"])
    assert turn["status"] == "done"
    assert [r.json["input"] for r in upstream.received(SPEECH)] == [REPLY]
    assert [s["text"] for s in turn["segments"]] == [REPLY]
    assert not upstream.received(CHAT)[0].json.get("stream")


async def test_barge_in_stops_the_reply_keeps_what_was_said_and_frees_the_session(
    streaming: Settings, upstream: FakeOpenAI
) -> None:
    upstream.token_delay = 0.05  # the whole reply would take ~3 s to write
    async with serve(streaming) as client:
        session = await new_chat(client)
        turn = (await upload(client, session["id"], spoken("wav"))).json()
        following = asyncio.create_task(client.get(f"/voice-turns/{turn['id']}/events"))
        await spoken_so_far(client, turn["id"])
        cancelled = await client.post(f"/voice-turns/{turn['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        state = cancelled.json()
        assert state["status"] == "cancelled" and state["segments"] and state["reply_audio_url"] is None

        # The session is free at once: a typed message is answered without waiting for the rest of the reply.
        upstream.token_delay = 0.0
        typed = await asyncio.wait_for(client.post(f"/sessions/{session['id']}/messages", json={"content": "hi"}), 2)
        assert typed.status_code == 201

        events = parse_sse((await following).text)
        assert events[-1] == ("cancelled", state)
        user, reply, *_ = await history(client, session["id"])
        assert user["content"] == "Tell me about Paris." and user["source"] == "voice"
        assert reply["status"] == "cancelled" and reply["id"] == state["assistant_message_id"]
        assert reply["content"] and REPLY.startswith(reply["content"]) and reply["content"] != REPLY
        assert reply["content"] == state["reply_text"]
        # The sentences spoken before the stop are still there to play.
        for segment in state["segments"]:
            assert (await client.get(segment["url"].removeprefix("/api/v1"))).status_code == 200
        # Cancelling again, or an unknown turn.
        assert_problem(await client.post(f"/voice-turns/{turn['id']}/cancel"), 409, "turn_finished")
        assert_problem(await client.post("/voice-turns/nope/cancel"), 404, "voice_turn_not_found")


async def test_barge_in_while_transcribing_stores_nothing(streaming: Settings, upstream: FakeOpenAI) -> None:
    upstream.push(TRANSCRIBE, Scripted(delay=2.0))
    async with serve(streaming) as client:
        session = await new_chat(client)
        turn = (await upload(client, session["id"], spoken("wav"))).json()
        for _ in range(400):
            if upstream.received(TRANSCRIBE):
                break
            await asyncio.sleep(0.005)
        response = await client.post(f"/sessions/{session['id']}/cancel")
        assert response.status_code == 204, response.text
        state = (await client.get(f"/voice-turns/{turn['id']}")).json()
        assert state["status"] == "cancelled" and state["user_message_id"] is None
        assert await history(client, session["id"]) == []
        assert not upstream.received(CHAT)


async def test_wait_true_on_a_cancelled_turn_is_a_409(streaming: Settings, upstream: FakeOpenAI) -> None:
    upstream.token_delay = 0.05
    async with serve(streaming) as client:
        session = await new_chat(client)
        waiting = asyncio.create_task(upload(client, session["id"], spoken("wav"), params={"wait": "true"}))
        for _ in range(800):
            if upstream.received(SPEECH):
                break
            await asyncio.sleep(0.005)
        assert (await client.post(f"/sessions/{session['id']}/cancel")).status_code == 204
        assert_problem(await waiting, 409, "turn_cancelled")


async def test_the_stop_button_ends_a_streamed_text_reply_with_cancelled(
    streaming: Settings, upstream: FakeOpenAI
) -> None:
    upstream.token_delay = 0.05
    async with serve(streaming) as client:
        session = await new_chat(client)
        assert_problem(await client.post(f"/sessions/{session['id']}/cancel"), 409, "no_turn_running")
        sending = asyncio.create_task(
            client.post(f"/sessions/{session['id']}/messages", json={"content": "Paris?"}, headers=SSE)
        )
        for _ in range(800):
            if upstream.received(CHAT):
                break
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.2)  # a few words written
        assert (await client.post(f"/sessions/{session['id']}/cancel")).status_code == 204
        events = parse_sse((await sending).text)
        name, turn = events[-1]
        assert name == "cancelled"
        written = "".join(data["delta"] for name, data in events if name == "token")
        assert turn["assistant_message"]["status"] == "cancelled"
        assert turn["assistant_message"]["content"] == written and written and REPLY.startswith(written)
        assert written != REPLY
        # What was written is context for the next turn ("go on" can continue it).
        upstream.token_delay = 0.0
        assert (await client.post(f"/sessions/{session['id']}/messages", json={"content": "go on"})).status_code == 201
        context = upstream.received(CHAT)[-1].json["messages"]
        assert {"role": "assistant", "content": written} in context
        assert_problem(await client.post("/sessions/nope/cancel"), 404, "session_not_found")


async def test_simultaneous_voice_turns_do_not_queue_behind_the_voice_workers(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI
) -> None:
    # One voice worker: were the cap on whole turns, the second transcription would start only after the first turn.
    settings = openai_settings(database_url, tmp_path, upstream, voice_workers=1)
    upstream.transcribe_delay = 1.0
    async with serve(settings) as client:
        sessions = [await new_chat(client) for _ in range(4)]
        uploads = await asyncio.gather(*(upload(client, s["id"], spoken("wav")) for s in sessions))
        for _ in range(150):  # well before the first transcription (1 s) answers
            if len(upstream.received(TRANSCRIBE)) == len(sessions):
                break
            await asyncio.sleep(0.005)
        in_flight = len(upstream.received(TRANSCRIBE))
        turns = [await finished(client, u.json()["id"]) for u in uploads]
    assert in_flight == len(sessions)
    assert all(turn["status"] == "done" for turn in turns)


async def test_a_failed_sentence_fails_the_turn_and_keeps_the_reply_text(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI
) -> None:
    upstream.reply_text = REPLY
    upstream.push(SPEECH, Scripted(), Scripted(status=400, body={"error": {"message": "bad input"}}))
    # One request at a time, so the second sentence is the second request the fake sees.
    settings = openai_settings(database_url, tmp_path, upstream, speech_requests_in_flight=1, openai_max_retries=0)
    async with serve(settings) as client:
        session = await new_chat(client)
        turn = await finished(client, (await upload(client, session["id"], spoken("wav"))).json()["id"])
        assert turn["status"] == "failed" and turn["error"]["code"] == "upstream_rejected"
        assert len(turn["segments"]) == 1  # the sentence spoken before the failure stays
        reply = (await history(client, session["id"]))[-1]
        assert reply["content"] == REPLY and reply["status"] == "complete"


async def test_undecodable_speech_fails_the_turn_when_the_reply_is_joined(
    streaming: Settings, upstream: FakeOpenAI
) -> None:
    upstream.speech_audio = b"not audio at all"
    async with serve(streaming) as client:
        session = await new_chat(client)
        turn = await finished(client, (await upload(client, session["id"], spoken("wav"))).json()["id"])
    assert turn["status"] == "failed" and turn["error"]["code"] == "upstream_unavailable"
    assert len(turn["segments"]) == len(split_text(REPLY))  # each was played as it came


@pytest.mark.parametrize("in_flight", [1, 3])
async def test_speech_requests_in_flight_are_bounded(
    database_url: str, tmp_path: Path, upstream: FakeOpenAI, in_flight: int
) -> None:
    upstream.reply_text = REPLY
    upstream.speech_delay = 0.1  # the reply is written at once: every sentence is ready to be spoken together
    settings = openai_settings(database_url, tmp_path, upstream, speech_requests_in_flight=in_flight)
    async with serve(settings) as client:
        session = await new_chat(client)
        turn = await finished(client, (await upload(client, session["id"], spoken("wav"))).json()["id"])
    assert turn["status"] == "done" and len(turn["segments"]) == len(split_text(REPLY)) > in_flight
    assert upstream.speech_in_flight_peak == in_flight
