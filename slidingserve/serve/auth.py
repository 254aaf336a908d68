"""API keys bound to SLO tiers.

A key maps to the tiers it may use; a client cannot raise its priority by sending a header.
Keys are compared in constant time (``hmac.compare_digest`` against every configured key, so
the time taken does not depend on which key matched) and never appear in logs or errors.
With no keys configured every tier is open, and ``describe()`` says so for start-up logs.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Mapping

from slidingserve.slo.tiers import TierSet

ALL_TIERS = "*"


class AuthError(Exception):
    """Refused credentials; ``status`` is 401 (no/unknown key) or 403 (tier not allowed)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


class KeyTable:
    """Which tiers each API key may use."""

    def __init__(self, keys: Mapping[str, Iterable[str]], tiers: TierSet):
        self._entries: list[tuple[bytes, frozenset[str]]] = []
        for i, (key, allowed) in enumerate(keys.items()):
            names = frozenset(allowed)
            known = set(tiers)
            unknown = sorted(n for n in names if n != ALL_TIERS and n not in known)
            if unknown:
                raise ValueError(
                    f"auth.keys: key #{i} allows unknown tier(s) {unknown} "
                    f"(known: {', '.join(tiers)})"
                )
            if not key:
                raise ValueError(f"auth.keys: key #{i} is empty")
            self._entries.append((key.encode(), names))

    @property
    def open(self) -> bool:
        """True when no keys are configured: every tier is allowed to everyone."""
        return not self._entries

    def describe(self) -> str:
        if self.open:
            return "no API keys configured: every SLO tier is open to every client"
        return f"{len(self._entries)} API key(s) configured; tiers are bound to keys"

    def check(self, authorization: str | None, tier: str) -> None:
        """Raise ``AuthError`` unless the bearer key in ``authorization`` may use ``tier``."""
        if self.open:
            return
        if not authorization or not authorization.lower().startswith("bearer "):
            raise AuthError(401, "missing API key: send 'Authorization: Bearer <key>'")
        presented = authorization[7:].strip().encode()
        allowed: frozenset[str] | None = None
        for key, names in self._entries:  # no early exit: time is independent of the match
            if hmac.compare_digest(key, presented):
                allowed = names
        if allowed is None:
            raise AuthError(401, "unknown API key")
        if ALL_TIERS not in allowed and tier not in allowed:
            raise AuthError(
                403, f"this API key may not use SLO tier {tier!r} (header x-slo-tier)"
            )
