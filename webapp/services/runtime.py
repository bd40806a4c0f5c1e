"""What the services need beyond a request: settings, database, provider, turn locks, background tasks."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from webapp.ai.base import AIProvider
from webapp.config import Settings
from webapp.db import Database
from webapp.errors import AppError
from webapp.services.limits import RateLimiter, SignInThrottle
from webapp.services.stops import Stops
from webapp.services.voice_events import TurnBroker

if TYPE_CHECKING:
    from webapp.services.turns import TurnLocks

log = logging.getLogger(__name__)
T = TypeVar("T")


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel a helper task and let it unwind (a task cut off mid-query must finish with its connection first)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    provider: AIProvider
    locks: TurnLocks
    voice_slots: asyncio.Semaphore
    """Bounds the CPU-bound audio work (decoding a recording, joining a reply) running at once."""
    secret_key: bytes
    """Signs access tokens and browser sessions."""
    message_limiter: RateLimiter
    voice_limiter: RateLimiter
    sign_in_throttle: SignInThrottle
    voice_events: TurnBroker = field(default_factory=TurnBroker)
    stops: Stops = field(default_factory=Stops)
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    """This process, as the `runner` of the voice turns it runs."""
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    def spawn(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run `coro` to completion even if the request that started it goes away."""
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()  # retrieved here so an unobserved failure is logged once, not warned about
        if exc is not None and not isinstance(exc, AppError):
            log.error("background task failed", exc_info=exc)

    async def drain(self, grace_seconds: float) -> None:
        """Let running turns finish (graceful shutdown); cancel what is still running after `grace_seconds`."""
        if not self.tasks:
            return
        _, pending = await asyncio.wait(set(self.tasks), timeout=grace_seconds)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
