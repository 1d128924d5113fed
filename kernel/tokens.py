"""Bearer tokens and scopes (spec §6, §15.14).

A token reads ``spl_<env>_<sa_id>_<secret>``; only its ``token_id`` (SHA-256 of the
secret) and metadata are stored, so the plaintext is shown once, at minting.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

__all__ = ["SCOPES", "MintedToken", "ParsedToken", "allows", "mint", "parse", "token_id_of"]

SCOPES = (
    "records:read",
    "records:write",
    "threads:write",
    "federation:manage",
    "federation:sync",
    "federation:subscribe",
    "config:read",
    "config:write",
    "admin",
)
_TOKEN = re.compile(r"^spl_([a-z0-9-]{1,16})_([A-Za-z0-9_-]{1,64})_([0-9a-f]{64})$")


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


def token_id_of(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


def mint(env: str = "local", sa_id: str | None = None) -> MintedToken:
    """A fresh token; the caller stores ``token_id`` and shows ``plaintext`` once."""
    sa_id = sa_id or "sa_" + secrets.token_hex(8)
    secret = secrets.token_hex(32)
    return MintedToken(f"spl_{env}_{sa_id}_{secret}", token_id_of(secret), env, sa_id)


def parse(token: str) -> ParsedToken | None:
    """Parse a presented token; None when it is not in the ``spl_`` format."""
    match = _TOKEN.match(token.strip()) if isinstance(token, str) else None
    if match is None:
        return None
    env, sa_id, secret = match.groups()
    return ParsedToken(env, sa_id, token_id_of(secret))


def same_token_id(left: str, right: str) -> bool:
    return hmac.compare_digest(left, right)


def allows(granted: frozenset[str] | set[str], needed: str) -> bool:
    """``admin`` implies every scope; otherwise the scope must be granted as such."""
    return "admin" in granted or needed in granted


def unknown_scopes(scopes: list[str]) -> list[str]:
    return [scope for scope in scopes if scope not in SCOPES]
