"""The same browser round trips with the openai provider ("with a key"): the real SDK against the test suite's
fake OpenAI-compatible server, which answers chat, transcription and speech like OpenAI would."""

from __future__ import annotations

import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import open_context, watched_page
from e2e.server import Server, running_server
from e2e.test_ui import FETCH, PLAYED, VOICE_TIMEOUT_MS, chat_ready, hold_to_talk
from tests.fake_openai import CHAT, SPEECH, TRANSCRIBE, FakeOpenAI
from webapp.audio import encode_pcm

QUESTION = Path(__file__).resolve().parents[1] / "tests" / "data" / "question.wav"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    with wave.open(str(QUESTION)) as clip:  # a real, playable MP3 as the "spoken" reply
        fake.speech_audio = encode_pcm(clip.readframes(clip.getnframes()), sample_rate=clip.getframerate(), fmt="mp3")
    fake.start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def openai_server(tmp_path_factory: pytest.TempPathFactory, upstream: FakeOpenAI) -> Iterator[Server]:
    env = {"AI_PROVIDER": "openai", "OPENAI_API_KEY": "sk-e2e", "OPENAI_BASE_URL": upstream.base_url}
    with running_server(tmp_path_factory.mktemp("openai-server"), extra_env=env) as server:
        yield server


@pytest.fixture
def openai_page(browser: Browser, openai_server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = open_context(browser, openai_server, microphone=True)
    yield from watched_page(context, openai_server, request)
    context.close()


def test_text_and_voice_with_the_openai_provider(openai_page: Page, upstream: FakeOpenAI) -> None:
    page = openai_page
    upstream.transcript = "What is the capital of France?"
    chat_ready(page)
    expect(page.locator(".badge")).to_have_text("openai")

    page.fill("#message-input", "Hello there")
    page.get_by_role("button", name="Send").click()
    reply = page.locator('#history .message[data-role="assistant"]')
    expect(reply.locator(".content")).to_have_text("Echo: Hello there")
    assert upstream.received(CHAT)[-1].json["stream"] is True

    hold_to_talk(page)
    expect(page.locator("#ptt-status")).to_have_text("Done", timeout=VOICE_TIMEOUT_MS)
    voice = page.locator('#history .message[data-source="voice"]')
    expect(voice).to_have_count(2)
    expect(voice.nth(0).locator(".content")).to_have_text("What is the capital of France?")
    expect(voice.nth(1).locator(".content")).to_have_text("Echo: What is the capital of France?")
    page.wait_for_function(PLAYED, timeout=15_000)

    (transcription,) = upstream.received(TRANSCRIBE)
    filename, content_type, recording = transcription.files["file"]
    assert filename.endswith(".webm") and content_type == "audio/webm"  # Chromium's recording, not transcoded
    assert recording[:4] == b"\x1a\x45\xdf\xa3"  # the EBML magic of a WebM file
    assert upstream.received(SPEECH)[-1].json["input"] == "Echo: What is the capital of France?"
    src = voice.nth(1).locator("audio").get_attribute("src")
    assert src and page.evaluate(FETCH, src)["status"] == 200
