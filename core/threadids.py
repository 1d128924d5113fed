"""Thread ids the daemon mints: ``th_`` + 64 lowercase hex of a SHA-256 over seed inputs (seed 003, spec §15.10).

Seed 003 ("Thread identity"): task threads are seeded from the alias and a nonce, so one task alias maps
to one stable thread id; dispatch (sub-)threads from the parent thread, the target actor and a timestamp,
so each run gets a fresh id. The seed inputs are hashed as canonical JSON of a tagged list, so no two kinds
of seed (nor two splits of the same characters between fields) can produce the same pre-image.

A client never has to invent an id (``POST /v1/threads`` mints one), and any valid thread string stays
accepted on ingest (spec §15.10). Pure: no I/O.
"""

from __future__ import annotations

import hashlib
import re
import secrets

from spl.core.canonical import canonical_json

__all__ = ["MINTED_THREAD", "is_minted", "new_nonce", "random_thread", "sub_thread", "task_thread"]

MINTED_THREAD = re.compile(r"\Ath_[0-9a-f]{64}\Z")


def _mint(*seed: object) -> str:
    return "th_" + hashlib.sha256(canonical_json(list(seed))).hexdigest()


def new_nonce() -> str:
    """16 random bytes as hex: what makes two tasks with the same alias on two instances different threads."""
    return secrets.token_hex(16)


def task_thread(alias: str, nonce: str) -> str:
    """The thread of task ``alias``: stable for (alias, nonce), so the alias always names the same thread."""
    return _mint("task", alias, nonce)


def sub_thread(parent: str, actor: str, timestamp_us: int) -> str:
    """A child thread forked from ``parent`` for ``actor`` at ``timestamp_us`` (microseconds since the epoch)."""
    return _mint("sub", parent, actor, timestamp_us)


def random_thread(purpose: str = "", nonce: str | None = None) -> str:
    """A fresh thread for a new goal with no better seed (``POST /v1/threads`` without a kind)."""
    return _mint("thread", purpose, nonce or new_nonce())


def is_minted(thread: str) -> bool:
    """Whether ``thread`` has the form the daemon mints (``th_`` + 64 lowercase hex)."""
    return MINTED_THREAD.fullmatch(thread) is not None
