"""One server process's shared parts, from start to stop: for the web app (`main.py`) and the voice worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from webapp.ai import announce, build_provider
from webapp.config import Settings
from webapp.db import Database
from webapp.services import accounts
from webapp.services import voice as voice_service
from webapp.services.limits import build_limits
from webapp.services.relay import PgRelay
from webapp.services.runtime import Runtime, cancel_and_wait
from webapp.services.turns import TurnLocks

SHUTDOWN_GRACE_SECONDS = 10.0


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Runtime]:
    """The runtime, with its background work: the PostgreSQL relay, and the voice runner unless `VOICE_RUNNER=off`.

    On the way out, running turns get `SHUTDOWN_GRACE_SECONDS` to finish.
    """
    database = Database(settings.database_url)
    provider = build_provider(settings)
    announce(provider)
    # A turn's session lease lapses with its runner's heartbeat: a dead process holds a session for 3 beats at most.
    locks = TurnLocks(
        database,
        busy_timeout=settings.session_busy_timeout_seconds,
        lease_seconds=3 * settings.voice_heartbeat_seconds,
    )
    limits = build_limits(settings, database)
    runtime = Runtime(
        settings=settings,
        db=database,
        provider=provider,
        locks=locks,
        voice_slots=asyncio.Semaphore(settings.voice_workers),
        secret_key=accounts.load_secret_key(settings),
        message_limiter=limits.messages,
        voice_limiter=limits.voice,
        sign_in_throttle=limits.sign_in,
    )
    if not database.is_sqlite:
        broker, stops = runtime.voice_events, runtime.stops

        def received(kind: str, key: str, text: str) -> None:
            if kind in ("stop", "stopped"):
                stops.received(kind, key)
            else:
                broker.received(kind, key, text)

        relay = PgRelay(settings.database_url, receive=received, on_connect=broker.reconnected)
        broker.relay = relay
        stops.send = relay.send
        relay.start()
    runner = asyncio.create_task(voice_service.run_voice_jobs(runtime)) if settings.voice_runner else None
    try:
        yield runtime
    finally:
        if runner is not None:
            await cancel_and_wait(runner)
        await runtime.drain(SHUTDOWN_GRACE_SECONDS)
        if runtime.voice_events.relay is not None:
            await runtime.voice_events.relay.aclose()
        await locks.aclose()
        await provider.aclose()
        await database.dispose()
