"""Time to first audio and to done of a voice turn, streamed sentence by sentence and as one whole reply.

Run from the repository root: `python -m bench.voice_latency` (see bench/README.md). It starts the fake OpenAI
upstream (transcription 100 ms, chat 25 ms per word, speech 100 ms per request) and two Parley servers under uvicorn,
one streaming voice replies (the default) and one with `STREAM_VOICE_REPLIES=false`, all on 127.0.0.1, and stops them
on exit. For replies of 1, 3, 6 and 12 sentences it uploads a 5 s clip and follows the turn's events; then it starts
8 turns at once. It prints figures and the targets beside them; it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import io
import json
import math
import os
import shutil
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from openai import AsyncOpenAI, DefaultAioHttpClient

from bench.chat_overhead import (
    HOST,
    Server,
    base_env,
    cpu_seconds,
    create_agent,
    create_sessions,
    free_port,
    log_tail,
    migrate,
    parley_env,
    run_bench,
    sign_in,
    spawn,
    start_server,
    stop,
    stop_all,
    wait_for_port,
)
from e2e.server import SPEECH_CLIP

TRANSCRIBE_S = 0.1
TOKEN_S = 0.025
SPEECH_S = 0.1
SPEECH_SLOTS = 2
"""Speech requests of one reply in flight at once (`SPEECH_REQUESTS_IN_FLIGHT`, set to this for both servers)."""
CLIP_SECONDS = 5.0
WORDS_PER_SENTENCE = 12
TURN_TIMEOUT_S = 120.0
TERMINAL = ("done", "failed", "cancelled")

FIRST_AUDIO_SLACK_MS = 50.0
FLAT_MS = 100.0
OVERHEAD_TARGET_MS = 30.0
CONCURRENT_FACTOR = 4.0


# --- what the upstream alone costs -----------------------------------------------------------------------------------


def reply_text(sentences: int) -> str:
    """`sentences` sentences of WORDS_PER_SENTENCE words, no commas (so each is one spoken segment)."""
    return " ".join(
        f"This is sentence number {i} of the bench reply with twelve words." for i in range(1, sentences + 1)
    )


def scripted(sentences: int, *, streamed: bool) -> tuple[float, float]:
    """(first audio, done) in ms if Parley took no time at all: the fake's own latencies, as Parley's pipeline
    serialises them.

    Streamed: sentence i is complete once its last word has arrived (transcription, then 25 ms per word so far); its
    speech request starts then, or when one of the SPEECH_SLOTS requests in flight ends, and takes 100 ms; segments
    are published in order. Whole: transcription, every word, one speech request; its one segment is the first audio.
    """
    words = [WORDS_PER_SENTENCE] * sentences
    if not streamed:
        done = TRANSCRIBE_S + TOKEN_S * sum(words) + SPEECH_S
        return 1000 * done, 1000 * done
    slots = [0.0] * SPEECH_SLOTS
    finished: list[float] = []
    written = 0
    for count in words:
        written += count
        ready = TRANSCRIBE_S + TOKEN_S * written
        start = max(ready, heapq.heappop(slots))
        heapq.heappush(slots, start + SPEECH_S)
        finished.append(max([start + SPEECH_S, *finished[-1:]]))  # published in order
    return 1000 * finished[0], 1000 * finished[-1]


def clip_wav() -> bytes:
    """tests/data/question.wav (1.5 s of speech) padded with silence to CLIP_SECONDS."""
    with wave.open(str(SPEECH_CLIP), "rb") as source:
        params = source.getparams()
        frames = source.readframes(params.nframes)
    total = round(CLIP_SECONDS * params.framerate) * params.sampwidth * params.nchannels
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setparams(params)
        out.writeframes(frames + bytes(max(0, total - len(frames))))
    return buffer.getvalue()


# --- one voice turn --------------------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One voice turn as the client saw it. Times in ms; `*_ms` from the upload's response, `total_ms` from the
    start of the upload request."""

    upload_ms: float = math.nan
    first_token_ms: float = math.nan
    first_audio_ms: float = math.nan
    done_ms: float = math.nan
    total_ms: float = math.nan
    end: str = ""
    audio_events: int = 0
    timings: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.end == "done"


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """(event name, data) of a text/event-stream, as they arrive."""
    name, data = "message", list[str]()
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", list[str]()
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)


async def voice_turn(http: aiohttp.ClientSession, parley: Server, session_id: str, clip: bytes) -> Turn:
    """Upload `clip` to the session, follow the turn's events to its end."""
    turn = Turn()
    form = aiohttp.FormData()
    form.add_field("audio", clip, filename="clip.wav", content_type="audio/wav")
    started = time.perf_counter()
    try:
        async with http.post(f"{parley.base_url}/api/v1/sessions/{session_id}/voice", data=form) as response:
            body = await response.read()
            if response.status != 202:
                turn.error = f"upload: {response.status} {body[:200]!r}"
                return turn
        accepted = time.perf_counter()
        turn.upload_ms = 1000 * (accepted - started)
        turn_id = json.loads(body)["id"]
        async with http.get(f"{parley.base_url}/api/v1/voice-turns/{turn_id}/events") as response:
            if response.status != 200:
                turn.error = f"events: {response.status} {(await response.read())[:200]!r}"
                return turn
            async for name, data in sse(response):
                now = 1000 * (time.perf_counter() - accepted)
                if name == "token" and math.isnan(turn.first_token_ms):
                    turn.first_token_ms = now
                elif name == "audio":
                    turn.audio_events += 1
                    if math.isnan(turn.first_audio_ms):
                        turn.first_audio_ms = now
                elif name in TERMINAL:
                    turn.done_ms = now
                    turn.total_ms = 1000 * (time.perf_counter() - started)
                    turn.end = name
                    final = json.loads(data)
                    turn.timings = dict(final.get("timings_ms") or {})
                    if name != "done":
                        turn.error = f"{name}: {final.get('error')}"
                    break
            else:
                turn.error = "the event stream ended without a terminal event"
    except (aiohttp.ClientError, TimeoutError) as exc:
        turn.error = f"{type(exc).__name__}: {exc}"
    return turn


# --- statistics and report -------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of the values that are not NaN."""
    ordered = sorted(v for v in values if not math.isnan(v))
    if not ordered:
        return math.nan
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def p50_p95(values: Sequence[float]) -> str:
    return f"{percentile(values, 50):6.0f} /{percentile(values, 95):6.0f}"


@dataclass
class Series:
    """The turns of one reply size on one server."""

    sentences: int
    streamed: bool
    turns: list[Turn] = field(default_factory=list)
    cpu_s: float = 0.0

    @property
    def ok(self) -> list[Turn]:
        return [turn for turn in self.turns if turn.ok]

    @property
    def path(self) -> str:
        return "streamed" if self.streamed else "whole"

    def scripted(self) -> tuple[float, float]:
        return scripted(self.sentences, streamed=self.streamed)

    def overheads(self) -> list[float]:
        """Per turn: from the start of the upload to the terminal event, less the upstream's own latencies."""
        return [turn.total_ms - self.scripted()[1] for turn in self.ok]

    def first(self, q: float) -> float:
        return percentile([turn.first_audio_ms for turn in self.ok], q)

    def timing(self, stage: str) -> float:
        return percentile([float(turn.timings.get(stage, math.nan)) for turn in self.ok], 50)


HEADER = (
    f"{'sentences':>9} {'path':<8} {'upload':>6} {'first audio p50/p95':>19} {'done p50/p95':>14} "
    f"{'upstream first/done':>19} {'overhead p50/p95':>16} {'server first_audio':>18} {'segments':>8} "
    f"{'CPU ms/turn':>11} {'errors':>6}"
)
STAGES = ("transcribing", "thinking", "speaking", "first_audio")


def row(series: Series) -> str:
    ok = series.ok
    first, done = series.scripted()
    segments = percentile([float(turn.audio_events) for turn in ok], 50)
    cpu = 1000 * series.cpu_s / len(series.turns) if series.turns else math.nan
    upload = percentile([t.upload_ms for t in ok], 50)
    return (
        f"{series.sentences:>9} {series.path:<8} {upload:>6.0f} {p50_p95([t.first_audio_ms for t in ok]):>19} "
        f"{p50_p95([t.done_ms for t in ok]):>14} {f'{first:.0f} / {done:.0f}':>19} "
        f"{percentile(series.overheads(), 50):>+7.0f} /{percentile(series.overheads(), 95):>+7.0f} "
        f"{series.timing('first_audio'):>18.0f} {segments:>8.0f} {cpu:>11.1f} {len(series.turns) - len(ok):>6}"
    )


def print_stages(series: Sequence[Series]) -> None:
    """The server's own `timings_ms` (p50), beside what the upstream alone takes in each stage."""
    print("\n== the server's timings_ms, p50 (upstream alone in brackets) ==")
    print(f"{'sentences':>9} {'path':<8} " + " ".join(f"{stage:>17}" for stage in STAGES))
    for one in series:
        words = WORDS_PER_SENTENCE * one.sentences
        alone = {
            "transcribing": 1000 * TRANSCRIBE_S,
            "thinking": 1000 * TOKEN_S * words,
            # After the reply is written: the last sentence's speech (streamed) or the whole reply's.
            "speaking": one.scripted()[1] - 1000 * (TRANSCRIBE_S + TOKEN_S * words),
            "first_audio": one.scripted()[0],
        }
        cells = [f"{one.timing(stage):>9.0f} ({alone[stage]:>5.0f})" for stage in STAGES]
        print(f"{one.sentences:>9} {one.path:<8} " + " ".join(cells))


def verdict(value: float, limit: float) -> str:
    if math.isnan(value):
        return "no figure"
    return f"within ({limit - value:.0f} ms to spare)" if value <= limit else f"OVER by {value - limit:.0f} ms"


def print_errors(series: Sequence[Series]) -> None:
    for one in series:
        for turn in one.turns:
            if turn.error:
                print(f"  error ({one.sentences} sentences, {one.path}): {turn.error}")


def print_targets(streamed: list[Series], alone: dict[int, dict[str, float]]) -> None:
    print("\n== targets (streamed path, p50) ==")
    for one in streamed:
        limit = one.scripted()[0] + FIRST_AUDIO_SLACK_MS
        print(
            f"first audio, {one.sentences:>2} sentence(s): {one.first(50):6.0f} ms; target <= transcription + first "
            f"sentence + one speech request + {FIRST_AUDIO_SLACK_MS:.0f} ms = {limit:.0f} ms: "
            f"{verdict(one.first(50), limit)}"
        )
    if len(streamed) > 1:
        low, high = streamed[0], streamed[-1]
        spread = high.first(50) - low.first(50)
        print(
            f"first audio flat: {high.sentences} sentences vs {low.sentences}: {spread:+.0f} ms; target <= "
            f"+{FLAT_MS:.0f} ms: {verdict(spread, FLAT_MS)}"
        )
    for one in streamed:
        overhead = percentile(one.overheads(), 50)
        print(
            f"server overhead at C=1, {CLIP_SECONDS:g} s clip, {one.sentences:>2} sentence(s): {overhead:+6.0f} ms; "
            f"target <= {OVERHEAD_TARGET_MS:.0f} ms: {verdict(overhead, OVERHEAD_TARGET_MS)}"
        )
        if one.sentences in alone:
            own = overhead - upstream_extra_ms(one.sentences, alone[one.sentences])
            print(f"  of which Parley's own (less what the fake and the SDK add by themselves): {own:+6.0f} ms")


def no_audio_warning(series: Sequence[Series]) -> None:
    if any(turn.ok for one in series for turn in one.turns) and not any(
        turn.audio_events for one in series for turn in one.turns
    ):
        print(
            "\nNo `audio` event arrived in any turn: this server does not publish spoken segments yet (DESIGN §10). "
            "The first-audio figures are missing; done and overhead still hold.",
        )


# --- the upstream alone, through the SDK ------------------------------------------------------------------------------


async def upstream_alone(base_url: str, clip: bytes, sentences: int, rounds: int = 3) -> dict[str, float]:
    """p50 ms of each upstream call as Parley makes it (the SDK over aiohttp, from this process): transcribing the
    clip, the whole streamed reply, speaking one sentence. What the fake and the SDK add to the scripted latencies."""
    times: dict[str, list[float]] = {"transcription": [], "chat": [], "speech": []}
    async with AsyncOpenAI(api_key="sk-bench", base_url=base_url, http_client=DefaultAioHttpClient()) as client:
        for _ in range(rounds + 1):  # the first round opens the connections: not counted
            started = time.perf_counter()
            await client.audio.transcriptions.create(model="stt", file=("clip.wav", clip, "audio/wav"))
            written = time.perf_counter()
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hello"}], stream=True
            )
            async for _chunk in stream:
                pass
            spoken = time.perf_counter()
            await client.audio.speech.create(model="tts", voice="alloy", input=reply_text(1))
            ended = time.perf_counter()
            for name, ms in zip(times, (written - started, spoken - written, ended - spoken), strict=True):
                times[name].append(1000 * ms)
    return {name: percentile(values[1:], 50) for name, values in times.items()}


def scripted_calls_ms(sentences: int) -> dict[str, float]:
    return {
        "transcription": 1000 * TRANSCRIBE_S,
        "chat": 1000 * TOKEN_S * WORDS_PER_SENTENCE * sentences,
        "speech": 1000 * SPEECH_S,
    }


def upstream_extra_ms(sentences: int, alone: dict[str, float]) -> float:
    """What the fake and the SDK themselves add to a turn's chain of three calls, measured from the bench."""
    return sum(alone.values()) - sum(scripted_calls_ms(sentences).values())


def print_upstream_alone(sentences: int, alone: dict[str, float]) -> None:
    scripted_ms = scripted_calls_ms(sentences)
    extra = upstream_extra_ms(sentences, alone)
    parts = ", ".join(f"{name} {alone[name]:.0f} ({scripted_ms[name]:.0f})" for name in alone)
    print(
        f"  (upstream alone, {sentences} sentence(s), through the SDK from the bench: {parts}; "
        f"the fake and the SDK add {extra:+.0f} ms to a turn's chain of three calls)"
    )


# --- the run ---------------------------------------------------------------------------------------------------------


@dataclass
class Options:
    sentences: list[int]
    turns: int
    concurrency: int
    concurrent_sentences: int
    batches: int


@dataclass
class Bench:
    """The running processes and the clients signed in to each Parley."""

    tmp: Path
    servers: list[Server]
    clip: bytes
    upstream_port: int = 0
    upstream: Server | None = None
    parleys: dict[bool, tuple[Server, aiohttp.ClientSession, str]] = field(default_factory=dict)
    alone: dict[int, dict[str, float]] = field(default_factory=dict)
    """Per reply size: `upstream_alone`."""

    @property
    def upstream_url(self) -> str:
        return f"http://{HOST}:{self.upstream_port}/v1"

    async def start_upstream(self, sentences: int) -> None:
        """(Re)start the fake upstream on its port, answering every chat with `sentences` sentences."""
        if self.upstream is not None:
            stop(self.upstream.process)
            self.servers.remove(self.upstream)
        url = self.upstream_url
        args = [
            *(sys.executable, "-m", "tests.fake_openai", "--port", str(self.upstream_port)),
            *("--transcribe-delay", str(TRANSCRIBE_S), "--token-delay", str(TOKEN_S)),
            *("--speech-delay", str(SPEECH_S), "--reply-text", reply_text(sentences)),
        ]
        process, log = spawn("upstream", args, base_env(url), self.tmp)
        self.upstream = Server("upstream", process, url, log)
        self.servers.append(self.upstream)
        await wait_for_port(self.upstream_port, process, log)

    async def start_parley(self, streamed: bool) -> None:
        name = "streamed" if streamed else "whole"
        folder = self.tmp / name
        folder.mkdir()
        env = parley_env(self.upstream_url, f"sqlite+aiosqlite:///{folder / 'bench.db'}", folder)
        env.update(
            RATE_LIMIT_VOICE_PER_MINUTE="0",
            STREAM_VOICE_REPLIES="true" if streamed else "false",
            SPEECH_REQUESTS_IN_FLIGHT=str(SPEECH_SLOTS),
        )
        await asyncio.to_thread(migrate, env)
        timeout = aiohttp.ClientTimeout(total=TURN_TIMEOUT_S)
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout)
        try:
            parley = await start_server(http, name, "webapp.main:app", env, self.tmp, self.servers)
            await sign_in(http, parley)
            agent_id = await create_agent(http, parley)
        except BaseException:
            await http.close()
            raise
        self.parleys[streamed] = (parley, http, agent_id)

    async def close(self) -> None:
        for _, http, _ in self.parleys.values():
            await http.close()

    async def turns(self, streamed: bool, count: int) -> list[Turn]:
        """`count` turns at once, each in a fresh session (created beforehand)."""
        parley, http, agent_id = self.parleys[streamed]
        sessions = await create_sessions(http, parley, agent_id, count)
        return list(await asyncio.gather(*(voice_turn(http, parley, session, self.clip) for session in sessions)))

    async def warm_up(self) -> None:
        """One unmeasured turn per server: reconnects Parley to a restarted upstream and fills its speech cache."""
        for streamed in self.parleys:
            for turn in await self.turns(streamed, 1):
                if turn.error:
                    parley = self.parleys[streamed][0]
                    raise RuntimeError(f"warm-up turn failed on {parley.name}: {turn.error}\n{log_tail(parley.log)}")

    async def sizes(self, options: Options) -> list[Series]:
        """Turns one at a time, for every reply size, alternating between the two servers."""
        results: list[Series] = []
        for sentences in options.sentences:
            await self.start_upstream(sentences)
            await self.warm_up()
            pair = {streamed: Series(sentences, streamed) for streamed in (True, False)}
            for _ in range(options.turns):
                for streamed, series in pair.items():
                    pid = self.parleys[streamed][0].pid
                    cpu = cpu_seconds(pid)
                    series.turns += await self.turns(streamed, 1)
                    series.cpu_s += cpu_seconds(pid) - cpu
            results += pair.values()
            for series in pair.values():
                print(row(series), flush=True)
            self.alone[sentences] = await upstream_alone(self.upstream_url, self.clip, sentences)
        return results

    async def concurrent(self, options: Options) -> None:
        """`concurrency` turns started together on the streaming server, against single turns just before."""
        sentences = options.concurrent_sentences
        await self.start_upstream(sentences)
        await self.warm_up()
        pid = self.parleys[True][0].pid
        single = Series(sentences, True)
        for _ in range(options.turns):
            cpu = cpu_seconds(pid)
            single.turns += await self.turns(True, 1)
            single.cpu_s += cpu_seconds(pid) - cpu
        together = Series(sentences, True)
        overlapped = 0
        for _ in range(options.batches):
            cpu = cpu_seconds(pid)
            batch = await self.turns(True, options.concurrency)
            together.cpu_s += cpu_seconds(pid) - cpu
            together.turns += batch
            overlapped += all_in_flight(batch)
        alone, crowd = percentile(single.overheads(), 50), percentile(together.overheads(), 50)
        print(
            f"\n== {options.concurrency} voice turns at once ({options.batches} batch(es)), {sentences} sentence(s), "
            "streamed path, ms =="
        )
        print(HEADER)
        print(row(single).replace(" streamed", " C=1     ", 1))
        print(row(together).replace(" streamed", f" C={options.concurrency:<6}", 1))
        print(
            f"all {options.concurrency} in flight at once (every turn's first token before any turn ended): "
            f"{overlapped} of {options.batches} batch(es)"
        )
        ratio = crowd / alone if alone > 0 else math.nan
        print(
            f"overhead p50 at C={options.concurrency}: {crowd:+.0f} ms, {ratio:.1f}x the single turn's "
            f"{alone:+.0f} ms; "
            f"target <= {CONCURRENT_FACTOR:g}x = {CONCURRENT_FACTOR * alone:.0f} ms: "
            f"{verdict(crowd, CONCURRENT_FACTOR * alone)}"
        )
        print_errors([single, together])


def all_in_flight(batch: Sequence[Turn]) -> bool:
    """Whether every turn of the batch was generating its reply before the first of them ended."""
    ok = [turn for turn in batch if turn.ok]
    if len(ok) != len(batch) or any(math.isnan(turn.first_token_ms) for turn in ok):
        return False
    # Each turn's times count from its own upload response: put them on one clock (the upload starts together).
    first_tokens = [turn.upload_ms + turn.first_token_ms for turn in ok]
    ends = [turn.upload_ms + turn.done_ms for turn in ok]
    return max(first_tokens) < min(ends)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.voice_latency", description=__doc__)
    parser.add_argument("--sentences", default="1,3,6,12", help="reply sizes in sentences (default 1,3,6,12)")
    parser.add_argument("--turns", type=int, default=10, help="turns per size and path, one at a time (default 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="turns started together (default 8; 0: skip)")
    parser.add_argument(
        "--concurrent-sentences", type=int, default=3, help="reply size of the simultaneous turns (default 3)"
    )
    parser.add_argument("--batches", type=int, default=3, help="how many times to start them together (default 3)")
    parser.add_argument("--quick", action="store_true", help="3 turns per size and one batch: a smoke run")
    args = parser.parse_args(argv)
    try:
        sentences = [int(part) for part in args.sentences.split(",") if part.strip()]
    except ValueError:
        parser.error("--sentences needs comma-separated positive integers")
    if not sentences or min(sentences) < 1 or args.concurrent_sentences < 1:
        parser.error("reply sizes must be positive integers")
    if args.turns < 1 or args.batches < 1 or args.concurrency < 0:
        parser.error("--turns and --batches must be positive, --concurrency 0 or more")
    return Options(
        sentences=sentences,
        turns=3 if args.quick else args.turns,
        concurrency=args.concurrency,
        concurrent_sentences=args.concurrent_sentences,
        batches=1 if args.quick else args.batches,
    )


async def amain(options: Options) -> None:
    servers: list[Server] = []
    tmp = Path(tempfile.mkdtemp(prefix="parley-voice-bench-"))
    bench = Bench(tmp, servers, clip_wav(), upstream_port=free_port())
    try:
        await bench.start_upstream(options.sentences[0])
        await bench.start_parley(True)
        await bench.start_parley(False)
        print(
            f"Voice turns against the fake upstream: transcription {1000 * TRANSCRIBE_S:.0f} ms, chat streamed at "
            f"{1000 * TOKEN_S:.0f} ms per word (a whole reply takes as long), speech {1000 * SPEECH_S:.0f} ms per "
            f"request ({SPEECH_SLOTS} at once per reply); {WORDS_PER_SENTENCE} words per sentence; a "
            f"{CLIP_SECONDS:g} s WAV clip; {options.turns} turn(s) per size and path, one at a time; "
            f"{os.cpu_count()} CPUs. Times in ms: first audio and done from the upload's response; overhead = from the "
            "upload's start to done, less the upstream's own latencies (\"upstream first/done\")."
        )
        print(HEADER, flush=True)
        series = await bench.sizes(options)
        for sentences, alone in bench.alone.items():
            print_upstream_alone(sentences, alone)
        no_audio_warning(series)
        print_stages(series)
        print_targets([one for one in series if one.streamed], bench.alone)
        print_errors(series)
        if options.concurrency:
            await bench.concurrent(options)
    finally:
        await bench.close()
        stop_all(servers)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> None:
    run_bench(amain(parse_args(argv)))


if __name__ == "__main__":
    main()
