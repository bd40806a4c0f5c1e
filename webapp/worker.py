"""A voice worker: runs voice pipelines only, beside web processes started with `VOICE_RUNNER=off`.

`python -m webapp.worker` (or `scripts/worker`): same settings as the web app, same database and `MEDIA_DIR`. It
claims the turns the web processes queue (woken through PostgreSQL at once, else every heartbeat), takes over turns
whose runner died, and stops on SIGTERM or SIGINT, giving running turns time to finish.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from webapp.config import Settings, load_settings
from webapp.lifecycle import running

log = logging.getLogger("webapp.worker")


async def serve(settings: Settings) -> None:
    """Run voice turns until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running(settings.model_copy(update={"voice_runner": True})) as runtime:
        log.warning("parley: voice worker %s running voice turns", runtime.name)
        await stop.wait()
        log.warning("parley: voice worker %s stopping", runtime.name)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(serve(load_settings()))


if __name__ == "__main__":
    main()
