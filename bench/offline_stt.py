"""The offline recognisers side by side: faster-whisper tiny.en and pocketsphinx on the same committed clips.

Run from the repository root: `.venv/bin/python -m bench.offline_stt` (see bench/README.md). For each engine, a fresh
Python process loads it (timed), transcribes one clip to warm up, then every clip of tests/stt_clips.py (`--repeat`
times, the median kept), and reports its peak RSS; this process prints WER, real-time factor (decode seconds / audio
seconds) and memory beside each other. `--server` also starts Parley (offline provider) once per engine and measures
start-up, idle RSS, and the first and second voice turn (`/readyz` followed while the first one loads the model).
It prints figures and judges nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench.chat_overhead import REPO, free_port, migrate, rss_mib, stop, tree_rss_mib
from tests.stt_clips import BY_NAME, CLIPS, word_errors

ENGINES = ("whisper", "pocketsphinx")
SERVER_CLIP = "capital-chromium"


def default_threads() -> int:
    """faster-whisper's threads per recognition process in a server with the default VOICE_WORKERS=2."""
    cores = os.cpu_count() or 1
    return max(1, cores // min(2, cores))


# --- one engine, in its own process -----------------------------------------------------------------------------------


def measure_engine(engine: str, threads: int, repeat: int) -> dict[str, Any]:
    """Run in a child process: load `engine`, transcribe every clip, report times, texts and peak RSS."""
    from webapp.audio import load_clip

    started = time.perf_counter()
    recognizer: Any
    if engine == "whisper":
        from webapp.ai.whisper import WhisperRecognizer

        recognizer = WhisperRecognizer(cpu_threads=threads)
        recognizer.load()
    else:
        from webapp.ai.offline_speech import OfflineRecognizer

        recognizer = OfflineRecognizer()
        recognizer.transcribe(b"\0\0" * 1600)  # loads the decoder
    load_s = time.perf_counter() - started
    rss_loaded = rss_mib(os.getpid())
    clips = {clip.name: load_clip(clip.path, max_seconds=60).pcm16k for clip in CLIPS}
    recognizer.transcribe(clips[CLIPS[0].name])  # warm-up, not counted
    results = {}
    for name, pcm in clips.items():
        times, text = [], ""
        for _ in range(repeat):
            started = time.perf_counter()
            text = recognizer.transcribe(pcm)
            times.append(time.perf_counter() - started)
        results[name] = {"text": text, "seconds": statistics.median(times), "audio_seconds": len(pcm) / 32_000}
    return {
        "engine": engine,
        "threads": threads if engine == "whisper" else 1,
        "load_s": load_s,
        "rss_loaded_mib": rss_loaded,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "clips": results,
    }


def run_engine(engine: str, threads: int, repeat: int) -> dict[str, Any]:
    args = [sys.executable, "-m", "bench.offline_stt", "--child", engine, "--threads", str(threads)]
    result = subprocess.run([*args, "--repeat", str(repeat)], cwd=REPO, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{engine} failed:\n{result.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def print_engines(reports: Sequence[dict[str, Any]], *, show: bool) -> None:
    names = [report["engine"] for report in reports]
    print(f"\n== the committed clips ({len(CLIPS)}), decoded as the app decodes uploads; RTF = decode s / audio s ==")
    print(
        f"{'clip':<17} {'source':<14} {'audio s':>7} " + " ".join(f"{name + ' WER':>16} {'RTF':>5}" for name in names)
    )
    totals = {name: [0, 0] for name in names}
    for clip in CLIPS:
        cells = []
        for report in reports:
            heard = report["clips"][clip.name]
            errors, count = word_errors(clip.text, heard["text"])
            totals[report["engine"]][0] += errors
            totals[report["engine"]][1] += count
            cells.append(f"{errors / count:>16.2f} {heard['seconds'] / heard['audio_seconds']:>5.2f}")
        audio = reports[0]["clips"][clip.name]["audio_seconds"]
        print(f"{clip.name:<17} {clip.source:<14} {audio:>7.1f} " + " ".join(cells))
    print(f"{'all (by words)':<40} " + " ".join(f"{t[0] / t[1]:>16.2f} {'':>5}" for t in totals.values()))
    print()
    for report in reports:
        decode = sum(c["seconds"] for c in report["clips"].values())
        audio = sum(c["audio_seconds"] for c in report["clips"].values())
        longest = max(report["clips"].values(), key=lambda c: c["audio_seconds"])
        print(
            f"{report['engine']:<13} threads {report['threads']}  load {report['load_s']:.2f} s  "
            f"RTF over all {decode / audio:.2f}  longest clip {longest['audio_seconds']:.1f} s in "
            f"{longest['seconds']:.2f} s  RSS loaded {report['rss_loaded_mib']:.0f} MiB, "
            f"peak {report['peak_rss_mib']:.0f} MiB"
        )
    if show:
        print("\n== what each engine wrote ==")
        for clip in CLIPS:
            print(f"{clip.name}: {clip.text!r}")
            for report in reports:
                print(f"  {report['engine']:<13} {report['clips'][clip.name]['text']!r}")


# --- the server: start-up, idle RSS, first and second voice turn ------------------------------------------------------


@contextlib.contextmanager
def server(engine: str, tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], str, float]]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(("OPENAI_", "AI_PROVIDER"))}
    root = tmp / engine
    root.mkdir()
    env.update(
        AI_PROVIDER="offline",
        OFFLINE_STT=engine,
        DATABASE_URL=f"sqlite+aiosqlite:///{root / 'bench.db'}",
        MEDIA_DIR=str(root / "media"),
        SECRET_KEY_FILE=str(root / "secret"),
        NO_PROXY="127.0.0.1",
        no_proxy="127.0.0.1",
    )
    migrate(env)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    args = [sys.executable, "-m", "uvicorn", "webapp.main:app", "--port", str(port), "--no-access-log"]
    with (root / "server.log").open("wb") as log:
        process = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError((root / "server.log").read_text()[-3000:])
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            time.sleep(0.01)
        yield process, base, time.perf_counter() - started
    finally:
        stop(process)


def voice_turn(http: httpx.Client, session_id: str, clip: bytes) -> tuple[dict[str, Any], list[str]]:
    """Upload `clip`, follow the turn and /readyz until it is done; the turn and the /readyz states seen."""
    turn = http.post(f"/api/v1/sessions/{session_id}/voice", files={"audio": ("clip.webm", clip)}).json()
    states: list[str] = []
    while turn["status"] not in ("done", "failed", "cancelled"):
        state = http.get("/readyz").json()["speech_recognition"]
        if not states or states[-1] != state:
            states.append(state)
        time.sleep(0.05)
        turn = http.get(f"/api/v1/voice-turns/{turn['id']}").json()
    states.append(http.get("/readyz").json()["speech_recognition"])
    return turn, [s for i, s in enumerate(states) if i == 0 or s != states[i - 1]]


def measure_server(engine: str, tmp: Path) -> None:
    clip = BY_NAME[SERVER_CLIP].path.read_bytes()
    with server(engine, tmp) as (process, base, startup_s), httpx.Client(base_url=base, timeout=120) as http:
        time.sleep(1.0)
        ready = http.get("/readyz").json()
        time.sleep(0.5)
        idle = rss_mib(process.pid)
        token = http.post(
            "/api/v1/auth/register", json={"email": "bench@example.com", "password": "a long bench password"}
        ).json()["access_token"]
        http.headers["Authorization"] = f"Bearer {token}"
        agent = http.post("/api/v1/agents", json={"name": "Bench", "prompt": "You listen."}).json()
        session = http.post(f"/api/v1/agents/{agent['id']}/sessions").json()
        first, states = voice_turn(http, session["id"], clip)
        second, _ = voice_turn(http, session["id"], clip)
        after, tree = rss_mib(process.pid), tree_rss_mib(process.pid)
    print(
        f"{engine:<13} start-up {startup_s:.2f} s  idle RSS {idle:.1f} MiB  /readyz {ready['speech_recognition']!r}\n"
        f"{'':<13} first turn: transcribing {first['timings_ms']['transcribing']} ms, heard "
        f"{first['transcript']!r}; /readyz went {' -> '.join(states)}\n"
        f"{'':<13} second turn: transcribing {second['timings_ms']['transcribing']} ms\n"
        f"{'':<13} after: server {after:.1f} MiB, with its recognition process(es) {tree:.1f} MiB"
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=default_threads(), help="faster-whisper's cpu_threads")
    parser.add_argument("--repeat", type=int, default=3, help="decodes per clip; the median is kept")
    parser.add_argument("--show", action="store_true", help="print what each engine wrote")
    parser.add_argument("--server", action="store_true", help="also measure a server per engine")
    parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(measure_engine(args.child, args.threads, args.repeat)))
        return
    print(f"offline recognisers on {os.cpu_count()} CPUs; faster-whisper with cpu_threads={args.threads}")
    reports = [run_engine(engine, args.threads, args.repeat) for engine in ENGINES]
    print_engines(reports, show=args.show)
    if args.server:
        print(f"\n== Parley with the offline provider, per OFFLINE_STT (clip: {SERVER_CLIP}) ==")
        with tempfile.TemporaryDirectory(prefix="parley-bench-stt-") as tmp:
            for engine in ENGINES:
                measure_server(engine, Path(tmp))


if __name__ == "__main__":
    main()
