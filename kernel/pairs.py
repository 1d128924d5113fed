"""Federation sync pairs: configuration records and the pair state machine (no I/O).

A pair on this instance pulls one thread from one peer (spec §8.4). Its configuration
lives as LEARN records (``kind: core.sync_pair.v1``) on ``th_federation_pairs`` — the
latest record per ``pair_id`` wins — so pairs survive restarts and travel in exports.
Its cursor lives in the store's ``sync_cursors`` table, committed in the same
transaction as the records it covers.

``PairStatus`` is the state machine every figure of ``/v1/sync/pairs/{id}`` comes from:
``starting → running ⇄ failing``, ``paused`` and ``stopped`` by operator command.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from spl.kernel.errors import InvalidRequest
from spl.kernel.record import validate_thread

__all__ = [
    "ERROR_CODES",
    "MODES",
    "PAIRS_THREAD",
    "PAIR_KIND",
    "PairConfig",
    "PairError",
    "PairStatus",
    "fold_pair_records",
    "new_pair_id",
]

PAIRS_THREAD = "th_federation_pairs"
PAIR_KIND = "core.sync_pair.v1"
MODES = ("polling", "continuous", "on-demand")
STATES = ("starting", "running", "paused", "failing", "stopped")
ERROR_CODES = ("CONNECT_REFUSED", "TIMEOUT", "DNS_FAILURE", "HTTP_4XX", "HTTP_5XX", "PARSE_ERROR")
REFUSAL_CODES = ("SIGNATURE_INVALID", "ID_MISMATCH", "DUPLICATE_CLOCK", "NAMESPACE_REJECTED", "INVALID_RECORD")
DEFAULT_POLL_INTERVAL = 5.0
HISTORY = 20


def new_pair_id(local_did: str, peer_did: str, thread: str, nonce: str | None = None) -> str:
    """``pair_`` + 16 hex of SHA-256 over (local DID, peer DID, thread, nonce) — spec §15.15."""
    nonce = nonce or secrets.token_hex(8)
    digest = hashlib.sha256("\n".join((local_did, peer_did, thread, nonce)).encode()).hexdigest()
    return "pair_" + digest[:16]


@dataclass(frozen=True)
class PairConfig:
    pair_id: str
    peer_did: str
    peer_url: str
    thread_id: str
    mode: str = "polling"
    poll_interval: float = DEFAULT_POLL_INTERVAL
    paused: bool = False
    created_at: str = ""

    def to_body(self, status: str = "active") -> dict[str, Any]:
        return {
            "kind": PAIR_KIND,
            "_v": 1,
            "pair_id": self.pair_id,
            "peer_did": self.peer_did,
            "peer_url": self.peer_url,
            "thread_id": self.thread_id,
            "mode": self.mode,
            "poll_interval": self.poll_interval,
            "paused": self.paused,
            "status": status,
            "created_at": self.created_at,
        }

    @classmethod
    def validated(
        cls,
        *,
        pair_id: str,
        peer_did: object,
        peer_url: object,
        thread_id: object,
        mode: object = None,
        poll_interval: object = None,
        created_at: str = "",
    ) -> PairConfig:
        """Build a config from user input, with 400s that name the field and the fix."""
        if not isinstance(peer_did, str) or not peer_did.startswith("did:") or len(peer_did) > 512:
            raise InvalidRequest("peer_did must be the peer's DID (did:key:… — see GET <peer>/v1/identity)")
        if not isinstance(peer_url, str) or not peer_url.startswith(("http://", "https://")) or len(peer_url) > 2048:
            raise InvalidRequest("peer_url must be the peer's base URL, e.g. http://localhost:9200")
        thread = validate_thread(thread_id, "thread_id")
        mode = "polling" if mode is None else mode
        if mode not in MODES:
            raise InvalidRequest(f"mode must be one of {', '.join(MODES)}")
        interval = DEFAULT_POLL_INTERVAL if poll_interval is None else poll_interval
        if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0.05 <= interval <= 86_400:
            raise InvalidRequest("poll_interval must be a number of seconds between 0.05 and 86400")
        return cls(pair_id, peer_did, peer_url.rstrip("/"), thread, str(mode), float(interval), False, created_at)


def fold_pair_records(records: list[dict[str, Any]]) -> dict[str, PairConfig]:
    """Latest configuration per pair from ``th_federation_pairs`` records (sequence order); removed pairs drop out."""
    pairs: dict[str, PairConfig] = {}
    for record in records:
        body = record.get("body") or {}
        if record.get("act") != "LEARN" or body.get("kind") != PAIR_KIND or not isinstance(body.get("pair_id"), str):
            continue
        if body.get("status") == "removed":
            pairs.pop(body["pair_id"], None)
            continue
        try:
            config = PairConfig.validated(
                pair_id=body["pair_id"],
                peer_did=body.get("peer_did"),
                peer_url=body.get("peer_url"),
                thread_id=body.get("thread_id"),
                mode=body.get("mode"),
                poll_interval=body.get("poll_interval"),
                created_at=str(body.get("created_at", "")),
            )
        except InvalidRequest:
            continue
        pairs[config.pair_id] = PairConfig(**{**config.__dict__, "paused": bool(body.get("paused", False))})
    return pairs


@dataclass(frozen=True)
class PairError:
    code: str
    message: str
    at: float

    def to_wire(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "at": self.at}


@dataclass
class PairStatus:
    """Everything an operator sees about one pair. Times are wall-clock seconds (``now`` is passed in)."""

    pair_id: str
    state: str = "starting"
    reason: str = "created"
    cursor: int = 0
    last_error: PairError | None = None
    consecutive_failures: int = 0
    last_success_at: float | None = None
    last_attempt_at: float | None = None
    next_retry_at: float | None = None
    caught_up_at: float | None = None
    behind_since: float | None = None
    last_advance_at: float | None = None
    lag_records: int = 0
    stalled: bool = False
    records_pulled: int = 0
    records_duplicate: int = 0
    records_refused: dict[str, int] = field(default_factory=dict)
    errors_total: int = 0
    pulls: int = 0
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY))

    def _move(self, state: str, reason: str, now: float) -> None:
        if state != self.state or reason != self.reason:
            self.history.append({"at": now, "from": self.state, "to": state, "reason": reason})
        self.state, self.reason = state, reason

    def pulled(self, *, cursor: int, stored: int, duplicates: int, pending: int, now: float) -> None:
        """A pull (or stream batch) committed; ``pending`` = records still on the peer after ``cursor``."""
        if cursor > self.cursor or self.last_advance_at is None:
            self.last_advance_at = now  # the watchdog's reference starts at the first pull
        if cursor > self.cursor:
            self.cursor = cursor
            self.stalled = False
        self.records_pulled += stored
        self.records_duplicate += duplicates
        self.pulls += 1
        self.consecutive_failures = 0
        self.last_success_at = self.last_attempt_at = now
        self.next_retry_at = None
        self.lag_records = max(pending, 0)
        if self.lag_records == 0:
            self.caught_up_at = now
            self.behind_since = None
            self.stalled = False
        elif self.behind_since is None:
            self.behind_since = now
        if self.state in ("starting", "failing") or (
            self.state == "running" and self.reason != "syncing" and not self.stalled
        ):
            self._move("running", "syncing", now)

    def refused(self, code: str, count: int = 1) -> None:
        self.records_refused[code] = self.records_refused.get(code, 0) + count

    def failed(self, error: PairError, retry_in: float) -> None:
        self.last_error = error
        self.consecutive_failures += 1
        self.errors_total += 1
        self.last_attempt_at = error.at
        self.next_retry_at = error.at + retry_in
        self._move("failing", f"{error.code}: {error.message}", error.at)

    def check_stall(self, interval: float, now: float) -> bool:
        """The watchdog: peer ahead and no cursor progress for two intervals → say so."""
        since = self.last_advance_at if self.last_advance_at is not None else self.caught_up_at
        stalled = self.lag_records > 0 and since is not None and now - since >= 2 * interval
        if stalled and not self.stalled and self.state == "running":
            self._move("running", f"stalled: peer is {self.lag_records} record(s) ahead, cursor idle", now)
        self.stalled = stalled
        return stalled

    def paused(self, now: float) -> None:
        self.next_retry_at = None
        self._move("paused", "paused by operator", now)

    def resumed(self, now: float) -> None:
        self._move("starting", "resumed by operator", now)

    def stopped(self, now: float) -> None:
        self.next_retry_at = None
        self._move("stopped", "removed", now)

    def lag_seconds(self, now: float) -> float:
        """How long the pair has been behind the peer's head: since it was last caught up, or,
        for a pair that never was (a first catch-up), since its first pull. 0 when caught up."""
        since = self.caught_up_at if self.caught_up_at is not None else self.behind_since
        if self.lag_records == 0 or since is None:
            return 0.0
        return max(now - since, 0.0)

    def to_wire(self, now: float) -> dict[str, Any]:
        from spl.kernel.cursor import encode_cursor

        return {
            "state": self.state,
            "state_reason": self.reason,
            "cursor": encode_cursor(self.cursor),
            "last_error": self.last_error.to_wire() if self.last_error else None,
            "consecutive_failures": self.consecutive_failures,
            "retries": self.consecutive_failures,
            "last_success_at": self.last_success_at,
            "next_retry_at": self.next_retry_at,
            "lag_records": self.lag_records,
            "lag_seconds": round(self.lag_seconds(now), 3),
            "stalled": self.stalled,
            "records_pulled": self.records_pulled,
            "records_duplicate": self.records_duplicate,
            "records_refused": dict(self.records_refused),
            "errors_total": self.errors_total,
            "history": list(self.history),
        }
