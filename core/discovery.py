"""Peer discovery, the pure part (issue 14): what a found peer is, and the three documents discovery reads.

Four methods find peers (docs/discovery.md): mDNS on the LAN, did:web, a did:sync directory and the static
``[[sync.peers]]`` of the config. Each ends in the same :class:`FoundPeer`, which says who the peer *claims* to
be; nothing found is trusted until its endpoint's signed manifest verifies (the CLI does that, never the daemon:
a hostile LAN must not be able to make the daemon fetch URLs of its choosing). Discovery never creates a pair.

Everything here is pure (no clock read, no socket): the mDNS TXT codec and the bounded, expiring table the
listener fills (:class:`MdnsTable`), the W3C DID document of did:web (:func:`did_document`, :func:`parse_did_document`)
and the directory's registrations (:class:`Directory`). Every byte read here came from a stranger: each value is
validated against a pattern and a length before it is kept, and each table has a cap.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spl.core.errors import InvalidRequest
from spl.core.feed import ManifestInvalid
from spl.core.manifest import rfc3339, signed_manifest_did, zoned_time
from spl.core.text import printable

__all__ = [
    "DIRECTORY_MAX_ENTRIES",
    "MDNS_MAX_PEERS",
    "SERVICE_TYPE",
    "Directory",
    "DirectoryEntry",
    "Registration",
    "FoundPeer",
    "MdnsTable",
    "decode_txt",
    "did_document",
    "did_web",
    "did_web_url",
    "encode_txt",
    "is_did",
    "is_endpoint",
    "listed_peer",
    "manifest_key_list",
    "parse_did_document",
    "verify_registration",
]

SERVICE_TYPE = "_syncropel._tcp.local."
MDNS_MAX_PEERS = 256  # a LAN that announces more is flooding; the oldest announcements give way
MDNS_ENTRY_TTL = 3600.0  # seconds an announcement is kept without a fresh one (a goodbye drops it at once)
MAX_NAMESPACES = 16  # namespaces kept per found peer
MAX_TXT_VALUE = 255  # one TXT string holds at most 255 bytes (RFC 6763 §6.1)
DIRECTORY_MAX_ENTRIES = 10_000
DIRECTORY_TTL = 3600.0  # a registration not refreshed within this many seconds is dropped
MAX_DID_DOCUMENT_BYTES = 64 * 1024

# A DID as discovery accepts it: did:key / did:web / did:sync, printable ASCII without spaces, bounded.
_DID = re.compile(r"did:(key|web|sync):[A-Za-z0-9._:%-]{1,200}")
# An endpoint: an absolute http(s) URL without user info, query or fragment (as ``serve.public_url``).
_ENDPOINT = re.compile(r"(?=[!-~]{1,512}$)(?i:https?)://[^/?#@\s]+(/[^?#\s]*)?")
_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}(/[a-z0-9][a-z0-9_-]{0,62}){0,3}")
_NAME = re.compile(r"[!-~ ]{1,64}")
# A did:web domain: DNS labels, an optional port (``host:8443``); no path (``did:web:host:path`` is not served).
_DOMAIN = re.compile(
    r"(?=.{1,253}(:|$))[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*(:[0-9]{1,5})?"
)


def is_did(value: object) -> bool:
    return isinstance(value, str) and _DID.fullmatch(value) is not None


def is_endpoint(value: object) -> bool:
    return isinstance(value, str) and _ENDPOINT.fullmatch(value) is not None


def _namespaces(values: Iterable[object]) -> list[str]:
    """The valid namespace ids among ``values``, at most :data:`MAX_NAMESPACES`, in order, without repeats."""
    kept: list[str] = []
    for value in values:
        if isinstance(value, str) and _NAMESPACE.fullmatch(value) and value not in kept:
            kept.append(value)
            if len(kept) == MAX_NAMESPACES:
                break
    return kept


@dataclass(frozen=True)
class FoundPeer:
    """A peer one discovery method found: who it claims to be and where, before any verification.

    Attributes:
        method: ``mdns``, ``did-web``, ``did-sync`` or ``static``.
        endpoint: Its base URL (checked: an absolute http(s) URL).
        did: The DID it claims (None: static config without one; the verified manifest then says).
        namespaces: The namespaces it advertises.
        last_seen: When the method last saw it (POSIX seconds), or None (static config).
        name: A label (the mDNS instance name, the config's ``name``), for people.
        expect_dids: For did:web, the did:keys the DID document lists: the manifest must be signed by one.
    """

    method: str
    endpoint: str
    did: str | None = None
    namespaces: list[str] = field(default_factory=list)
    last_seen: float | None = None
    name: str | None = None
    expect_dids: tuple[str, ...] = ()

    def to_wire(self) -> dict[str, Any]:
        return {
            "did": self.did,
            "endpoint": self.endpoint,
            "namespaces": list(self.namespaces),
            "method": self.method,
            "name": self.name,
            "last_seen": rfc3339(self.last_seen) if self.last_seen is not None else None,
        }


# -- mDNS: the TXT records of _syncropel._tcp.local -------------------------------------------------------


def encode_txt(did: str, endpoint: str, namespaces: Iterable[str]) -> dict[str, str]:
    """The TXT properties this instance announces: ``v``, ``did``, ``ep`` and ``ns`` (comma-separated).

    Namespaces are added while the value fits one TXT string (255 bytes); the rest is left out, not cut.
    """
    ns = ""
    for namespace in _namespaces(namespaces):
        candidate = f"{ns},{namespace}" if ns else namespace
        if len(candidate) + 3 > MAX_TXT_VALUE:
            break
        ns = candidate
    return {"v": "1", "did": did, "ep": endpoint, "ns": ns}


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        if len(value) > MAX_TXT_VALUE:
            return None
        try:
            return value.decode("ascii")
        except UnicodeDecodeError:
            return None
    return value if isinstance(value, str) and len(value) <= MAX_TXT_VALUE else None


def decode_txt(properties: Mapping[Any, Any], *, name: str, now: float) -> FoundPeer:
    """A peer from the TXT properties of one mDNS announcement (keys and values as bytes or str).

    Raises:
        ValueError: A property is missing or not of its form (a DID, an http(s) URL); the message says which.
    """
    fields: dict[str, str | None] = {}
    for key, value in list(properties.items())[:32]:
        key_text = _text(key)
        if key_text in ("v", "did", "ep", "ns"):
            fields[key_text] = _text(value)
    did, endpoint = fields.get("did"), fields.get("ep")
    if not is_did(did):
        raise ValueError(f"announcement {printable(name, 80)} has no valid did (got {printable(did, 80)})")
    if not is_endpoint(endpoint):
        # The value is not quoted: a URL with user info would put a password in the log.
        raise ValueError(f"announcement {printable(name, 80)} has no valid ep (an http(s) URL without user info)")
    assert did is not None and endpoint is not None
    namespaces = _namespaces((fields.get("ns") or "").split(","))
    label = name if _NAME.fullmatch(name) else printable(name, 64)
    return FoundPeer("mdns", endpoint.rstrip("/"), did, namespaces, now, label)


class MdnsTable:
    """What the mDNS listener has seen: one entry per announced service name, capped and expiring.

    Not thread-safe by itself: the listener (zeroconf's thread) and the routes (trio) share it under the
    owner's lock. Announcements past :data:`MDNS_MAX_PEERS` push out the one seen longest ago; an entry not
    re-announced within ``ttl`` seconds is gone from :meth:`peers`.
    """

    def __init__(self, *, capacity: int = MDNS_MAX_PEERS, ttl: float = MDNS_ENTRY_TTL) -> None:
        self.capacity, self.ttl = capacity, ttl
        self._entries: OrderedDict[str, FoundPeer] = OrderedDict()  # oldest announcement first

    def seen(self, name: str, peer: FoundPeer) -> None:
        self._entries.pop(name, None)
        self._entries[name] = peer
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def gone(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return list(self._entries)

    def peers(self, now: float) -> list[FoundPeer]:
        """The live entries, most recently seen first (expired ones are dropped here)."""
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.last_seen is not None and oldest.last_seen + self.ttl > now:
                break
            self._entries.popitem(last=False)
        return list(reversed(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)


# -- did:web --------------------------------------------------------------------------------------------


def did_web(domain: str) -> str:
    """``did:web:alice.dev`` for ``alice.dev`` (a port is written ``%3A``, per the did:web method).

    Raises:
        InvalidRequest: Not a domain name (with an optional port); the message says what is.
    """
    if not isinstance(domain, str) or _DOMAIN.fullmatch(domain) is None:
        raise InvalidRequest(
            f"{printable(domain, 80)} is not a domain for did:web; pass a host name such as alice.dev "
            "(optionally with :port), without scheme or path",
            code="INVALID_DOMAIN",
        )
    return "did:web:" + domain.lower().replace(":", "%3A")


def did_web_url(domain: str) -> str:
    """Where ``did:web:<domain>`` resolves: ``https://<domain>/.well-known/did.json`` (always HTTPS)."""
    did_web(domain)  # validates
    return f"https://{domain.lower()}/.well-known/did.json"


def did_document(
    domain: str, keys: list[tuple[str, str, str | None]], endpoint: str, *, identifier: str | None = None
) -> dict[str, Any]:
    """The W3C DID document of ``did:web:<domain>``: this instance's keys and its syncropel endpoint.

    ``keys`` lists ``(did_key, valid_from, valid_until or None)``: the current key (``valid_until`` None)
    and, after a rotation, the keys before it, which stay listed so records they signed keep verifying. Only
    the current key authenticates; every listed key remains a verification method with its window.
    ``identifier`` is the instance's lifelong DID (its manifests' ``daemon.did``), listed in ``alsoKnownAs``.
    """
    did = did_web(domain)
    methods, current = [], []
    for did_key, valid_from, valid_until in keys:
        key_id = f"{did}#{did_key.removeprefix('did:key:')}"
        method: dict[str, Any] = {
            "id": key_id,
            "type": "Ed25519VerificationKey2020",
            "controller": did,
            "publicKeyMultibase": did_key.removeprefix("did:key:"),
            "validFrom": valid_from,
        }
        if valid_until is not None:
            method["validUntil"] = valid_until
        else:
            current.append(key_id)
        methods.append(method)
    return {
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/suites/ed25519-2020/v1"],
        "id": did,
        "alsoKnownAs": list(
            dict.fromkeys([*([identifier] if identifier else []), *(key for key, _, until in keys if until is None)])
        ),
        "verificationMethod": methods,
        "authentication": current,
        "assertionMethod": current,
        "service": [{"id": f"{did}#syncropel", "type": "syncropel", "serviceEndpoint": endpoint.rstrip("/")}],
    }


def parse_did_document(document: object, domain: str, *, now: float) -> FoundPeer:
    """The peer a resolved did:web document names: its ``syncropel`` service endpoint and its did:keys.

    Raises:
        ValueError: Not a DID document of ``did:web:<domain>``, or one without a syncropel endpoint or key.
    """
    did = did_web(domain)
    if not isinstance(document, dict) or document.get("id") != did:
        raise ValueError(f"the document at {did_web_url(domain)} is not the DID document of {did}")
    endpoint = None
    services = document.get("service")
    for service in services[:32] if isinstance(services, list) else []:
        if isinstance(service, dict) and service.get("type") == "syncropel":
            if is_endpoint(service.get("serviceEndpoint")):
                endpoint = service["serviceEndpoint"].rstrip("/")
                break
    if endpoint is None:
        raise ValueError(f"{did} lists no service of type syncropel with an http(s) serviceEndpoint")
    keys: list[str] = []
    methods = document.get("verificationMethod")
    for method in methods[:32] if isinstance(methods, list) else []:
        if not isinstance(method, dict) or method.get("type") != "Ed25519VerificationKey2020":
            continue
        multibase = method.get("publicKeyMultibase")
        if isinstance(multibase, str) and is_did(f"did:key:{multibase}") and method.get("validUntil") is None:
            keys.append(f"did:key:{multibase}")
    if not keys:
        raise ValueError(f"{did} lists no current Ed25519VerificationKey2020 key")
    # The manifest at the endpoint may name the instance's lifelong identifier rather than its current key.
    aliases = document.get("alsoKnownAs")
    keys += [alias for alias in (aliases[:8] if isinstance(aliases, list) else []) if is_did(alias)]
    return FoundPeer("did-web", endpoint, did, [], now, domain.lower(), tuple(dict.fromkeys(keys)))


def manifest_key_list(manifest: object, *, did: str, created_at: str) -> list[tuple[str, str, str | None]]:
    """The keys for :func:`did_document` from a federation manifest's ``keys`` windows (key rotation), or
    ``did`` alone (valid from ``created_at``) for a manifest without them."""
    windows = manifest.get("keys") if isinstance(manifest, dict) else None
    keys: list[tuple[str, str, str | None]] = []
    for window in windows[:64] if isinstance(windows, list) else []:
        key = window.get("id") if isinstance(window, dict) else None
        if isinstance(key, str) and key.startswith("did:key:") and is_did(key):
            since, until = window.get("valid_from"), window.get("valid_until")
            keys.append(
                (key, since if isinstance(since, str) else created_at, until if isinstance(until, str) else None)
            )
    return keys or [(did, created_at, None)]


# -- the did:sync directory -------------------------------------------------------------------------------


@dataclass(frozen=True)
class DirectoryEntry:
    """One registration: a DID, where it is reachable and what it advertises, from its signed manifest."""

    did: str
    endpoint: str
    namespaces: list[str]
    signed_at: str
    registered_at: float
    expires_at: float

    def to_wire(self) -> dict[str, Any]:
        return {
            "object": "directory_entry",
            "did": self.did,
            "endpoint": self.endpoint,
            "namespaces": list(self.namespaces),
            "signed_at": self.signed_at,
            "registered_at": rfc3339(self.registered_at),
            "expires_at": rfc3339(self.expires_at),
        }


Registration = tuple[str, str, list[Any], str]  # did, endpoint, advertised namespaces (unchecked), signed_at


def verify_registration(body: bytes, *, now: float) -> Registration:
    """What a did:sync registration says, once its signed manifest verifies (CPU: up to 65 signature checks for a
    rotated instance's chain; the daemon runs it off the event loop).

    Raises:
        InvalidRequest: Not a valid, unexpired signed manifest, or no usable endpoint.
    """
    try:
        did, manifest = signed_manifest_did(body, where="the registration", now=now)
    except ManifestInvalid as exc:
        raise InvalidRequest(
            f"{exc}; post the body of your daemon's /.well-known/syncropel as it is",
            code="MANIFEST_INVALID",
        ) from None
    federation = manifest.get("federation")
    endpoint = federation.get("endpoint") if isinstance(federation, dict) else None
    if not is_endpoint(endpoint) or not is_did(did):
        raise InvalidRequest(
            "the manifest names no http(s) federation.endpoint (or its DID is not did:key/did:web/did:sync); "
            "set serve.public_url on the registering daemon",
            code="MANIFEST_INVALID",
        )
    advertises = manifest.get("advertises")
    raw = advertises.get("namespaces") if isinstance(advertises, dict) else None
    signed_at = str(manifest["signature"].get("signed_at", ""))[:64]
    return did, str(endpoint), raw if isinstance(raw, list) else [], signed_at


class Directory:
    """A did:sync directory held in memory: registrations by DID, bounded, expiring unless refreshed.

    A registration is a peer's signed federation manifest (the body of its ``/.well-known/syncropel``): the
    signature is the authentication, so anyone may post one, but only the key holder can have made it. A
    manifest signed before the one registered is refused (a replayed old manifest cannot move a DID back to a
    former endpoint). Past ``capacity`` the registration refreshed longest ago gives way.
    """

    def __init__(self, *, capacity: int = DIRECTORY_MAX_ENTRIES, ttl: float = DIRECTORY_TTL) -> None:
        self.capacity, self.ttl = capacity, ttl
        self._entries: OrderedDict[str, DirectoryEntry] = OrderedDict()  # least recently refreshed first

    def register(self, body: bytes, *, now: float) -> DirectoryEntry:
        """Verify ``body`` (a manifest or the ``/.well-known/syncropel`` envelope) and record its DID's endpoint.

        Raises:
            InvalidRequest: Not a valid, unexpired signed manifest, no usable endpoint, or older than the one held.
        """
        return self.record(verify_registration(body, now=now), now=now)

    def record(self, registration: Registration, *, now: float) -> DirectoryEntry:
        """Record a registration :func:`verify_registration` accepted (cheap: the daemon verifies in a worker
        thread, then records here, where the directory's readers are).

        Raises:
            InvalidRequest: 409 ``STALE_REGISTRATION`` when the DID holds a registration signed later.
        """
        did, endpoint, raw, signed_at = registration
        self._drop_expired(now)
        held = self._entries.get(did)
        if held is not None and signed_at < held.signed_at:
            raise InvalidRequest(
                f"{did} is registered with a manifest signed at {held.signed_at}, after this one ({signed_at}); "
                "post the current manifest (restart the daemon to re-sign it)",
                code="STALE_REGISTRATION",
                status=409,
            )
        entry = DirectoryEntry(
            did=did,
            endpoint=str(endpoint).rstrip("/"),
            namespaces=_namespaces(raw[:64] if isinstance(raw, list) else []),
            signed_at=signed_at,
            registered_at=now,
            expires_at=now + self.ttl,
        )
        self._entries.pop(did, None)
        self._entries[did] = entry
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry

    def resolve(self, did: str, *, now: float) -> DirectoryEntry | None:
        self._drop_expired(now)
        return self._entries.get(did)

    def listing(self, namespace: str | None, *, now: float, limit: int = 1000) -> list[DirectoryEntry]:
        """Entries advertising ``namespace`` (all when None), most recently refreshed first, at most ``limit``."""
        self._drop_expired(now)
        found = []
        for entry in reversed(self._entries.values()):
            if namespace is None or namespace in entry.namespaces:
                found.append(entry)
                if len(found) == limit:
                    break
        return found

    def _drop_expired(self, now: float) -> None:
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.expires_at > now:
                return
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def listed_peer(entry: Mapping[str, Any], method: str) -> FoundPeer:
    """A :class:`FoundPeer` from one entry of a listing another process sent (``GET /v1/discovery/mdns``,
    a directory's ``GET /v1/directory``), checked again here: the sender may be anyone.

    Raises:
        ValueError: The entry has no valid DID or endpoint.
    """
    did, endpoint = entry.get("did"), entry.get("endpoint")
    if not is_did(did) or not is_endpoint(endpoint):
        raise ValueError(f"a {method} entry without a valid did and endpoint (did {printable(did, 80)})")
    raw = entry.get("namespaces")
    seen = entry.get("last_seen") or entry.get("registered_at")
    name = entry.get("name")
    return FoundPeer(
        method,
        str(endpoint).rstrip("/"),
        str(did),
        _namespaces(raw[:64] if isinstance(raw, list) else []),
        zoned_time(seen),
        name if isinstance(name, str) and _NAME.fullmatch(name) else None,
    )
