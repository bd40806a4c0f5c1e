"""The `offline` provider: works with no key and no network.

Chat is a clearly labelled local reply generator (no language model runs), whose [bracketed notes] are shown but not
spoken (`compose_reply`, `spoken_text`); speech uses real offline engines, loaded on first use and run off the event
loop: faster-whisper tiny.en (`webapp.ai.whisper`) recognises, with pocketsphinx as the fallback when it cannot load
or when `OFFLINE_STT=pocketsphinx`, and espeak-ng speaks (`webapp.ai.offline_speech`).
A decode is CPU work of up to seconds that holds the GIL (all of it in pocketsphinx, the Python glue between
CTranslate2's steps in faster-whisper), so a thread would still stall every request: recognition runs in child
processes instead, each with its own engine, loaded there on first use (`_transcribe_in_child`), so the server's own
start-up and memory do not change. espeak-ng releases the GIL in its C calls, so synthesis runs in a thread.
Those child processes end with the server, even one killed with SIGKILL that cleans up nothing (`_die_with_server`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from webapp.ai.base import ChatMessage, ChatReply, RunsAs, TokenSink, VoiceCatalog
from webapp.audio import AudioClip, encode_pcm
from webapp.config import OfflineStt, Settings
from webapp.http.paths import API_PREFIX

if TYPE_CHECKING:
    from webapp.ai.offline_speech import OfflineRecognizer, OfflineSynthesizer, OfflineVoices
    from webapp.ai.whisper import WhisperRecognizer

log = logging.getLogger(__name__)

OFFLINE_MODEL = "offline"
PARENT_POLL_SECONDS = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


LABEL = "[Offline mode: no AI model is connected.]"
SENTENCE_ENDS = (".", "!", "?", "…")
_NOTE = re.compile(r"\[[^\[\]]*\]")


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split()).replace("[", "(").replace("]", ")")  # brackets mark notes: see `spoken_text`
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _quoted(text: str) -> str:
    """`text` in quotes as a sentence of its own: a full stop after the quote only if none ends it already."""
    return f"“{text}”" if text.endswith(SENTENCE_ENDS) else f"“{text}”."


def compose_reply(messages: Sequence[ChatMessage]) -> str:
    """A deterministic reply that shows what the model would have been given.

    The answer ("You said: …") stands between bracketed notes (the offline label, then what the model was given and
    how to connect one): they are for reading, and `OfflineProvider.speak` leaves them out (`spoken_text`), so a
    voice reply is a few seconds long rather than the whole disclaimer.
    """
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    users = [m["content"] for m in messages if m["role"] == "user"]
    said = _shorten(users[-1], 200) if users else ""
    first_sentence = re.split(r"(?<=[.!?])\s", system.strip(), maxsplit=1)[0]
    # The closing note has no sentence end outside its quote, so a voice reply cut into sentences as it streams
    # gets it as one segment, which says nothing.
    return (
        f"{LABEL} You said: {_quoted(said)} "
        f"[My instructions begin: “{_shorten(first_sentence, 120)}”; "
        f"this is your message number {len(users)} in this chat; "
        "set OPENAI_API_KEY to talk to a real model]"
    )


def spoken_text(text: str) -> str:
    """What the offline voice says of `text`: all but its [bracketed notes] (see `compose_reply`), including the
    part of a note that a sentence of its own begins or ends."""
    unnoted = _NOTE.sub(" ", text)
    unnoted = re.sub(r"\[[^\]]*$", " ", re.sub(r"^[^\[]*\]", " ", unnoted))
    return " ".join(unnoted.split())


def _die_with_server(server_pid: int) -> None:
    """Pool initializer: make this recognition process end when the server process does, however that ends.

    A server killed with SIGKILL shuts no pool down, and its workers would live on as orphans (~150 MB each), one of
    them still decoding the dead turn. Two guards, because neither is enough alone:

    - Linux: the kernel sends SIGKILL when the parent goes (`PR_SET_PDEATHSIG`). Nothing in this process has to run
      for that, which matters because pocketsphinx holds the GIL for a whole decode: no Python thread here could act
      until it ends. The "parent" is the *thread* that started this process, not the server process: the signal comes
      when that thread ends. Workers are started by `submit`, which `transcribe` calls on the event loop's thread (it
      lives as long as the server), or by the pool's manager thread to replace a worker (it outlives its workers).
      The parent may have died before this call, with no signal to come: hence the `getppid` check after it.
    - Everywhere: a daemon thread notices that the parent process is gone (`getppid` changes when an orphan is
      adopted) within `PARENT_POLL_SECONDS`, or, if a decode holds the GIL, when that decode ends. It covers systems
      without PDEATHSIG and a `prctl` that failed.

    multiprocessing's resource tracker needs neither: it exits when the last holder of its pipe (the server and these
    workers, which inherit it) is gone.
    """
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(ctypes.c_int(_PR_SET_PDEATHSIG), ctypes.c_ulong(signal.SIGKILL), *[ctypes.c_ulong(0)] * 3)
    if os.getppid() != server_pid:
        os._exit(1)  # orphaned already: no decode to finish, nobody to answer
    threading.Thread(target=_exit_when_orphaned, args=(server_pid,), name="parent-watch", daemon=True).start()


def _exit_when_orphaned(server_pid: int) -> None:
    while os.getppid() == server_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


@dataclass(frozen=True)
class RecognitionPlan:
    """Which recogniser a recognition process runs, sent along with every clip (it is small and picklable)."""

    engine: OfflineStt
    cpu_threads: int = 1
    """faster-whisper's threads in each process: the cores shared out among the processes."""
    model_dir: str | None = None
    """faster-whisper's model folder; None: the one the hash-pinned model package installed."""


@dataclass(frozen=True)
class Heard:
    """A recognition process's answer: the text, and which engine heard it (for `/readyz` and the log)."""

    text: str
    engine: str
    """ "whisper", "pocketsphinx", or "pocketsphinx (fallback: <why>)"."""
    fallback: str | None = None
    """Why faster-whisper could not be used, the first time this process found out."""
    load_seconds: float = 0.0
    """Time this call spent loading an engine (0 once it is loaded)."""


class _Engine:
    """A recognition process's one recogniser, chosen on first use; pocketsphinx if faster-whisper cannot load."""

    def __init__(self, plan: RecognitionPlan) -> None:
        self.plan = plan
        self.whisper: WhisperRecognizer | None = None
        self.pocketsphinx: OfflineRecognizer | None = None
        self.fallback: str | None = None

    def transcribe(self, pcm16k: bytes) -> Heard:
        started = time.perf_counter()
        if self.plan.engine == "whisper" and self.fallback is None:
            from webapp.ai.whisper import ModelUnavailable, WhisperRecognizer

            if self.whisper is None:
                model_dir = Path(self.plan.model_dir) if self.plan.model_dir else None
                self.whisper = WhisperRecognizer(model_dir, cpu_threads=self.plan.cpu_threads)
            try:
                loaded = self.whisper.load()
            except ModelUnavailable as exc:
                self.whisper, self.fallback = None, str(exc)
                return self._pocketsphinx(pcm16k, started, first_fallback=True)
            return Heard(self.whisper.transcribe(pcm16k), "whisper", load_seconds=loaded)
        return self._pocketsphinx(pcm16k, started, first_fallback=False)

    def _pocketsphinx(self, pcm16k: bytes, started: float, *, first_fallback: bool) -> Heard:
        from webapp.ai.offline_speech import OfflineRecognizer

        loading = self.pocketsphinx is None
        if self.pocketsphinx is None:
            self.pocketsphinx = OfflineRecognizer()
        text = self.pocketsphinx.transcribe(pcm16k)  # loads the decoder on its first call (~0.4 s)
        engine = "pocketsphinx" if self.fallback is None else f"pocketsphinx (fallback: {self.fallback})"
        return Heard(
            text,
            engine,
            fallback=self.fallback if first_fallback else None,
            load_seconds=time.perf_counter() - started if loading else 0.0,
        )


_engine: _Engine | None = None  # in a recognition process: its one recogniser


def _transcribe_in_child(pcm16k: bytes, plan: RecognitionPlan) -> Heard:
    """Run in a recognition process: the text of a clip, by the engine `plan` names (loaded on its first clip)."""
    global _engine
    if _engine is None or _engine.plan != plan:
        _engine = _Engine(plan)
    return _engine.transcribe(pcm16k)


def _load_voice_table() -> OfflineVoices:
    from webapp.ai.offline_speech import OfflineVoices

    return OfflineVoices()


class OfflineProvider:
    name: Literal["offline"] = "offline"

    def __init__(self, settings: Settings) -> None:
        from webapp.ai import whisper  # stdlib only: importing it loads nothing of faster-whisper

        self._settings = settings
        self._synthesizer: OfflineSynthesizer | None = None
        self._recognizers: ProcessPoolExecutor | None = None
        self._voice_table: OfflineVoices | None = None
        cores = os.cpu_count() or 1
        self._workers = max(1, min(settings.voice_workers, cores))
        """Recognition processes (one per voice worker, up to one per core), and syntheses at once."""
        self._synthesis_slots = asyncio.Semaphore(self._workers)
        """Synthesis and encoding are CPU work: at most one per voice worker (espeak-ng itself speaks one at a time)."""
        # Each process's faster-whisper gets its share of the cores, so that busy processes never oversubscribe them.
        self._missing = whisper.missing() if settings.offline_stt == "whisper" else None
        """Why faster-whisper cannot run here (a package is not installed): then pocketsphinx runs from the start."""
        engine = "pocketsphinx" if self._missing is not None else settings.offline_stt
        self.recognition_plan = RecognitionPlan(engine, cpu_threads=max(1, cores // self._workers))
        self._recognition = self._idle_state()
        self._heard_from_a_process = False
        self._fallback_logged: str | None = None

    def _idle_state(self) -> str:
        if self._missing is not None:
            return f"pocketsphinx (fallback: {self._missing})"
        if self.recognition_plan.engine == "pocketsphinx":
            return "pocketsphinx"
        return "whisper (loads on first use)"

    def speech_recognition(self) -> str:
        """The recogniser and its state, for `/readyz`: "whisper (loads on first use)", "whisper (loading)",
        "whisper", "pocketsphinx" (`OFFLINE_STT=pocketsphinx`), or "pocketsphinx (fallback: <why>)"."""
        return self._recognition

    def describe(self) -> str:
        if self._settings.openai_api_key:
            switch = "unset AI_PROVIDER (OPENAI_API_KEY is set) to use OpenAI or a compatible server"
        else:
            switch = "set OPENAI_API_KEY (and optionally OPENAI_BASE_URL) to use OpenAI or a compatible server"
        if self._missing is not None:
            recognition = f"pocketsphinx (en-US), because {self._missing}"
        elif self.recognition_plan.engine == "pocketsphinx":
            recognition = "pocketsphinx (en-US; OFFLINE_STT=pocketsphinx)"
        else:
            recognition = "faster-whisper tiny.en (English; loaded on first use; pocketsphinx if it cannot load)"
        return (
            f"provider offline — chat: canned stand-in reply (no language model), speech recognition: {recognition}, "
            f"speech synthesis: espeak-ng (voices: GET {API_PREFIX}/voices); {switch}"
        )

    async def runs_as(self, *, model: str, voice: str) -> RunsAs:
        table = await self._voices()
        return RunsAs(provider=self.name, model=OFFLINE_MODEL, voice=table.spoken_voice(voice))

    async def voices(self) -> VoiceCatalog:
        table = await self._voices()
        default = table.spoken_voice(self._settings.tts_voice)
        names = table.common if default in table.common else (default, *table.common)
        return VoiceCatalog(provider=self.name, default=default, voices=names)

    async def _voices(self) -> OfflineVoices:
        # espeak-ng's voice list, loaded once (~0.4 s with the import, in a thread: not on the event loop).
        if self._voice_table is None:
            self._voice_table = await asyncio.to_thread(_load_voice_table)
        return self._voice_table

    def _recognition_processes(self) -> ProcessPoolExecutor:
        # Started on first use: a server that never hears a voice turn never pays for them. "spawn", because forking
        # a process that runs an event loop and threads is unsafe. One process per voice worker, up to one per core.
        if self._recognizers is None:
            context = multiprocessing.get_context("spawn")
            self._recognizers = ProcessPoolExecutor(
                max_workers=self._workers, mp_context=context, initializer=_die_with_server, initargs=(os.getpid(),)
            )
        return self._recognizers

    async def aclose(self) -> None:
        processes, self._recognizers = self._recognizers, None
        if processes is not None:  # waits for a decode under way (seconds at most), so no process is left behind
            await asyncio.to_thread(processes.shutdown, wait=True, cancel_futures=True)

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        temperature: float | None = None,
        on_token: TokenSink | None = None,
    ) -> ChatReply:
        text = compose_reply(messages)
        if on_token is not None:
            for piece in re.findall(r"\S+\s*", text):
                on_token(piece)
                await asyncio.sleep(0)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        return ChatReply(text, OFFLINE_MODEL, prompt_tokens=prompt_tokens, completion_tokens=len(text.split()))

    async def transcribe(self, clip: AudioClip) -> str:
        processes = self._recognition_processes()
        if not self._heard_from_a_process and self._recognition.startswith("whisper"):
            self._recognition = "whisper (loading)"  # until the first answer: the model loads in the process
        try:  # submitted on the loop's thread, which starts the worker: see `_die_with_server`
            heard: Heard = await asyncio.get_running_loop().run_in_executor(
                processes, _transcribe_in_child, clip.pcm16k, self.recognition_plan
            )
        except BrokenProcessPool:
            # A recognition process died (killed, out of memory): start afresh next time, unless another call has.
            if self._recognizers is processes:
                self._recognizers = None
                self._heard_from_a_process = False
                self._recognition = self._idle_state()
            processes.shutdown(wait=False)
            raise
        self._heard_from_a_process = True
        self._recognition = heard.engine if self._missing is None else self._idle_state()
        if heard.fallback is not None and heard.fallback != self._fallback_logged:  # once, not once per process
            self._fallback_logged = heard.fallback
            log.warning("parley: speech recognition falls back to pocketsphinx: %s", heard.fallback)
        if heard.load_seconds:
            log.info("parley: %s loaded in a recognition process in %.1f s", heard.engine, heard.load_seconds)
        return heard.text

    async def speak(self, text: str, *, voice: str) -> bytes:
        async with self._synthesis_slots:
            return await asyncio.to_thread(self._speak, text, voice)

    def _speak(self, text: str, voice: str) -> bytes:
        if self._synthesizer is None:
            from webapp.ai.offline_speech import OfflineSynthesizer

            self._synthesizer = OfflineSynthesizer()
        pcm, rate = self._synthesizer.synthesize(spoken_text(text), voice)
        # Nothing to say (a sentence that is all note) is a moment of silence: a file every decoder can open.
        pcm = pcm or bytes(2 * (rate // 20))
        return encode_pcm(pcm, sample_rate=rate, fmt=self._settings.tts_format)
