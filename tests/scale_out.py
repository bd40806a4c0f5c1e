"""Several real Parley processes on one PostgreSQL database (DESIGN §11): the processes, and SSE followers of a voice
turn that note when each event arrives.

A `Cluster` is what a deployment's web replicas share: one database, one `MEDIA_DIR`, one `SECRET_KEY` (so an access
token issued by one process is good on every other) and one provider (the fake OpenAI server in the test process).
Its servers start on first use and again after a test has killed one.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from tests.databases import postgres_execute
from tests.fake_openai import FakeOpenAI
from tests.live_server import Server, running_server
from webapp.models import VoiceTurn
from webapp.services.relay import asyncpg_dsn

SECRET_KEY = "scale-out-tests-shared-secret-key"
TERMINAL_EVENTS = ("done", "failed", "cancelled")
TABLES = ", ".join(table.name for table in VoiceTurn.metadata.sorted_tables)
"""Every table of the models (they share one metadata)."""


def cluster_env(database_url: str, media_dir: Path, upstream: FakeOpenAI, **settings: str) -> dict[str, str]:
    """The environment every process of a cluster runs with; `settings` are more of them (`VOICE_RUNNER="off"`)."""
    return {
        "DATABASE_URL": database_url,
        "MEDIA_DIR": str(media_dir),
        "SECRET_KEY": SECRET_KEY,
        "AI_PROVIDER": "openai",
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": upstream.base_url,
        "OPENAI_TIMEOUT_SECONDS": "10",
        **{name.upper(): value for name, value in settings.items()},
    }


@dataclass
class Cluster:
    root: Path
    database_url: str
    env: dict[str, str]
    stack: ExitStack
    servers: dict[str, Server] = field(default_factory=dict)
    starts: int = 0

    def server(self, name: str) -> Server:
        """The server called `name`: started now if it is not running (never yet, or killed by a test)."""
        return self.start(name)[0]

    def start(self, *names: str) -> list[Server]:
        """The servers called `names`, those not running started side by side (each takes seconds to start)."""
        missing = [name for name in names if name not in self.servers or self.servers[name].process.poll() is not None]
        if not missing:
            return [self.servers[name] for name in names]
        began = time.monotonic()
        starting = {}
        for name in missing:
            self.starts += 1
            # The database is migrated once, by the fixture that made it.
            starting[name] = running_server(self.root / f"{name}-{self.starts}", extra_env=self.env, migrate=False)
        with ThreadPoolExecutor(len(starting)) as pool:
            entered = {name: pool.submit(server.__enter__) for name, server in starting.items()}
        failures = []
        for name, future in entered.items():
            try:
                self.servers[name] = future.result()
            except Exception as exc:
                failures.append(exc)
            else:
                self.stack.push(starting[name])
        if failures:
            raise failures[0]
        print(f"\n(started {', '.join(missing)} in {time.monotonic() - began:.1f} s)")
        return [self.servers[name] for name in names]

    def empty_database(self) -> None:
        """Delete every row (accounts, turns, rate counts), leaving the schema and the running servers."""
        postgres_execute(self.database_url, f"TRUNCATE {TABLES} CASCADE")

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- server {name} ({server.log_path}) ---\n{server.log_tail(lines)}"
            for name, server in self.servers.items()
        )


@asynccontextmanager
async def api(server: Server, *, token: str | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """An async client for the server's API, sending `token` as its bearer."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(base_url=server.base_url + "/api/v1", headers=headers, timeout=30) as client:
        yield client


@contextmanager
def sync_api(server: Server, *, token: str | None = None) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.Client(base_url=server.base_url + "/api/v1", headers=headers, timeout=30) as client:
        yield client


@dataclass(frozen=True)
class Arrival:
    """One server-sent event, and when it arrived (`time.monotonic()`)."""

    name: str
    data: Any
    at: float

    @property
    def label(self) -> str:
        if self.name == "status":
            return f"status {self.data['status']}"
        if self.name == "audio":
            return f"audio {self.data['index']}"
        return self.name


async def follow(client: httpx.AsyncClient, turn_id: str, seen: list[Arrival]) -> list[Arrival]:
    """Follow the voice turn's events until its last one, appending each to `seen` as it arrives; returns `seen`."""
    url = f"/voice-turns/{turn_id}/events"
    async with client.stream("GET", url, headers={"Accept": "text/event-stream"}) as response:
        assert response.status_code == 200, (await response.aread()).decode(errors="replace")
        name, data = "message", []
        async for line in response.aiter_lines():
            if line.startswith("event:"):
                name = line.removeprefix("event:").strip()
            elif line.startswith("data:"):
                data.append(line.removeprefix("data:").lstrip())
            elif not line:
                if data:
                    seen.append(Arrival(name, json.loads("\n".join(data)), time.monotonic()))
                    if name in TERMINAL_EVENTS:
                        return seen
                name, data = "message", []
    raise AssertionError(f"the event stream of {turn_id} ended without a last event: {[e.label for e in seen]}")


async def execute(database_url: str, statement: str, *args: object) -> None:
    """Run one SQL statement on the database (an SQLAlchemy `postgresql+asyncpg://` URL), from async code."""
    connection = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await connection.execute(statement, *args)
    finally:
        await connection.close()


async def until(condition: Callable[[], object], *, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within:g} s")
        await asyncio.sleep(0.01)
