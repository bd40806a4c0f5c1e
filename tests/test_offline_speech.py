"""The offline speech engines on real audio: espeak-ng speaks, pocketsphinx listens (the fallback recogniser; the
default one, faster-whisper, is graded in test_offline_stt.py).

espeak-ng carries state between utterances, so the same text gives slightly different samples from call to call; the
assertions below hold for every variant we have seen (25 runs through wav and webm), never for exact bytes.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
import wave
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest

from tests.apps import make_settings
from tests.audio_samples import QUESTION_WAV, encode_clip, speech_pcm
from tests.stt_clips import words
from webapp.ai import offline_speech
from webapp.ai.base import ChatMessage
from webapp.ai.offline import OfflineProvider, spoken_text
from webapp.ai.offline_speech import (
    COMMON_VOICES,
    DEFAULT_VOICE,
    OfflineRecognizer,
    OfflineSynthesizer,
    OfflineVoices,
)
from webapp.audio import load_clip

T = TypeVar("T")
PHRASES = [
    "hello world",
    "turn on the lights",
    "what is the capital of france",
    "what time is it",
    "book a table for two people",
    "play some music",
    "good morning",
]


def _seconds(result: tuple[bytes, int]) -> float:
    pcm, rate = result
    return len(pcm) / 2 / rate


def _peak(pcm: bytes) -> int:
    return int(np.abs(np.frombuffer(pcm, "<i2").astype(np.int32)).max())


def _pcm16k(tmp_path: Path, text: str, fmt: str) -> bytes:
    """`text` spoken, uploaded as `fmt` and decoded as the app does."""
    pcm, rate = speech_pcm(text)
    path = tmp_path / f"{text.replace(' ', '-')}.{fmt}"
    path.write_bytes(encode_clip(pcm, rate, fmt))
    return load_clip(path, max_seconds=30).pcm16k


def _in_two_threads(first: Callable[[], T], second: Callable[[], T], rounds: int) -> tuple[list[T], list[T]]:
    """Run both callables `rounds` times each, in two threads released at the same moment."""
    barrier = threading.Barrier(2)
    results: tuple[list[T], list[T]] = ([], [])

    def run(work: Callable[[], T], into: list[T]) -> None:
        barrier.wait()
        for _ in range(rounds):
            into.append(work())

    threads = [threading.Thread(target=run, args=args) for args in zip((first, second), results, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


# --- synthesis --------------------------------------------------------------------------------------------------------


def test_synthesize_speaks_at_22050_hz() -> None:
    pcm, rate = OfflineSynthesizer().synthesize("hello world")

    assert rate == 22_050
    assert len(pcm) % 2 == 0
    assert 0.4 < _seconds((pcm, rate)) < 2.0
    assert _peak(pcm) > 3_000


def test_blank_text_gives_no_audio() -> None:
    assert OfflineSynthesizer().synthesize("") == (b"", 22_050)
    assert OfflineSynthesizer().synthesize("  \n\t ") == (b"", 22_050)


def test_long_text_is_spoken_to_the_end() -> None:
    text = " ".join(["The quick brown fox jumps over the lazy dog."] * 50)  # 450 words

    pcm, rate = OfflineSynthesizer().synthesize(text)

    expected = 450 / 165 * 60  # at 165 words a minute
    assert 0.7 * expected < _seconds((pcm, rate)) < 1.3 * expected
    assert _peak(pcm[-rate * 2 :]) > 3_000  # the last second still speaks


def test_unusual_text_is_spoken() -> None:
    pcm, _ = OfflineSynthesizer().synthesize("Café naïve — 10 € <b>bold</b> \0 and done.")
    assert _seconds((pcm, 22_050)) > 1.0


def test_voice_names_pick_espeak_voices_and_fall_back_to_us_english() -> None:
    synthesizer = OfflineSynthesizer()
    default = _seconds(synthesizer.synthesize("hello world"))

    # From one utterance to the next "hello world" varies by about a millisecond; another voice changes it by tens.
    for fallback in ("alloy", "nova", "EN-US", "../../etc/passwd", "en-us+no-such-variant", "variant"):
        assert _seconds(synthesizer.synthesize("hello world", fallback)) == pytest.approx(default, abs=0.005), fallback
    for other in ("en-us+f3", "de"):
        assert abs(_seconds(synthesizer.synthesize("hello world", other)) - default) > 0.025, other


def test_concurrent_synthesis_is_serialised() -> None:
    synthesizer = OfflineSynthesizer()
    short, long = "hello world", "turn on the lights in the kitchen please"
    short_s, long_s = _seconds(synthesizer.synthesize(short)), _seconds(synthesizer.synthesize(long))

    shorts, longs = _in_two_threads(lambda: synthesizer.synthesize(short), lambda: synthesizer.synthesize(long), 15)

    assert [_seconds(result) for result in shorts] == pytest.approx([short_s] * 15, abs=0.05)
    assert [_seconds(result) for result in longs] == pytest.approx([long_s] * 15, abs=0.05)


# --- recognition ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def phrase_recognizer() -> OfflineRecognizer:
    return OfflineRecognizer(phrases=PHRASES)


@pytest.mark.parametrize("fmt", ["wav", "webm", "mp4"])
def test_recognizer_with_phrases_hears_synthesized_speech(
    tmp_path: Path, phrase_recognizer: OfflineRecognizer, fmt: str
) -> None:
    def hear(text: str) -> str:
        return phrase_recognizer.transcribe(_pcm16k(tmp_path, text, fmt))

    assert hear("hello world") == "hello world"
    assert hear("turn on the lights") == "turn on the lights"
    assert "france" in hear("what is the capital of france")
    assert "table for two people" in hear("book a table for two people")


def test_phrases_must_be_in_the_dictionary() -> None:
    with pytest.raises(ValueError, match="qzxv"):
        OfflineRecognizer(phrases=["hello qzxv"])


def test_general_model_loads_on_first_use_and_transcribes(tmp_path: Path) -> None:
    recognizer = OfflineRecognizer()
    assert recognizer._decoder is None  # nothing loaded at construction (app start-up)

    text = recognizer.transcribe(load_clip(QUESTION_WAV, max_seconds=30).pcm16k)  # "one two three four five"

    # General dictation is modest ("one" comes out as "well"), but the rest is heard, in lowercase.
    assert recognizer._decoder is not None
    assert "two three four five" in text
    assert text == text.lower().strip()


def test_nothing_to_hear_is_empty_text(phrase_recognizer: OfflineRecognizer) -> None:
    assert phrase_recognizer.transcribe(b"") == ""
    assert phrase_recognizer.transcribe(b"\x01") == ""


def test_concurrent_transcription_is_serialised(tmp_path: Path, phrase_recognizer: OfflineRecognizer) -> None:
    hello, lights = _pcm16k(tmp_path, "hello world", "wav"), _pcm16k(tmp_path, "turn on the lights", "wav")

    heard_hello, heard_lights = _in_two_threads(
        lambda: phrase_recognizer.transcribe(hello), lambda: phrase_recognizer.transcribe(lights), 4
    )

    assert heard_hello == ["hello world"] * 4
    assert heard_lights == ["turn on the lights"] * 4


# --- the provider: recognition off the event loop ---------------------------------------------------------------------


@pytest.mark.parametrize("engine", ["whisper", "pocketsphinx"])
async def test_offline_recognition_leaves_the_event_loop_free(tmp_path: Path, engine: str) -> None:
    # A decode holds the GIL (all of it in pocketsphinx), so in a thread it would stall the loop for the whole decode.
    clip = load_clip(QUESTION_WAV, max_seconds=30)  # "one two three four five"
    long_clip = replace(clip, pcm16k=clip.pcm16k * 16)
    provider = OfflineProvider(make_settings("sqlite+aiosqlite:///unused.db", tmp_path, offline_stt=engine))
    stalls: list[float] = []
    done = asyncio.Event()

    async def watch_the_loop() -> None:
        while not done.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.01)
            stalls.append(time.perf_counter() - started - 0.01)

    watcher = asyncio.create_task(watch_the_loop())
    try:
        started = time.perf_counter()
        heard = await provider.transcribe(long_clip)
        elapsed = time.perf_counter() - started
    finally:
        done.set()
        await watcher
        await provider.aclose()

    assert " ".join(words(heard)).count("two three four five") >= 8, heard
    assert provider.speech_recognition() == engine
    assert elapsed > 1.0, "the clip decoded too fast to tell a stalled loop from a free one"
    assert max(stalls) < 0.5, f"the event loop stalled for {max(stalls):.2f} s during a {elapsed:.1f} s decode"


# --- voices: what espeak-ng accepts, and what speaks for a name it does not know --------------------------------------


def test_every_offered_voice_exists_in_espeak_ngs_data() -> None:
    voices = OfflineVoices()
    assert voices.common == COMMON_VOICES  # none was dropped for being unknown to this espeak-ng
    espeak = offline_speech._loaded_espeak()
    with offline_speech._espeak_lock:
        for name in COMMON_VOICES:
            assert espeak.lib.espeak_SetVoiceByName(espeak.resolve(name).encode()) == 0, name
        espeak.lib.espeak_SetVoiceByName(espeak.resolve(DEFAULT_VOICE).encode())
        espeak._voice = None  # the next synthesis sets its voice again


@pytest.mark.parametrize(
    ("asked", "spoken"),
    [
        ("alloy", "en-us"),  # OpenAI's default voice: unknown to espeak-ng
        ("", "en-us"),
        ("en-us", "en-us"),
        (" EN-GB ", "en-gb"),
        ("de", "de"),
        ("en-us+f3", "en-us+f3"),
        ("en-us+nobody", "en-us"),  # an unknown variant
        ("klingon", "en-us"),
    ],
)
def test_an_unknown_voice_speaks_as_the_default(asked: str, spoken: str) -> None:
    assert OfflineVoices().spoken_voice(asked) == spoken


# --- the spoken offline reply: the answer, not the disclaimer ---------------------------------------------------------


async def test_the_offline_reply_speaks_only_its_answer(tmp_path: Path) -> None:
    provider = OfflineProvider(make_settings("sqlite+aiosqlite:///unused.db", tmp_path, tts_format="wav"))
    messages: list[ChatMessage] = [
        {"role": "system", "content": "You are a patient maths tutor. Answer briefly and kindly."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    reply = (await provider.chat(messages, model="ignored")).text
    assert reply.startswith("[Offline mode") and "OPENAI_API_KEY" in reply  # shown in full…
    assert spoken_text(reply) == "You said: “What is the capital of France?”"  # …but only this is said
    with wave.open(io.BytesIO(await provider.speak(reply, voice="alloy"))) as spoken:
        seconds = spoken.getnframes() / spoken.getframerate()
    whole = _seconds(OfflineSynthesizer().synthesize(reply))
    assert 1.0 < seconds < 4.5, f"the spoken reply lasts {seconds:.1f} s"
    assert whole > 3 * seconds, (whole, seconds)  # the disclaimer would have tripled it
