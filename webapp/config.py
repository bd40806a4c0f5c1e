"""Settings: one class, read from the environment and `.env`; an invalid value stops start-up with one clear line."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TtsFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
OfflineStt = Literal["whisper", "pocketsphinx"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    database_url: str = "sqlite+aiosqlite:///./data/parley.db"
    media_dir: Path = Path("./data/media")

    ai_provider: Literal["openai", "offline"] | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_timeout_seconds: float = Field(60.0, gt=0)
    openai_max_retries: int = Field(2, ge=0, le=10)

    chat_model: str = Field("gpt-5.4-mini", min_length=1)
    stt_model: str = Field("gpt-transcribe", min_length=1)
    tts_model: str = Field("gpt-4o-mini-tts", min_length=1)
    tts_voice: str = Field("alloy", min_length=1)
    tts_format: TtsFormat = "mp3"
    offline_stt: OfflineStt = "whisper"
    """The offline provider's recogniser: faster-whisper tiny.en, or pocketsphinx (also the fallback)."""

    max_json_bytes: int = Field(1024 * 1024, gt=0)
    max_audio_bytes: int = Field(25 * 1024 * 1024, gt=0)
    max_audio_seconds: float = Field(300.0, gt=0)
    context_token_budget: int = Field(16_000, ge=256)
    session_busy_timeout_seconds: float = Field(120.0, gt=0)
    allow_signup: bool = True
    secret_key: str | None = Field(None, min_length=16)
    secret_key_file: Path = Path("./data/secret_key")
    access_token_hours: float = Field(24.0, gt=0)
    rate_limit_messages_per_minute: int = Field(60, ge=0)
    rate_limit_voice_per_minute: int = Field(20, ge=0)
    cookie_secure: bool = False

    voice_workers: int = Field(2, ge=1, le=64)
    """How many CPU-bound voice jobs (offline recognition and synthesis, decoding, joining) run at once."""
    stream_voice_replies: bool = True
    """Speak a voice reply sentence by sentence as the model writes it; false: the whole reply in one request."""
    speech_requests_in_flight: int = Field(2, ge=1, le=16)
    """How many sentences of one reply are being synthesised at once."""
    voice_heartbeat_seconds: float = Field(5.0, gt=0)
    voice_runner: bool = True
    """Run voice pipelines in this process; off: only accept recordings and stream, leaving the work to others."""

    @model_validator(mode="after")
    def _choose_provider(self) -> Settings:
        if self.ai_provider is None:
            self.ai_provider = "openai" if self.openai_api_key else "offline"
        if self.ai_provider == "openai" and not self.openai_api_key:
            raise ValueError("AI_PROVIDER=openai needs OPENAI_API_KEY")
        return self

    @property
    def provider_name(self) -> Literal["openai", "offline"]:
        assert self.ai_provider is not None  # set by the validator
        return self.ai_provider


def describe_error(error: ValidationError) -> str:
    """One line naming every bad setting, e.g. `invalid setting OPENAI_TIMEOUT_SECONDS: ...`."""
    parts = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        name = ".".join(str(part) for part in item["loc"]).upper()
        parts.append(f"{name}: {message}" if name else message)
    return "invalid configuration: " + "; ".join(parts)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def load_settings() -> Settings:
    """The settings, or exit with status 2 and one clear line instead of a traceback."""
    try:
        return get_settings()
    except ValidationError as exc:
        print(f"parley: {describe_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
