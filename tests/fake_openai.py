"""A fake OpenAI-compatible HTTP server on 127.0.0.1, for driving the real `openai` SDK in tests.

It runs in its own thread and event loop. By default it answers like OpenAI would (chat completions, streamed or
not, transcriptions, and speech as real audio: a quiet tone whose length grows with the text); tests queue one-shot
`Scripted` answers per endpoint to inject latency, errors and malformed bodies, set default latencies
(`transcribe_delay`, `reply_delay`, `token_delay`, `speech_delay`), and read back every request it received.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import web

from webapp.audio import content_type_for, encode_pcm

CHAT = "/v1/chat/completions"
TRANSCRIBE = "/v1/audio/transcriptions"
SPEECH = "/v1/audio/speech"

SPEECH_RATE = 24_000
SPEECH_BASE_S = 0.2
SPEECH_PER_WORD_S = 0.05
"""The default speech answer lasts SPEECH_BASE_S + SPEECH_PER_WORD_S per word of the input."""
SPEECH_DEFAULT_FORMAT = "mp3"
SPEECH_FORMATS = ("mp3", "wav", "flac", "opus", "aac", "pcm")
"""The `response_format` values the default speech answer honours (anything else gets MP3)."""


@dataclass
class Scripted:
    """One scripted answer. `stream` replaces the reply's text pieces; `raw` sends a body verbatim."""

    status: int = 200
    body: Any = None
    raw: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stream: list[str] | None = None
    chunk_delay: float = 0.0
    drop_connection: bool = False
    broken_chunk: bool = False


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    json: Any = None
    form: dict[str, Any] = field(default_factory=dict)
    files: dict[str, tuple[str, str, bytes]] = field(default_factory=dict)


def error_body(message: str, kind: str = "invalid_request_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def words_in(text: str) -> list[str]:
    """How the default chat reply is cut into streamed pieces: each word with the whitespace after it."""
    return re.findall(r"\S+\s*", text)


def speech_seconds(text: str) -> float:
    """How long the default speech answer for `text` lasts."""
    return SPEECH_BASE_S + SPEECH_PER_WORD_S * len(text.split())


def tone(seconds: float, *, sample_rate: int = SPEECH_RATE, hz: float = 440.0) -> bytes:
    """A quiet sine tone (about -20 dBFS) as 16-bit signed little-endian mono PCM."""
    t = np.arange(round(seconds * sample_rate), dtype=np.float64) / sample_rate
    return (np.sin(2 * np.pi * hz * t) * 3277).astype("<i2").tobytes()


class FakeOpenAI:
    """The server and its knobs. Every knob is a plain attribute, read per request; `reset()` restores them."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.transcript = "hello from the fake transcriber"
        self.speech_audio: bytes | None = None
        """Bytes every default speech answer sends verbatim; None: a tone as long as the text (`speech_seconds`)."""
        self.reply_text: str | None = None
        """The default chat reply; None: `f"Echo: {last user message}"`."""
        self.transcribe_delay = 0.0
        """Seconds before each default transcription answer."""
        self.reply_delay = 0.0
        """Seconds before each default chat answer starts."""
        self.token_delay = 0.0
        """Seconds before each streamed piece of the default chat answer; a non-streamed one waits as many."""
        self.speech_delay = 0.0
        """Seconds before each default speech answer."""
        self.speech_in_flight = 0
        self.speech_in_flight_peak = 0
        """The most speech requests it has been answering at once."""
        self._speech_cache: dict[tuple[int, str], bytes] = {}
        self._scripts: dict[str, deque[Scripted]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"

    # --- control from tests ------------------------------------------------------------------------------------------

    def push(self, path: str, *answers: Scripted) -> None:
        with self._lock:
            self._scripts[path].extend(answers)

    def reset(self) -> None:
        with self._lock:
            self._scripts.clear()
            self.requests.clear()
        self.transcript = "hello from the fake transcriber"
        self.speech_audio = None
        self.reply_text = None
        self.transcribe_delay = 0.0
        self.reply_delay = 0.0
        self.token_delay = 0.0
        self.speech_delay = 0.0
        self.speech_in_flight_peak = 0

    def received(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    # --- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> None:
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True, name="fake-openai").start()
        if not ready.wait(10):
            raise RuntimeError("fake OpenAI server did not start")

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post(CHAT, self._chat)
        app.router.add_post(TRANSCRIBE, self._transcribe)
        app.router.add_post(SPEECH, self._speech)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", self.port).start())
        ready.set()
        self._loop.run_forever()

    # --- handlers ----------------------------------------------------------------------------------------------------

    def _next(self, path: str) -> Scripted | None:
        with self._lock:
            queue = self._scripts.get(path)
            return queue.popleft() if queue else None

    async def _scripted(self, request: web.Request, script: Scripted) -> web.StreamResponse | None:
        """Answer as scripted, or None when the script only adds latency to the default answer."""
        if script.delay:
            await asyncio.sleep(script.delay)
        if script.drop_connection:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=500)
        if script.raw is not None:
            return web.Response(
                status=script.status, body=script.raw, headers=script.headers, content_type="application/json"
            )
        if script.body is not None or script.status != 200:
            return web.json_response(script.body, status=script.status, headers=script.headers)
        return None

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Received(CHAT, dict(request.headers), json=body))
        script = self._next(CHAT) or Scripted()
        answer = await self._scripted(request, script)
        if answer is not None:
            return answer
        if self.reply_delay:
            await asyncio.sleep(self.reply_delay)
        if self.reply_text is not None:
            text = self.reply_text
        else:
            last_user = next((m["content"] for m in reversed(body["messages"]) if m["role"] == "user"), "")
            text = f"Echo: {last_user}"
        token_delay = script.chunk_delay or self.token_delay
        model = body["model"]
        prompt_tokens = sum(len(str(m["content"]).split()) for m in body["messages"])
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        }
        if not body.get("stream"):
            if token_delay:  # the model takes as long to write the whole reply as to stream it
                await asyncio.sleep(token_delay * len(words_in(text)))
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": text, "refusal": None},
                        }
                    ],
                    "usage": usage,
                }
            )
        pieces = script.stream if script.stream is not None else words_in(text)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)

        async def send(chunk: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
        await send({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        loop = asyncio.get_running_loop()
        due = loop.time()
        for piece in pieces:
            if token_delay:  # on a schedule from the first piece, so sleeps that overrun do not add up
                due += token_delay
                await asyncio.sleep(max(0.0, due - loop.time()))
            await send({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
        if script.broken_chunk:
            await response.write(b"data: {not json\n\n")
        await send({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (body.get("stream_options") or {}).get("include_usage"):
            await send({**base, "choices": [], "usage": usage})
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _transcribe(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        received = Received(TRANSCRIBE, dict(request.headers))
        for key, value in form.items():
            if isinstance(value, web.FileField):
                received.files[key] = (value.filename, value.content_type, value.file.read())
            else:
                received.form[key] = value
        self.requests.append(received)
        answer = await self._scripted(request, self._next(TRANSCRIBE) or Scripted())
        if answer is not None:
            return answer
        if self.transcribe_delay:
            await asyncio.sleep(self.transcribe_delay)
        return web.json_response({"text": self.transcript})

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(Received(SPEECH, dict(request.headers), json=body))
        self.speech_in_flight += 1
        self.speech_in_flight_peak = max(self.speech_in_flight_peak, self.speech_in_flight)
        try:
            return await self._speech_answer(request, body)
        finally:
            self.speech_in_flight -= 1

    async def _speech_answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        answer = await self._scripted(request, self._next(SPEECH) or Scripted())
        if answer is not None:
            return answer
        if self.speech_delay:
            await asyncio.sleep(self.speech_delay)
        if self.speech_audio is not None:
            return web.Response(body=self.speech_audio, content_type="audio/mpeg")
        fmt = body.get("response_format") or SPEECH_DEFAULT_FORMAT
        if fmt not in SPEECH_FORMATS:
            fmt = SPEECH_DEFAULT_FORMAT
        audio = await self._spoken(str(body.get("input", "")), fmt)
        return web.Response(body=audio, headers={"Content-Type": content_type_for(fmt)})

    async def _spoken(self, text: str, fmt: str) -> bytes:
        """The tone for `text` in `fmt`, encoded once per length (in words) and format."""
        key = (len(text.split()), fmt)
        audio = self._speech_cache.get(key)
        if audio is None:
            # Encoding is CPU work (a few ms): off the loop, so other requests' delays keep their timing.
            audio = await asyncio.to_thread(encode_pcm, tone(speech_seconds(text)), sample_rate=SPEECH_RATE, fmt=fmt)
            self._speech_cache[key] = audio
        return audio


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> None:
    """Serve standalone until SIGINT/SIGTERM: `python -m tests.fake_openai --port 8099 --reply-delay 0.1`."""
    import argparse
    import signal

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--reply-delay", type=float, default=0.0, help="seconds before each chat reply")
    parser.add_argument("--transcribe-delay", type=float, default=0.0, help="seconds before each transcription")
    parser.add_argument("--speech-delay", type=float, default=0.0, help="seconds before each speech answer")
    parser.add_argument(
        "--token-delay", type=float, default=0.0, help="seconds before each streamed piece (word) of a chat reply"
    )
    parser.add_argument("--reply-text", default=None, help='every chat reply (default: "Echo: <last user message>")')
    args = parser.parse_args(argv)

    fake = FakeOpenAI()
    if args.port:
        fake.port = args.port
        fake.base_url = f"http://127.0.0.1:{fake.port}/v1"
    fake.reply_delay = args.reply_delay
    fake.transcribe_delay = args.transcribe_delay
    fake.speech_delay = args.speech_delay
    fake.token_delay = args.token_delay
    fake.reply_text = args.reply_text
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    fake.start()
    print(f"fake OpenAI serving at {fake.base_url}", flush=True)
    while not stop.wait(1.0):
        fake.requests.clear()  # standalone, nobody reads them back: keep memory flat under load
    fake.stop()


if __name__ == "__main__":
    main()
