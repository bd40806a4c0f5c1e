"""The fake OpenAI server's default answers and knobs, through the real `openai` SDK."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator

import av
import pytest
from openai import AsyncOpenAI

from tests.fake_openai import SPEECH, FakeOpenAI, speech_seconds


@pytest.fixture
async def sdk(upstream: FakeOpenAI) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(api_key="sk-test", base_url=upstream.base_url, max_retries=0) as client:
        yield client


def duration(audio: bytes) -> float:
    seconds = 0.0
    with av.open(io.BytesIO(audio), "r") as container:
        for frame in container.decode(audio=0):
            seconds += frame.samples / frame.sample_rate
    return seconds


async def test_speech_is_real_audio_as_long_as_the_text(sdk: AsyncOpenAI) -> None:
    short = await sdk.audio.speech.create(model="tts", voice="alloy", input="Hi.")
    long = await sdk.audio.speech.create(model="tts", voice="alloy", input=" ".join(["word"] * 20))
    assert short.response.headers["content-type"] == "audio/mpeg"
    assert duration(short.content) == pytest.approx(speech_seconds("Hi."), abs=0.06)
    assert duration(long.content) == pytest.approx(0.2 + 20 * 0.05, abs=0.06)


@pytest.mark.parametrize(("fmt", "content_type"), [("wav", "audio/wav"), ("flac", "audio/flac"), ("opus", "audio/ogg")])
async def test_speech_honours_the_response_format(sdk: AsyncOpenAI, fmt: str, content_type: str) -> None:
    answer = await sdk.audio.speech.create(model="tts", voice="alloy", input="one two three", response_format=fmt)  # type: ignore[arg-type]
    assert answer.response.headers["content-type"] == content_type
    assert duration(answer.content) == pytest.approx(0.35, abs=0.06)


async def test_speech_audio_set_is_sent_verbatim_and_reset_clears_it(sdk: AsyncOpenAI, upstream: FakeOpenAI) -> None:
    upstream.speech_audio = b"ID3not-really"
    answer = await sdk.audio.speech.create(model="tts", voice="alloy", input="anything")
    assert answer.content == b"ID3not-really"
    upstream.reset()
    assert upstream.speech_audio is None and upstream.received(SPEECH) == []


async def test_reply_text_is_streamed_word_by_word_after_the_delays(sdk: AsyncOpenAI, upstream: FakeOpenAI) -> None:
    upstream.reply_text = "One two. Three four five."
    upstream.reply_delay = 0.05
    upstream.token_delay = 0.02
    started = time.perf_counter()
    stream = await sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], stream=True)
    pieces = [
        chunk.choices[0].delta.content async for chunk in stream if chunk.choices and chunk.choices[0].delta.content
    ]
    assert pieces == ["One ", "two. ", "Three ", "four ", "five."]
    assert time.perf_counter() - started >= 0.05 + 5 * 0.02

    started = time.perf_counter()
    whole = await sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert whole.choices[0].message.content == "One two. Three four five."
    assert time.perf_counter() - started >= 0.05 + 5 * 0.02  # as long as the streamed reply


async def test_transcribe_and_speech_delays(sdk: AsyncOpenAI, upstream: FakeOpenAI) -> None:
    upstream.transcribe_delay = 0.1
    upstream.speech_delay = 0.1
    started = time.perf_counter()
    text = await sdk.audio.transcriptions.create(model="stt", file=("a.wav", b"RIFF", "audio/wav"))
    assert text.text == upstream.transcript
    assert time.perf_counter() - started >= 0.1
    started = time.perf_counter()
    await sdk.audio.speech.create(model="tts", voice="alloy", input="x")
    assert time.perf_counter() - started >= 0.1
    upstream.reset()
    assert (upstream.transcribe_delay, upstream.speech_delay, upstream.token_delay, upstream.reply_text) == (
        0,
        0,
        0,
        None,
    )
