"""Consent across namespaces: grants, the filter's decision, and redacted projections (no I/O).

A record of namespace S may reach a requester whose namespace is T ≠ S only under a **grant**
(docs/federation-pairs.md "Consent", spec §8.5, §15.17, §15.22). Grants are LEARN records
(``kind: core.consent.v1``) on the reserved thread ``th_consent``, written only by the daemon's
``/v1/consent/grants`` routes and signed with the instance key; the latest record per
``grant_id`` is the grant's state, and a revocation is a later record with ``revoked: true``.

The pieces, in the order a pull uses them:

* :class:`ConsentBook` folds the grant records into memory. Only records this instance signed
  count (spec §15.18): a grant decides what leaves the instance, so a record planted by anyone
  else must change nothing. It answers "which grant applies" cheaply (grants are indexed by
  (source, target)) and says whether grants *widened* since a version, which is how a pull
  knows to start its feed over so a later L0 grant still delivers originals.
* :func:`decide` is the filter: the record as is, a redacted projection, or nothing.
* :func:`project` mints the projection: a new record signed by this instance, carrying the
  original's id, act, clock and the granted hash levels, and nothing else of it, so the
  receiver verifies it like any record and never holds the redacted content.

Everything here takes the current time as an argument, so the rules are testable to the
second and the module stays pure.
"""

from __future__ import annotations

import bisect
import functools
import math
import re
import secrets
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from spl.core.errors import Conflict, InvalidRequest, SplError
from spl.core.federation_pairs import thread_matches
from spl.core.hashlevels import hash_levels
from spl.core.identity import Identity, public_key_from_did
from spl.core.manifest import rfc3339
from spl.core.namespaces import validate_namespace_id
from spl.core.record import MAX_CLOCK, envelope_of, validate_thread
from spl.core.reserved import is_reserved
from spl.core.rotation import owns
from spl.core.stored import _record_object
from spl.core.text import printable
from spl.core.units import DurationError, parse_duration

__all__ = [
    "CONSENT_THREAD",
    "GRANT_KIND",
    "HASH_LEVELS",
    "MAX_GRANTS",
    "MAX_THREAD_PATTERNS",
    "PROJECTION_KIND",
    "WITHHOLD",
    "ConsentBook",
    "Decision",
    "Grant",
    "decide",
    "grant_body",
    "is_grant_id",
    "new_grant_id",
    "project",
    "revoke_body",
    "validate_grant_request",
]

CONSENT_THREAD = "th_consent"
GRANT_KIND = "core.consent.v1"
PROJECTION_KIND = "core.projection.v1"
HASH_LEVELS = ("L0", "L1", "L2", "L3")
MAX_GRANTS = 10_000
"""Grants in force at once. Each pulled record is checked against the grants of its (source, target),
so the bound keeps that cost and the book's memory small; the 10,001st grant is refused (409)."""
MAX_THREAD_PATTERNS = 64
MAX_MEMO = 16_384  # (source, target, thread, peer) answers the book remembers between changes
MAX_PURPOSE = 256
MAX_EXPIRY = 100 * 365 * 86400.0
"""The farthest expiry accepted (about 100 years): far enough for "never" in practice, near enough that
every expiry has an RFC 3339 form."""
MAX_TIME = 253402300799.0  # 9999-12-31T23:59:59Z
DEFAULT_LEVELS = ("L1",)  # spec §15.17: the default grant level is L1
REQUEST_FIELDS = ("source_namespace", "target_namespace", "hash_levels", "threads", "purpose", "expires", "peer_did")

_GRANT_ID = re.compile(r"\Acg_[0-9a-f]{16}\Z")
# A projection's clock: the original's sequence times 16, plus one bit per granted level. L0 has no bit:
# a grant with L0 delivers the original, never a projection.
_LEVEL_BITS = {"L1": 1, "L2": 2, "L3": 4}
_CLOCK_FACTOR = 16


def is_grant_id(value: object) -> bool:
    """``cg_`` + 16 lowercase hex: the only grant ids a route or a record may name."""
    return isinstance(value, str) and _GRANT_ID.fullmatch(value) is not None


def new_grant_id(token_hex: Callable[[int], str] = secrets.token_hex) -> str:
    """A fresh grant id from 8 random bytes (``token_hex`` is replaceable so tests can fix it)."""
    return "cg_" + token_hex(8)


# -- grants ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One grant as its latest record states it.

    ``seq`` is the sequence of that record: among grants that match a record, the highest
    ``seq`` wins ("the most recent grant"). Times are POSIX seconds.
    """

    grant_id: str
    source_namespace: str
    target_namespace: str
    hash_levels: frozenset[str]
    threads: tuple[str, ...]
    purpose: str
    expires_at: float | None
    peer_did: str | None
    created_at: float
    revoked_at: float | None
    seq: int

    def status(self, now: float) -> Literal["active", "revoked", "expired"]:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "expired"
        return "active"

    def in_force(self, now: float) -> bool:
        """Not revoked and not expired at ``now``: only such a grant lets anything through."""
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def covers_thread(self, thread: str) -> bool:
        return any(thread_matches(pattern, thread) for pattern in self.threads)

    def to_wire(self, now: float) -> dict[str, Any]:
        """The ``consent_grant`` object of the routes: times as RFC 3339 UTC, status as of ``now``."""
        return {
            "object": "consent_grant",
            "grant_id": self.grant_id,
            "source_namespace": self.source_namespace,
            "target_namespace": self.target_namespace,
            "hash_levels": sorted(self.hash_levels),
            "threads": list(self.threads),
            "purpose": self.purpose,
            "peer_did": self.peer_did,
            "created_at": rfc3339(self.created_at),
            "expires_at": None if self.expires_at is None else rfc3339(self.expires_at),
            "revoked_at": None if self.revoked_at is None else rfc3339(self.revoked_at),
            "status": self.status(now),
        }


def grant_body(grant: Grant) -> dict[str, Any]:
    """The body of the LEARN record on ``th_consent`` that makes ``grant`` current (times as floats).

    It carries the whole grant, so the latest record alone is the grant's state. It has no
    ``namespace`` key: the record itself lives in ``default``, whatever namespaces it names.
    """
    return {
        "kind": GRANT_KIND,
        "_v": 1,
        "grant_id": grant.grant_id,
        "source_namespace": grant.source_namespace,
        "target_namespace": grant.target_namespace,
        "hash_levels": sorted(grant.hash_levels),
        "threads": list(grant.threads),
        "purpose": grant.purpose,
        "expires_at": grant.expires_at,
        "peer_did": grant.peer_did,
        "created_at": grant.created_at,
        "revoked": grant.revoked_at is not None,
        "revoked_at": grant.revoked_at,
    }


def revoke_body(grant: Grant, at: float) -> dict[str, Any]:
    """The record body that revokes ``grant`` from ``at`` on (forward-only: nothing served before is recalled)."""
    return grant_body(replace(grant, revoked_at=at))


# -- validation: one rule per field, shared by the HTTP request and the fold ---------------------------


def _invalid(field: str, message: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {message}", code="INVALID_GRANT")


def _namespace(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise _invalid(field, "must be a namespace id such as default or acme/ops")
    try:
        return validate_namespace_id(value)
    except InvalidRequest as exc:
        raise _invalid(field, exc.message) from None


def _levels(value: object) -> frozenset[str]:
    fix = f'must be a non-empty list of hash levels from {", ".join(HASH_LEVELS)}, e.g. ["L1"]'
    if not isinstance(value, list) or not value or len(value) > len(HASH_LEVELS):
        raise _invalid("hash_levels", fix)
    if not all(isinstance(level, str) and level in HASH_LEVELS for level in value):
        raise _invalid("hash_levels", fix)
    return frozenset(value)


def _threads(value: object) -> tuple[str, ...]:
    fix = (
        f'must be a non-empty list of at most {MAX_THREAD_PATTERNS} thread patterns: "*", '
        'a thread id such as th_orders, or a prefix ending in "*" such as th_orders_*'
    )
    if not isinstance(value, list) or not value or len(value) > MAX_THREAD_PATTERNS:
        raise _invalid("threads", fix)
    patterns: set[str] = set()
    for pattern in value:
        if pattern == "*":
            patterns.add(pattern)
            continue
        if not isinstance(pattern, str):
            raise _invalid("threads", fix)
        bare = pattern[:-1] if pattern.endswith("*") else pattern
        try:
            validate_thread(bare)
        except InvalidRequest:
            raise _invalid("threads", f"{printable(pattern, 80)!r} is not a pattern; {fix}") from None
        if bare == pattern and is_reserved(pattern):
            raise _invalid("threads", f"{pattern} is a reserved thread: it is never served, so no grant can name it")
        patterns.add(pattern)
    return tuple(sorted(patterns))


def _purpose(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_PURPOSE or not value.isprintable():
        raise _invalid("purpose", f"must be printable text of at most {MAX_PURPOSE} characters (no line breaks)")
    return value


def _peer_did(value: object) -> str | None:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise ValueError
        public_key_from_did(value)
    except ValueError:
        raise _invalid(
            "peer_did", "must be the peer's did:key (did:key:z6Mk…, as `spl federation list` shows it) or null"
        ) from None
    return value


def _time(value: object, field: str) -> float:
    """POSIX seconds from 1970 to 9999, as the fold reads them back from a record: each has an RFC 3339 form."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_TIME:
        raise _invalid(field, "must be POSIX seconds")  # NaN fails the comparison too
    return float(value)


def _expires(value: object, now: float) -> float | None:
    """``expires`` of a request → the POSIX time it names, which must lie in the future."""
    fix = (
        'must be a duration ("30d", "12h", "90m", or seconds as a number) or an RFC 3339 time with a zone '
        f"such as 2030-01-01T00:00:00Z, in the future and at most {int(MAX_EXPIRY // (365 * 86400))} years away"
    )
    if value is None:
        return None
    seconds: float | None = None
    if isinstance(value, bool):
        raise _invalid("expires", fix)
    if isinstance(value, int | float):
        # compared before any conversion: float() of a 400-digit JSON integer raises OverflowError
        seconds = float(value) if -MAX_EXPIRY <= value <= MAX_EXPIRY else None
    elif isinstance(value, str) and len(value) <= 64:
        try:
            seconds = parse_duration(value, "expires")  # 30d, 12h, 90m, 3600 …
        except DurationError:
            moment = _moment(value)
            seconds = None if moment is None else moment - now
    if seconds is None or not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_EXPIRY:
        raise _invalid("expires", fix)
    return now + seconds


def _moment(text: str) -> float | None:
    """An RFC 3339 time with a zone → POSIX seconds; None for anything else (naive times included)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


def _distinct(source: str, target: str) -> None:
    if source == target:
        raise _invalid(
            "target_namespace",
            f"equals source_namespace ({source}): records of the same namespace flow without a grant; "
            "name the other namespace",
        )


def validate_grant_request(payload: object, *, now: float, grant_id: str) -> Grant:
    """The grant a ``POST /v1/consent/grants`` body asks for, or a 400 ``INVALID_GRANT`` naming the field.

    ``{source_namespace? = "default", target_namespace, hash_levels? = ["L1"], threads? = ["*"],
    purpose? = "", expires? (30d / 12h / seconds / RFC 3339; none = no expiry), peer_did?}``.
    Unknown keys are refused, so a misspelt ``hash_level`` cannot silently grant the default.
    ``seq`` is 0 until the grant's record is stored.
    """
    if not isinstance(payload, dict):
        raise _invalid("request", 'the body must be a JSON object such as {"target_namespace": "acme"}')
    unknown = sorted(str(key) for key in payload if key not in REQUEST_FIELDS)
    if unknown:
        raise _invalid(printable(unknown[0], 64), f"is not a grant field; use only {', '.join(REQUEST_FIELDS)}")
    if not is_grant_id(grant_id):
        raise SplError("a grant id must be cg_ + 16 lowercase hex; see the daemon log")
    source = _namespace(payload.get("source_namespace", "default"), "source_namespace")
    if "target_namespace" not in payload:
        raise _invalid("target_namespace", "is required: the namespace the records may reach, e.g. acme")
    target = _namespace(payload["target_namespace"], "target_namespace")
    _distinct(source, target)
    return Grant(
        grant_id=grant_id,
        source_namespace=source,
        target_namespace=target,
        hash_levels=_levels(payload.get("hash_levels", list(DEFAULT_LEVELS))),
        threads=_threads(payload.get("threads", ["*"])),
        purpose=_purpose(payload.get("purpose", "")),
        expires_at=_expires(payload.get("expires"), now),
        peer_did=_peer_did(payload.get("peer_did")),
        created_at=now,
        revoked_at=None,
        seq=0,
    )


def _grant_from_body(body: Mapping[str, Any], seq: int) -> Grant | None:
    """The grant a stored record body states, or None when the body is not a well-formed grant.

    The same field rules as a request, so nothing the routes would refuse can become a grant,
    whatever wrote the record.
    """
    if body.get("kind") != GRANT_KIND or body.get("_v") != 1 or not is_grant_id(body.get("grant_id")):
        return None
    try:
        source = _namespace(body.get("source_namespace"), "source_namespace")
        target = _namespace(body.get("target_namespace"), "target_namespace")
        _distinct(source, target)
        revoked = body.get("revoked")
        revoked_at = body.get("revoked_at")
        if not isinstance(revoked, bool) or revoked != (revoked_at is not None):
            return None
        expires_at = body.get("expires_at")
        return Grant(
            grant_id=body["grant_id"],
            source_namespace=source,
            target_namespace=target,
            hash_levels=_levels(body.get("hash_levels")),
            threads=_threads(body.get("threads")),
            purpose=_purpose(body.get("purpose")),
            expires_at=None if expires_at is None else _time(expires_at, "expires_at"),
            peer_did=_peer_did(body.get("peer_did")),
            created_at=_time(body.get("created_at"), "created_at"),
            revoked_at=None if revoked_at is None else _time(revoked_at, "revoked_at"),
            seq=seq,
        )
    except InvalidRequest:
        return None


def _widens(old: Grant, new: Grant) -> bool:
    """True when ``new`` (a later record of the same grant) lets through something ``old`` did not."""
    if new.revoked_at is not None:
        return False
    if (old.source_namespace, old.target_namespace) != (new.source_namespace, new.target_namespace):
        return True
    if not new.hash_levels <= old.hash_levels:
        return True
    if "*" not in old.threads and not set(new.threads) <= set(old.threads):
        return True
    if old.expires_at is not None and (new.expires_at is None or new.expires_at > old.expires_at):
        return True
    return old.peer_did is not None and new.peer_did != old.peer_did


# -- the fold --------------------------------------------------------------------------------------


class ConsentBook:
    """The grants as this instance's records on ``th_consent`` state them, folded in sequence order.

    ``version`` is the sequence of the last grant record applied; a cursor names the version it
    was issued under, and :meth:`widened_since` tells whether the requester's feed must start
    over (a new grant, or a re-issue that adds levels or threads or extends expiry — never a
    revocation). Revocation is final: once a grant's record says revoked, later records of the
    same id are ignored.
    """

    def __init__(self) -> None:
        self._grants: dict[str, Grant] = {}
        # (source, target) → grants, highest seq first: the first match is the most recent.
        self._by_pair: dict[tuple[str, str], list[Grant]] = {}
        self._version = 0
        self._widened_at = 0
        # (source, target, thread, peer) → the grants that cover that thread for that peer, highest seq first,
        # whatever the time: a pull asks about the same few keys for every record, and time only decides
        # which of these few is in force. Cleared on every change, and when it grows past MAX_MEMO.
        self._memo: dict[tuple[str, str, str, str | None], tuple[Grant, ...]] = {}

    @property
    def version(self) -> int:
        return self._version

    def apply(self, record: Mapping[str, Any], seq: int, own_did: str | Collection[str]) -> bool:
        """Fold one stored record; True when it changed a grant.

        Anything else — another thread or act, a body that is not a well-formed grant, a record
        not signed by ``own_did`` (any key of the instance's rotation chain), a replay or an older record of a
        grant — changes nothing.
        """
        if (
            not owns(own_did, record.get("signer"))
            or record.get("thread") != CONSENT_THREAD
            or record.get("act") != "LEARN"
        ):
            return False
        body = record.get("body")
        if not isinstance(body, Mapping):
            return False
        grant = _grant_from_body(body, seq)
        if grant is None:
            return False
        previous = self._grants.get(grant.grant_id)
        if previous is not None:
            if seq <= previous.seq or previous.revoked_at is not None:
                return False
            self._by_pair[(previous.source_namespace, previous.target_namespace)].remove(previous)
            widened = _widens(previous, grant)
        else:
            widened = grant.revoked_at is None
        self._grants[grant.grant_id] = grant
        bucket = self._by_pair.setdefault((grant.source_namespace, grant.target_namespace), [])
        bisect.insort(bucket, grant, key=lambda item: -item.seq)
        self._memo.clear()
        self._version = max(self._version, seq)
        if widened:
            self._widened_at = max(self._widened_at, seq)
        return True

    def widened_since(self, version: int) -> bool:
        """True when a grant record applied after ``version`` let through more than before."""
        return self._widened_at > version

    def grants(self) -> list[Grant]:
        """Every grant, revoked and expired ones included (kept for audit), oldest record first."""
        return sorted(self._grants.values(), key=lambda grant: grant.seq)

    def get(self, grant_id: str) -> Grant | None:
        return self._grants.get(grant_id)

    def in_force_count(self, now: float) -> int:
        return sum(1 for grant in self._grants.values() if grant.in_force(now))

    def ensure_room(self, now: float) -> None:
        """Raise 409 ``TOO_MANY_GRANTS`` when :data:`MAX_GRANTS` grants are already in force."""
        if self.in_force_count(now) >= MAX_GRANTS:
            raise Conflict(
                f"{MAX_GRANTS} consent grants are in force, the most one instance holds; revoke one first "
                "(spl consent list, spl consent revoke <grant_id>)",
                code="TOO_MANY_GRANTS",
            )

    def matching(self, source: str, target: str, thread: str, peer_did: str | None, now: float) -> Grant | None:
        """The most recent grant in force from ``source`` to ``target`` that covers ``thread`` for ``peer_did``.

        A grant naming a peer holds for that peer's pulls only; ``peer_did`` None (an unbound
        token) matches only grants that name no peer.
        """
        key = (source, target, thread, peer_did)
        candidates = self._memo.get(key)
        if candidates is None:
            candidates = tuple(
                grant
                for grant in self._by_pair.get(key[:2], ())
                if (grant.peer_did is None or grant.peer_did == peer_did) and grant.covers_thread(thread)
            )
            if len(self._memo) >= MAX_MEMO:
                self._memo.clear()
            self._memo[key] = candidates
        for grant in candidates:
            if grant.in_force(now):
                return grant
        return None


# -- the filter ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """What the source serves in place of one record: it as is, a projection with ``levels``, or nothing."""

    action: Literal["deliver", "project", "withhold"]
    levels: frozenset[str]
    grant_id: str | None


WITHHOLD = Decision("withhold", frozenset(), None)
SAME_NAMESPACE = Decision("deliver", frozenset(HASH_LEVELS), None)


def decide(
    book: ConsentBook,
    *,
    record_namespace: str,
    target_namespace: str,
    thread: str,
    peer_did: str | None,
    now: float,
) -> Decision:
    """The consent filter for one record of ``record_namespace`` on ``thread``, served to ``target_namespace``.

    Reserved threads: nothing, ever (spec §15.18). Same namespace: the record. Otherwise the
    most recent grant in force decides: with L0 the record, without L0 a projection with the
    grant's levels; no grant, nothing.
    """
    if is_reserved(thread):
        return WITHHOLD
    if record_namespace == target_namespace:
        return SAME_NAMESPACE
    grant = book.matching(record_namespace, target_namespace, thread, peer_did, now)
    if grant is None:
        return WITHHOLD
    return _granted(grant.grant_id, grant.hash_levels)


@functools.lru_cache(maxsize=1024)
def _granted(grant_id: str, levels: frozenset[str]) -> Decision:
    """The decision a grant makes; cached because the filter asks for it once per record served."""
    return Decision("deliver" if "L0" in levels else "project", levels, grant_id)


# -- projections -----------------------------------------------------------------------------------


def _projection_clock(source_seq: int, levels: frozenset[str]) -> int:
    mask = sum(_LEVEL_BITS.get(level, 0) for level in levels)
    clock = source_seq * _CLOCK_FACTOR + mask
    if source_seq < 0 or clock > MAX_CLOCK:
        raise SplError(f"sequence {source_seq} is out of range for a projection clock; see the daemon log")
    return clock


def project(
    record: Mapping[str, Any],
    *,
    source_seq: int,
    decision: Decision,
    target_namespace: str,
    signer: Identity,
) -> dict[str, Any]:
    """The redacted projection this instance serves in place of ``record``: a signed record object.

    The same shape as any stored record this instance signed (``object``, ``id``, the seven
    hashed fields, ``namespace``, ``signer``, ``sig``; without ``sequence``/``created_at``, which
    only a committed record has), so a receiver checks it with the normal path
    (``spl.core.verify.verify_pulled``). Its body names the original (id, act, clock, namespace)
    and the granted hash levels, and holds no key or value of the original body and not its
    actor. The clock is ``source_seq * 16`` plus one bit per granted level (L1 = 1, L2 = 2,
    L3 = 4), and the actor names the target namespace, so the same original under the same levels
    for the same target always gives the same record, whichever grant allowed it, and different
    levels a different one.
    """
    if decision.action != "project" or decision.grant_id is None or "L0" in decision.levels:
        raise SplError("a projection needs a decision to project without L0; see the daemon log")
    original_body = record.get("body")
    original_id, act, clock, thread = record.get("id"), record.get("act"), record.get("clock"), record.get("thread")
    if (
        not isinstance(original_body, Mapping)
        or not isinstance(original_id, str)
        or not isinstance(act, str)
        or not isinstance(clock, int)
    ):
        raise SplError("a stored record lacks id, act, clock or body; see the daemon log")
    source_namespace = original_body.get("namespace")
    if not isinstance(source_namespace, str) or not source_namespace:
        source_namespace = "default"
    levels = hash_levels(act, original_body)
    granted = sorted(decision.levels)
    body = {
        "kind": PROJECTION_KIND,
        "_v": 1,
        "redacted": True,
        "namespace": target_namespace,
        "original_id": original_id,
        "original_act": act,
        "original_clock": clock,
        "source_namespace": source_namespace,
        "granted_levels": granted,
        "hash_levels": {level: levels[level] for level in granted if level in _LEVEL_BITS},
    }
    envelope = envelope_of(
        act="KNOW",
        # One actor per target namespace, and nothing in the body that names the grant: the same original
        # under the same levels for the same target is always the same record (a later grant re-serving it
        # is a duplicate at the receiver, never a DUPLICATE_CLOCK refusal).
        actor=f"{signer.did}#projection:{target_namespace}",
        thread=thread,
        body=body,
        clock=_projection_clock(source_seq, decision.levels),
        data_type="SCALAR",
        parents=[],
        judged_by=None,
    )
    # Signer and signature from one key: after a rotation the signer is the current key, not the identifier.
    signer_did, sig = signer.signed_id(envelope.id)
    return _record_object(envelope, signer=signer_did, sig=sig)
