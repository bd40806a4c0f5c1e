"""The same browser round trips with the openai provider ("with a key"): the real SDK against the test suite's
fake OpenAI-compatible server, which answers chat, transcription and speech like OpenAI would (its speech is a real
MP3 tone, 0.2 s + 0.05 s per word). Its latency knobs make a streamed spoken reply measurable: the segments must play
back to back, and talking over them must stop them (barge-in).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import open_context, watched_page
from e2e.server import Server
from e2e.test_ui import (
    FETCH,
    HOLD_MS,
    SOUNDING,
    VOICE_TIMEOUT_MS,
    chat_ready,
    check_segments_played,
    talk,
)
from tests.fake_openai import CHAT, SPEECH, SPEECH_RATE, TRANSCRIBE, FakeOpenAI, tone
from webapp.audio import encode_pcm

MAX_GAP_MS = 150.0
"""The longest silence allowed between one spoken segment's end and the next one's start."""

REPLY = (
    "Trains leave the central station every twenty minutes during the day. "
    "The fastest one reaches the coast in a little under two hours. "
    "Buy your ticket before boarding, because conductors charge a fee on board. "
    "A day return costs about the same as two single tickets. "
    "Sit on the left side of the carriage for the best view of the sea."
)

STORY = " ".join(f"This is sentence number {n} of a long story that goes on and on." for n in range(1, 21))


@pytest.fixture
def openai_page(browser: Browser, openai_server: Server, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = open_context(browser, openai_server, microphone=True)
    yield from watched_page(context, openai_server, request)
    context.close()


def status_at(page: Page, text: str) -> float:
    """When #ptt-status first showed `text` (the page's performance.now(), ms)."""
    timeline: list[dict[str, Any]] = page.evaluate("window.__timeline")
    return float(next(entry["at"] for entry in timeline if entry["text"] == text))


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

    turn_id = talk(page)
    expect(page.locator("#ptt-status")).to_have_text("Done", timeout=VOICE_TIMEOUT_MS)
    voice = page.locator('#history .message[data-source="voice"]')
    expect(voice).to_have_count(2)
    expect(voice.nth(0).locator(".content")).to_have_text("What is the capital of France?")
    expect(voice.nth(1).locator(".content")).to_have_text("Echo: What is the capital of France?")
    check_segments_played(page, turn_id)

    (transcription,) = upstream.received(TRANSCRIBE)
    filename, content_type, recording = transcription.files["file"]
    assert filename.endswith(".webm") and content_type == "audio/webm"  # Chromium's recording, not transcoded
    assert recording[:4] == b"\x1a\x45\xdf\xa3"  # the EBML magic of a WebM file
    assert upstream.received(SPEECH)[-1].json["input"] == "Echo: What is the capital of France?"
    src = voice.nth(1).locator("audio").get_attribute("src")
    assert src and page.evaluate(FETCH, src)["status"] == 200


def test_a_streamed_reply_plays_its_segments_back_to_back(openai_page: Page, upstream: FakeOpenAI) -> None:
    page = openai_page
    upstream.transcript = "How do I get to the coast by train?"
    upstream.reply_text = REPLY
    upstream.token_delay = 0.03
    upstream.speech_delay = 0.1
    chat_ready(page)

    turn_id = talk(page)
    expect(page.locator("#ptt-status")).to_have_text("Done", timeout=VOICE_TIMEOUT_MS)
    expect(page.locator("#chat-error")).to_be_empty()
    reply = page.locator('#history .message[data-role="assistant"][data-source="voice"]')
    expect(reply.locator(".content")).to_have_text(REPLY)

    # (a) Every segment played to its end, in order (one per sentence here).
    playback = check_segments_played(page, turn_id)
    assert len(playback) == REPLY.count(". ") + 1, playback
    assert [call.json["input"] for call in upstream.received(SPEECH)][: len(playback)] == re.split(r"(?<=\.) ", REPLY)

    # (b) Back to back: the silence between one segment's `ended` and the next one's `playing`.
    gaps = [after["playing"] - before["ended"] for before, after in itertools.pairwise(playback)]
    print("gaps between spoken segments (ms): " + ", ".join(f"{gap:.1f}" for gap in gaps))
    assert max(gaps) <= MAX_GAP_MS, f"a gap of {max(gaps):.0f} ms between segments (at most {MAX_GAP_MS:.0f})"

    # (c) The transcript showed as soon as it existed, and the reply was heard while it was still being written.
    asked = page.evaluate("window.__asked")
    done = status_at(page, "Done")
    assert asked is not None and asked < playback[0]["playing"] < done, (asked, playback[0], done)

    # (d) The reply text streamed in: several growing partial texts, each a start of the final one.
    partials = [" ".join(text.split()) for text in page.evaluate("window.__partials")]
    growing = [text for text in dict.fromkeys(partials) if text and len(text) < len(REPLY)]
    assert len(growing) >= 5, f"the reply did not stream: {partials}"
    assert all(REPLY.startswith(text) for text in growing), growing


def test_talking_over_a_reply_stops_it(openai_page: Page, upstream: FakeOpenAI) -> None:
    page = openai_page
    upstream.transcript = "Tell me a long story."
    upstream.reply_text = STORY
    upstream.token_delay = 0.08
    upstream.speech_delay = 0.1
    # Every sentence lasts 3 s, so the barge-in below lands while one plays, however slow the machine is.
    upstream.speech_audio = encode_pcm(tone(3.0), sample_rate=SPEECH_RATE, fmt="mp3")
    chat_ready(page)
    session_id = page.url.rsplit("/", 1)[1]

    turn_id = talk(page)
    page.wait_for_function("() => window.__playback.some((p) => p.playing !== null)", timeout=VOICE_TIMEOUT_MS)
    barged_at: float = page.evaluate("performance.now()")
    # Hold talk (Space on the focused button) while the first sentence plays, then cancel that recording with Esc.
    # Not with the mouse: the stopped reply's stored bubble is taller than the streaming one, which moves the button
    # from under a still pointer, and the `mouseleave` that follows cancels the recording (reported, see chat.js).
    talk_button = page.locator("#ptt")
    talk_button.focus()
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith(f"/{session_id}/cancel")) as stop:
        page.keyboard.down("Space")
        expect(talk_button).to_have_class(re.compile(r"\brecording\b"))
        page.keyboard.press("Escape")
        page.keyboard.up("Space")
    assert stop.value.status == 204, stop.value.status

    page.wait_for_function("() => window.__stages.includes('Stopped')", timeout=VOICE_TIMEOUT_MS)
    expect(page.locator("#ptt-status")).to_have_text(re.compile(r"^(Stopped|Cancelled\.)$"))
    expect(page.locator("#chat-error")).to_be_empty()
    expect(page.locator("#reply-queue audio")).to_have_count(0)
    page.wait_for_timeout(1_000)  # segments spoken before the cancel took effect must not start playing now
    assert not page.evaluate(SOUNDING), "a reply segment is still playing after the barge-in"
    playback: list[dict[str, Any]] = page.evaluate("window.__playback")
    assert all(entry["added"] < barged_at for entry in playback), playback
    assert not [entry for entry in playback if (entry["playing"] or 0) >= barged_at], playback
    assert any(entry["playing"] is not None and entry["ended"] is None for entry in playback), (
        f"no segment was cut off: {playback}"
    )

    # The turn stopped, and what had been written is kept, marked cancelled.
    turn = page.request.get(f"/api/v1/voice-turns/{turn_id}").json()
    assert turn["status"] == "cancelled", turn
    history = page.request.get(f"/api/v1/sessions/{session_id}/messages").json()["items"]
    assert [(m["role"], m["status"]) for m in history] == [("user", "complete"), ("assistant", "cancelled")], history
    written = history[1]["content"]
    assert written and len(written) < len(STORY) and STORY.startswith(written), written
    reply = page.locator('#history .message[data-role="assistant"]')
    expect(reply).to_have_count(1)
    expect(reply).to_have_class(re.compile(r"\bcancelled\b"))
    expect(reply.locator("header")).to_contain_text("stopped")
    expect(reply.locator(".content")).to_have_text(written)
    expect(page.locator("#history .pending, #history .streaming")).to_have_count(0)

    # The session is free at once: the next question gets its answer.
    upstream.reply_text = "Once upon a time, it ended."
    upstream.token_delay = 0.0
    upstream.speech_audio = None
    next_turn = talk(page, hold_ms=HOLD_MS)
    expect(page.locator("#ptt-status")).to_have_text("Done", timeout=VOICE_TIMEOUT_MS)
    expect(page.locator('#history .message[data-role="assistant"]').nth(1)).to_contain_text("it ended")
    check_segments_played(page, next_turn)
