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


TokenSink = Callable[[str], None]
"""Receives each piece of a reply as it arrives; passing one asks the provider to stream."""


class AIProvider(Protocol):
    @property
    def name(self) -> Literal["openai", "offline"]: ...

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
