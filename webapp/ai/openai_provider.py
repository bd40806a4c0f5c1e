"""The `openai` provider: the official SDK's `AsyncOpenAI`, one client per app, errors mapped to problem codes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import openai
from openai import AsyncOpenAI, AsyncStream, DefaultAioHttpClient
from openai.types.chat import ChatCompletion
from pydantic import ValidationError

from webapp.ai.base import ChatMessage, ChatReply, RunsAs, TokenSink, VoiceCatalog
from webapp.audio import AudioClip, extension_for
from webapp.config import Settings
from webapp.errors import (
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

OPENAI_VOICES = (
    *("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse", "marin"),
    "cedar",
)
"""The built-in voices of `/audio/speech`, as its `voice` parameter lists them (OpenAI's OpenAPI description, which
also allows custom voice ids: any name is passed on as it is)."""


def map_sdk_error(exc: Exception) -> UpstreamError | None:
    """The problem an SDK failure stands for, or None for an exception that is not the provider's doing."""
    # Order matters: APITimeoutError is an APIConnectionError, RateLimitError an APIStatusError.
    if isinstance(exc, openai.APITimeoutError) and not _refused_connection(exc):
        return UpstreamTimeout("The AI provider did not answer in time.")
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamUnavailable("Could not connect to the AI provider.")
    if isinstance(exc, openai.RateLimitError):
        retry_after = exc.response.headers.get("retry-after") or "30"
        return UpstreamRateLimited(f"The AI provider's rate limit was reached: {exc.message}", retry_after=retry_after)
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return UpstreamAuthFailed(f"The AI provider refused our credentials ({exc.status_code}).")
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500:
            return UpstreamUnavailable(f"The AI provider failed ({exc.status_code}).")
        return UpstreamRejected(f"The AI provider rejected the request ({exc.status_code}): {exc.message}")
    if isinstance(exc, json.JSONDecodeError | ValidationError | openai.APIResponseValidationError):
        return UpstreamUnavailable("The AI provider sent a malformed response.")
    if isinstance(exc, openai.APIError):  # e.g. an error event inside a stream
        return UpstreamUnavailable(f"The AI provider reported an error: {exc.message}")
    return None


def _refused_connection(exc: BaseException) -> bool:
    """True when a "timeout" is really a refused or dropped connection.

    The SDK's aiohttp transport reports every aiohttp connection error as a connect timeout; the original error is
    still on the cause chain, so look there before answering 504 for what is really an unreachable server.
    """
    cause = exc.__cause__ or exc.__context__
    while cause is not None:
        if isinstance(cause, aiohttp.ServerTimeoutError | aiohttp.SocketTimeoutError | TimeoutError):
            return False
        if isinstance(cause, aiohttp.ClientConnectionError):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


@asynccontextmanager
async def _sdk_errors() -> AsyncIterator[None]:
    try:
        yield
    except UpstreamError:
        raise
    except Exception as exc:
        mapped = map_sdk_error(exc)
        if mapped is None:
            raise
        raise mapped from exc


class OpenAIProvider:
    name: Literal["openai"] = "openai"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client = AsyncOpenAI(
            api_key=settings.openai_api_key,
            base_url=settings.openai_base_url,
            timeout=settings.openai_timeout_seconds,
            max_retries=settings.openai_max_retries,
            http_client=DefaultAioHttpClient(),
        )

    async def aclose(self) -> None:
        await self._client.close()

    def describe(self) -> str:
        settings = self._settings
        where = _safe_url(str(self._client.base_url)) + ("" if settings.openai_base_url else " (default)")
        return (
            f"provider openai at {where} — chat model {settings.chat_model}, transcription {settings.stt_model}, "
            f"speech {settings.tts_model} (voice {settings.tts_voice}, {settings.tts_format})"
        )

    def speech_recognition(self) -> str:
        return f"openai ({self._settings.stt_model})"

    async def runs_as(self, *, model: str, voice: str) -> RunsAs:
        return RunsAs(provider=self.name, model=model, voice=voice)

    async def voices(self) -> VoiceCatalog:
        return VoiceCatalog(provider=self.name, default=self._settings.tts_voice, voices=OPENAI_VOICES)

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        temperature: float | None = None,
        on_token: TokenSink | None = None,
    ) -> ChatReply:
        params: dict[str, Any] = {"model": model, "messages": list(messages)}
        if temperature is not None:  # many models reject any non-default temperature
            params["temperature"] = temperature
        async with _sdk_errors():
            if on_token is None:
                return await self._complete(params)
            return await self._stream(params, on_token)

    # The SDK's `chat.completions.create` first re-validates and transforms every message through its typed-dict
    # machinery, at ~0.3 ms of CPU per message: for a long history that costs more than the rest of a turn. Our
    # messages are already plain JSON, so they are posted through the same client (same retries, timeouts, auth
    # and error mapping) without that step.

    async def _complete(self, params: dict[str, Any]) -> ChatReply:
        completion = await self._client.post(
            "/chat/completions", body=params, cast_to=ChatCompletion, options={"security": {"bearer_auth": True}}
        )
        if not completion.choices:
            raise UpstreamUnavailable("The AI provider sent a reply with no choices.")
        usage = completion.usage
        return ChatReply(
            text=_plain(completion.choices[0].message.content or ""),
            model=completion.model or params["model"],
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )

    async def _stream(self, params: dict[str, Any], on_token: TokenSink) -> ChatReply:
        # Chunks are read as plain JSON, not built into typed models: that costs ~0.1 ms of CPU a chunk, and a voice
        # reply is hundreds of chunks. (The SDK's stream still raises for an error event or a malformed chunk.)
        stream = await self._client.post(
            "/chat/completions",
            body={**params, "stream": True, "stream_options": {"include_usage": True}},
            cast_to=dict[str, Any],
            options={"security": {"bearer_auth": True}},
            stream=True,
            stream_cls=AsyncStream[dict[str, Any]],
        )
        parts: list[str] = []
        model = params["model"]
        prompt_tokens = completion_tokens = None
        async with stream:
            async for chunk in stream:
                if not isinstance(chunk, dict):
                    raise UpstreamUnavailable("The AI provider sent a malformed response.")
                model = chunk.get("model") or model
                if isinstance(usage := chunk.get("usage"), dict):
                    prompt_tokens = _count(usage, "prompt_tokens")
                    completion_tokens = _count(usage, "completion_tokens")
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") if isinstance(choice, dict) else None
                    content = delta.get("content") if isinstance(delta, dict) else None
                    if isinstance(content, str) and (piece := _plain(content)):
                        parts.append(piece)
                        on_token(piece)
        return ChatReply("".join(parts), model, prompt_tokens, completion_tokens)

    async def transcribe(self, clip: AudioClip) -> str:
        # Every format we accept is one OpenAI accepts, so the recording is sent as uploaded, never transcoded.
        # A path, not bytes: the SDK reads it in a worker thread (up to MAX_AUDIO_BYTES, kept off the event loop).
        upload = (f"speech{extension_for(clip.format)}", clip.path, clip.content_type)
        async with _sdk_errors():
            result = await self._client.audio.transcriptions.create(model=self._settings.stt_model, file=upload)
        return _plain(result.text).strip()

    async def speak(self, text: str, *, voice: str) -> bytes:
        async with _sdk_errors():
            response = await self._client.audio.speech.create(
                model=self._settings.tts_model,
                voice=voice,
                input=text,
                response_format=self._settings.tts_format,
            )
        return response.content


def _safe_url(url: str) -> str:
    """`url` without credentials, query or fragment (a base URL may carry a user:password or a token): fit to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # IPv6
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _count(usage: dict[str, Any], name: str) -> int | None:
    value = usage.get(name)
    return value if isinstance(value, int) else None


def _plain(text: str) -> str:
    """Text from the provider without NUL characters, which mean nothing in text and which PostgreSQL cannot store."""
    return text.replace("\x00", "")
