"""The committed speech clips that grade the offline recognisers (tests/test_offline_stt.py, bench/offline_stt.py).

Each clip is kept as a file because espeak-ng's output varies a little from call to call and recognition must be
graded on the very same input every run. `python -m tests.stt_clips` makes the espeak-ng ones again (and their noisy
copies); `python -m e2e.record_clip` records the one that went through Chromium's fake microphone.
"""

from __future__ import annotations

import io
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

DATA = Path(__file__).parent / "data"
CLIPS_DIR = DATA / "stt"
NOISE_SNR_DB = 10.0
NOISE_SEED = 16


@dataclass(frozen=True)
class Clip:
    name: str
    text: str
    """What was said, as the recogniser should write it (cased and punctuated, as Whisper does)."""
    source: str
    """How it was made: an espeak-ng voice, "noise:<clip>" (that clip with white noise at `NOISE_SNR_DB`), or
    "chromium" (the espeak-ng clip played into Chromium's fake microphone and recorded by the chat page)."""
    file: str

    @property
    def path(self) -> Path:
        return DATA / self.file


CLIPS = (
    Clip("one-to-five", "One, two, three, four, five.", "en-us", "question.wav"),  # the README's sample
    Clip("capital", "What is the capital of France?", "en-us", "stt/capital.flac"),
    Clip("two-plus-three", "What is two plus three?", "en-us", "stt/two-plus-three.flac"),
    Clip("kitchen", "Turn on the lights in the kitchen.", "en-us", "stt/kitchen.flac"),
    Clip("weather", "How is the weather in London today?", "en-us", "stt/weather.flac"),
    Clip("table", "Book a table for two people at seven tonight.", "en-us", "stt/table.flac"),
    Clip(
        "reminder",
        "Please remind me to call my mother tomorrow morning, and add milk and eggs to the shopping list.",
        "en-us",
        "stt/reminder.flac",
    ),
    Clip("timer", "Set a timer for ten minutes.", "en-us+f3", "stt/timer.flac"),
    Clip("news", "Read me the latest news about science.", "en-us+f3", "stt/news.flac"),
    Clip("station", "Where is the nearest train station?", "en-gb", "stt/station.flac"),
    Clip("capital-noisy", "What is the capital of France?", "noise:capital", "stt/capital-noisy.flac"),
    Clip(
        "reminder-noisy",
        "Please remind me to call my mother tomorrow morning, and add milk and eggs to the shopping list.",
        "noise:reminder",
        "stt/reminder-noisy.flac",
    ),
    Clip("capital-chromium", "What is the capital of France?", "chromium", "stt/capital-chromium.webm"),
)
BY_NAME = {clip.name: clip for clip in CLIPS}

_NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve"]


def words(text: str) -> list[str]:
    """Lowercase words without punctuation, digits spelled out ("7" -> "seven"): what WER compares."""
    spelled = re.sub(r"\b(\d{1,2})\b", lambda m: _NUMBERS[int(m[1])] if int(m[1]) < len(_NUMBERS) else m[1], text)
    return re.findall(r"[a-z0-9']+", spelled.lower().replace("-", " "))


def word_errors(reference: str, heard: str) -> tuple[int, int]:
    """(substitutions + deletions + insertions, words in the reference), after `words`."""
    ref, hyp = words(reference), words(heard)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1], len(ref)


def wer(reference: str, heard: str) -> float:
    errors, count = word_errors(reference, heard)
    return errors / max(count, 1)


def read_pcm(path: Path) -> tuple[np.ndarray, int]:
    """A clip file's samples (int16 mono) and sample rate, decoded with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=stream.rate)
        frames = [out for frame in container.decode(stream) for out in resampler.resample(frame)]
        frames += resampler.resample(None)
        return np.concatenate([frame.to_ndarray().reshape(-1) for frame in frames]).astype("<i2"), int(stream.rate)


def write_flac(path: Path, samples: np.ndarray, rate: int) -> None:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="flac") as output:
        stream = output.add_stream("flac", rate=rate, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.astype("<i2").reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        output.mux(stream.encode(frame))  # type: ignore[attr-defined]
        output.mux(stream.encode(None))  # type: ignore[attr-defined]
    path.write_bytes(buffer.getvalue())


def with_noise(samples: np.ndarray, snr_db: float = NOISE_SNR_DB, seed: int = NOISE_SEED) -> np.ndarray:
    """`samples` plus white noise `snr_db` below the speech's power (measured where it speaks, above -40 dBFS)."""
    speech = samples.astype(np.float64)
    loud = speech[np.abs(speech) > 32768 * 10 ** (-40 / 20)]
    power = float(np.mean(loud**2))
    noise = np.random.default_rng(seed).normal(0.0, np.sqrt(power / 10 ** (snr_db / 10)), speech.size)
    return np.clip(np.round(speech + noise), -32768, 32767).astype("<i2")


def make_espeak_clips() -> None:
    """Synthesise every espeak-ng clip, then the noisy copies (the Chromium one is `e2e/record_clip.py`'s)."""
    from webapp.ai.offline_speech import OfflineSynthesizer

    CLIPS_DIR.mkdir(exist_ok=True)
    synthesizer = OfflineSynthesizer()
    for clip in CLIPS:
        if clip.source in ("chromium",) or clip.source.startswith("noise:") or clip.path.suffix != ".flac":
            continue
        pcm, rate = synthesizer.synthesize(clip.text, clip.source)
        pad = np.zeros(rate * 3 // 10, "<i2")  # 0.3 s of silence on each side, as a recording would have
        write_flac(clip.path, np.concatenate([pad, np.frombuffer(pcm, "<i2"), pad]), rate)
        print(f"{clip.file}: {clip.path.stat().st_size} bytes", file=sys.stderr)
    for clip in CLIPS:
        if clip.source.startswith("noise:"):
            samples, rate = read_pcm(BY_NAME[clip.source.removeprefix("noise:")].path)
            write_flac(clip.path, with_noise(samples), rate)
            print(f"{clip.file}: {clip.path.stat().st_size} bytes", file=sys.stderr)


if __name__ == "__main__":
    make_espeak_clips()
