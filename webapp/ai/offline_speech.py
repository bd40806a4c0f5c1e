"""Offline speech engines: pocketsphinx to recognise, espeak-ng to synthesise.

Both come as PyPI wheels with their models and data, so they need no network, no key and no system package. Both are
synchronous CPU work; callers run them in a worker thread.
"""

from __future__ import annotations

import ctypes
import io
import itertools
import re
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import espeakng_loader
import pocketsphinx
from pocketsphinx.lm import ArpaBoLM

RECOGNIZER_RATE = 16_000
"""The sample rate `OfflineRecognizer.transcribe` expects (16-bit signed little-endian mono)."""
DEFAULT_VOICE = "en-us"
WORDS_PER_MINUTE = 165


class OfflineRecognizer:
    """Speech to text with pocketsphinx's bundled US English model.

    The decoder is loaded on first use (~0.4 s), not at import or start-up. It is stateful and not thread-safe, so
    calls are serialised on a lock. `phrases` swaps the general language model for one built from those phrases: far
    more accurate when the vocabulary is known, as in tests. Their words must be in the pronunciation dictionary.
    """

    def __init__(self, phrases: Sequence[str] | None = None) -> None:
        self._lock = threading.Lock()
        self._decoder: Any = None
        self._model: tuple[str, str] | None = _phrase_model(phrases) if phrases else None

    def transcribe(self, pcm16k: bytes) -> str:
        """The lowercase text heard in 16 kHz mono s16le PCM, or "" when nothing was recognised."""
        pcm16k = pcm16k[: len(pcm16k) // 2 * 2]
        if not pcm16k:
            return ""  # pocketsphinx fails on an empty buffer
        with self._lock:
            if self._decoder is None:
                self._decoder = self._load()
            self._decoder.start_utt()
            try:
                self._decoder.process_raw(pcm16k, full_utt=True)
            finally:
                self._decoder.end_utt()  # leave the decoder ready for the next call whatever happens
            hypothesis = self._decoder.hyp()
        return hypothesis.hypstr.strip().lower() if hypothesis is not None else ""

    def _load(self) -> Any:
        options: dict[str, Any] = {"samprate": RECOGNIZER_RATE, "loglevel": "ERROR"}
        if self._model is None:
            return pocketsphinx.Decoder(**options)
        arpa, dictionary = self._model
        with tempfile.TemporaryDirectory(prefix="parley-lm-") as tmp:
            (Path(tmp) / "phrases.lm").write_text(arpa)
            (Path(tmp) / "phrases.dict").write_text(dictionary)
            return pocketsphinx.Decoder(**options, lm=f"{tmp}/phrases.lm", dict=f"{tmp}/phrases.dict")


def _phrase_model(phrases: Sequence[str]) -> tuple[str, str]:
    """An ARPA language model of `phrases` and the pronunciation dictionary of their words."""
    lines = [" ".join(re.sub(r"[^\w' ]+", " ", phrase.lower()).split()) for phrase in phrases]
    words = {word for line in lines for word in line.split()}
    # A language model over the whole 130k-word dictionary takes seconds to set up; one over a dictionary cut down to
    # the phrases' words takes milliseconds. Entries look like "read R IY D" and "read(2) R EH D".
    entries = [
        entry
        for entry in Path(pocketsphinx.get_model_path("en-us/cmudict-en-us.dict")).read_text().splitlines()
        if entry.split(" ", 1)[0].split("(", 1)[0] in words
    ]
    unknown = words - {entry.split(" ", 1)[0].split("(", 1)[0] for entry in entries}
    if unknown:
        raise ValueError(f"Not in the pronunciation dictionary: {', '.join(sorted(unknown))}")
    model = ArpaBoLM(text="\n".join(lines), add_start=True)
    model.compute()
    arpa = io.StringIO()
    model.write(arpa)
    return arpa.getvalue(), "\n".join(entries) + "\n"


# --- espeak-ng through ctypes (speak_lib.h) --------------------------------------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_ESPEAK_CHARS_UTF8 = 1
_ESPEAK_RATE = 1
_EE_OK = 0
# int (*)(short *wav, int numsamples, espeak_EVENT *events); the events are not read, so an opaque pointer will do.
_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):
    """espeak_VOICE."""

    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


def _signature(function: Any, restype: Any, *argtypes: Any) -> None:
    function.restype = restype
    function.argtypes = list(argtypes)


class _Espeak:
    """The loaded library. It keeps global state: one instance per process, used only under `_espeak_lock`."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        _signature(lib.espeak_Initialize, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        _signature(lib.espeak_SetSynthCallback, None, _SynthCallback)
        _signature(lib.espeak_ListVoices, ctypes.POINTER(ctypes.POINTER(_Voice)), ctypes.POINTER(_Voice))
        _signature(lib.espeak_SetVoiceByName, ctypes.c_int, ctypes.c_char_p)
        _signature(lib.espeak_SetParameter, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int)
        _signature(
            lib.espeak_Synth,
            ctypes.c_int,
            ctypes.c_void_p,  # text
            ctypes.c_size_t,  # size
            ctypes.c_uint,  # position
            ctypes.c_int,  # position_type
            ctypes.c_uint,  # end_position
            ctypes.c_uint,  # flags
            ctypes.c_void_p,  # unique_identifier
            ctypes.c_void_p,  # user_data
        )
        _signature(lib.espeak_Synchronize, ctypes.c_int)
        self.lib = lib
        self.sample_rate: int = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, espeakng_loader.get_data_path().encode(), 0
        )
        if self.sample_rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise")
        self.samples = bytearray()
        self._callback = _SynthCallback(self._on_audio)  # kept referenced: the library calls it later
        lib.espeak_SetSynthCallback(self._callback)
        self.voices = self._list_voices(None, languages=True)
        variants = _Voice(languages=ctypes.cast(ctypes.c_char_p(b"variant"), ctypes.c_void_p))
        self.variants = self._list_voices(ctypes.pointer(variants), languages=False)
        self._voice: str | None = None

    def _list_voices(self, spec: Any, *, languages: bool) -> dict[str, str]:
        """Lowercase names -> voice file names as espeak spells them ("en-US", "Alex"): each file's own name, and with
        `languages` each language code, mapped to the file that speaks it best (the lowest priority number)."""
        files: dict[str, str] = {}
        best: dict[str, tuple[int, str]] = {}
        listed = self.lib.espeak_ListVoices(spec)
        for index in itertools.count():
            if not listed[index]:
                break
            voice = listed[index].contents
            file_name = (voice.identifier or b"").decode().rsplit("/", 1)[-1]
            files[file_name.lower()] = file_name
            address = voice.languages  # (priority byte, NUL-terminated code)*, then a 0 byte
            while languages and address and (priority := ctypes.string_at(address, 1)[0]):
                code = ctypes.string_at(address + 1)
                if priority < best.get(code.decode().lower(), (256, ""))[0]:
                    best[code.decode().lower()] = (priority, file_name)
                address += len(code) + 2
        return {code: file_name for code, (_, file_name) in best.items()} | files

    def spoken_voice(self, voice: str | None) -> str:
        """The name of the voice that speaks for a requested one: the name itself, lowercased, when espeak-ng knows
        it ("en-gb", "en-us+f3", "de"…); `DEFAULT_VOICE` for anything else (e.g. OpenAI's "alloy")."""
        language, _, variant = (voice or "").strip().lower().partition("+")
        if language not in self.voices or (variant and variant not in self.variants):
            return DEFAULT_VOICE
        return f"{language}+{variant}" if variant else language

    def resolve(self, voice: str | None) -> str:
        """The espeak voice file for a requested name, as `espeak_SetVoiceByName` takes it ("en-US", "en-US+f3")."""
        language, _, variant = self.spoken_voice(voice).partition("+")
        return self.voices[language] + (f"+{self.variants[variant]}" if variant else "")

    def _on_audio(self, wav: Any, n_samples: int, events: int | None) -> int:
        if wav and n_samples > 0:  # a NULL wav marks the end of synthesis
            self.samples += ctypes.string_at(wav, n_samples * 2)
        return 0  # continue

    def synthesize(self, text: str, voice: str) -> bytes:
        if voice != self._voice:
            if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise RuntimeError(f"espeak-ng could not load the voice {voice!r}")
            self.lib.espeak_SetParameter(_ESPEAK_RATE, WORDS_PER_MINUTE, 0)
            self._voice = voice
        self.samples.clear()
        data = text.replace("\0", " ").encode() + b"\0"
        status = self.lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _ESPEAK_CHARS_UTF8, None, None)
        self.lib.espeak_Synchronize()
        if status != _EE_OK:
            raise RuntimeError(f"espeak-ng could not synthesise (error {status})")
        return bytes(self.samples)


_espeak: _Espeak | None = None
_espeak_lock = threading.Lock()


def _loaded_espeak() -> _Espeak:
    """The library, loaded on first use (~15 ms). Call with `_espeak_lock` held."""
    global _espeak
    if _espeak is None:
        _espeak = _Espeak()
    return _espeak


COMMON_VOICES = (
    *("en-us", "en-us+f3", "en-us+m3", "en-gb", "en-gb+f3", "en-gb-scotland", "en-029"),
    *("de", "fr", "es", "es-419", "it", "pt", "pt-br", "nl", "sv", "da", "nb", "fi", "pl", "cs", "ru", "uk"),
    *("el", "tr", "ar", "he", "hi", "ja", "ko", "cmn", "vi", "id"),
)
"""A curated list of espeak-ng voices to offer: common languages, and a few `+variant`s to show the form. espeak-ng
knows many more (about 150 languages, 100 variants): any of them works."""


class OfflineVoices:
    """The voice names espeak-ng accepts, without loading more than its voice list (no synthesis)."""

    def __init__(self) -> None:
        with _espeak_lock:  # waits for a synthesis under way only the first time, while the library loads
            espeak = _loaded_espeak()
        # The tables are built once and never change: read them without the lock, which a synthesis holds.
        self._espeak = espeak
        self.common: tuple[str, ...] = tuple(name for name in COMMON_VOICES if espeak.spoken_voice(name) == name)

    def spoken_voice(self, voice: str | None) -> str:
        """The voice that speaks when `voice` is asked for (see `_Espeak.spoken_voice`)."""
        return self._espeak.spoken_voice(voice)


class OfflineSynthesizer:
    """Text to speech with espeak-ng; every instance shares the one library, serialised on a module-level lock.

    espeak-ng carries some state from one utterance to the next (pitch flutter, noise), so the same text does not
    always give the same samples: it sounds the same, but do not compare bytes.
    """

    def synthesize(self, text: str, voice: str | None = None) -> tuple[bytes, int]:
        """16-bit signed little-endian mono PCM and its sample rate; an unknown voice falls back to US English."""
        with _espeak_lock:
            espeak = _loaded_espeak()
            if not text.strip():
                return b"", espeak.sample_rate
            return espeak.synthesize(text, espeak.resolve(voice)), espeak.sample_rate
