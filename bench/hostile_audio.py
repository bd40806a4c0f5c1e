"""What each hostile upload costs `webapp.audio.load_clip`, against a normal 5 s recording.

Run from the repository root: `python -m bench.hostile_audio` (see bench/README.md). It builds the corpus of
`tests.hostile_audio` (the same files the tests upload), then decodes each file in a fresh Python process, so that
each figure is that process's own: wall time of `load_clip`, and the peak RSS the process reached (`VmHWM`) less its
RSS just before the call. It prints figures; it passes or fails nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.hostile_audio import MAX_SECONDS, baseline_clip, corpus

REPO = Path(__file__).resolve().parent.parent

# Runs in the child: import everything first, so that the figures are the decode's alone.
CHILD = r"""
import json, sys, time
from pathlib import Path

import av, numpy  # noqa: F401  (imported before measuring, as a warmed-up server has them)
from webapp.audio import load_clip
from webapp.errors import AppError

def status_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

path, max_seconds = Path(sys.argv[1]), float(sys.argv[2])
before = status_kib("VmRSS")
wall, cpu = time.perf_counter(), time.process_time()
try:
    clip = load_clip(path, max_seconds=max_seconds)
    outcome = f"200 ok ({clip.duration_s:.1f} s)"
except AppError as exc:
    outcome = f"{exc.status} {exc.code}"
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
# VmHWM, not ru_maxrss: ru_maxrss survives fork and exec, so it would report the parent's peak.
peak = status_kib("VmHWM")
print(json.dumps({"outcome": outcome, "wall": wall, "cpu": cpu, "peak_kib": peak, "growth_kib": peak - before}))
"""


@dataclass(frozen=True)
class Measured:
    outcome: str
    wall_s: float = math.nan
    growth_kib: int = 0
    peak_kib: int = 0


def measure(path: Path, max_seconds: float, timeout: float) -> Measured:
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(path), str(max_seconds)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return Measured(f"killed after {timeout:g} s")
    if done.returncode != 0:
        return Measured(f"crashed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    got = json.loads(done.stdout.strip().splitlines()[-1])
    return Measured(got["outcome"], got["wall"], got["growth_kib"], got["peak_kib"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--max-seconds", type=float, default=MAX_SECONDS, help="the limit (MAX_AUDIO_SECONDS)")
    parser.add_argument("--timeout", type=float, default=300.0, help="kill a decode after this many seconds")
    parser.add_argument("--only", default="", help="run only files whose name contains this")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        base_path = Path(tmp) / "baseline.webm"
        base_path.write_bytes(baseline_clip(5.0))
        base = measure(base_path, args.max_seconds, args.timeout)
        base_growth = max(1, base.growth_kib)
        print(f"load_clip per file, each in a fresh process; max_seconds={args.max_seconds:g}")
        print(
            f"baseline: 5 s WebM/Opus ({base_path.stat().st_size} bytes): {base.outcome}, {base.wall_s * 1000:.1f} ms, "
            f"RSS +{base.growth_kib / 1024:.1f} MiB (peak {base.peak_kib / 1024:.0f} MiB)"
        )
        print()
        header = f"{'file':30} {'bytes':>9} {'outcome':26} {'ms':>8} {'x base':>7} {'RSS +MiB':>9} {'x base':>7}"
        print(header)
        print("-" * len(header))
        for hostile in corpus():
            if args.only not in hostile.name:
                continue
            path = Path(tmp) / hostile.name
            path.write_bytes(hostile.data)
            got = measure(path, args.max_seconds, args.timeout)
            print(
                f"{hostile.name:30} {len(hostile.data):9} {got.outcome:26} {got.wall_s * 1000:8.1f} "
                f"{got.wall_s / base.wall_s:7.2f} {got.growth_kib / 1024:9.1f} {got.growth_kib / base_growth:7.2f}"
            )


if __name__ == "__main__":
    main()
