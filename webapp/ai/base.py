"""The provider interface: chat, speech-to-text and text-to-speech, on plain values only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, Protocol, TypedDict

if TYPE_CHECKING:
    from webapp.audio import AudioClip


class ChatMessage(TypedDict):
    role: Literal["system", "user", "assistant"]
    content: str


@dataclass(frozen=True)
class ChatReply:
    text: str
    model: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


ProviderName = Literal["openai", "offline"]


@dataclass(frozen=True)
class RunsAs:
    """What actually runs for an agent's stored model and voice under this provider."""

    provider: ProviderName
    model: str
    voice: str


@dataclass(frozen=True)
class VoiceCatalog:
    """The voice names this provider's speech engine accepts, and the one an agent gets by default."""

    provider: ProviderName
    default: str
    voices: tuple[str, ...]


TokenSink = Callable[[str], None]
"""Receives each piece of a reply as it arrives; passing one asks the provider to stream."""


class AIProvider(Protocol):
    @property
    def name(self) -> ProviderName: ...

    def describe(self) -> str:
        """One line for the start-up log: which provider and engines run, and how to switch. Never a secret."""
        ...

    def speech_recognition(self) -> str:
        """What recognises speech, and its state, for `/readyz` (e.g. "whisper (loading)"). Cheap: no I/O."""
        ...

    async def runs_as(self, *, model: str, voice: str) -> RunsAs:
        """The model and voice that run for an agent that stores `model` and `voice`."""
        ...

    async def voices(self) -> VoiceCatalog:
        """The voice names the speech engine accepts."""
        ...

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        temperature: float | None = None,
        on_token: TokenSink | None = None,
    ) -> ChatReply:
        """The model's reply to `messages`; raises `webapp.errors.UpstreamError` subclasses."""
        ...

    async def transcribe(self, clip: AudioClip) -> str:
        """The text spoken in `clip`."""
        ...

    async def speak(self, text: str, *, voice: str) -> bytes:
        """`text` spoken with `voice`, encoded in the configured `TTS_FORMAT`."""
        ...

    async def aclose(self) -> None: ...
