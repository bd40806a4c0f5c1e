"""AI providers: `build_provider` picks the implementation named by the settings; `announce` logs which one runs."""

from __future__ import annotations

import logging

from webapp.ai.base import AIProvider
from webapp.config import Settings

log = logging.getLogger(__name__)


def build_provider(settings: Settings) -> AIProvider:
    if settings.provider_name == "openai":
        from webapp.ai.openai_provider import OpenAIProvider

        return OpenAIProvider(settings)
    from webapp.ai.offline import OfflineProvider

    return OfflineProvider(settings)


def announce(provider: AIProvider) -> None:
    """Log, once at start-up, which provider and engines run and how to switch (`AIProvider.describe`).

    A warning, like the app's other log lines: plain uvicorn configures no app logger, and Python's last-resort
    handler prints warnings (and worse) to stderr as they are, so this shows in any server's log.
    """
    log.warning("parley: %s", provider.describe())
