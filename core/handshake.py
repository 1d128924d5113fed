"""The federation pair handshake's signed documents, and token sealing (docs/federation-pairs.md). Pure: no I/O.

``spl federation pair <url>`` exchanges, between two daemons that have never met:

- ``pair_request`` (initiator → responder): who asks, which namespaces, which mode, and a token the initiator
  minted for the responder;
- ``pair_response`` (responder → initiator, 200 ``active`` or 202 ``pending``): the responder's token for the
  initiator once the pair is active;
- ``pair_poll`` (initiator → responder): "is my pending request decided yet?";
- ``pair_notice`` (either peer → the other): ``revoke`` or ``sync``;
- ``endpoint_moved`` (a steward that now answers at another URL → its pair's peer) and the peer's signed
  ``endpoint_moved_ack``: the pair's new URL, each with a fresh token for its receiver.

These routes take no bearer token, so the signature *is* the authentication, and every byte is hostile until
checked. Each ``check_*`` therefore runs in a fixed order — shape and bounds (nothing unknown, every string
bounded), addressed to us, signature, time window, then the document's own invariants — and raises only the
:class:`~spl.core.errors.SplError` subclasses defined here, whatever it is given. Messages quote peer input only
through :func:`~spl.core.text.printable`, cut short.

A document is signed like the federation manifest: ``signature`` is base64url Ed25519 over the canonical JSON
(spec §2.3) of the object without its ``signature`` key. The signature is checked over the object exactly as
received, so a field this module reads is always a field the signer signed.

Tokens never travel in clear, even over plain HTTP: each is sealed (libsodium sealed box) to the X25519 key
derived from the receiving DID's Ed25519 key, so a captured or replayed document yields nothing usable.

Replay: a request's pair id is the hash of both DIDs and a fresh nonce; the caller keeps every pair id it has seen
and answers a second one with :class:`NonceReplayed` (410). The ±5 minute window bounds how long it must
remember them.
"""

from __future__ import annotations

import itertools
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

import nacl.exceptions
import nacl.public
import nacl.signing

from spl.core.canonical import canonical_json
from spl.core.errors import InvalidRequest, SplError
from spl.core.identity import Identity, b64url_decode, b64url_encode, public_key_from_did, verify_signature
from spl.core.manifest import rfc3339
from spl.core.namespaces import validate_namespace_id
from spl.core.pairs import MODES, is_pair_id, new_pair_id, validate_peer_url, validate_settings
from spl.core.rotation import RotationInvalid, verify_chain
from spl.core.text import printable
from spl.core.tokens import SCOPES

__all__ = [
    "DEFAULT_MAPS",
    "MAX_ENDPOINT",
    "MAX_MAPS",
    "NOTICE_EVENTS",
    "POLL_AFTER_MS",
    "TOKEN_SCOPES",
    "WINDOW",
    "BadHandshakeSignature",
    "EndpointMoved",
    "HandshakeInvalid",
    "NamespaceMap",
    "NonceReplayed",
    "PairNotice",
    "PairPoll",
    "PairRequest",
    "PairResponse",
    "StaleHandshake",
    "UnknownPair",
    "WrongResponder",
    "build_endpoint_moved",
    "build_endpoint_moved_ack",
    "build_notice",
    "build_pair_request",
    "build_pair_response",
    "build_poll",
    "check_did_key",
    "check_endpoint_moved",
    "check_endpoint_moved_ack",
    "check_notice",
    "check_pair_request",
    "check_pair_response",
    "check_poll",
    "is_nonce",
    "new_nonce",
    "pair_id_for",
    "parse_maps",
    "parse_rfc3339",
    "seal_for",
    "unseal",
]

WINDOW = 300.0
"""Seconds a document's ``issued_at`` may differ from our clock, either way."""

MAX_MAPS = 16
MAX_DID = 512
MAX_SEALED = 2048  # a 512-character token sealed (48 bytes of overhead) is 747 base64url characters
MAX_TOKEN = 512
MAX_REASON = 256
MAX_POLL_AFTER_MS = 60_000
POLL_AFTER_MS = 2000
TOKEN_SCOPES = ("federation:subscribe", "federation:sync")
NOTICE_EVENTS = ("revoke", "sync")
STATUSES = ("active", "pending")
_HINT = "(the wire format is in docs/federation-pairs.md, 'Wire format')"

_NONCE = re.compile(r"\A[0-9a-f]{32}\Z")
_B64URL = re.compile(r"\A[A-Za-z0-9_-]+\Z")
# RFC 3339 with a zone, seconds required, at most microseconds (what datetime can hold).
_RFC3339 = re.compile(r"\A\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})\Z")
_SIGNATURE_CHARS = 86  # 64 bytes, unpadded base64url


# -- errors -------------------------------------------------------------------------------------------------------


class HandshakeInvalid(InvalidRequest):
    """A handshake document that is malformed, out of bounds or inconsistent: the sender must fix it."""

    code = "INVALID_HANDSHAKE"


class WrongResponder(InvalidRequest):
    """A document addressed to another DID than this daemon's: sent to the wrong URL, or replayed here."""

    code = "HANDSHAKE_WRONG_RESPONDER"


class BadHandshakeSignature(SplError):
    """The signature does not verify against the DID the document claims: forged, altered, or a key mix-up."""

    status = 401
    type = "authentication_error"
    code = "HANDSHAKE_SIGNATURE_INVALID"


class StaleHandshake(SplError):
    """``issued_at`` lies outside :data:`WINDOW` of our clock: a replay, or two clocks that disagree."""

    status = 401
    type = "authentication_error"
    code = "HANDSHAKE_STALE"


class NonceReplayed(SplError):
    """A pair request whose pair id (so whose nonce) was seen before. Raised by the caller, which keeps them."""

    status = 410
    type = "invalid_request_error"
    code = "NONCE_REPLAYED"


# -- small values -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamespaceMap:
    """One agreed correspondence: the initiator's namespace ``initiator`` ↔ the responder's ``responder``.

    Always in wire orientation (initiator first), on both sides; a side that wants "mine ↔ theirs" asks its
    pair's role (``spl.core.federation_pairs``).
    """

    initiator: str
    responder: str

    def to_wire(self) -> dict[str, str]:
        return {"initiator": self.initiator, "responder": self.responder}


DEFAULT_MAPS = (NamespaceMap("default", "default"),)


def new_nonce() -> str:
    """32 lowercase hex from the OS's CSPRNG: what makes each pair id, and so each request, unique."""
    return secrets.token_hex(16)


def is_nonce(value: object) -> bool:
    return isinstance(value, str) and _NONCE.fullmatch(value) is not None


def pair_id_for(initiator_did: str, responder_did: str, nonce: str) -> str:
    """The pair id both sides compute from the request: ``pair_`` + 16 hex of the DIDs and the nonce."""
    return new_pair_id(initiator_did, responder_did, "federation", nonce)


def parse_rfc3339(value: object) -> float | None:
    """An RFC 3339 timestamp with a zone (``…T…Z`` or ``±hh:mm``) as POSIX seconds; None for anything else."""
    if not isinstance(value, str) or _RFC3339.fullmatch(value) is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):  # month 13, hour 25, a year the platform cannot hold
        return None


def check_did_key(value: object, field: str = "did") -> str:
    """``value`` if it is a ``did:key`` holding an Ed25519 key (the only DIDs we can verify); HandshakeInvalid else."""
    if isinstance(value, str) and len(value) <= MAX_DID and value.isascii():
        try:
            public_key_from_did(value)
        except ValueError:
            pass
        else:
            return value
    raise HandshakeInvalid(
        f"{field} must be a did:key holding an Ed25519 public key (did:key:z6Mk…), got {_show(value)} {_HINT}"
    )


def _show(value: object) -> str:
    """Peer input as it may appear in a message: a short escaped string, or only the type of anything else."""
    if isinstance(value, str):
        return repr(printable(value, 64))
    return f"a {type(value).__name__}"


# -- sealing ------------------------------------------------------------------------------------------------------


def _check_token(plaintext: object, field: str) -> str:
    if (
        not isinstance(plaintext, str)
        or not 0 < len(plaintext) <= MAX_TOKEN
        or not all(0x21 <= ord(char) <= 0x7E for char in plaintext)
    ):
        raise HandshakeInvalid(f"{field} must hold a token of 1-{MAX_TOKEN} printable ASCII characters {_HINT}")
    return plaintext


def seal_for(did: str, plaintext: str) -> str:
    """``plaintext`` sealed so only the holder of ``did``'s private key can open it (base64url, unpadded).

    A sealed box: an ephemeral X25519 key per message, so the sender cannot open it either, and two seals
    of one token differ.
    """
    _check_token(plaintext, "the token")
    check_did_key(did, "the receiver's DID")
    try:
        curve_key = nacl.signing.VerifyKey(public_key_from_did(did)).to_curve25519_public_key()
        sealed = nacl.public.SealedBox(curve_key).encrypt(plaintext.encode("ascii"))
    except (nacl.exceptions.CryptoError, ValueError, TypeError):  # a did:key that is no point of the curve
        raise HandshakeInvalid(f"cannot seal to {_show(did)}: its key is not a usable Ed25519 public key") from None
    return b64url_encode(bytes(sealed))


def _check_sealed(value: object, field: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_SEALED or _B64URL.fullmatch(value) is None:
        raise HandshakeInvalid(f"{field} must be a sealed token: 1-{MAX_SEALED} base64url characters {_HINT}")
    return value


def unseal(identity: Identity, sealed: str) -> str:
    """Open a token sealed to ``identity``'s DID; HandshakeInvalid when it was sealed to another key or altered."""
    _check_sealed(sealed, "token_sealed")
    try:
        curve_key = nacl.signing.SigningKey(identity.seed).to_curve25519_private_key()
        opened = nacl.public.SealedBox(curve_key).decrypt(b64url_decode(sealed))
        plaintext = opened.decode("ascii")
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        raise HandshakeInvalid(
            f"token_sealed does not open with this daemon's key ({identity.did}): the peer sealed it to another "
            "DID or it was altered on the way; pair again with this daemon's current identity"
        ) from None
    return _check_token(plaintext, "token_sealed")


# -- shape checks shared by the four documents ----------------------------------------------------------------------


def _fields(
    payload: object, what: str, required: frozenset[str], optional: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """``payload`` if it is a JSON object with every ``required`` key and no key outside ``required | optional``."""
    if not isinstance(payload, dict):
        raise HandshakeInvalid(f"a {what} must be a JSON object, got {_show(payload)} {_HINT}")
    unknown = list(itertools.islice((key for key in payload if key not in required and key not in optional), 3))
    if unknown:
        names = ", ".join(_show(key) for key in unknown)
        raise HandshakeInvalid(f"{what} has unknown key(s) {names}; send only the documented keys {_HINT}")
    missing = sorted(required.difference(payload))
    if missing:
        raise HandshakeInvalid(f"{what} lacks {', '.join(missing)} {_HINT}")
    return payload


def _header(doc: Mapping[str, Any], what: str) -> None:
    if doc["object"] != what:
        raise HandshakeInvalid(f"object must be {what!r}, got {_show(doc['object'])}; post it to the right route")
    version = doc["version"]
    if type(version) is not int or version != 1:
        raise HandshakeInvalid(f"{what}.version must be 1 (this daemon speaks version 1 of the handshake)")


def _nonce(value: object, field: str) -> str:
    if not is_nonce(value):
        raise HandshakeInvalid(f"{field} must be 32 lowercase hex digits (a fresh random nonce) {_HINT}")
    return str(value)


def _pair_id(value: object) -> str:
    if not is_pair_id(value):
        raise HandshakeInvalid(f"pair_id must be 'pair_' followed by 16 lowercase hex digits {_HINT}")
    return str(value)


def _time(value: object, field: str) -> float:
    moment = parse_rfc3339(value)
    if moment is None:
        raise HandshakeInvalid(f"{field} must be an RFC 3339 time with a zone, e.g. 2026-11-30T14:00:00Z {_HINT}")
    return moment


def _url(value: object, field: str) -> str:
    try:
        return validate_peer_url(value)
    except InvalidRequest:
        raise HandshakeInvalid(
            f"{field} must be an http(s) URL with a host and no credentials, query or fragment, got {_show(value)}"
        ) from None


def _namespace(value: object, field: str) -> str:
    if isinstance(value, str) and len(value) <= 256:
        try:
            return validate_namespace_id(value)
        except InvalidRequest:
            pass
    raise HandshakeInvalid(
        f"{field} must be a namespace id (1-4 '/'-separated segments of a-z 0-9 _ -), got {_show(value)}"
    )


def parse_maps(value: object, field: str = "namespaces") -> tuple[NamespaceMap, ...]:
    """The wire's ``[{"initiator", "responder"}, …]``: 1-16 maps, valid namespace ids, no duplicate."""
    if not isinstance(value, list) or not 0 < len(value) <= MAX_MAPS:
        raise HandshakeInvalid(f"{field} must be a list of 1-{MAX_MAPS} namespace maps {_HINT}")
    maps: list[NamespaceMap] = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"initiator", "responder"}:
            raise HandshakeInvalid(f'each of {field} must be {{"initiator": <namespace>, "responder": <namespace>}}')
        mapping = NamespaceMap(
            _namespace(item["initiator"], f"{field}[].initiator"), _namespace(item["responder"], f"{field}[].responder")
        )
        if mapping in maps:
            raise HandshakeInvalid(f"{field} lists {mapping.initiator}:{mapping.responder} twice; send it once")
        maps.append(mapping)
    return tuple(maps)


def _scopes(value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= len(SCOPES)
        or not all(isinstance(scope, str) and scope in SCOPES for scope in value)
        or len(set(value)) != len(value)
    ):
        raise HandshakeInvalid(f"token_scopes must list distinct scopes among {', '.join(SCOPES)} {_HINT}")
    return tuple(value)


def _signature(value: object) -> str:
    if not isinstance(value, str) or len(value) != _SIGNATURE_CHARS or _B64URL.fullmatch(value) is None:
        raise HandshakeInvalid(f"signature must be an Ed25519 signature: {_SIGNATURE_CHARS} base64url characters")
    return value


KeysOf = Callable[[str], Sequence[str]]  # a peer DID -> every key its rotation chain proved (spl.core.rotation)


def _verify(doc: Mapping[str, Any], signer: str, what: str, keys_of: KeysOf | None = None) -> None:
    """The signature over ``doc`` as received (minus ``signature``) verifies against ``signer``'s current key.

    A peer that rotated its key (``spl identity rotate``) signs with the last key of its chain, which the caller
    pinned from its verified manifest (``keys_of``); without one, ``signer``'s own did:key is the only key.
    """
    keys = keys_of(signer) if keys_of is not None else ()
    key = keys[-1] if keys else signer
    unsigned = {key: value for key, value in doc.items() if key != "signature"}
    try:
        message = canonical_json(unsigned)
    except (ValueError, RecursionError, TypeError):  # no canonical form: the shape checks should have caught it
        raise HandshakeInvalid(f"{what} has no canonical JSON form, so it cannot have been signed {_HINT}") from None
    if not verify_signature(key, message, doc["signature"]):
        raise BadHandshakeSignature(
            f"{what} signature does not verify against {printable(key, 80)}: it was altered, or signed with "
            "another key than that DID's; sign the canonical JSON of the document without its signature key"
        )


def _window(issued_at: float, now: float, what: str) -> None:
    skew = issued_at - now
    if abs(skew) > WINDOW:
        direction = "ahead of" if skew > 0 else "behind"
        raise StaleHandshake(
            f"{what} issued_at is {abs(skew):.0f} s {direction} this daemon's clock (at most {WINDOW:.0f} s "
            "allowed): check both machines' clocks (NTP), then send a fresh document"
        )


def _addressed(value: str, own_did: str, field: str, what: str) -> None:
    if value != own_did:
        raise WrongResponder(
            f"{what} is addressed to {printable(value, 80)} ({field}), not to this daemon ({own_did}); "
            "fetch the manifest at this URL again and address the document to its DID"
        )


def _distinct(first: str, second: str) -> None:
    if first == second:
        raise HandshakeInvalid("a daemon cannot pair with itself: both DIDs are the same")


def _signed(identity: Identity, doc: dict[str, Any]) -> dict[str, Any]:
    doc["signature"] = identity.sign(canonical_json(doc))
    return doc


# -- pair_request -------------------------------------------------------------------------------------------------

_REQUEST_KEYS = frozenset(
    {
        "object",
        "version",
        "pair_id",
        "initiator_did",
        "initiator_url",
        "responder_did",
        "namespaces",
        "mode",
        "poll_interval",
        "nonce",
        "issued_at",
        "token_sealed",
        "token_scopes",
        "token_expires_at",
        "signature",
    }
)


@dataclass(frozen=True)
class PairRequest:
    """A checked ``pair_request``. ``token_sealed`` is still sealed: open it with :func:`unseal`."""

    pair_id: str
    initiator_did: str
    initiator_url: str
    responder_did: str
    maps: tuple[NamespaceMap, ...]
    mode: str
    poll_interval: float
    nonce: str
    issued_at: float
    token_sealed: str = field(repr=False)
    token_scopes: tuple[str, ...]
    token_expires_at: float
    # The keys the initiator proved (its rotation chain, current last; spl.core.rotation): the answer's token is
    # sealed to the last one. Just the DID's own key for an initiator that never rotated.
    initiator_keys: tuple[str, ...] = ()


_REQUEST_OPTIONAL = frozenset({"initiator_rotations"})  # sent only by an initiator that rotated its key


def _parse_request(doc: Mapping[str, Any]) -> PairRequest:
    """Every field of a request whose keys :func:`_fields` accepted, checked and parsed (no signature, no clock)."""
    _header(doc, "pair_request")
    initiator = check_did_key(doc["initiator_did"], "initiator_did")
    responder = check_did_key(doc["responder_did"], "responder_did")
    _distinct(initiator, responder)
    mode, poll_interval = doc["mode"], doc["poll_interval"]
    if not isinstance(mode, str) or mode not in MODES:
        raise HandshakeInvalid(f"mode must be one of {', '.join(MODES)}")
    if poll_interval is None:
        raise HandshakeInvalid("poll_interval must be a number of seconds between 0.05 and 86400")
    try:
        mode, poll_interval = validate_settings(mode, poll_interval)
    except InvalidRequest as exc:
        raise HandshakeInvalid(exc.message) from None
    issued_at = _time(doc["issued_at"], "issued_at")
    token_expires_at = _time(doc["token_expires_at"], "token_expires_at")
    if token_expires_at <= issued_at:
        raise HandshakeInvalid("token_expires_at must come after issued_at: the token would be born expired")
    return PairRequest(
        pair_id=_pair_id(doc["pair_id"]),
        initiator_did=initiator,
        initiator_url=_url(doc["initiator_url"], "initiator_url"),
        responder_did=responder,
        maps=parse_maps(doc["namespaces"]),
        mode=mode,
        poll_interval=poll_interval,
        nonce=_nonce(doc["nonce"], "nonce"),
        issued_at=issued_at,
        token_sealed=_check_sealed(doc["token_sealed"], "token_sealed"),
        token_scopes=_scopes(doc["token_scopes"]),
        token_expires_at=token_expires_at,
    )


def build_pair_request(
    identity: Identity,
    *,
    responder_did: str,
    initiator_url: str,
    maps: Sequence[NamespaceMap] = DEFAULT_MAPS,
    mode: str = "polling",
    poll_interval: float,
    token: str,
    token_expires_at: float,
    now: float,
    nonce: str | None = None,
    responder_key: str | None = None,
) -> dict[str, Any]:
    """The signed ``pair_request``: ``token`` (minted by us for the responder) sealed to ``responder_did``'s
    current key (``responder_key``, from its verified manifest, when it rotated). An initiator that rotated its
    own key sends its chain (``initiator_rotations``) so the responder can verify the signature.

    The document is checked like the responder will check it before it is signed, so a bad argument fails
    here, with the same message, instead of on the peer.
    """
    nonce = new_nonce() if nonce is None else nonce
    doc: dict[str, Any] = {
        "object": "pair_request",
        "version": 1,
        "pair_id": pair_id_for(identity.did, responder_did, nonce),
        "initiator_did": identity.did,
        "initiator_url": initiator_url,
        "responder_did": responder_did,
        "namespaces": [mapping.to_wire() for mapping in maps],
        "mode": mode,
        "poll_interval": poll_interval,
        "nonce": nonce,
        "issued_at": rfc3339(now),
        "token_sealed": seal_for(responder_key or responder_did, token),
        "token_scopes": list(TOKEN_SCOPES),
        "token_expires_at": rfc3339(token_expires_at),
    }
    statements = getattr(identity, "statements", ())
    if statements:
        doc["initiator_rotations"] = list(statements)
    _parse_request(doc)
    return _signed(identity, doc)


def check_pair_request(payload: object, *, own_did: str, now: float) -> PairRequest:
    """A ``pair_request`` checked in the documented order; the caller then checks the pair id is new (410).

    Raises (and only these): HandshakeInvalid 400, WrongResponder 400, BadHandshakeSignature 401,
    StaleHandshake 401.
    """
    doc = _fields(payload, "pair_request", _REQUEST_KEYS, _REQUEST_OPTIONAL)
    _signature(doc["signature"])
    request = _parse_request(doc)
    _addressed(request.responder_did, own_did, "responder_did", "pair_request")
    try:
        keys = verify_chain(request.initiator_did, doc.get("initiator_rotations", []))
    except RotationInvalid as exc:
        raise HandshakeInvalid(f"pair_request initiator_rotations: {exc.message}") from None
    _verify(doc, request.initiator_did, "pair_request", lambda _did: keys)
    request = replace(request, initiator_keys=keys)
    _window(request.issued_at, now, "pair_request")
    expected = pair_id_for(request.initiator_did, request.responder_did, request.nonce)
    if request.pair_id != expected:
        raise HandshakeInvalid(
            "pair_id is not the hash of initiator_did, responder_did and nonce; compute it as "
            "'pair_' + the first 16 hex of sha256(initiator_did \\n responder_did \\n federation \\n nonce)"
        )
    return request


# -- pair_response ------------------------------------------------------------------------------------------------

_RESPONSE_KEYS = frozenset(
    {
        "object",
        "version",
        "pair_id",
        "status",
        "initiator_did",
        "responder_did",
        "nonce",
        "issued_at",
        "namespaces",
        "poll_endpoint",
        "poll_after_ms",
        "signature",
    }
)
_RESPONSE_TOKEN_KEYS = frozenset({"token_sealed", "token_scopes", "token_expires_at"})


@dataclass(frozen=True)
class PairResponse:
    """A checked ``pair_response``; ``token`` is the unsealed plaintext when ``active`` (never shown in a repr)."""

    pair_id: str
    status: Literal["active", "pending"]
    maps: tuple[NamespaceMap, ...]
    token: str | None = field(repr=False)
    token_scopes: tuple[str, ...]
    token_expires_at: float | None
    poll_endpoint: str
    poll_after_ms: int


def build_pair_response(
    identity: Identity,
    *,
    request: PairRequest,
    status: Literal["active", "pending"],
    maps: Sequence[NamespaceMap],
    token: str | None,
    token_expires_at: float | None,
    poll_endpoint: str,
    now: float,
    poll_after_ms: int = POLL_AFTER_MS,
) -> dict[str, Any]:
    """The signed answer to ``request`` (also to each of its polls): ``active`` carries ``token`` sealed to
    the initiator; ``pending`` carries no token. ``nonce`` is always the *request's* nonce."""
    if identity.did != request.responder_did:
        raise SplError("build_pair_response: the request is addressed to another DID than this identity (a bug)")
    if status not in STATUSES or (status == "active") != (token is not None and token_expires_at is not None):
        raise SplError("build_pair_response: an active answer needs a token and its expiry, a pending one neither")
    doc: dict[str, Any] = {
        "object": "pair_response",
        "version": 1,
        "pair_id": request.pair_id,
        "status": status,
        "initiator_did": request.initiator_did,
        "responder_did": identity.did,
        "nonce": request.nonce,
        "issued_at": rfc3339(now),
        "namespaces": [mapping.to_wire() for mapping in maps],
        "poll_endpoint": poll_endpoint,
        "poll_after_ms": poll_after_ms,
    }
    if token is not None and token_expires_at is not None:
        # Sealed to the initiator's current key: the one its request proved, else its DID's own.
        doc["token_sealed"] = seal_for(
            request.initiator_keys[-1] if request.initiator_keys else request.initiator_did, token
        )
        doc["token_scopes"] = list(TOKEN_SCOPES)
        doc["token_expires_at"] = rfc3339(token_expires_at)
    _parse_response(doc)
    return _signed(identity, doc)


def _parse_response(doc: Mapping[str, Any]) -> tuple[PairResponse, str, str, str, float]:
    """A response's fields (token still sealed), with its initiator, responder, nonce and issued_at."""
    _header(doc, "pair_response")
    status = doc["status"]
    if status not in STATUSES:
        raise HandshakeInvalid("status must be 'active' or 'pending'")
    present = _RESPONSE_TOKEN_KEYS.intersection(doc)
    if status == "active" and present != _RESPONSE_TOKEN_KEYS:
        raise HandshakeInvalid("an active pair_response must carry token_sealed, token_scopes and token_expires_at")
    if status == "pending" and present:
        raise HandshakeInvalid("a pending pair_response carries no token; send the token once the pair is active")
    initiator = check_did_key(doc["initiator_did"], "initiator_did")
    responder = check_did_key(doc["responder_did"], "responder_did")
    _distinct(initiator, responder)
    poll_after_ms = doc["poll_after_ms"]
    if type(poll_after_ms) is not int or not 0 <= poll_after_ms <= MAX_POLL_AFTER_MS:
        raise HandshakeInvalid(f"poll_after_ms must be an integer between 0 and {MAX_POLL_AFTER_MS}")
    issued_at = _time(doc["issued_at"], "issued_at")
    token_sealed: str | None = None
    scopes: tuple[str, ...] = ()
    expires: float | None = None
    if status == "active":
        token_sealed = _check_sealed(doc["token_sealed"], "token_sealed")
        scopes = _scopes(doc["token_scopes"])
        expires = _time(doc["token_expires_at"], "token_expires_at")
        if expires <= issued_at:
            raise HandshakeInvalid("token_expires_at must come after issued_at: the token would be born expired")
    response = PairResponse(
        pair_id=_pair_id(doc["pair_id"]),
        status=status,
        maps=parse_maps(doc["namespaces"]),
        token=token_sealed,
        token_scopes=scopes,
        token_expires_at=expires,
        poll_endpoint=_url(doc["poll_endpoint"], "poll_endpoint"),
        poll_after_ms=poll_after_ms,
    )
    return response, initiator, responder, _nonce(doc["nonce"], "nonce"), issued_at


def check_pair_response(
    payload: object,
    *,
    initiator: Identity,
    responder_did: str,
    pair_id: str,
    nonce: str | None,
    now: float,
    requested_maps: Sequence[NamespaceMap] | None = None,
    keys_of: KeysOf | None = None,
) -> PairResponse:
    """The responder's answer to our request ``pair_id`` (or to a poll of it), checked, its token unsealed.

    ``nonce``, when given, must be echoed (it is the request's nonce, also in answers to polls).
    ``requested_maps``, when given, bounds the answer: the responder may accept fewer maps than we proposed,
    never others, since every map names a namespace of ours the peer will be served.
    """
    what = "pair_response"
    doc = _fields(payload, what, _RESPONSE_KEYS, _RESPONSE_TOKEN_KEYS)
    _signature(doc["signature"])
    response, initiator_did, answered_by, echoed, issued_at = _parse_response(doc)
    _addressed(initiator_did, initiator.did, "initiator_did", what)
    if answered_by != responder_did:
        raise WrongResponder(
            f"{what} comes from {printable(answered_by, 80)}, not from the responder {printable(responder_did, 80)} "
            "this pair was requested from; check the peer's URL"
        )
    _verify(doc, responder_did, what, keys_of)
    _window(issued_at, now, what)
    if response.pair_id != pair_id:
        raise HandshakeInvalid(f"{what} answers pair {response.pair_id}, not {printable(pair_id, 40)}")
    if nonce is not None and echoed != nonce:
        raise HandshakeInvalid(f"{what} does not echo the request's nonce: it answers another request")
    if requested_maps is not None and not set(response.maps) <= set(requested_maps):
        raise HandshakeInvalid(
            f"{what} lists namespace maps that were not requested; the responder may only narrow the request"
        )
    if response.token is None:
        return response
    return PairResponse(
        pair_id=response.pair_id,
        status=response.status,
        maps=response.maps,
        token=unseal(initiator, response.token),
        token_scopes=response.token_scopes,
        token_expires_at=response.token_expires_at,
        poll_endpoint=response.poll_endpoint,
        poll_after_ms=response.poll_after_ms,
    )


# -- pair_poll ----------------------------------------------------------------------------------------------------

_POLL_KEYS = frozenset(
    {"object", "version", "pair_id", "initiator_did", "responder_did", "nonce", "issued_at", "signature"}
)


@dataclass(frozen=True)
class PairPoll:
    pair_id: str
    initiator_did: str
    nonce: str
    issued_at: float


def build_poll(
    identity: Identity, *, pair_id: str, responder_did: str, now: float, nonce: str | None = None
) -> dict[str, Any]:
    """The initiator's signed "is pair ``pair_id`` decided?", with a fresh nonce of its own."""
    doc: dict[str, Any] = {
        "object": "pair_poll",
        "version": 1,
        "pair_id": pair_id,
        "initiator_did": identity.did,
        "responder_did": responder_did,
        "nonce": new_nonce() if nonce is None else nonce,
        "issued_at": rfc3339(now),
    }
    _parse_poll(doc)
    return _signed(identity, doc)


def _parse_poll(doc: Mapping[str, Any]) -> tuple[PairPoll, str]:
    _header(doc, "pair_poll")
    initiator = check_did_key(doc["initiator_did"], "initiator_did")
    responder = check_did_key(doc["responder_did"], "responder_did")
    _distinct(initiator, responder)
    poll = PairPoll(
        pair_id=_pair_id(doc["pair_id"]),
        initiator_did=initiator,
        nonce=_nonce(doc["nonce"], "nonce"),
        issued_at=_time(doc["issued_at"], "issued_at"),
    )
    return poll, responder


def check_poll(payload: object, *, own_did: str, now: float, keys_of: KeysOf | None = None) -> PairPoll:
    """A signed poll addressed to us; the caller then checks ``initiator_did`` is the pair's initiator."""
    doc = _fields(payload, "pair_poll", _POLL_KEYS)
    _signature(doc["signature"])
    poll, responder = _parse_poll(doc)
    _addressed(responder, own_did, "responder_did", "pair_poll")
    _verify(doc, poll.initiator_did, "pair_poll", keys_of)
    _window(poll.issued_at, now, "pair_poll")
    return poll


# -- pair_notice --------------------------------------------------------------------------------------------------

_NOTICE_KEYS = frozenset(
    {
        "object",
        "version",
        "pair_id",
        "sender_did",
        "receiver_did",
        "event",
        "reason",
        "nonce",
        "issued_at",
        "signature",
    }
)


@dataclass(frozen=True)
class PairNotice:
    pair_id: str
    sender_did: str
    event: Literal["revoke", "sync"]
    reason: str
    nonce: str
    issued_at: float


def build_notice(
    identity: Identity,
    *,
    pair_id: str,
    receiver_did: str,
    event: Literal["revoke", "sync"],
    reason: str = "",
    now: float,
    nonce: str | None = None,
) -> dict[str, Any]:
    """A signed ``revoke`` or ``sync`` notice from us to the pair's peer ``receiver_did``."""
    doc: dict[str, Any] = {
        "object": "pair_notice",
        "version": 1,
        "pair_id": pair_id,
        "sender_did": identity.did,
        "receiver_did": receiver_did,
        "event": event,
        "reason": reason,
        "nonce": new_nonce() if nonce is None else nonce,
        "issued_at": rfc3339(now),
    }
    _parse_notice(doc)
    return _signed(identity, doc)


def _parse_notice(doc: Mapping[str, Any]) -> tuple[PairNotice, str]:
    _header(doc, "pair_notice")
    sender = check_did_key(doc["sender_did"], "sender_did")
    receiver = check_did_key(doc["receiver_did"], "receiver_did")
    _distinct(sender, receiver)
    event, reason = doc["event"], doc["reason"]
    if event not in NOTICE_EVENTS:
        raise HandshakeInvalid(f"event must be one of {', '.join(NOTICE_EVENTS)}")
    if not isinstance(reason, str) or len(reason) > MAX_REASON or not reason.isprintable():
        raise HandshakeInvalid(f"reason must be one line of at most {MAX_REASON} printable characters")
    notice = PairNotice(
        pair_id=_pair_id(doc["pair_id"]),
        sender_did=sender,
        event=event,
        reason=reason,
        nonce=_nonce(doc["nonce"], "nonce"),
        issued_at=_time(doc["issued_at"], "issued_at"),
    )
    return notice, receiver


def check_notice(payload: object, *, own_did: str, now: float, keys_of: KeysOf | None = None) -> PairNotice:
    """A signed notice addressed to us; the caller then checks ``sender_did`` is the pair's peer."""
    doc = _fields(payload, "pair_notice", _NOTICE_KEYS)
    _signature(doc["signature"])
    notice, receiver = _parse_notice(doc)
    _addressed(receiver, own_did, "receiver_did", "pair_notice")
    _verify(doc, notice.sender_did, "pair_notice", keys_of)
    _window(notice.issued_at, now, "pair_notice")
    return notice


# -- endpoint_moved -----------------------------------------------------------------------------------------------
#
# A steward that now answers at another URL than the one a pair's peer knows (a migration: `spl export` here,
# `spl import` there) tells the peer with a signed ``endpoint_moved`` notice; the peer probes both URLs and answers
# with a signed ``endpoint_moved_ack`` (docs/federation-pairs.md, "When a steward moves"). Each carries a fresh pull
# token for its receiver, sealed to the receiver's DID: the mover lost the peer's token (secrets do not travel) and
# the peer revokes what it had minted for the old endpoint.

MAX_ENDPOINT = 512

_MOVED_KEYS = frozenset(
    {
        "object",
        "version",
        "pair_id",
        "sender_did",
        "receiver_did",
        "endpoint",
        "nonce",
        "issued_at",
        "token_sealed",
        "token_scopes",
        "token_expires_at",
        "signature",
    }
)


class UnknownPair(SplError):
    """A document naming a pair this daemon does not hold with its sender: a wrong pair id, or a stranger."""

    status = 404
    type = "not_found_error"
    code = "PAIR_UNKNOWN"


@dataclass(frozen=True)
class EndpointMoved:
    """A checked ``endpoint_moved`` notice (or its acknowledgement); ``token`` is sealed until the receiver
    opens it with :func:`unseal` (an acknowledgement's comes back unsealed from its check)."""

    pair_id: str
    sender_did: str
    receiver_did: str
    endpoint: str
    nonce: str
    issued_at: float
    token: str = field(repr=False)
    token_scopes: tuple[str, ...]
    token_expires_at: float


def _endpoint(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_ENDPOINT:
        raise HandshakeInvalid(f"endpoint must be an http(s) base URL of at most {MAX_ENDPOINT} characters {_HINT}")
    return _url(value, "endpoint")


def _moved_doc(
    identity: Identity,
    what: str,
    *,
    pair_id: str,
    receiver_did: str,
    endpoint: str,
    token: str,
    token_expires_at: float,
    now: float,
    nonce: str,
    receiver_key: str | None = None,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "object": what,
        "version": 1,
        "pair_id": pair_id,
        "sender_did": identity.did,
        "receiver_did": receiver_did,
        "endpoint": endpoint,
        "nonce": nonce,
        "issued_at": rfc3339(now),
        "token_sealed": seal_for(receiver_key or receiver_did, token),
        "token_scopes": list(TOKEN_SCOPES),
        "token_expires_at": rfc3339(token_expires_at),
    }
    _parse_moved(doc, what)
    return _signed(identity, doc)


def _parse_moved(doc: Mapping[str, Any], what: str) -> EndpointMoved:
    """Every field of an ``endpoint_moved`` / ``endpoint_moved_ack`` (no signature, no clock); token still sealed."""
    _header(doc, what)
    sender = check_did_key(doc["sender_did"], "sender_did")
    receiver = check_did_key(doc["receiver_did"], "receiver_did")
    _distinct(sender, receiver)
    issued_at = _time(doc["issued_at"], "issued_at")
    expires = _time(doc["token_expires_at"], "token_expires_at")
    if expires <= issued_at:
        raise HandshakeInvalid("token_expires_at must come after issued_at: the token would be born expired")
    return EndpointMoved(
        pair_id=_pair_id(doc["pair_id"]),
        sender_did=sender,
        receiver_did=receiver,
        endpoint=_endpoint(doc["endpoint"]),
        nonce=_nonce(doc["nonce"], "nonce"),
        issued_at=issued_at,
        token=_check_sealed(doc["token_sealed"], "token_sealed"),
        token_scopes=_scopes(doc["token_scopes"]),
        token_expires_at=expires,
    )


def build_endpoint_moved(
    identity: Identity,
    *,
    pair_id: str,
    receiver_did: str,
    endpoint: str,
    token: str,
    token_expires_at: float,
    now: float,
    nonce: str | None = None,
    receiver_key: str | None = None,
) -> dict[str, Any]:
    """Our signed "pair ``pair_id`` now reaches us at ``endpoint``", with ``token`` (minted by us for the peer,
    bound to the pair) sealed to the peer's DID ``receiver_did``."""
    return _moved_doc(
        identity,
        "endpoint_moved",
        pair_id=pair_id,
        receiver_did=receiver_did,
        endpoint=endpoint,
        token=token,
        token_expires_at=token_expires_at,
        now=now,
        nonce=new_nonce() if nonce is None else nonce,
        receiver_key=receiver_key,
    )


def check_endpoint_moved(
    payload: object,
    *,
    own_did: str,
    now: float,
    peer_did_of: Callable[[str], str | None],
    keys_of: KeysOf | None = None,
) -> EndpointMoved:
    """An ``endpoint_moved`` notice addressed to us, verified against the DID we already trust for its pair.

    ``peer_did_of(pair_id)`` is the pair's recorded peer DID (None when we hold no such pair): the signature is
    checked against that DID, never against one the notice names alone, so nobody but the pair's peer can move
    it. The caller then spends the nonce (410 on reuse) and checks the pair's state. Raises HandshakeInvalid 400,
    WrongResponder 400, UnknownPair 404, BadHandshakeSignature 401, StaleHandshake 401.
    """
    what = "endpoint_moved"
    doc = _fields(payload, what, _MOVED_KEYS)
    _signature(doc["signature"])
    notice = _parse_moved(doc, what)
    _addressed(notice.receiver_did, own_did, "receiver_did", what)
    trusted = peer_did_of(notice.pair_id)
    if trusted is None or trusted != notice.sender_did:
        raise UnknownPair(
            "no federation pair with that id joins this steward to the sender; check the pair id (the pair may "
            "have been revoked and re-created)"
        )
    _verify(doc, trusted, what, keys_of)
    _window(notice.issued_at, now, what)
    return notice


def build_endpoint_moved_ack(
    identity: Identity,
    *,
    notice: EndpointMoved,
    token: str,
    token_expires_at: float,
    now: float,
    receiver_key: str | None = None,
) -> dict[str, Any]:
    """The peer's signed acknowledgement of ``notice``: the endpoint it now pulls from, the notice's nonce echoed,
    and a fresh token for the mover (sealed to it) replacing those minted for its old endpoint."""
    if identity.did != notice.receiver_did:
        raise SplError("build_endpoint_moved_ack: the notice is addressed to another DID than this identity (a bug)")
    return _moved_doc(
        identity,
        "endpoint_moved_ack",
        pair_id=notice.pair_id,
        receiver_did=notice.sender_did,
        endpoint=notice.endpoint,
        token=token,
        token_expires_at=token_expires_at,
        now=now,
        nonce=notice.nonce,
        receiver_key=receiver_key,
    )


def check_endpoint_moved_ack(
    payload: object,
    *,
    identity: Identity,
    peer_did: str,
    pair_id: str,
    nonce: str,
    endpoint: str,
    now: float,
    keys_of: KeysOf | None = None,
) -> EndpointMoved:
    """The peer's answer to our notice ``nonce`` for pair ``pair_id``, signed by ``peer_did``, its token unsealed.

    It must acknowledge exactly the endpoint we announced: an answer to an earlier notice (another endpoint)
    is refused, so a stale answer cannot record an endpoint we no longer hold.
    """
    what = "endpoint_moved_ack"
    doc = _fields(payload, what, _MOVED_KEYS)
    _signature(doc["signature"])
    ack = _parse_moved(doc, what)
    _addressed(ack.receiver_did, identity.did, "receiver_did", what)
    if ack.sender_did != peer_did:
        raise WrongResponder(
            f"{what} comes from {printable(ack.sender_did, 80)}, not from the pair's peer {printable(peer_did, 80)}"
        )
    _verify(doc, peer_did, what, keys_of)
    _window(ack.issued_at, now, what)
    if ack.pair_id != pair_id or ack.nonce != nonce:
        raise HandshakeInvalid(f"{what} answers another notice (its pair id or nonce differs from ours)")
    if ack.endpoint != endpoint:
        raise HandshakeInvalid(f"{what} acknowledges another endpoint than the one announced; announce again")
    return replace(ack, token=unseal(identity, ack.token))
