"""AI providers: `build_provider` picks the implementation named by the settings."""

from __future__ import annotations

from webapp.ai.base import AIProvider
from webapp.config import Settings


def build_provider(settings: Settings) -> AIProvider:
    if settings.provider_name == "openai":
        from webapp.ai.openai_provider import OpenAIProvider

        return OpenAIProvider(settings)
    from webapp.ai.offline import OfflineProvider

    return OfflineProvider(settings)
