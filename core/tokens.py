"""Bearer tokens and scopes (spec §6, §15.14).

A token reads ``spl_<env>_<sa_id>_<secret>``; only its ``token_id`` (SHA-256 of the
secret) and metadata are stored, so the plaintext is shown once, at minting.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
import unicodedata
from dataclasses import dataclass, replace
from typing import Any

from spl.core.errors import InvalidRequest

__all__ = [
    "MAX_LABEL_LENGTH",
    "SCOPES",
    "MintedToken",
    "ParsedToken",
    "TokenInfo",
    "allows",
    "mint",
    "parse",
    "token_id_of",
    "validate_env",
    "validate_label",
]

SCOPES = (
    "records:read",
    "records:write",
    "threads:write",
    "federation:manage",
    "federation:sync",
    "federation:subscribe",
    "config:read",
    "config:write",
    # GET /metrics: what a Prometheus server scrapes; it reads no record, so it is granted apart from them.
    "metrics:read",
    "admin",
)
# \A…\Z and .fullmatch: ^…$ with .match would accept a trailing "\n".
_TOKEN = re.compile(r"\Aspl_([a-z0-9-]{1,16})_([A-Za-z0-9_-]{1,64})_([0-9a-f]{64})\Z")
_ENV = re.compile(r"\A[a-z0-9]{1,16}\Z")
MAX_LABEL_LENGTH = 128


@dataclass(frozen=True)
class ParsedToken:
    env: str
    sa_id: str
    token_id: str


@dataclass(frozen=True)
class MintedToken:
    plaintext: str
    token_id: str
    env: str
    sa_id: str


@dataclass(frozen=True)
class TokenInfo:
    """What the instance keeps about a token: never its plaintext, only the id of its secret."""

    token_id: str
    env: str
    sa_id: str
    label: str
    scopes: frozenset[str]
    created_at: float
    revoked_at: float | None = None
    # A federation pair's token (docs/federation-pairs.md) is minted for one pair and one peer and expires
    # (90 days): the pair routes read ``pair_id`` to know which namespaces the caller may pull. Operator
    # tokens (``spl token mint``) leave all three unset: never expire, bound to nothing.
    expires_at: float | None = None
    pair_id: str | None = None
    peer_did: str | None = None
    # A token minted for a sync pair across namespaces (``spl token mint --target-namespace``): every pull
    # with it goes through the consent filter as landing in this namespace, whatever the request says.
    target_namespace: str | None = None

    @classmethod
    def of_minted(cls, minted: MintedToken, label: str, scopes: list[str], created_at: float) -> TokenInfo:
        return cls(minted.token_id, minted.env, minted.sa_id, label, frozenset(scopes), created_at)

    def revoked(self, at: float) -> TokenInfo:
        return replace(self, revoked_at=at)

    def expired(self, now: float) -> bool:
        """True from ``expires_at`` on (a token without one never expires)."""
        return self.expires_at is not None and now >= self.expires_at

    def to_wire(self) -> dict[str, Any]:
        return {
            "object": "token",
            "token_id": self.token_id,
            "env": self.env,
            "service_account_id": self.sa_id,
            "label": self.label,
            "scopes": sorted(self.scopes),
            "created_at": self.created_at,
            "revoked_at": self.revoked_at,
            "expires_at": self.expires_at,
            "pair_id": self.pair_id,
            "peer_did": self.peer_did,
            "target_namespace": self.target_namespace,
            "status": self.status(),
        }

    def status(self, now: float | None = None) -> str:
        """``revoked``, ``expired`` or ``active``: revocation wins, since it is the operator's explicit act."""
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expired(time.time() if now is None else now) else "active"


def token_id_of(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def mint(env: str = "local", sa_id: str | None = None) -> MintedToken:
    """A fresh token; the caller stores ``token_id`` and shows ``plaintext`` once."""
    sa_id = sa_id or "sa_" + secrets.token_hex(8)
    secret = secrets.token_hex(32)
    return MintedToken(f"spl_{env}_{sa_id}_{secret}", token_id_of(secret), env, sa_id)


def parse(token: str) -> ParsedToken | None:
    """Parse a presented token; None when it is not in the ``spl_`` format."""
    match = _TOKEN.fullmatch(token.strip()) if isinstance(token, str) else None
    if match is None:
        return None
    env, sa_id, secret = match.groups()
    return ParsedToken(env, sa_id, token_id_of(secret))


def allows(granted: frozenset[str] | set[str], needed: str) -> bool:
    """``admin`` implies every scope; otherwise the scope must be granted as such."""
    return "admin" in granted or needed in granted


def unknown_scopes(scopes: list[str]) -> list[str]:
    return [scope for scope in scopes if scope not in SCOPES]


def validate_label(label: object) -> str:
    """A token label as given, or a 400 naming the rule.

    Labels are stored (SQLite wants valid UTF-8) and printed by ``spl token list`` (a terminal
    must not receive control characters), so lone surrogates (``"\\ud800"``, valid JSON but
    not text) and control characters are refused rather than turned into a 500 or an escape.
    """
    if not isinstance(label, str):
        raise InvalidRequest('label must be a string, such as "ci"', code="INVALID_LABEL")
    if len(label) > MAX_LABEL_LENGTH:
        raise InvalidRequest(f"label must be at most {MAX_LABEL_LENGTH} characters", code="INVALID_LABEL")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in label):
        raise InvalidRequest(
            "label must be printable text: no control characters and no lone UTF-16 surrogates (\\ud800-\\udfff)",
            code="INVALID_LABEL",
        )
    return label


def validate_env(env: object) -> str:
    """A token's environment tag (the ``<env>`` of ``spl_<env>_…``), lowercased, or a 400.

    Only ASCII letters and digits: ``str.isalnum`` also accepts ``ö`` or ``²``, and a token
    minted with one would never match the token format again (it could not authenticate).
    """
    text = env.lower() if isinstance(env, str) and env.isascii() else None
    if text is None or not _ENV.fullmatch(text):
        raise InvalidRequest('env must be 1-16 ASCII letters or digits, such as "local"', code="INVALID_ENV")
    return text
