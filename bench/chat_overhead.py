"""What Parley adds to a text chat turn, measured against a bare FastAPI route making the same SDK call.

Run from the repository root: `python -m bench.chat_overhead` (see bench/README.md). Everything it starts — a fake
OpenAI upstream answering in 100 ms, the baseline app and Parley, each under uvicorn — listens on 127.0.0.1 only and
is stopped on exit. It prints figures; it passes or fails nothing. With `--workers 1,2`, one Parley per uvicorn worker
count, each measured against the same one-process baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy.engine import make_url

from bench.profile_summary import breakdown, summarise
from e2e.server import scratch_postgres_database

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
UPSTREAM_DELAY_S = 0.1
MODEL = "gpt-5.4-mini"
SYSTEM_PROMPT = "You are a helpful assistant. Be brief."
START_TIMEOUT_S = 60.0
REQUEST_TIMEOUT_S = 30.0
CLK_TCK = os.sysconf("SC_CLK_TCK")
PROFILE_GROUPS: list[tuple[str, Sequence[str]]] = [
    ("openai SDK: request params transform", ["openai/_utils/_transform.py"]),
    ("SQLAlchemy + aiosqlite (with SQL run by the turn engine)", ["sqlalchemy/", "aiosqlite/"]),
    ("turn engine, besides its SQL", ["webapp/services/turns.py"]),
    ("openai SDK + aiohttp client: the rest", ["openai/", "aiohttp/client"]),
    ("FastAPI, Starlette, pydantic", ["fastapi/", "starlette/", "pydantic"]),
    ("Parley's own code, besides the above", ["webapp/"]),
]


# --- processes -------------------------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path
    startup_s: float = 0.0
    workers: int = 1
    """uvicorn's `--workers`: above 1, `process` is uvicorn's supervisor and the workers are its children."""

    @property
    def pid(self) -> int:
        return self.process.pid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def spawn(name: str, args: Sequence[str], env: dict[str, str], logs: Path) -> tuple[subprocess.Popen[bytes], Path]:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
    return process, log


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


@dataclass(frozen=True)
class ProcStat:
    """What the bench reads from /proc/PID/stat."""

    pid: int
    ppid: int
    started: int
    """Start time in clock ticks after boot: with the pid, it names one process even if the pid is reused."""
    cpu_s: float
    """User + system CPU time of the whole process (all its threads)."""


def read_stat(pid: int) -> ProcStat | None:
    """The process's /proc/PID/stat, or None once it has gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and parentheses
    # ppid, utime, stime, starttime: fields 4, 14, 15 and 22 of stat(5)
    return ProcStat(pid, int(fields[1]), int(fields[19]), (int(fields[11]) + int(fields[12])) / CLK_TCK)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the whole process (all its threads), from /proc/PID/stat."""
    stat = read_stat(pid)
    if stat is None:
        raise ProcessLookupError(f"no process {pid}")
    return stat.cpu_s


Tree = dict[tuple[int, int], ProcStat]
"""A process and its descendants alive at one moment, by (pid, start time)."""


def process_tree(root: int) -> Tree:
    """`root` and every descendant alive now (uvicorn's supervisor and its workers), from one pass over /proc."""
    children: defaultdict[int, list[ProcStat]] = defaultdict(list)
    top: ProcStat | None = None
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := read_stat(int(entry))) is not None:
            children[stat.ppid].append(stat)
            if stat.pid == root:
                top = stat
    tree: Tree = {}
    pending = [top] if top is not None else []
    while pending:
        stat = pending.pop()
        tree[stat.pid, stat.started] = stat
        pending.extend(children[stat.pid])
    return tree


@dataclass(frozen=True)
class TreeCpu:
    """CPU time a process tree spent between two snapshots, summed over the processes present in both."""

    by_process: list[tuple[int, float]]
    """(pid, CPU seconds), the root first."""
    workers: frozenset[int]
    """The pids among them that are uvicorn workers (`is_worker`)."""
    appeared: int
    """Processes started between the snapshots (a replaced worker): not counted."""
    ended: int
    """Processes that ended between the snapshots: not counted."""

    @property
    def total_s(self) -> float:
        return sum(seconds for _, seconds in self.by_process)


def cpu_between(before: Tree, after: Tree, root: int) -> TreeCpu:
    both = sorted(before.keys() & after.keys(), key=lambda key: (key[0] != root, key))
    return TreeCpu(
        by_process=[(key[0], after[key].cpu_s - before[key].cpu_s) for key in both],
        workers=frozenset(pid for pid, _ in both if is_worker(pid)),
        appeared=len(after.keys() - before.keys()),
        ended=len(before.keys() - after.keys()),
    )


def is_worker(pid: int) -> bool:
    """Whether the process is one of uvicorn's workers: started through multiprocessing's spawn, unlike the
    supervisor's other child, multiprocessing's resource tracker."""
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError):
        return False


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def tree_rss_mib(pid: int) -> float:
    """VmRSS summed over the process and its descendants (pages they share are counted once per process)."""
    total = 0.0
    for child, _ in process_tree(pid):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            total += rss_mib(child)
    return total


def log_tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def wait_for_port(port: int, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process exited with {process.returncode}:\n{log_tail(log)}")
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection(HOST, port)
            writer.close()
            await writer.wait_closed()
            return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"nothing listening on port {port} after {START_TIMEOUT_S:g} s")


async def wait_for_health(http: aiohttp.ClientSession, server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{log_tail(server.log)}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with http.get(f"{server.base_url}/healthz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.01)
    raise RuntimeError(f"{server.name} did not answer /healthz after {START_TIMEOUT_S:g} s")


def uvicorn_args(app: str, port: int, workers: int = 1) -> list[str]:
    return [
        *(sys.executable, "-m", "uvicorn", app, "--host", HOST, "--port", str(port)),
        *("--log-level", "warning", "--no-access-log"),
        *(("--workers", str(workers)) if workers > 1 else ()),
    ]


async def start_server(
    http: aiohttp.ClientSession,
    name: str,
    app: str,
    env: dict[str, str],
    logs: Path,
    servers: list[Server],
    workers: int = 1,
) -> Server:
    """Spawn uvicorn serving `app`; its start-up time runs from the spawn to the first answer of /healthz (with
    several workers: the first worker's answer)."""
    port = free_port()
    started = time.perf_counter()
    process, log = spawn(name, uvicorn_args(app, port, workers), env, logs)
    server = Server(name, process, f"http://{HOST}:{port}", log, workers=workers)
    servers.append(server)  # registered before waiting, so it is stopped whatever happens
    await wait_for_health(http, server)
    server.startup_s = time.perf_counter() - started
    if workers > 1:
        await wait_for_workers(server)
    return server


async def wait_for_workers(server: Server) -> None:
    """Until uvicorn's supervisor has started all its workers. They start together, so when the first answers
    /healthz the others are close behind; the pause before measuring and each level's warm-up cover the rest."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{log_tail(server.log)}")
        if sum(is_worker(pid) for pid, _ in process_tree(server.pid)) >= server.workers:
            return
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{server.name} did not start {server.workers} workers after {START_TIMEOUT_S:g} s")


# --- the environment under test --------------------------------------------------------------------------------------


def base_env(upstream: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(NO_PROXY=f"{HOST},localhost", no_proxy=f"{HOST},localhost", PYTHONUNBUFFERED="1")
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        env.pop(name, None)
    env.update(BENCH_UPSTREAM=upstream, BENCH_MODEL=MODEL, BENCH_SYSTEM_PROMPT=SYSTEM_PROMPT)
    return env


def parley_env(upstream: str, database_url: str, media_dir: Path) -> dict[str, str]:
    env = base_env(upstream)
    env.update(
        DATABASE_URL=database_url,
        MEDIA_DIR=str(media_dir),
        AI_PROVIDER="openai",
        RATE_LIMIT_MESSAGES_PER_MINUTE="0",  # the bench is one user sending far more than a person would
        OPENAI_API_KEY="sk-bench",
        OPENAI_BASE_URL=upstream,
        CHAT_MODEL=MODEL,
    )
    return env


def migrate(env: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"], cwd=REPO, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise RuntimeError(f"alembic upgrade head failed:\n{result.stdout}{result.stderr}")


@contextlib.asynccontextmanager
async def database(server_url: str | None, tmp: Path) -> AsyncIterator[str]:
    if server_url is None:
        yield f"sqlite+aiosqlite:///{tmp / 'bench.db'}"
        return
    with scratch_postgres_database(server_url, prefix="parley_bench") as url:
        yield url


async def sign_in(http: aiohttp.ClientSession, parley: Server) -> None:
    """Register the bench's account; every later request carries its token (the baseline ignores it)."""
    body = {"email": "bench@example.com", "password": "bench password 123"}
    async with http.post(f"{parley.base_url}/api/v1/auth/register", json=body) as response:
        response.raise_for_status()
        http.headers["Authorization"] = f"Bearer {(await response.json())['access_token']}"


async def create_agent(http: aiohttp.ClientSession, parley: Server) -> str:
    body = {"name": "Bench", "prompt": SYSTEM_PROMPT}
    async with http.post(f"{parley.base_url}/api/v1/agents", json=body) as response:
        response.raise_for_status()
        agent_id: str = (await response.json())["id"]
        return agent_id


async def create_sessions(http: aiohttp.ClientSession, parley: Server, agent_id: str, count: int) -> list[str]:
    """`count` new sessions with the agent, a few requests at a time."""
    url = f"{parley.base_url}/api/v1/agents/{agent_id}/sessions"
    slots = asyncio.Semaphore(8)

    async def one() -> str:
        async with slots, http.post(url, json={}) as response:
            response.raise_for_status()
            session_id: str = (await response.json())["id"]
            return session_id

    return list(await asyncio.gather(*(one() for _ in range(count))))


# --- load ------------------------------------------------------------------------------------------------------------


@dataclass
class Sessions:
    """Which Parley session each client talks to: its own, moved to a fresh spare every `turns_per_session` turns.

    With `turns_per_session` 0 a client keeps its session, whose history grows with every turn.
    """

    current: list[str]
    spare: deque[str]
    turns_per_session: int = 0
    turns: list[int] = field(init=False)
    used: int = field(init=False)
    total_turns: int = field(default=0, init=False)
    ran_out: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.turns = [0] * len(self.current)
        self.used = len(self.current)

    def next(self, client: int) -> str:
        if self.turns_per_session and self.turns[client] >= self.turns_per_session:
            if self.spare:
                self.current[client], self.turns[client] = self.spare.popleft(), 0
                self.used += 1
            else:
                self.ran_out = True
        self.turns[client] += 1
        self.total_turns += 1
        return self.current[client]

    def note(self, who: str = "Parley") -> str:
        stored = 2 * self.total_turns / self.used  # both messages of every turn
        rotation = f"a fresh one every {self.turns_per_session} turn(s)" if self.turns_per_session else "never rotated"
        spares = "; ran out of spare sessions, so some grew longer" if self.ran_out else ""
        return (
            f"({who} sessions: {self.used} used, {rotation}{spares}; they ended with {stored:.0f} stored messages "
            "on average, all sent back as context)"
        )


@dataclass(frozen=True)
class Target:
    """What a server's clients send: client i posts `bodies[i]` to `url(i)` (called per request), expecting `status`."""

    server: Server
    url: Callable[[int], str]
    bodies: list[bytes]
    status: int

    @property
    def clients(self) -> int:
        return len(self.bodies)


@dataclass
class Run:
    target: str
    clients: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    cpu: TreeCpu | None = None
    """`cpu_s` per process of the server's tree (uvicorn's supervisor, then its workers)."""

    @property
    def requests(self) -> int:
        return len(self.latencies_ms)

    @property
    def rps(self) -> float:
        return self.requests / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_s / self.requests if self.requests else math.nan

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (q in 0..100) of the successful requests' latencies, in ms."""
        if not self.latencies_ms:
            return math.nan
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def message_bodies(clients: int) -> list[bytes]:
    return [json.dumps({"content": f"Hello from client {i}. What is a prime number?"}).encode() for i in range(clients)]


def baseline_target(server: Server, clients: int) -> Target:
    url = f"{server.base_url}/chat"
    return Target(server, lambda _: url, message_bodies(clients), 200)


def parley_target(server: Server, sessions: Sessions) -> Target:
    api = f"{server.base_url}/api/v1/sessions"
    return Target(
        server, lambda client: f"{api}/{sessions.next(client)}/messages", message_bodies(len(sessions.current)), 201
    )


async def client_loop(http: aiohttp.ClientSession, target: Target, client: int, deadline: float, run: Run) -> None:
    """Send requests back-to-back until the deadline, recording each one's latency or counting it as an error."""
    body, headers = target.bodies[client], {"Content-Type": "application/json"}
    while time.perf_counter() < deadline:
        url = target.url(client)
        started = time.perf_counter()
        ok = False
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with http.post(url, data=body, headers=headers) as response:
                await response.read()
                ok = response.status == target.status
        if ok:
            run.latencies_ms.append(1000 * (time.perf_counter() - started))
        else:
            run.errors += 1
            await asyncio.sleep(0.05)  # do not spin on a broken server


async def load(http: aiohttp.ClientSession, target: Target, duration_s: float) -> Run:
    """All clients at once for `duration_s` (in-flight requests are let finish), with the server's CPU time: summed
    over its process tree (uvicorn's supervisor and workers), counting the processes alive at both ends."""
    run = Run(target.server.name, target.clients)
    tree_before = process_tree(target.server.pid)
    started = time.perf_counter()
    deadline = started + duration_s
    await asyncio.gather(*(client_loop(http, target, client, deadline, run) for client in range(target.clients)))
    run.elapsed_s = time.perf_counter() - started
    run.cpu = cpu_between(tree_before, process_tree(target.server.pid), target.server.pid)
    run.cpu_s = run.cpu.total_s
    return run


async def measure(http: aiohttp.ClientSession, target: Target, duration_s: float, warmup_s: float) -> Run:
    if warmup_s > 0:
        await load(http, target, warmup_s)
    return await load(http, target, duration_s)


# --- report ----------------------------------------------------------------------------------------------------------

UPSTREAM_MS = 1000 * UPSTREAM_DELAY_S
HEADER = (
    f"{'target':<9} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} "
    f"{'added p50':>9} {'added p95':>9} {'added p99':>9} {'CPU ms/req':>10} {'errors':>6}"
)


def row(run: Run) -> str:
    p50, p95, p99 = (run.percentile(q) for q in (50, 95, 99))
    return (
        f"{run.target:<9} {run.rps:>7.1f} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f} "
        f"{p50 - UPSTREAM_MS:>+9.1f} {p95 - UPSTREAM_MS:>+9.1f} {p99 - UPSTREAM_MS:>+9.1f} "
        f"{run.cpu_ms_per_request:>10.2f} {run.errors:>6}"
    )


def throughput_ratio(baseline: Run, parley: Run) -> float:
    return parley.rps / baseline.rps if baseline.rps else math.nan


def comparison(baseline: Run, parley: Run) -> str:
    diff = {q: parley.percentile(q) - baseline.percentile(q) for q in (50, 95, 99)}
    cpu = parley.cpu_ms_per_request - baseline.cpu_ms_per_request
    return (
        f"{parley.target} - baseline: p50 {diff[50]:+.1f} ms, p95 {diff[95]:+.1f} ms, p99 {diff[99]:+.1f} ms; "
        f"throughput ratio {throughput_ratio(baseline, parley):.2f}; CPU {cpu:+.2f} ms/req"
    )


def cpu_split(run: Run) -> str:
    """Where a multi-worker server's CPU went: the supervisor, each worker (did they all serve?), the rest."""
    cpu = run.cpu
    assert cpu is not None
    workers = " + ".join(f"{seconds:.2f}" for pid, seconds in cpu.by_process if pid in cpu.workers)
    rest = sum(seconds for pid, seconds in cpu.by_process if pid not in cpu.workers)
    parts = [f"workers {workers or '-'} s", f"supervisor and resource tracker {rest:.2f} s"]
    if cpu.appeared:
        parts.append(f"{cpu.appeared} process(es) started during the level, not counted")
    if cpu.ended:
        parts.append(f"{cpu.ended} ended during the level, not counted")
    return f"({run.target} CPU: {'; '.join(parts)})"


@dataclass
class Measured:
    """One Parley server at one level."""

    server: Server
    run: Run
    sessions: Sessions


def print_level(baseline: Run, measured: Sequence[Measured], duration_s: float) -> None:
    print(f"\n== {baseline.clients} concurrent client(s), {duration_s:g} s each ==")
    print(HEADER)
    print(row(baseline))
    for one in measured:
        print(row(one.run))
    single = len(measured) == 1 and measured[0].server.workers == 1
    for one in measured:
        print(comparison(baseline, one.run))
        print(one.sessions.note() if single else one.sessions.note(one.server.name))
        if one.server.workers > 1:
            print(cpu_split(one.run))


def print_by_workers(levels: Sequence[tuple[Run, Sequence[Measured]]]) -> None:
    """One row per (workers, level): the cost of sharing, side by side."""
    print(
        "\n== Parley by worker processes (uvicorn --workers N; CPU summed over the supervisor and its workers); "
        "the baseline is one process, measured once per level =="
    )
    print(
        f"{'workers':>7} {'clients':>7} {'turns/s':>8} {'x base':>6} {'CPU ms/turn':>11} "
        f"{'base req/s':>10} {'base CPU ms/req':>15} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}"
    )
    rows = [(one, baseline) for baseline, measured in levels for one in measured]
    rows.sort(key=lambda item: (item[0].server.workers, item[0].run.clients))
    for one, baseline in rows:
        run = one.run
        print(
            f"{one.server.workers:>7} {run.clients:>7} {run.rps:>8.1f} {throughput_ratio(baseline, run):>6.2f} "
            f"{run.cpu_ms_per_request:>11.2f} {baseline.rps:>10.1f} {baseline.cpu_ms_per_request:>15.2f} "
            f"{run.percentile(50):>8.1f} {run.percentile(99):>8.1f} {run.errors:>6}"
        )


# --- main ------------------------------------------------------------------------------------------------------------


@dataclass
class Options:
    levels: list[int]
    workers: list[int]
    duration_s: float
    warmup_s: float
    database_url: str | None
    turns_per_session: int
    profile: Path | None
    profile_clients: int
    profile_seconds: float


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.chat_overhead", description=__doc__)
    parser.add_argument("--levels", default="1,16,64", help="comma-separated concurrent clients (default 1,16,64)")
    parser.add_argument(
        "--workers",
        default="1",
        help="comma-separated uvicorn worker counts for Parley (default 1): a Parley is started for each, all are "
        "measured at every level against the same one-process baseline, and a table by workers ends the report. "
        "Meant for PostgreSQL (--database-url): on SQLite, N > 1 runs anyway with a note, the processes sharing one "
        "file (writers wait on its lock) and each counting its own rate limits",
    )
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per level and target")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each measurement")
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL server on 127.0.0.1, e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/postgres: "
        "a database parley_bench_PID is created there and dropped afterwards (default: a temporary SQLite file)",
    )
    parser.add_argument(
        "--turns-per-session",
        type=int,
        default=0,
        help="move each client to a fresh Parley session every N turns, so histories stay short "
        "(1: every turn sends [system, user], exactly like the baseline); default 0: one session per client",
    )
    parser.add_argument(
        "--profile", type=Path, help="after measuring, sample Parley's GIL-holding thread with py-spy into FILE (raw)"
    )
    parser.add_argument("--profile-clients", type=int, default=16, help="concurrent clients while profiling")
    parser.add_argument("--profile-seconds", type=float, default=10.0, help="seconds to profile")
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.levels.split(",") if level.strip()]
    if not levels or min(levels) < 1:
        parser.error("--levels needs positive integers")
    workers = [int(count) for count in args.workers.split(",") if count.strip()]
    if not workers or min(workers) < 1 or len(set(workers)) != len(workers):
        parser.error("--workers needs distinct positive integers")
    if args.turns_per_session < 0:
        parser.error("--turns-per-session must be 0 or more")
    if args.database_url:
        url = make_url(args.database_url)
        if not url.get_backend_name().startswith("postgresql") or url.host not in (HOST, "localhost"):
            parser.error(f"--database-url must be a postgresql URL on {HOST} (SQLite is the default)")
    return Options(
        levels=levels,
        workers=workers,
        duration_s=args.duration,
        warmup_s=args.warmup,
        database_url=args.database_url,
        turns_per_session=args.turns_per_session,
        profile=args.profile,
        profile_clients=args.profile_clients,
        profile_seconds=args.profile_seconds,
    )


async def new_sessions(
    http: aiohttp.ClientSession, parley: Server, agent_id: str, clients: int, options: Options, turns_bound: float
) -> Sessions:
    """One session per client, plus enough spares for `turns_bound` turns when sessions are rotated."""
    spares = math.ceil(turns_bound / options.turns_per_session) if options.turns_per_session else 0
    ids = await create_sessions(http, parley, agent_id, clients + spares)
    return Sessions(ids[:clients], deque(ids[clients:]), options.turns_per_session)


async def profile(http: aiohttp.ClientSession, parley: Server, sessions: Sessions, options: Options, tmp: Path) -> None:
    """Load Parley again while py-spy samples it (after the measured levels, so sampling skews none of them)."""
    assert options.profile is not None
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        print("\npy-spy not found: pip install py-spy", file=sys.stderr)
        return
    seconds = max(1, round(options.profile_seconds))
    args = [py_spy, "record", "--gil", "-d", str(seconds), "-r", "200", "-f", "raw", "-o", str(options.profile)]
    if parley.workers > 1:
        args.append("--subprocesses")  # the supervisor does no serving: sample its workers
    spy, log = spawn("py-spy", [*args, "--pid", str(parley.pid)], dict(os.environ), tmp)
    try:
        await asyncio.sleep(0.5)
        await load(http, parley_target(parley, sessions), seconds + 1.0)
        await asyncio.to_thread(spy.wait, 30)
    finally:
        stop(spy)
    if spy.returncode != 0 or not options.profile.exists():
        print(f"\npy-spy failed:\n{log_tail(log)}", file=sys.stderr)
        return
    who = "Parley" if parley.workers == 1 else f"Parley ({parley.workers} workers)"
    print(f"\n== py-spy --gil, {who} at {len(sessions.current)} clients for {seconds} s: {options.profile} ==")
    print(sessions.note())
    text = options.profile.read_text()
    print(breakdown(text, PROFILE_GROUPS))
    print(summarise(text, match=("webapp/", "sqlalchemy/", "aiosqlite/"), top=25))


async def start_upstream(tmp: Path, servers: list[Server]) -> str:
    port = free_port()
    url = f"http://{HOST}:{port}/v1"
    args = [sys.executable, "-m", "tests.fake_openai", "--port", str(port), "--reply-delay", str(UPSTREAM_DELAY_S)]
    process, log = spawn("upstream", args, base_env(url), tmp)
    servers.append(Server("upstream", process, url, log))
    await wait_for_port(port, process, log)
    return url


def print_memory(servers: Sequence[Server], idle_rss: dict[str, float]) -> None:
    print("\n== start-up (spawn to first /healthz answer) and memory (VmRSS) ==")
    for server in servers:
        summed = "   (first worker to answer; RSS summed over the supervisor and its children)"
        print(
            f"{server.name:<9} start-up {server.startup_s:5.2f} s   idle RSS {idle_rss[server.name]:6.1f} MiB"
            f"   RSS after the run {tree_rss_mib(server.pid):6.1f} MiB{summed if server.workers > 1 else ''}"
        )


def parley_name(workers: int, options: Options) -> str:
    return "parley" if options.workers == [1] else f"parley w{workers}"


SQLITE_WORKERS_NOTE = (
    "note: several Parley processes on SQLite: they share one database file (writers wait on its lock), each counts "
    "rate limits in its own memory, and voice events reach other processes only by re-reading the database. "
    "Multi-worker Parley is meant for PostgreSQL (--database-url)."
)


async def compare(
    http: aiohttp.ClientSession, upstream: str, database_url: str, options: Options, tmp: Path, servers: list[Server]
) -> None:
    env = parley_env(upstream, database_url, tmp / "media")
    await asyncio.to_thread(migrate, env)
    baseline = await start_server(http, "baseline", "bench.baseline_app:app", base_env(upstream), tmp, servers)
    # Every Parley runs from the start (on the one database), so each level measures them one after the other,
    # right after the baseline: the machine's other load changes less between the rows of a level.
    parleys = [
        await start_server(http, parley_name(workers, options), "webapp.main:app", env, tmp, servers, workers)
        for workers in options.workers
    ]
    await asyncio.sleep(1.0)
    idle_rss = {server.name: tree_rss_mib(server.pid) for server in (baseline, *parleys)}

    await sign_in(http, parleys[0])  # one account and agent, seen by every Parley (same database and secret key)
    agent_id = await create_agent(http, parleys[0])
    db = "PostgreSQL" if options.database_url else "SQLite"
    print(f"Parley ({db}) vs a bare FastAPI route; upstream answers in {UPSTREAM_MS:g} ms; {os.cpu_count()} CPUs")
    if options.workers != [1]:
        counts = ", ".join(map(str, options.workers))
        print(
            f"Parley with {counts} uvicorn worker process(es), one after the other at each level; the baseline is one "
            "process, measured once per level; CPU is summed over each server's processes"
        )
        if options.database_url is None and max(options.workers) > 1:
            print(SQLITE_WORKERS_NOTE)
    levels: list[tuple[Run, list[Measured]]] = []
    for clients in options.levels:
        base_run = await measure(http, baseline_target(baseline, clients), options.duration_s, options.warmup_s)
        # Fresh sessions for every level, created before it is measured; Parley is not expected to beat the baseline.
        turns_bound = 1.2 * base_run.rps * (options.warmup_s + options.duration_s)
        measured: list[Measured] = []
        for parley in parleys:
            sessions = await new_sessions(http, parley, agent_id, clients, options, turns_bound)
            parley_run = await measure(http, parley_target(parley, sessions), options.duration_s, options.warmup_s)
            measured.append(Measured(parley, parley_run, sessions))
        print_level(base_run, measured, options.duration_s)
        levels.append((base_run, measured))
    if options.workers != [1]:
        print_by_workers(levels)

    await asyncio.sleep(1.0)
    print_memory((baseline, *parleys), idle_rss)
    if options.profile:
        turns_bound = 1000 / UPSTREAM_MS * options.profile_clients * (options.profile_seconds + 2)
        sessions = await new_sessions(http, parleys[0], agent_id, options.profile_clients, options, turns_bound)
        await profile(http, parleys[0], sessions, options, tmp)


def stop_server(server: Server) -> None:
    """Stop the server and, with several workers, any worker its supervisor left behind (killed after 10 s)."""
    tree = process_tree(server.pid) if server.workers > 1 and server.process.poll() is None else {}
    stop(server.process)
    for pid, started in tree:
        stat = read_stat(pid)
        if pid != server.pid and stat is not None and stat.started == started:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def stop_all(servers: list[Server]) -> None:
    while servers:
        stop_server(servers.pop())


async def amain(options: Options) -> None:
    servers: list[Server] = []
    tmp = Path(tempfile.mkdtemp(prefix="parley-bench-"))
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    try:
        upstream = await start_upstream(tmp, servers)
        async with (
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), timeout=timeout) as http,
            database(options.database_url, tmp) as database_url,
        ):
            try:
                await compare(http, upstream, database_url, options, tmp, servers)
            finally:
                stop_all(servers)  # before the database is dropped
    finally:
        stop_all(servers)
        shutil.rmtree(tmp, ignore_errors=True)


def run_bench(work: Coroutine[Any, Any, None]) -> None:
    """Run a bench's main coroutine; Ctrl-C or SIGTERM cancels it, so its clean-up runs, and exits with 130."""

    async def cancellable() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        await work

    try:
        asyncio.run(cancellable())
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: everything it started has been stopped", file=sys.stderr)
        raise SystemExit(130) from None


def main(argv: Sequence[str] | None = None) -> None:
    run_bench(amain(parse_args(argv)))


if __name__ == "__main__":
    main()
