"""A federation pair as this instance keeps it: its records, its fold and its lifecycle. Pure: no I/O.

Each side keeps the pair as LEARN records signed by its own key on the reserved thread ``th_federation_pairs``,
one per event (:data:`FED_PAIR_KINDS`), each carrying the whole pair, so the latest one is the pair's state
(docs/federation-pairs.md, "The pair"). Those records decide which URL receives which token and which of our
namespaces a peer is served, so :func:`fold_federation_pairs` reads only records this instance signed, on that
thread, and skips anything malformed: a planted or damaged record changes nothing.

Namespace maps are stored as on the wire (initiator first) on both sides; ``role`` says which half is ours,
and the helpers (:meth:`FederationPair.local_namespaces`, :meth:`FederationPair.target_for`) turn them round.

The lifecycle (:func:`transition`) is a table of legal moves; ``revoked`` is terminal. ``degraded`` and
``peer_manifest_changed`` are not stored: they are overlays the pair's driver computes at run time.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from spl.core.canonical import canonical_json
from spl.core.errors import Conflict, InvalidRequest, SplError
from spl.core.handshake import (
    MAX_MAPS,
    NamespaceMap,
    check_did_key,
    is_nonce,
    parse_maps,
)
from spl.core.namespaces import validate_namespace_id
from spl.core.pairs import PAIRS_THREAD, is_pair_id, validate_peer_url, validate_settings
from spl.core.record import validate_thread
from spl.core.reserved import is_reserved, refuse_reserved
from spl.core.rotation import owns
from spl.core.text import printable

__all__ = [
    "DEFAULT_FED_POLL",
    "EVENTS",
    "FED_PAIR_KINDS",
    "FED_STATES",
    "MAX_MANIFEST_BYTES",
    "MAX_THREAD_PATTERNS",
    "ROLES",
    "FederationPair",
    "check_manifest_snapshot",
    "fold_federation_pairs",
    "local_pairs",
    "maps_from_local",
    "pair_from_body",
    "thread_allowed",
    "thread_matches",
    "transition",
    "validate_maps",
    "validate_thread_allow",
]

FED_PAIR_KINDS = (
    "pair.handshake.v1",
    "pair.pending.v1",
    "pair.genesis.v1",
    "pair.active.v1",
    "pair.config.v1",
    "pair.reject.v1",
    "pair.revoke.v1",
)
FED_STATES = ("establishing", "active", "paused", "revoked")
ROLES = ("initiator", "responder")
DEFAULT_FED_POLL = 300.0
MAX_THREAD_PATTERNS = 64
MAX_MANIFEST_BYTES = 16 * 1024
MAX_REASON = 256
MAX_TOKEN_ID = 128
MAX_MAP_TEXT = 2 * 256 + 1  # "local:peer", two namespace ids at their longest

Role = Literal["initiator", "responder"]


@dataclass(frozen=True)
class FederationPair:
    """One federation pair from this side. Times are POSIX seconds; ``maps`` are in wire orientation."""

    pair_id: str
    role: Role
    peer_did: str
    peer_url: str
    maps: tuple[NamespaceMap, ...]
    mode: str
    poll_interval: float
    state: str
    state_reason: str
    nonce: str
    created_at: float
    updated_at: float
    thread_allow: tuple[str, ...] = ("*",)
    our_token_id: str | None = None  # the id (hash) of the token we minted for the peer, never the token
    token_expires_at: float | None = None
    peer_manifest: dict[str, Any] | None = None  # the peer's verified manifest, as last fetched
    last_refresh_at: float | None = None
    peer_token_expires_at: float | None = None  # when the token the peer minted for us expires
    # The base URL of ours the peer knows (sent at the handshake, or acknowledged after a move). None in records
    # written before it was kept: unknown, so only `spl federation refresh` announces such a pair's endpoint.
    our_endpoint: str | None = None

    def endpoint_moved(self, current: str) -> bool:
        """Whether the peer must be told our endpoint is now ``current`` (a live pair whose peer knows another)."""
        return self.state in ("active", "paused") and self.our_endpoint is not None and self.our_endpoint != current

    def body(self, kind: str) -> dict[str, Any]:
        """The LEARN body that records this pair as of event ``kind`` (JSON-ready)."""
        if kind not in FED_PAIR_KINDS:
            raise SplError(f"unknown federation pair record kind {kind!r} (a bug)")
        fields = asdict(self)
        fields["maps"] = [mapping.to_wire() for mapping in self.maps]
        fields["thread_allow"] = list(self.thread_allow)
        return {"kind": kind, "_v": 1, **fields}

    def with_(self, **changes: Any) -> FederationPair:
        """A copy with ``changes``; callers validate user input first (:func:`validate_maps` and friends)."""
        return replace(self, **changes)

    def _ours(self, mapping: NamespaceMap) -> str:
        return mapping.initiator if self.role == "initiator" else mapping.responder

    def _theirs(self, mapping: NamespaceMap) -> str:
        return mapping.responder if self.role == "initiator" else mapping.initiator

    def local_namespaces(self) -> list[str]:
        """Our namespaces in this pair (our half of each map, each once, in map order)."""
        return list(dict.fromkeys(self._ours(mapping) for mapping in self.maps))

    def peer_namespaces(self) -> list[str]:
        """The peer's namespaces in this pair (their half of each map, each once)."""
        return list(dict.fromkeys(self._theirs(mapping) for mapping in self.maps))

    def target_for(self, local_namespace: str) -> list[str]:
        """The peer namespaces our ``local_namespace`` maps to: the consent filter's target T when serving it."""
        return list(dict.fromkeys(self._theirs(m) for m in self.maps if self._ours(m) == local_namespace))

    def local_maps(self) -> list[dict[str, str]]:
        """The maps as an operator reads them: ``[{"local", "peer"}, …]`` from this side."""
        return [{"local": self._ours(mapping), "peer": self._theirs(mapping)} for mapping in self.maps]

    def thread_allowed(self, thread: str) -> bool:
        """Whether the allow-list lets ``thread`` through; a reserved thread never is, whatever the list says."""
        return thread_allowed(self.thread_allow, thread)


def thread_matches(pattern: str, thread: str) -> bool:
    """``*`` (every thread), ``prefix*``, or an exact thread id: the one pattern rule of allow-lists and grants."""
    if pattern.endswith("*"):
        return thread.startswith(pattern[:-1])
    return thread == pattern


def thread_allowed(patterns: Iterable[str], thread: str) -> bool:
    """Whether any of ``patterns`` lets ``thread`` through; a reserved thread never, whatever they say."""
    return not is_reserved(thread) and any(thread_matches(pattern, thread) for pattern in patterns)


# -- operator input -----------------------------------------------------------------------------------------------


def validate_thread_allow(patterns: object) -> tuple[str, ...]:
    """A thread allow-list from CLI/HTTP input: 1-64 of ``*``, an exact thread, or ``prefix*``; duplicates dropped.

    Raises InvalidRequest 400 ``INVALID_THREAD_ALLOW``, or ReservedThread 403 for a reserved thread.
    """
    if not isinstance(patterns, list | tuple) or not 0 < len(patterns) <= MAX_THREAD_PATTERNS:
        raise InvalidRequest(
            f"thread_allow must be a list of 1-{MAX_THREAD_PATTERNS} patterns: '*', a thread id or 'prefix*' "
            "(to carry nothing, pause the pair instead)",
            code="INVALID_THREAD_ALLOW",
        )
    checked: list[str] = []
    for pattern in patterns:
        if pattern != "*":
            if not isinstance(pattern, str) or len(pattern) > 257:
                raise InvalidRequest(
                    f"thread_allow entries must be '*', a thread id or 'prefix*', got {_show(pattern)}",
                    code="INVALID_THREAD_ALLOW",
                )
            stem = pattern[:-1] if pattern.endswith("*") else pattern
            try:
                validate_thread(stem, "thread_allow")
            except InvalidRequest:
                raise InvalidRequest(
                    f"thread_allow entry {_show(pattern)} is not '*', a thread id (A-Z a-z 0-9 _ . : @ -, at most "
                    "256) or such an id followed by '*'",
                    code="INVALID_THREAD_ALLOW",
                ) from None
            if not pattern.endswith("*"):
                refuse_reserved(pattern)
        if pattern not in checked:
            checked.append(pattern)
    return tuple(checked)


def _show(value: object) -> str:
    return repr(printable(value, 64)) if isinstance(value, str) else f"a {type(value).__name__}"


def _namespace(value: object, what: str) -> str:
    if isinstance(value, str) and len(value) <= 256:
        try:
            return validate_namespace_id(value)
        except InvalidRequest:
            pass
    raise InvalidRequest(
        f"{what} must be a namespace id (1-4 '/'-separated segments of a-z 0-9 _ -), got {_show(value)}",
        code="INVALID_NAMESPACE_MAP",
    )


def local_pairs(value: object) -> list[tuple[str, str]]:
    """Maps from CLI/HTTP input, from the caller's side: ``["local:peer", …]`` or ``[{"local", "peer"}, …]``.

    None means the default ``default:default``; 1-16 maps otherwise, each once.
    """
    if value is None:
        return [("default", "default")]
    fix = f"maps must be a list of 1-{MAX_MAPS} 'local:peer' strings or {{'local', 'peer'}} objects"
    if not isinstance(value, list | tuple) or not 0 < len(value) <= MAX_MAPS:
        raise InvalidRequest(fix, code="INVALID_NAMESPACE_MAP")
    pairs: list[tuple[str, str]] = []
    for item in value:
        if isinstance(item, str) and len(item) <= MAX_MAP_TEXT and item.count(":") == 1:
            local, peer = item.split(":")
        elif isinstance(item, dict) and set(item) == {"local", "peer"}:
            local, peer = item["local"], item["peer"]
        else:
            raise InvalidRequest(f"{fix}, got {_show(item)}", code="INVALID_NAMESPACE_MAP")
        pair = (_namespace(local, "the local side of a map"), _namespace(peer, "the peer side of a map"))
        if pair in pairs:
            raise InvalidRequest(f"map {pair[0]}:{pair[1]} is given twice; give it once", code="INVALID_NAMESPACE_MAP")
        pairs.append(pair)
    return pairs


def maps_from_local(pairs: Sequence[tuple[str, str]], role: Role) -> tuple[NamespaceMap, ...]:
    """``(local, peer)`` pairs in wire orientation: the initiator's namespace first, whichever side we are."""
    if role == "initiator":
        return tuple(NamespaceMap(local, peer) for local, peer in pairs)
    return tuple(NamespaceMap(peer, local) for local, peer in pairs)


def validate_maps(value: object, role: Role = "initiator") -> tuple[NamespaceMap, ...]:
    """Maps from CLI/HTTP input (see :func:`local_pairs`), oriented for a pair where we are ``role``."""
    return maps_from_local(local_pairs(value), role)


def check_manifest_snapshot(manifest: object) -> dict[str, Any] | None:
    """The peer manifest snapshot a pair keeps: None, or an object of at most 16 KiB as canonical JSON."""
    if manifest is None:
        return None
    if isinstance(manifest, dict):
        try:
            if len(canonical_json(manifest)) <= MAX_MANIFEST_BYTES:
                return manifest
        except (ValueError, RecursionError, TypeError):  # no JSON form, or nested too deep
            pass
    raise InvalidRequest(
        f"the peer's manifest is not a JSON object of at most {MAX_MANIFEST_BYTES} bytes; a federation "
        "manifest is a few hundred bytes, so this peer is not serving one",
        code="MANIFEST_INVALID",
    )


# -- the fold -----------------------------------------------------------------------------------------------------


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)  # OverflowError for an int beyond float: caught by the caller
    return number if math.isfinite(number) else None


def _optional_number(value: object) -> float | None:
    if value is None:
        return None
    number = _number(value)
    if number is None:
        raise ValueError("not a number")
    return number


def pair_from_body(body: Mapping[str, Any]) -> FederationPair | None:
    """The pair a record body holds, or None when anything in it is malformed (never raises)."""
    try:
        return _pair_from_body(body)
    except (SplError, ValueError, TypeError, KeyError, OverflowError, RecursionError):
        return None


def _pair_from_body(body: Mapping[str, Any]) -> FederationPair | None:
    role, state, reason = body["role"], body["state"], body["state_reason"]
    nonce, token_id = body["nonce"], body["our_token_id"]
    if not is_pair_id(body["pair_id"]) or role not in ROLES or state not in FED_STATES or not is_nonce(nonce):
        return None
    if not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable():
        return None
    if token_id is not None and (not isinstance(token_id, str) or not 0 < len(token_id) <= MAX_TOKEN_ID):
        return None
    if body["poll_interval"] is None:
        return None
    mode, poll_interval = validate_settings(body["mode"], body["poll_interval"])
    created_at, updated_at = _number(body["created_at"]), _number(body["updated_at"])
    if created_at is None or updated_at is None:
        return None
    return FederationPair(
        pair_id=body["pair_id"],
        role=role,
        peer_did=check_did_key(body["peer_did"], "peer_did"),
        peer_url=validate_peer_url(body["peer_url"]),
        maps=parse_maps(body["maps"], "maps"),
        mode=mode,
        poll_interval=poll_interval,
        state=state,
        state_reason=reason,
        nonce=nonce,
        created_at=created_at,
        updated_at=updated_at,
        thread_allow=validate_thread_allow(body["thread_allow"]),
        our_token_id=token_id,
        token_expires_at=_optional_number(body["token_expires_at"]),
        peer_manifest=check_manifest_snapshot(body["peer_manifest"]),
        last_refresh_at=_optional_number(body["last_refresh_at"]),
        peer_token_expires_at=_optional_number(body.get("peer_token_expires_at")),
        our_endpoint=_optional_url(body.get("our_endpoint")),
    )


def _optional_url(value: object) -> str | None:
    return None if value is None else validate_peer_url(value)


def fold_federation_pairs(
    records: Iterable[Mapping[str, Any]], own_did: str | Collection[str]
) -> dict[str, FederationPair]:
    """Each federation pair's latest state from ``th_federation_pairs`` records, in sequence order.

    Counted: LEARN records on that thread, signed by this instance (any key of its rotation chain), with a known
    kind and a well-formed body.
    Anything else is skipped, never raised. ``revoked`` is terminal here too: once a pair is revoked, a later
    record that says otherwise is ignored (the pair stays for audit).
    """
    pairs: dict[str, FederationPair] = {}
    for record in records:
        body = record.get("body")
        if (
            not owns(own_did, record.get("signer"))
            or record.get("thread") != PAIRS_THREAD
            or record.get("act") != "LEARN"
        ):
            continue
        if not isinstance(body, dict) or body.get("kind") not in FED_PAIR_KINDS:
            continue
        if type(body.get("_v")) is not int or body["_v"] != 1:
            continue
        pair = pair_from_body(body)
        if pair is None:
            continue
        known = pairs.get(pair.pair_id)
        if known is not None and known.state == "revoked" and pair.state != "revoked":
            continue
        pairs[pair.pair_id] = pair
    return pairs


# -- the lifecycle ------------------------------------------------------------------------------------------------

# event → (the states it may leave, the state it reaches, the reason recorded when the caller gives none)
_MOVES: dict[str, tuple[frozenset[str], str, str]] = {
    "approved": (frozenset({"establishing"}), "active", "approved by the responder's operator"),
    "answered": (frozenset({"establishing"}), "active", "the responder accepted the pair"),
    "rejected": (frozenset({"establishing"}), "revoked", "rejected by the responder's operator"),
    "refused": (frozenset({"establishing"}), "revoked", "the responder refused the pair"),
    "pause": (frozenset({"active"}), "paused", "paused by the operator"),
    "resume": (frozenset({"paused"}), "active", "resumed by the operator"),
    "revoke": (frozenset({"establishing", "active", "paused"}), "revoked", "revoked by the operator"),
}
EVENTS = tuple(_MOVES)


def transition(pair: FederationPair, event: str, *, now: float, reason: str = "") -> FederationPair:
    """``pair`` after ``event``, with ``state_reason`` and ``updated_at`` set; Conflict 409 for an illegal move.

    ``PAIR_REVOKED`` for any move out of ``revoked`` (terminal: pair again); ``INVALID_PAIR_STATE`` for any other
    move the current state does not allow, naming what it allows.
    """
    if event not in _MOVES:
        raise SplError(f"unknown federation pair event {event!r}; known: {', '.join(EVENTS)} (a bug)")
    sources, target, default_reason = _MOVES[event]
    if pair.state == "revoked":
        raise Conflict(
            f"pair {pair.pair_id} is revoked, which is final; to federate with this peer again, create a new pair "
            "(spl federation pair <url>)",
            code="PAIR_REVOKED",
        )
    if pair.state not in sources:
        allowed = [name for name, (states, _, _) in _MOVES.items() if pair.state in states]
        raise Conflict(
            f"pair {pair.pair_id} is {pair.state}, so {event!r} does not apply; from {pair.state} the pair "
            f"allows: {', '.join(allowed)}",
            code="INVALID_PAIR_STATE",
        )
    return replace(pair, state=target, state_reason=printable(reason or default_reason, MAX_REASON - 1), updated_at=now)
