"""The application's error vocabulary.

Every failure a client can cause or observe is an `AppError` subclass with a stable machine `code`; one handler in
`webapp.http.problems` renders them as RFC 9457 problem documents. This module is a leaf: anything may import it.

Each concrete class declares its own `code`, and no two share one: `REGISTRY` is checked as the classes are defined, so
a stored `{"code", "detail"}` always comes back as the class that wrote it. A base that only groups others says
`abstract=True` and is never raised.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

REGISTRY: dict[str, type[AppError]] = {}
"""Every concrete error class by its code (`AppError` itself is `internal_error`)."""


class AppError(Exception):
    """Base class, and the unexpected crash: an HTTP status, a stable code, a short title and a detail."""

    status: int = 500  # a class's own; only `HttpError` sets it per instance
    code: ClassVar[str] = "internal_error"
    title: ClassVar[str] = "Internal error"

    def __init_subclass__(cls, *, abstract: bool = False, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if abstract:
            return
        if "code" not in cls.__dict__:
            raise TypeError(f"{cls.__name__} must declare its own `code` (or be declared with abstract=True)")
        if cls.code in REGISTRY:
            raise TypeError(f"{cls.__name__}.code {cls.code!r} is already {REGISTRY[cls.code].__name__}'s")
        REGISTRY[cls.code] = cls

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        retry_after: int | str | None = None,
        **extra: Any,
    ) -> None:
        self.detail = detail or self.title
        self.headers = dict(headers or {})
        if retry_after is not None:  # seconds (or an HTTP date, as a provider may send)
            self.headers["Retry-After"] = str(retry_after)
        self.extra = extra
        super().__init__(self.detail)

    def problem(self) -> dict[str, Any]:
        """The RFC 9457 problem document for this error."""
        return {
            "type": f"urn:parley:problem:{self.code}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            **self.extra,
        }

    def as_error_field(self) -> dict[str, str]:
        """The `{"code", "detail"}` object stored on failed messages and voice turns (with the `Retry-After` to give,
        if any, which the API does not show but `error_from_field` restores)."""
        field = {"code": self.code, "detail": self.detail}
        if "Retry-After" in self.headers:
            field["retry_after"] = self.headers["Retry-After"]
        return field


REGISTRY[AppError.code] = AppError

# --- not found -------------------------------------------------------------------------------------------------------


class NotFound(AppError):
    """A path or id that names nothing; the resource-specific subclasses say what was looked for."""

    status = 404
    code = "not_found"
    title = "Not found"


class AgentNotFound(NotFound):
    code = "agent_not_found"
    title = "Agent not found"


class SessionNotFound(NotFound):
    code = "session_not_found"
    title = "Session not found"


class MessageNotFound(NotFound):
    code = "message_not_found"
    title = "Message not found"


class VoiceTurnNotFound(NotFound):
    code = "voice_turn_not_found"
    title = "Voice turn not found"


class SegmentNotFound(NotFound):
    code = "segment_not_found"
    title = "Segment not found"


class AudioNotFound(NotFound):
    code = "audio_not_found"
    title = "This message has no audio"


class HttpError(AppError):
    """Any other refusal from the HTTP framework, keeping its status: a fallback that no known request reaches."""

    code = "http_error"
    title = "HTTP error"

    def __init__(self, status: int, detail: str | None = None, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(detail, headers=headers)
        self.status = status


class MethodNotAllowed(AppError):
    status = 405
    code = "method_not_allowed"
    title = "Method not allowed"


# --- accounts --------------------------------------------------------------------------------------------------------


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    title = "Authentication required"

    def __init__(self, detail: str | None = None, **extra: Any) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="parley"'}, **extra)


class InvalidCredentials(Unauthorized):
    code = "invalid_credentials"
    title = "Wrong email or password"


class SignupDisabled(AppError):
    status = 403
    code = "signup_disabled"
    title = "Sign-up is closed"


class CsrfFailed(AppError):
    status = 403
    code = "csrf_failed"
    title = "Missing or wrong CSRF token"


class EmailTaken(AppError):
    status = 409
    code = "email_taken"
    title = "Email already registered"


class ApiKeyNotFound(NotFound):
    code = "api_key_not_found"
    title = "API key not found"


class RateLimited(AppError):
    status = 429
    code = "rate_limited"
    title = "Too many requests"


# --- client input ----------------------------------------------------------------------------------------------------


class ValidationFailed(AppError):
    status = 422
    code = "validation_failed"
    title = "Validation failed"

    @classmethod
    def from_errors(cls, errors: Iterable[Mapping[str, Any]]) -> ValidationFailed:
        """From pydantic's (or FastAPI's) error list: a one-line summary, and the `errors` list for clients."""
        listed = [
            {"loc": list(error.get("loc", ())), "msg": str(error.get("msg", "")), "type": str(error.get("type", ""))}
            for error in errors
        ]
        summary = "; ".join(f"{'.'.join(map(str, error['loc']))}: {error['msg']}" for error in listed[:5])
        return cls(summary or "The request is not valid.", errors=listed)


class InvalidRange(AppError):
    status = 400
    code = "invalid_range"
    title = "Malformed Range header"


class UnsatisfiableRange(AppError):
    status = 416
    code = "range_not_satisfiable"
    title = "Range not satisfiable"


class RequestTooLarge(AppError):
    status = 413
    code = "request_too_large"
    title = "Request body too large"


class AudioTooLarge(AppError):
    status = 413
    code = "audio_too_large"
    title = "Audio upload too large"


class UnsupportedAudio(AppError):
    status = 415
    code = "unsupported_audio"
    title = "Unsupported audio"


class AudioTooLong(AppError):
    status = 422
    code = "audio_too_long"
    title = "Audio too long"


class NoSpeechDetected(AppError):
    status = 422
    code = "no_speech_detected"
    title = "No speech detected"


class SessionBusy(AppError):
    status = 409
    code = "session_busy"
    title = "Session busy"


class NoTurnRunning(AppError):
    status = 409
    code = "no_turn_running"
    title = "No turn running"


class TurnFinished(AppError):
    status = 409
    code = "turn_finished"
    title = "Turn already finished"


class TurnCancelled(AppError):
    status = 409
    code = "turn_cancelled"
    title = "Turn cancelled"


class TurnInterrupted(AppError):
    status = 503
    code = "interrupted"
    title = "Interrupted by a server restart"


class NotReady(AppError):
    status = 503
    code = "not_ready"
    title = "Not ready"


# --- the model provider ----------------------------------------------------------------------------------------------


class UpstreamError(AppError, abstract=True):
    """The AI provider failed; the user's input is kept and the failure recorded."""

    status = 502


class UpstreamUnavailable(UpstreamError):
    code = "upstream_unavailable"
    title = "AI provider unavailable"


class UpstreamRejected(UpstreamError):
    code = "upstream_rejected"
    title = "AI provider rejected the request"


class UpstreamAuthFailed(UpstreamError):
    code = "upstream_auth_failed"
    title = "AI provider refused our credentials"


class UpstreamRateLimited(UpstreamError):
    status = 503
    code = "upstream_rate_limited"
    title = "AI provider rate limit reached"


class UpstreamTimeout(UpstreamError):
    status = 504
    code = "upstream_timeout"
    title = "AI provider timed out"


def error_from_field(error: Mapping[str, str]) -> AppError:
    """Rebuild the exception recorded as a `{"code", "detail"}` field (to answer for a failed stored turn)."""
    return REGISTRY.get(error["code"], AppError)(error.get("detail"), retry_after=error.get("retry_after"))
