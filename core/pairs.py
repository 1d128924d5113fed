"""Federation sync pairs: configuration records and the pair state machine (no I/O).

A pair on this instance pulls one thread from one peer (spec §8.4). Its configuration
lives as LEARN records (``kind: core.sync_pair.v1``) on ``th_federation_pairs`` — the
latest record per ``pair_id`` wins — so pairs survive restarts and travel in exports.
Its cursor lives in the store's ``sync_cursors`` table, committed in the same
transaction as the records it covers.

Trust: ``th_federation_pairs`` is a reserved thread (spec §15.18). Only the daemon's own
``/v1/sync/pairs`` routes write it, and :func:`fold_pair_records` reads only records signed
with this instance's key: a pair decides which URL receives which token, so a record that
anyone else wrote must never become one. Pair ids name files (the pair's token lives in
``secrets/pairs/<pair_id>.token``), so only ``pair_`` + 16 lowercase hex is ever accepted.

The peer's cursor is opaque (spec §15.20): stored and sent back exactly as the peer gave
it, never parsed, so spl can pull from any implementation.

``PairStatus`` is the state machine every figure of ``/v1/sync/pairs/{id}`` comes from:
``starting → running ⇄ failing``, ``paused`` and ``stopped`` by operator command.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import secrets
from collections import deque
from collections.abc import Collection
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from spl.core.errors import InvalidRequest
from spl.core.record import validate_thread
from spl.core.reserved import is_reserved, refuse_reserved
from spl.core.rotation import owns

__all__ = [
    "ERROR_CODES",
    "MODES",
    "PAIRS_THREAD",
    "PAIR_KIND",
    "PairConfig",
    "PairError",
    "PairStatus",
    "fold_pair_records",
    "is_loopback_host",
    "is_pair_id",
    "peer_address",
    "new_pair_id",
    "valid_peer_cursor",
    "validate_peer_token",
    "validate_peer_url",
]

PAIRS_THREAD = "th_federation_pairs"
PAIR_KIND = "core.sync_pair.v1"
MODES = ("polling", "continuous", "on-demand")
STATES = ("starting", "running", "paused", "failing", "stopped")
ERROR_CODES = (
    "CONNECT_REFUSED",
    "TIMEOUT",
    "DNS_FAILURE",
    "TLS_UNVERIFIED",  # the peer's HTTPS certificate does not verify (federation.ca_file adds a CA)
    "HTTP_4XX",
    "HTTP_5XX",
    "PARSE_ERROR",
    "PEER_DID_MISMATCH",  # the peer's signed manifest names another DID than the pair's peer_did
    "MANIFEST_INVALID",  # the peer's manifest is unsigned, tampered with or expired
    "PEER_SHUTTING_DOWN",  # the peer said it is stopping (SSE server_shutdown, 503 SHUTTING_DOWN)
    "RECONCILE_TIMEOUT",  # this daemon did not commit a pulled page in time
    "STORE_UNAVAILABLE",  # this daemon's writer or reconciler is restarting
)
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
DEFAULT_PORTS = {"http": 80, "https": 443}
REFUSAL_CODES = (
    "SIGNATURE_INVALID",
    "ID_MISMATCH",
    "DUPLICATE_CLOCK",
    "NAMESPACE_REJECTED",
    "INVALID_RECORD",
    "THREAD_MISMATCH",  # a record for another thread than the pair pulls
    "RESERVED_THREAD",  # a record for one of this instance's configuration threads
    "NAMESPACE_NOT_PAIRED",  # a federation pair's page held a record outside the pair's namespaces
)
DEFAULT_POLL_INTERVAL = 5.0
HISTORY = 20
PAIR_ID = re.compile(r"^pair_[0-9a-f]{16}$")
MAX_PEER_CURSOR = 256
MAX_PEER_TOKEN = 512


def is_pair_id(value: object) -> bool:
    """``pair_`` + 16 lowercase hex (spec §15.15) — the only pair ids that may name a file or a route."""
    return isinstance(value, str) and PAIR_ID.fullmatch(value) is not None


def valid_peer_cursor(value: object) -> bool:
    """A peer cursor we are willing to store and send back: printable ASCII, at most 256 bytes.

    "" is the start of the feed. Printable means 0x21–0x7E: no spaces, no controls, so it
    can sit in a query string, a log line and a table cell unchanged.
    """
    return (
        isinstance(value, str)
        and len(value) <= MAX_PEER_CURSOR
        and all(0x21 <= ord(character) <= 0x7E for character in value)
    )


def validate_peer_token(token: object) -> str:
    """The bearer token a peer minted for a pair: printable ASCII (it travels in a header), ≤ 512 bytes."""
    text = token.strip() if isinstance(token, str) else None
    if not text or len(text) > MAX_PEER_TOKEN or not all(0x21 <= ord(character) <= 0x7E for character in text):
        raise InvalidRequest(
            "token must be the bearer token the peer minted for this pair (printable ASCII, at most 512 "
            "characters; mint it on the peer with `spl token mint --scopes federation:sync`)",
            code="INVALID_TOKEN",
        )
    return text


def validate_peer_url(peer_url: object) -> str:
    """An http(s) base URL with a host, no credentials, no query or fragment; a 400 naming the fix otherwise."""
    fix = "peer_url must be the peer's base URL, e.g. http://localhost:9200"
    if not isinstance(peer_url, str) or len(peer_url) > 2048 or not peer_url.isascii() or not peer_url.isprintable():
        raise InvalidRequest(fix, code="INVALID_PEER_URL")
    try:
        parts = urlsplit(peer_url.strip())
        _ = parts.port  # raises ValueError for a port out of range or not a number
    except ValueError as exc:
        raise InvalidRequest(f"{fix} ({exc})", code="INVALID_PEER_URL") from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host or " " in peer_url:
        raise InvalidRequest(fix, code="INVALID_PEER_URL")
    if parts.username is not None or parts.password is not None or parts.query or parts.fragment:
        raise InvalidRequest(
            f"{fix}: no user:password@, query or fragment (give the token with --token)", code="INVALID_PEER_URL"
        )
    if ":" in host:  # an IPv6 literal must parse as one
        try:
            ipaddress.IPv6Address(host.split("%")[0])
        except ValueError:
            raise InvalidRequest(f"{fix} ({host!r} is not an IPv6 address)", code="INVALID_PEER_URL") from None
    return peer_url.strip().rstrip("/")


def is_loopback_host(host: str) -> bool:
    """``localhost``, ``127.x.y.z`` or ``::1`` (bracketed or not): a host only this machine reaches."""
    bare = host.strip("[]").lower()
    if bare in LOOPBACK_NAMES:
        return True
    try:  # an address literal only: a name such as ``127.0.0.1.attacker.example`` is not loopback
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def peer_address(peer_url: str) -> tuple[str, str, int, str]:
    """``peer_url`` reduced to what decides which daemon answers: scheme, host, port, path.

    Two spellings of one peer compare equal: host case, a trailing slash, the default port
    (``http://h`` is ``http://h:80``), and ``localhost`` / ``127.0.0.1`` / ``::1`` (all "this machine").
    """
    parts = urlsplit(peer_url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if is_loopback_host(host):
        host = "loopback"
    port = parts.port or DEFAULT_PORTS.get(scheme, 0)
    return scheme, host, port, parts.path.rstrip("/")


def validate_settings(mode: object, poll_interval: object) -> tuple[str, float]:
    """A pair's mode and poll interval from user input (None = the default), with 400s that name the fix."""
    mode = "polling" if mode is None else mode
    if mode not in MODES:
        raise InvalidRequest(f"mode must be one of {', '.join(MODES)}", code="INVALID_MODE")
    interval = DEFAULT_POLL_INTERVAL if poll_interval is None else poll_interval
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not 0.05 <= interval <= 86_400:
        raise InvalidRequest(
            "poll_interval must be a number of seconds between 0.05 and 86400", code="INVALID_POLL_INTERVAL"
        )
    return str(mode), float(interval)


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
    # A federation pair's puller reads the peer's namespace feed instead of one thread: ``namespaces`` are
    # the peer's namespaces it asks for, ``accept_namespaces`` every ``body.namespace`` a page may hold
    # (those, plus ours for the peer's redacted projections). Empty for a sync pair.
    namespaces: tuple[str, ...] = ()
    accept_namespaces: tuple[str, ...] = ()

    def feed_params(self) -> dict[str, str]:
        """What selects this pair's feed on the peer's ``/v1/sync/changes``: a thread, or namespaces."""
        if self.namespaces:
            return {"namespace": ",".join(self.namespaces)}
        return {"thread": self.thread_id}

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
        if not is_pair_id(pair_id):
            raise InvalidRequest("pair_id must be 'pair_' followed by 16 lowercase hex digits", code="INVALID_PAIR_ID")
        if (
            not isinstance(peer_did, str)
            or not peer_did.startswith("did:")
            or len(peer_did) > 512
            or not peer_did.isascii()
            or not peer_did.isprintable()
            or " " in peer_did
        ):
            raise InvalidRequest(
                "peer_did must be the peer's DID (did:key:… — see GET <peer>/v1/identity)", code="INVALID_PEER_DID"
            )
        url = validate_peer_url(peer_url)
        thread = validate_thread(thread_id, "thread_id")
        refuse_reserved(thread)
        checked_mode, interval = validate_settings(mode, poll_interval)
        return cls(pair_id, peer_did, url, thread, checked_mode, interval, False, created_at)

    def with_settings(self, *, mode: object = None, poll_interval: object = None) -> PairConfig:
        """This pair with a new mode and/or poll interval (None keeps the current one); 400 for bad values."""
        checked_mode, interval = validate_settings(
            self.mode if mode is None else mode, self.poll_interval if poll_interval is None else poll_interval
        )
        return replace(self, mode=checked_mode, poll_interval=interval)

    def with_paused(self, paused: bool) -> PairConfig:
        return replace(self, paused=paused)


def fold_pair_records(records: list[dict[str, Any]], own_did: str | Collection[str]) -> dict[str, PairConfig]:
    """Latest configuration per pair from ``th_federation_pairs`` records (sequence order); removed pairs drop out.

    Only records signed by this instance (``own_did``: any key of its rotation chain) count, and only well-formed
    pair ids: a record planted by a client, a peer or an old bug is ignored, whatever it says.
    """
    pairs: dict[str, PairConfig] = {}
    for record in records:
        body = record.get("body") or {}
        if not owns(own_did, record.get("signer")) or not isinstance(body, dict):
            continue
        if record.get("act") != "LEARN" or body.get("kind") != PAIR_KIND or not is_pair_id(body.get("pair_id")):
            continue
        if is_reserved(body.get("thread_id")):
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
    cursor: str = ""  # the peer's opaque cursor ("" = from the start)
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

    def pulled(self, *, cursor: str, stored: int, duplicates: int, pending: int, now: float) -> None:
        """A pull (or stream batch) committed; ``pending`` = records still on the peer after ``cursor``.

        Cursors are opaque, so "progress" means the peer handed us a different one.
        """
        moved = cursor != self.cursor
        if moved or self.last_advance_at is None:
            self.last_advance_at = now  # the watchdog's reference starts at the first pull
        if moved:
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
        return {
            "state": self.state,
            "state_reason": self.reason,
            "cursor": self.cursor,
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
