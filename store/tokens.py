"""Token metadata in the store: the SQL behind ``spl init``, the token book and mint/revoke.

Only a token's id (the SHA-256 of its secret) and metadata are stored; the plaintext never
reaches this module. Writes run inside the caller's transaction (the store writer's, or
:func:`install_local_admin`'s own), so a mint or revoke is durable before it is answered.
"""

from __future__ import annotations

import json
from pathlib import Path

import apsw

from spl.core.tokens import TokenInfo
from spl.store.database import connect_writer, write_transaction

__all__ = [
    "LOCAL_ADMIN_SA",
    "install_local_admin",
    "insert_token",
    "load_tokens",
    "revoke_pair_tokens",
    "revoke_token",
]

LOCAL_ADMIN_SA = "sa_local_admin"  # the service account of the CLI's own admin token (``spl init``)


def load_tokens(connection: apsw.Connection) -> list[TokenInfo]:
    """Every token, revoked ones included (they must still be recognised to answer ``TOKEN_REVOKED``)."""
    rows = connection.execute(
        "SELECT token_id, env, sa_id, label, scopes, created_at, revoked_at, expires_at, pair_id, peer_did, "
        "target_namespace FROM tokens ORDER BY created_at"
    )
    return [
        TokenInfo(
            token_id,
            env,
            sa_id,
            label,
            frozenset(json.loads(scopes)),
            created,
            revoked,
            expires_at=expires,
            pair_id=pair_id,
            peer_did=peer_did,
            target_namespace=target,
        )
        for token_id, env, sa_id, label, scopes, created, revoked, expires, pair_id, peer_did, target in rows
    ]


def insert_token(connection: apsw.Connection, info: TokenInfo) -> None:
    """Store a new token's metadata (active: ``revoked_at`` is not taken from ``info``)."""
    connection.execute(
        "INSERT INTO tokens(token_id, env, sa_id, label, scopes, created_at, revoked_at, expires_at, pair_id, "
        "peer_did, target_namespace) VALUES (?,?,?,?,?,?,NULL,?,?,?,?)",
        (
            info.token_id,
            info.env,
            info.sa_id,
            info.label,
            json.dumps(sorted(info.scopes)),
            info.created_at,
            info.expires_at,
            info.pair_id,
            info.peer_did,
            info.target_namespace,
        ),
    )


def revoke_token(connection: apsw.Connection, token_id: str, revoked_at: float) -> bool:
    """Mark a token revoked; False when there is no such active token (nothing changed)."""
    connection.execute(
        "UPDATE tokens SET revoked_at = ? WHERE token_id = ? AND revoked_at IS NULL", (revoked_at, token_id)
    )
    return connection.changes() > 0


def revoke_pair_tokens(connection: apsw.Connection, pair_id: str, at: float) -> int:
    """Revoke every still-active token bound to ``pair_id``; how many changed (0 when none was left).

    A revoked federation pair (ours, or the peer's signed notice) must stop every token minted for
    it at once, whichever handshake attempt minted it; already-revoked tokens keep their first
    revocation time, so the audit trail says when each really stopped. Runs in the caller's
    transaction; the caller then marks the same tokens revoked in its :class:`TokenBook`.
    """
    connection.execute("UPDATE tokens SET revoked_at = ? WHERE pair_id = ? AND revoked_at IS NULL", (at, pair_id))
    return int(connection.changes())


def install_local_admin(path: Path, info: TokenInfo) -> None:
    """Make ``info`` the one live local-admin token of the store at ``path`` (creating the store if needed).

    Runs before any daemon holds the store (``spl init``), on its own connection and in one
    transaction: every earlier local-admin token is revoked as of ``info.created_at``, so a
    re-initialised home never leaves an old CLI credential working.
    """
    connection = connect_writer(path)
    try:
        with write_transaction(connection):
            connection.execute(
                "UPDATE tokens SET revoked_at = ? WHERE sa_id = ? AND revoked_at IS NULL",
                (info.created_at, info.sa_id),
            )
            insert_token(connection, info)
    finally:
        connection.close()
