"""Sliding-window rate limits, kept in this process's memory.

With several worker processes each keeps its own count, so the effective limit is up to N times the setting; that
trade buys a check that costs no database round trip on every message.
"""

from __future__ import annotations

import math
import time
from collections import deque

from webapp.errors import RateLimited


class RateLimiter:
    def __init__(self, limit: int, *, window_seconds: float = 60.0, what: str = "requests") -> None:
        self.limit, self.window, self.what = limit, window_seconds, what
        self._events: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        """The key's events inside the window; keys with none are dropped, so memory follows recent activity."""
        events = self._events.get(key)
        if events is None:
            return deque()
        while events and events[0] <= now - self.window:
            events.popleft()
        if not events:
            del self._events[key]
        return events

    def check(self, key: str) -> None:
        """Count one event for `key`, or raise 429 `rate_limited` if the window is full. A limit of 0 is off."""
        if self.limit <= 0:
            return
        now = time.monotonic()
        events = self._recent(key, now)
        if len(events) >= self.limit:
            retry_after = max(1, math.ceil(events[0] + self.window - now))
            raise RateLimited(
                f"Too many {self.what}: the limit is {self.limit} per {self.window:g} s. Retry in {retry_after} s.",
                retry_after=retry_after,
            )
        events.append(now)
        self._events[key] = events

    def blocked(self, key: str) -> bool:
        """Whether `key` is at its limit, without counting anything."""
        return 0 < self.limit <= len(self._recent(key, time.monotonic()))

    def reset(self, key: str) -> None:
        self._events.pop(key, None)

    def refund(self, key: str) -> None:
        """Take back the key's latest event."""
        events = self._events.get(key)
        if events:
            events.pop()


class SignInThrottle:
    """Sign-in attempts per account and per client address.

    An attempt is counted *before* its password is checked (~0.1-0.4 s of argon2), so guesses sent in parallel are
    counted as they arrive and cannot overrun the limit. A success clears the account's count and gives the address
    its attempt back: only failures are meant to add up.
    """

    def __init__(self, *, per_account: int = 5, per_address: int = 20, window_seconds: float = 900.0) -> None:
        self._account = RateLimiter(per_account, window_seconds=window_seconds, what="sign-in attempts")
        self._address = RateLimiter(per_address, window_seconds=window_seconds, what="sign-in attempts")

    def attempt(self, *, account: str, address: str) -> None:
        """Count one attempt, or raise 429 `rate_limited` (counting nothing) when either window is full."""
        pairs = ((self._account, account), (self._address, address))
        for limiter, key in pairs:
            if limiter.blocked(key):
                limiter.check(key)  # raises with the right Retry-After
        for limiter, key in pairs:
            limiter.check(key)

    def succeeded(self, *, account: str, address: str) -> None:
        self._account.reset(account)
        self._address.refund(address)
