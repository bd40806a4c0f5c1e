"""Pydantic request and response bodies: `XCreate` / `XUpdate` in, `XRead` out."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import Row

from webapp import models
from webapp.ai.base import ProviderName
from webapp.errors import AppError, error_from_field
from webapp.http.paths import API_PREFIX

NO_NUL = r"^[^\x00]*$"
"""Text never holds NUL characters: PostgreSQL cannot store them, and they mean nothing in a name or a message."""


def _not_blank(text: str) -> str:
    if text.isspace():
        raise ValueError("must contain something other than white space")
    return text


NotBlank = AfterValidator(_not_blank)
"""A blank (white-space only) message or prompt says nothing. A validator, not a `pattern`: a pattern that says it
makes schema-driven generators (schemathesis, hypothesis) crawl over 32,000-character strings."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NO_NUL)]
Prompt = Annotated[str, StringConstraints(min_length=1, max_length=20_000, pattern=NO_NUL), NotBlank]
ModelId = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)]
Voice = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100, pattern=NO_NUL)]
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)]
Temperature = Annotated[float, Field(ge=0, le=2)]

DEFAULT_TITLE = "New chat"

T = TypeVar("T")


class Input(BaseModel):
    """A request body: unknown fields and type coercion (`"temperature": false`, `"name": 5`) are rejected."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as `cursor` to get the next page; null on the last page.")


# --- accounts --------------------------------------------------------------------------------------------------------

Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, min_length=3, max_length=320, pattern=r"^[^@\s\x00]+@[^@\s\x00]+\.[^@\s\x00]+$"
    ),
]
Password = Annotated[str, StringConstraints(min_length=8, max_length=200, pattern=NO_NUL)]


class RegisterRequest(Input):
    email: Email
    password: Password
    display_name: Name | None = None

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "ada@example.com", "password": "correct horse battery"}]}
    )


class LoginRequest(Input):
    email: Email
    password: Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=NO_NUL)]

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "ada@example.com", "password": "correct horse battery"}]}
    )


class UserRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    display_name: str
    created_at: datetime


class TokenRead(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime


class RegisterRead(BaseModel):
    user: UserRead
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_at: datetime


class ApiKeyCreate(Input):
    name: Name

    model_config = ConfigDict(json_schema_extra={"examples": [{"name": "laptop scripts"}]})


class ApiKeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prefix: str = Field(description="The start of the secret, to recognise the key by.")
    created_at: datetime
    last_used_at: datetime | None


class ApiKeyCreated(BaseModel):
    id: str
    name: str
    prefix: str
    created_at: datetime
    secret: str = Field(description="Shown this once: only a hash of it is stored.")


# --- agents ----------------------------------------------------------------------------------------------------------


class AgentCreate(Input):
    name: Name
    prompt: Prompt = Field(description="The system message that defines the agent.")
    model: ModelId | None = Field(None, description="Chat model; the server's `CHAT_MODEL` when omitted.")
    voice: Voice | None = Field(None, description="Text-to-speech voice; the server's `TTS_VOICE` when omitted.")
    temperature: Temperature | None = Field(None, description="Sent to the model only when set.")

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"name": "Tutor", "prompt": "You are a patient maths tutor. Be brief."}]}
    )


class AgentUpdate(Input):
    """Only the fields sent change. `model`, `voice` and `temperature` accept null: back to the server default."""

    name: Name = None  # type: ignore[assignment]
    prompt: Prompt = None  # type: ignore[assignment]
    model: ModelId | None = None
    voice: Voice | None = None
    temperature: Temperature | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{"prompt": "You are a patient tutor.", "model": None}]})


class RunsAsRead(BaseModel):
    """What actually runs for the agent under the server's active provider (read-only)."""

    model_config = ConfigDict(from_attributes=True)

    provider: ProviderName
    model: str = Field(
        description="The chat model that answers: the agent's `model` with openai; `offline` (a canned stand-in "
        "reply, no language model) with the offline provider."
    )
    voice: str = Field(
        description="The voice that speaks: the agent's `voice` with openai; with the offline provider, the espeak-ng "
        "voice, which is the agent's `voice` if espeak-ng knows it and its default (`en-us`) otherwise."
    )


class AgentRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    prompt: str
    model: str = Field(description="The stored chat model, used by the openai provider.")
    voice: str = Field(description="The stored voice, used by the openai provider (and by offline if it knows it).")
    temperature: float | None
    runs_as: RunsAsRead = Field(
        description=f"What actually runs for this agent now: see `GET {API_PREFIX}/voices`, too."
    )
    created_at: datetime
    updated_at: datetime


class VoiceCatalogRead(BaseModel):
    """The voice names the active provider's speech engine accepts."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [{"provider": "offline", "default": "en-us", "voices": ["en-us", "en-gb", "de"]}]
        },
    )

    provider: ProviderName
    default: str = Field(description="The voice an agent with no voice of its own speaks with (from `TTS_VOICE`).")
    voices: list[str] = Field(
        description="Names to choose from. openai: the built-in voices (custom voice ids work too). offline: common "
        "espeak-ng voices (a language code, optionally `+variant`, e.g. `en-gb`, `en-us+f3`); espeak-ng knows more, "
        "and any name it does not know speaks with the default."
    )


# --- sessions --------------------------------------------------------------------------------------------------------


class SessionCreate(Input):
    title: Title | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{"title": "Fractions practice"}]})


class SessionUpdate(Input):
    title: Title

    model_config = ConfigDict(json_schema_extra={"examples": [{"title": "Fractions, week 2"}]})


class SessionRead(BaseModel):
    id: str
    agent_id: str
    agent_name: str
    title: str
    message_count: int
    last_message_at: datetime | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, chat: models.ChatSession, *, agent_name: str) -> SessionRead:
        return cls(
            id=chat.id,
            agent_id=chat.agent_id,
            agent_name=agent_name,
            title=chat.title or DEFAULT_TITLE,
            message_count=chat.message_count,
            last_message_at=chat.last_message_at,
            created_at=chat.created_at,
            updated_at=chat.updated_at,
        )


# --- messages --------------------------------------------------------------------------------------------------------


class MessageCreate(Input):
    content: Annotated[str, StringConstraints(min_length=1, max_length=32_000, pattern=NO_NUL), NotBlank]

    model_config = ConfigDict(json_schema_extra={"examples": [{"content": "What is a prime number?"}]})


class ErrorInfo(BaseModel):
    code: str
    detail: str
    retry_after: str | None = Field(None, exclude=True)  # kept to answer a later wait with it; never shown

    def as_error(self) -> AppError:
        """The error this records, as raised (to answer for a failed stored turn or reply)."""
        return error_from_field(self.as_field())

    def as_field(self) -> dict[str, str]:
        """The stored form: `{"code", "detail"}`, plus `retry_after` when there is one (`errors.error_from_field`)."""
        return self.model_dump() | ({"retry_after": self.retry_after} if self.retry_after else {})


class Usage(BaseModel):
    prompt_tokens: int | None
    completion_tokens: int | None


class MessageRead(BaseModel):
    id: str
    session_id: str
    role: Literal["user", "assistant"]
    content: str
    source: Literal["text", "voice"]
    status: Literal["complete", "failed", "cancelled"] = Field(
        description="`cancelled`: the turn was stopped; `content` is the part of the reply written by then."
    )
    error: ErrorInfo | None
    audio_url: str | None
    model: str | None
    usage: Usage | None
    latency_ms: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, message: models.Message | SimpleNamespace) -> MessageRead:
        """From a stored message, or from the plain row the turn engine has just inserted.

        Built without validation (`model_construct`): every value comes from our own database row, and this runs
        twice per turn.
        """
        has_usage = message.prompt_tokens is not None or message.completion_tokens is not None
        usage = (
            Usage.model_construct(prompt_tokens=message.prompt_tokens, completion_tokens=message.completion_tokens)
            if has_usage
            else None
        )
        fields: dict[str, Any] = {
            "id": message.id,
            "session_id": message.session_id,
            "role": message.role,
            "content": message.content,
            "source": message.source,
            "status": message.status,
            "error": ErrorInfo.model_validate(message.error) if message.error else None,
            "audio_url": f"{API_PREFIX}/messages/{message.id}/audio" if message.audio_path else None,
            "model": message.model,
            "usage": usage,
            "latency_ms": message.latency_ms,
            "created_at": message.created_at,
            "updated_at": message.updated_at,
        }
        return cls.model_construct(**fields)


class TurnRead(BaseModel):
    user_message: MessageRead
    assistant_message: MessageRead


# --- voice turns -----------------------------------------------------------------------------------------------------

VoiceStatus = Literal["queued", "transcribing", "thinking", "speaking", "done", "failed", "cancelled"]


class VoiceSegmentRead(BaseModel):
    """One spoken sentence of the reply, ready to play."""

    index: int
    url: str
    text: str

    @classmethod
    def of(cls, turn_id: str, index: int, text: str) -> VoiceSegmentRead:
        return cls.model_construct(index=index, url=f"{API_PREFIX}/voice-turns/{turn_id}/segments/{index}", text=text)


class VoiceTurnRead(BaseModel):
    id: str
    session_id: str
    status: VoiceStatus
    user_message_id: str | None
    assistant_message_id: str | None
    transcript: str | None
    reply_text: str | None
    reply_audio_url: str | None
    error: ErrorInfo | None
    timings_ms: dict[str, int] = Field(
        description="Milliseconds spent in each finished stage; `first_audio`: from the end of the upload to the "
        "first spoken segment being ready."
    )
    segments: list[VoiceSegmentRead] = Field(description="The reply's spoken sentences so far, in order.")
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, turn: models.VoiceTurn | Row[Any]) -> VoiceTurnRead:
        """From the model or a row of the `voice_turn` table."""
        done = turn.status == "done" and turn.assistant_message_id is not None
        return cls(
            id=turn.id,
            session_id=turn.session_id,
            status=turn.status,
            user_message_id=turn.user_message_id,
            assistant_message_id=turn.assistant_message_id,
            transcript=turn.transcript,
            reply_text=turn.reply_text,
            reply_audio_url=f"{API_PREFIX}/messages/{turn.assistant_message_id}/audio" if done else None,
            error=ErrorInfo.model_validate(turn.error) if turn.error else None,
            timings_ms=dict(turn.timings_ms or {}),
            segments=[VoiceSegmentRead.of(turn.id, n, part["text"]) for n, part in enumerate(turn.segments or ())],
            created_at=turn.created_at,
            updated_at=turn.updated_at,
        )


# --- health ----------------------------------------------------------------------------------------------------------


class Liveness(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    status: Literal["ready"]
    database: Literal["ok"]
    schema_: Literal["current"] = Field(alias="schema")
    provider: Literal["openai", "offline"]
    speech_recognition: str = Field(
        description=(
            "What recognises speech, and its state: offline, `whisper (loads on first use)`, `whisper (loading)`, "
            "`whisper`, `pocketsphinx` (OFFLINE_STT=pocketsphinx) or `pocketsphinx (fallback: <why>)`; with the "
            "openai provider, `openai (<STT_MODEL>)`."
        ),
        examples=["whisper"],
    )
