"""The `offline` provider: works with no key and no network.

Chat is a clearly labelled local reply generator (no language model runs); speech uses real offline engines
(pocketsphinx and espeak-ng, from `webapp.ai.offline_speech`), loaded on first use and run off the event loop.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from webapp.ai.base import ChatMessage, ChatReply, TokenSink
from webapp.audio import AudioClip, encode_pcm
from webapp.config import Settings

if TYPE_CHECKING:
    from webapp.ai.offline_speech import OfflineRecognizer, OfflineSynthesizer

OFFLINE_MODEL = "offline"


def _shorten(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def compose_reply(messages: Sequence[ChatMessage]) -> str:
    """A deterministic reply that shows what the model would have been given."""
    system = next((m["content"] for m in messages if m["role"] == "system"), "")
    users = [m["content"] for m in messages if m["role"] == "user"]
    said = _shorten(users[-1], 200) if users else ""
    first_sentence = re.split(r"(?<=[.!?])\s", system.strip(), maxsplit=1)[0]
    return (
        f"[Offline mode: no AI model is connected.] You said: “{said}”. "
        f"My instructions begin: “{_shorten(first_sentence, 120)}” "
        f"This is your message number {len(users)} in this chat. "
        "Set OPENAI_API_KEY to talk to a real model."
    )


class OfflineProvider:
    name: Literal["offline"] = "offline"

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engines: tuple[OfflineRecognizer, OfflineSynthesizer] | None = None

    def _speech_engines(self) -> tuple[OfflineRecognizer, OfflineSynthesizer]:
        # Loaded on first use: a server that never hears a voice turn never pays for them.
        if self._engines is None:
            from webapp.ai.offline_speech import OfflineRecognizer, OfflineSynthesizer

            self._engines = OfflineRecognizer(), OfflineSynthesizer()
        return self._engines

    async def aclose(self) -> None:
        return None

    async def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        model: str,
        temperature: float | None = None,
        on_token: TokenSink | None = None,
    ) -> ChatReply:
        text = compose_reply(messages)
        if on_token is not None:
            for piece in re.findall(r"\S+\s*", text):
                on_token(piece)
                await asyncio.sleep(0)
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        return ChatReply(text, OFFLINE_MODEL, prompt_tokens=prompt_tokens, completion_tokens=len(text.split()))

    async def transcribe(self, clip: AudioClip) -> str:
        recognizer, _ = self._speech_engines()
        return await asyncio.to_thread(recognizer.transcribe, clip.pcm16k)

    async def speak(self, text: str, *, voice: str) -> bytes:
        return await asyncio.to_thread(self._speak, text, voice)

    def _speak(self, text: str, voice: str) -> bytes:
        _, synthesizer = self._speech_engines()
        pcm, rate = synthesizer.synthesize(text, voice)
        return encode_pcm(pcm, sample_rate=rate, fmt=self._settings.tts_format)
