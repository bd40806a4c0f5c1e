"""The cross-process turn lease: renewed while its turn runs, free for the next turn once given back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from webapp.errors import SessionBusy
from webapp.services.runtime import Runtime
from webapp.services.turns import TurnLocks


async def test_a_held_lease_outlives_its_length_while_the_turn_runs(runtime: Runtime, chat: dict[str, Any]) -> None:
    # Two TurnLocks on one database behave as two processes: their in-process locks are separate.
    here = TurnLocks(runtime.db, busy_timeout=5, lease_seconds=0.3)
    there = TurnLocks(runtime.db, busy_timeout=0.4, lease_seconds=0.3)
    try:
        async with here.hold(chat["id"]) as lease:
            await here.claim(lease)
            await asyncio.sleep(1.0)  # over three lease lengths: only renewal keeps it
            async with there.hold(chat["id"]) as other:
                with pytest.raises(SessionBusy):
                    await there.claim(other)
        async with there.hold(chat["id"]) as other:  # given back: the other process gets it at once
            await there.claim(other)
            assert other.held
    finally:
        await here.aclose()
        await there.aclose()
