"""Authentication: who is calling and what they may do (spec §6, §15.1, §15.14).

Tokens arrive as ``x-api-key: <token>`` or ``Authorization: Bearer <token>``. The book
keeps token metadata in memory (loaded from the store at start, updated on mint and
revoke) so a request's check is a dictionary lookup; plaintext tokens are never stored.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from spl.core import tokens
from spl.core.errors import AuthRequired, ScopeForbidden
from spl.core.manifest import rfc3339
from spl.core.reserved import is_reserved
from spl.core.tokens import TokenInfo

__all__ = [
    "Caller",
    "TokenBook",
    "TokenInfo",
    "presented_token",
    "require",
    "require_any",
]


@dataclass(frozen=True)
class Caller:
    """The authenticated principal of one request (or the anonymous one when auth is off)."""

    authenticated: bool
    scopes: frozenset[str]
    token: TokenInfo | None = None


ANONYMOUS_ADMIN = Caller(authenticated=False, scopes=frozenset({"admin"}))
ANONYMOUS = Caller(authenticated=False, scopes=frozenset())


class TokenBook:
    """Token metadata in memory, loaded from the store at start and updated after each committed mint/revoke."""

    def __init__(self, infos: list[TokenInfo] | None = None) -> None:
        self._by_id: dict[str, TokenInfo] = {}
        for info in infos or []:
            self.remember(info)

    def remember(self, info: TokenInfo) -> None:
        self._by_id[info.token_id] = info

    def reload(self, infos: list[TokenInfo]) -> None:
        """Know exactly ``infos`` (after an import carried tokens in: the store is the truth)."""
        self._by_id = {info.token_id: info for info in infos}

    def mark_revoked(self, token_id: str, revoked_at: float) -> None:
        """Keep a revoked token known, so presenting it answers ``TOKEN_REVOKED`` rather than "unknown"."""
        info = self._by_id.get(token_id)
        if info is not None:
            self._by_id[token_id] = info.revoked(revoked_at)

    def mark_pair_revoked(self, pair_id: str, revoked_at: float) -> list[str]:
        """Mark every active token of ``pair_id`` revoked (after ``revoke_pair_tokens`` committed); their ids."""
        changed = [
            info.token_id for info in self._by_id.values() if info.pair_id == pair_id and info.revoked_at is None
        ]
        for token_id in changed:
            self.mark_revoked(token_id, revoked_at)
        return changed

    def get(self, token_id: str) -> TokenInfo | None:
        return self._by_id.get(token_id)

    def listing(self) -> list[TokenInfo]:
        return sorted(self._by_id.values(), key=lambda info: info.created_at)

    def authenticate(self, presented: str | None, now: float | None = None) -> Caller:
        """Resolve a presented token at ``now`` (default: the wall clock); raises 401 with a message that names the fix.

        Revocation is checked before expiry: a revoked pair token says so rather than
        sending the operator to refresh a pair that is gone. The caller keeps the token's
        metadata, so a route reads ``caller.token.pair_id`` to know which pair is pulling.
        """
        if not presented:
            raise AuthRequired(
                "authentication required: send a token in the x-api-key header or as "
                "'Authorization: Bearer <token>' (mint one with `spl token mint --scopes records:read,records:write`)"
            )
        parsed = tokens.parse(presented)
        info = self._by_id.get(parsed.token_id) if parsed is not None else None
        if info is None or parsed is None or info.sa_id != parsed.sa_id:
            raise AuthRequired("the token is not recognised by this instance; check it or mint a new one")
        if info.revoked_at is not None:
            raise AuthRequired("the token was revoked; mint a new one with `spl token mint`", code="TOKEN_REVOKED")
        if info.expired(time.time() if now is None else now):
            raise AuthRequired(_expired_message(info.expires_at or 0.0, info.pair_id), code="TOKEN_EXPIRED")
        return Caller(authenticated=True, scopes=info.scopes, token=info)


def _expired_message(expires_at: float, pair_id: str | None) -> str:
    """What to do about an expired token: refresh or re-pair a federation pair's, mint anew otherwise."""
    try:
        when = rfc3339(expires_at)
    except (OverflowError, OSError, ValueError):  # a stored time beyond what gmtime reads: show the number
        when = f"{expires_at:.0f} (POSIX seconds)"
    if pair_id is not None:
        return (
            f"the token expired at {when}; for a federation pair run `spl federation refresh {pair_id}` "
            "or re-pair (`spl federation pair <url>`)"
        )
    return f"the token expired at {when}; mint a new one with `spl token mint`"


def require(caller: Caller, scope: str) -> None:
    if not tokens.allows(caller.scopes, scope):
        raise ScopeForbidden(
            f"this token lacks the '{scope}' scope; mint one that has it: `spl token mint --scopes {scope}`"
        )


def reads_configuration(caller: Caller) -> bool:
    """Whether ``caller`` may read reserved threads (``spl.core.reserved``): the instance's configuration.

    They hold who this steward pairs with, which grants it keeps, its namespace registry: an admin's to read.
    Every read route applies this one rule (records, threads, watches, snapshots, listings).
    """
    return tokens.allows(caller.scopes, "admin")


def require_thread_readable(caller: Caller, thread: str) -> None:
    """403 for a reserved thread unless ``caller`` is an admin (see :func:`reads_configuration`)."""
    if is_reserved(thread) and not reads_configuration(caller):
        raise ScopeForbidden(
            f"{thread} is a reserved thread (this instance's configuration): only an admin token reads it; "
            "use the admin credential (the home's, for the local CLI) or read another thread"
        )


def require_any(caller: Caller, scopes: tuple[str, ...]) -> None:
    """Pass if ``caller`` holds any one of ``scopes``; otherwise fail as :func:`require` does for the first."""
    if not any(tokens.allows(caller.scopes, scope) for scope in scopes):
        require(caller, scopes[0])


def presented_token(headers: Any) -> str | None:
    api_key = headers.get("x-api-key")
    if api_key:
        return str(api_key).strip()
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, value = str(authorization).partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return None
