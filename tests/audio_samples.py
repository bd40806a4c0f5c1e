"""Deterministic test audio: synthesised speech, silence and tones, encoded as browsers and apps upload them.

The encoders here are written against PyAV directly, not through `webapp.audio`, so tests of that module do not grade
its work with its own code.
"""

from __future__ import annotations

import functools
import io
import wave
from pathlib import Path
from typing import cast

import av
import numpy as np

from webapp.ai.offline_speech import OfflineSynthesizer

# Upload format -> (FFmpeg muxer, encoder, sample rate or None to keep the input's, muxer options).
UPLOAD_ENCODERS: dict[str, tuple[str, str, int | None, dict[str, str]]] = {
    # Chromium and Firefox MediaRecorder: Opus in a live WebM, with no duration and no cues.
    "webm": ("webm", "libopus", 48_000, {"live": "1"}),
    "ogg": ("ogg", "libopus", 48_000, {}),
    "wav": ("wav", "pcm_s16le", None, {}),
    "mp3": ("mp3", "libmp3lame", None, {}),
    # Safari MediaRecorder: AAC in MP4.
    "mp4": ("mp4", "aac", None, {}),
    "m4a": ("ipod", "aac", None, {}),
    "flac": ("flac", "flac", None, {}),
}
TONE_RATE = 22_050


QUESTION_WAV = Path(__file__).parent / "data" / "question.wav"
""""one two three four five" spoken by espeak-ng, kept as a file: espeak-ng's output varies a little from call to call,
and recognition tests need the very same input every run."""


def question_pcm() -> tuple[bytes, int]:
    """The samples and sample rate of `QUESTION_WAV`."""
    with wave.open(str(QUESTION_WAV)) as file:
        return file.readframes(file.getnframes()), file.getframerate()


@functools.lru_cache(maxsize=64)
def speech_pcm(text: str, voice: str | None = None) -> tuple[bytes, int]:
    """Spoken `text` as 16-bit mono PCM and its sample rate (espeak-ng, 22050 Hz).

    Phrases that recognition tests rely on come from recordings kept in tests/data (espeak-ng varies a little from
    call to call, which can cost a word); anything else is synthesised afresh.
    """
    kept = QUESTION_WAV.parent / f"{text.replace(' ', '-')}.wav"
    if voice is None and kept.exists():
        with wave.open(str(kept)) as file:
            return file.readframes(file.getnframes()), file.getframerate()
    return OfflineSynthesizer().synthesize(text, voice)


def encode_clip(pcm: bytes, rate: int, fmt: str, *, lead_silence_s: float = 0.3) -> bytes:
    """Encode 16-bit mono PCM, after `lead_silence_s` of silence, as one of `UPLOAD_ENCODERS`' formats."""
    muxer, codec, codec_rate, options = UPLOAD_ENCODERS[fmt]
    samples = np.concatenate([np.zeros(round(lead_silence_s * rate), "<i2"), np.frombuffer(pcm, "<i2")])
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=muxer, options=options) as output:
        stream = cast(av.AudioStream, output.add_stream(codec, rate=codec_rate or rate, layout="mono"))
        output.start_encoding()
        if samples.size:
            frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            frame.sample_rate = rate
            output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def silence(fmt: str, seconds: float) -> bytes:
    """Digital silence encoded as `fmt`."""
    return encode_clip(b"", TONE_RATE, fmt, lead_silence_s=seconds)


def tone_pcm(seconds: float, *, freq: float = 440.0, dbfs: float = -12.0, rate: int = TONE_RATE) -> bytes:
    """A sine tone at `dbfs` peak as 16-bit mono PCM."""
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 32767 * 10 ** (dbfs / 20)).astype("<i2").tobytes()


def tone(fmt: str, seconds: float, *, dbfs: float = -12.0) -> bytes:
    """A sine tone encoded as `fmt`."""
    return encode_clip(tone_pcm(seconds, dbfs=dbfs), TONE_RATE, fmt, lead_silence_s=0)


def duration_s(pcm: bytes, rate: int, *, lead_silence_s: float = 0.3) -> float:
    """The true duration of what `encode_clip` encodes."""
    return round(lead_silence_s * rate) / rate + len(pcm) / 2 / rate
