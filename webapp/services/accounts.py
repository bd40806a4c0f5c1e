"""Accounts: sign-up and sign-in (argon2 password hashes), signed access tokens, and API keys."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import exists, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from webapp.config import Settings
from webapp.db import Database, utcnow
from webapp.errors import ApiKeyNotFound, EmailTaken, InvalidCredentials, SignupDisabled, Unauthorized
from webapp.models import Agent, ApiKey, User
from webapp.schemas import ApiKeyCreated, ApiKeyRead, RegisterRead, RegisterRequest, TokenRead, UserRead
from webapp.services.limits import SignInThrottle
from webapp.services.runtime import Runtime

TOKEN_PREFIX = "pat_"
"""Access tokens (from sign-in) start with this; API keys with `API_KEY_PREFIX`."""
API_KEY_PREFIX = "pk_"
API_KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)
"""`last_used_at` is written at most this often per key, so using a key costs no write on most requests."""

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters


# A real hash to verify against when the email is unknown, so a wrong email takes as long as a wrong password.
@functools.cache
def _dummy_hash() -> str:
    """Checked against when the email is unknown, so a miss costs as long as a wrong password (made on first use)."""
    return _hasher.hash("parley-timing-equaliser")


@dataclass(frozen=True)
class Principal:
    """Who is calling: every query is scoped to `user_id`."""

    user_id: str


def email_key(email: str) -> str:
    return email.strip().lower()


def load_secret_key(settings: Settings) -> bytes:
    """`SECRET_KEY`, or a random key generated once and kept in `SECRET_KEY_FILE` (so restarts keep sign-ins)."""
    if settings.secret_key:
        return settings.secret_key.encode()
    path: Path = settings.secret_key_file
    if not path.exists():
        # Written whole under another name, then linked into place: processes starting together (replicas on one
        # volume) never read a half-written key, and the first one's key is everyone's.
        path.parent.mkdir(parents=True, exist_ok=True)
        draft = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(secrets.token_urlsafe(48))
        try:
            os.link(draft, path)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    return path.read_text().strip().encode()


# --- passwords and users ---------------------------------------------------------------------------------------------


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_hasher.hash, password)  # ~50 ms of CPU: never on the event loop


async def _password_matches(password_hash: str, password: str) -> bool:
    try:
        return await asyncio.to_thread(_hasher.verify, password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def register(
    *, database: Database, settings: Settings, email: str, password: str, display_name: str | None
) -> User:
    """Create an account. The first account can always be made, and adopts agents made before accounts existed.

    The password is hashed (~50 ms) before the write transaction opens, so no other writer waits for it.
    """
    password_hash = await hash_password(password)
    async with database.write() as db:
        if db.get_bind().dialect.name == "postgresql":
            # Sign-ups one at a time, so "is this the first account?" and "is the email free?" stay true until
            # commit. (SQLite writers are already serialised: `Database.write` begins IMMEDIATE.)
            await db.execute(text("LOCK TABLE user_account IN SHARE ROW EXCLUSIVE MODE"))
        first = not await db.scalar(select(exists().where(User.id.is_not(None))))
        if not first and not settings.allow_signup:
            raise SignupDisabled("This server does not accept new accounts; ask its owner for one.")
        key = email_key(email)
        if await db.scalar(select(exists().where(User.email_key == key))):
            raise EmailTaken(f"An account with the email {email.strip()!r} already exists.")
        user = User(
            email=email.strip(),
            email_key=key,
            display_name=(display_name or "").strip() or key.split("@")[0],
            password_hash=password_hash,
        )
        db.add(user)
        await db.flush()
        if first:
            await db.execute(update(Agent).where(Agent.owner_id.is_(None)).values(owner_id=user.id))
    return user


async def any_account(*, db: AsyncSession) -> bool:
    """Whether anyone has signed up yet: on a fresh install nobody has, and signing up is the only way in."""
    return bool(await db.scalar(select(exists().where(User.id.is_not(None)))))


async def sign_in(*, database: Database, throttle: SignInThrottle, email: str, password: str, address: str) -> User:
    """The account these credentials open; `InvalidCredentials`, or `RateLimited` after too many attempts.

    The attempt is counted first (see `SignInThrottle`); the password is checked after the read transaction has closed.
    """
    account = email_key(email)
    await throttle.attempt(account=account, address=address)
    async with database.read() as db:
        user = await db.scalar(select(User).where(User.email_key == account))
    stored = user.password_hash if user else await asyncio.to_thread(_dummy_hash)
    if not await _password_matches(stored, password) or user is None:
        raise InvalidCredentials("Wrong email or password.")
    await throttle.succeeded(account=account, address=address)
    return user


async def sign_up(runtime: Runtime, *, data: RegisterRequest) -> RegisterRead:
    """Create the account (see `register`) and sign it in."""
    user = await register(
        database=runtime.db,
        settings=runtime.settings,
        email=data.email,
        password=data.password,
        display_name=data.display_name,
    )
    token = _token_for(runtime, user.id)
    return RegisterRead(
        user=UserRead.model_validate(user), access_token=token.access_token, expires_at=token.expires_at
    )


async def log_in(runtime: Runtime, *, email: str, password: str, address: str) -> TokenRead:
    """An access token for these credentials (throttled: see `sign_in`)."""
    user = await sign_in(
        database=runtime.db, throttle=runtime.sign_in_throttle, email=email, password=password, address=address
    )
    return _token_for(runtime, user.id)


def _token_for(runtime: Runtime, user_id: str) -> TokenRead:
    token, expires_at = issue_token(
        secret=runtime.secret_key, user_id=user_id, hours=runtime.settings.access_token_hours
    )
    return TokenRead(access_token=token, expires_at=expires_at)


async def me(runtime: Runtime, *, user_id: str) -> UserRead:
    """The signed-in account."""
    async with runtime.db.read() as db:
        return UserRead.model_validate(await get_user(db=db, user_id=user_id))


async def get_user(*, db: AsyncSession, user_id: str) -> User:
    user = await db.get(User, user_id)
    if user is None:
        raise Unauthorized("This account no longer exists.")
    return user


# --- access tokens ---------------------------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def issue_token(*, secret: bytes, user_id: str, hours: float) -> tuple[str, datetime]:
    """A signed, expiring token naming the user: checked with no database read."""
    expires_at = utcnow() + timedelta(hours=hours)
    payload = _b64(json.dumps({"sub": user_id, "exp": int(expires_at.timestamp())}).encode())
    signature = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    return f"{TOKEN_PREFIX}{payload}.{signature}", expires_at


def read_token(*, secret: bytes, token: str) -> Principal | None:
    """The principal of a valid, unexpired token, else None."""
    if not token.startswith(TOKEN_PREFIX) or "." not in token:
        return None
    payload, signature = token.removeprefix(TOKEN_PREFIX).rsplit(".", 1)
    expected = _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        return None
    try:
        claims = json.loads(_unb64(payload))
        user_id, expires = str(claims["sub"]), int(claims["exp"])
    except (ValueError, KeyError, TypeError):
        return None
    return Principal(user_id) if expires > utcnow().timestamp() else None


def csrf_token(*, secret: bytes, session: str) -> str:
    """The CSRF token of a signed-in browser: bound to its session cookie, so it is refused in any other session.

    The NUL byte keeps these MACs apart from access-token signatures (whose payload is base64).
    """
    return _b64(hmac.new(secret, b"csrf\x00" + session.encode(), hashlib.sha256).digest())


# --- API keys --------------------------------------------------------------------------------------------------------


def _key_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


async def create_api_key(runtime: Runtime, *, user_id: str, name: str) -> ApiKeyCreated:
    """A new key and its secret: the secret is returned this once and stored only as a hash."""
    secret = API_KEY_PREFIX + secrets.token_urlsafe(32)
    async with runtime.db.write() as db:
        key = ApiKey(user_id=user_id, name=name, prefix=secret[:10], secret_hash=_key_hash(secret))
        db.add(key)
        await db.flush()
    return ApiKeyCreated(id=key.id, name=key.name, prefix=key.prefix, created_at=key.created_at, secret=secret)


async def list_api_keys(runtime: Runtime, *, user_id: str) -> list[ApiKeyRead]:
    """Oldest first, never their secrets."""
    async with runtime.db.read() as db:
        keys = await db.scalars(select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.created_at))
        return [ApiKeyRead.model_validate(key) for key in keys]


async def delete_api_key(runtime: Runtime, *, user_id: str, key_id: str) -> None:
    async with runtime.db.write() as db:
        key = await db.scalar(select(ApiKey).where(ApiKey.id == key_id, ApiKey.user_id == user_id))
        if key is None:
            raise ApiKeyNotFound(f"No API key with id {key_id!r}.")
        await db.delete(key)


async def principal_for_api_key(*, database: Database, secret: str) -> Principal | None:
    """The key's owner, or None for an unknown or revoked key; notes when the key was last used."""
    async with database.read() as db:
        row = (
            await db.execute(
                select(ApiKey.id, ApiKey.user_id, ApiKey.last_used_at).where(ApiKey.secret_hash == _key_hash(secret))
            )
        ).one_or_none()
    if row is None:
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > API_KEY_LAST_USED_RESOLUTION:
        async with database.write() as db:
            await db.execute(update(ApiKey).where(ApiKey.id == row.id).values(last_used_at=now))
    return Principal(row.user_id)
