"""The actor registry (``th_actor_registry``): who the actors of this instance are. Pure: no I/O.

Seed 003: "Registered actors: DID, display name, category, status". A registration is a ``LEARN`` on
``th_actor_registry`` with body ``{"kind": "core.actor.registration.v1", "_v": 1, "did", "display_name", "category",
"status"}``, written only by the daemon's own route (``POST /v1/actors``, scope ``config:write``), signed with the
instance key. The registry is the fold of those records: the latest registration of a DID (highest sequence)
wins, so a later one updates the name, category or status; nothing is ever deleted (``retired`` says it).

Like every configuration fold (spec §15.18), only records this instance signed count, and a stored body is held to
the same rules as a request: whatever got onto the thread some other way (an import of another instance's log, a
record that slipped past a route) changes nothing. The genesis record that opens the thread is an ``INTEND`` and
is skipped like any other record that is not a registration.

Folding is incremental: :meth:`ActorRegistry.apply` costs one dict look-up per record, and gives the same
registry whatever order the records arrive in (the highest sequence wins), so the daemon can apply a
registration as soon as it commits, even while a reload from the store runs beside it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from spl.core.errors import InvalidRequest
from spl.core.identity import public_key_from_did
from spl.core.record import MAX_ACTOR_LENGTH
from spl.core.rotation import owns
from spl.core.text import printable

__all__ = [
    "ACTOR_REGISTRY_THREAD",
    "CATEGORIES",
    "MAX_DISPLAY_NAME",
    "REGISTRATION_KIND",
    "STATUSES",
    "ActorRegistry",
    "Registration",
    "check_did",
    "registration_body",
    "registration_request",
]

ACTOR_REGISTRY_THREAD = "th_actor_registry"
REGISTRATION_KIND = "core.actor.registration.v1"
CATEGORIES = ("human", "agent", "service", "instance", "adapter")
STATUSES = ("active", "suspended", "retired")
MAX_DISPLAY_NAME = 128
# W3C DID syntax (did:<method>:<method-specific id>), bounded like any record actor: a registered DID must be
# one that can appear as a record's actor, so that its participation can be shown beside its registration.
_DID = re.compile(r"\Adid:[a-z0-9]+:[A-Za-z0-9._:%-]+\Z")
_FIELDS = frozenset({"did", "display_name", "category", "status"})


def _invalid(field_name: str, message: str, code: str) -> InvalidRequest:
    return InvalidRequest(f"{field_name}: {message}", code=code)


def check_did(value: object, field_name: str = "did") -> str:
    """``value`` if it is a DID an actor can have, else 400 ``INVALID_DID`` naming the form.

    ``did:<method>:<id>`` (at most 512 characters, like a record's actor); a ``did:key`` must also hold an
    Ed25519 key (``spl.core.identity.public_key_from_did``), since that is what every did:key here is.
    """
    if isinstance(value, str) and len(value) <= MAX_ACTOR_LENGTH and _DID.fullmatch(value):
        if not value.startswith("did:key:"):
            return value
        try:
            public_key_from_did(value)
        except ValueError:
            pass
        else:
            return value
    shown = repr(printable(value, 64)) if isinstance(value, str) else f"a {type(value).__name__}"
    raise _invalid(
        field_name,
        f"must be a DID: did:<method>:<id> of letters, digits and . _ : % - (at most {MAX_ACTOR_LENGTH} "
        f"characters; a did:key must hold an Ed25519 key, e.g. did:key:z6Mk…), got {shown}",
        "INVALID_DID",
    )


def _display_name(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_DISPLAY_NAME or not value.isprintable():
        raise _invalid(
            "display_name",
            f"must be 1 to {MAX_DISPLAY_NAME} printable characters (no control characters or line breaks)",
            "INVALID_DISPLAY_NAME",
        )
    return value


def _category(value: object) -> str:
    if value not in CATEGORIES:
        raise _invalid("category", f"must be one of {', '.join(CATEGORIES)}", "INVALID_CATEGORY")
    return str(value)


def _status(value: object) -> str:
    if value not in STATUSES:
        raise _invalid("status", f"must be one of {', '.join(STATUSES)} (default active)", "INVALID_STATUS")
    return str(value)


def registration_request(payload: object) -> tuple[str, str, str, str]:
    """``(did, display_name, category, status)`` of a ``POST /v1/actors`` body, or 400 naming the field.

    Only the four fields are accepted (an unknown key is more likely a typo than something to ignore);
    ``status`` defaults to ``active``.
    """
    if not isinstance(payload, Mapping):
        raise InvalidRequest(
            "the body must be a JSON object: {did, display_name, category, status}", code="INVALID_REQUEST"
        )
    unknown = sorted(str(key) for key in payload if key not in _FIELDS)
    if unknown:
        raise InvalidRequest(
            f"unknown field {printable(unknown[0], 64)!r}: an actor registration has did, display_name, category "
            "and status",
            code="INVALID_REQUEST",
        )
    return (
        check_did(payload.get("did")),
        _display_name(payload.get("display_name")),
        _category(payload.get("category")),
        _status(payload.get("status", "active")),
    )


def registration_body(did: str, display_name: str, category: str, status: str = "active") -> dict[str, Any]:
    """The ``LEARN`` body that registers (or updates) ``did``; every field is checked as a request's is."""
    return {
        "kind": REGISTRATION_KIND,
        "_v": 1,
        "did": check_did(did),
        "display_name": _display_name(display_name),
        "category": _category(category),
        "status": _status(status),
    }


@dataclass(frozen=True)
class Registration:
    """A DID's registration as of its latest record (``seq``, ``record_id``)."""

    did: str
    display_name: str
    category: str
    status: str
    seq: int
    record_id: str

    def to_wire(self) -> dict[str, Any]:
        return {
            "did": self.did,
            "display_name": self.display_name,
            "category": self.category,
            "status": self.status,
            "record_id": self.record_id,
            "sequence": self.seq,
        }


def _registration(record: Mapping[str, Any]) -> Registration | None:
    """The registration a stored record states, or None when it is not a well-formed one."""
    if record.get("thread") != ACTOR_REGISTRY_THREAD or record.get("act") != "LEARN":
        return None
    body, seq, record_id = record.get("body"), record.get("sequence"), record.get("id")
    if not isinstance(body, Mapping) or body.get("kind") != REGISTRATION_KIND or body.get("_v") != 1:
        return None
    if isinstance(seq, bool) or not isinstance(seq, int) or not isinstance(record_id, str):
        return None
    try:
        did, name, category, status = registration_request({key: body.get(key) for key in _FIELDS})
    except InvalidRequest:
        return None
    return Registration(did, name, category, status, seq, record_id)


@dataclass
class ActorRegistry:
    """The registered actors of the instance ``own_did``: DID → its latest :class:`Registration`."""

    own_did: str
    entries: dict[str, Registration] = field(default_factory=dict)
    # Every key of the instance's rotation chain (spl.core.rotation): registrations any of them signed count.
    own_keys: frozenset[str] = frozenset()

    @classmethod
    def folded(
        cls, records: Iterable[Mapping[str, Any]], own_did: str, own_keys: Collection[str] = ()
    ) -> ActorRegistry:
        """The registry stored records (decoded, with their ``sequence``) make, in any order."""
        registry = cls(own_did, own_keys=frozenset(own_keys))
        for record in records:
            registry.apply(record)
        return registry

    def apply(self, record: Mapping[str, Any]) -> bool:
        """Fold one stored record; True when it changed a registration.

        Anything but a well-formed registration signed by ``own_did`` changes nothing, and so does a record
        older (lower sequence) than the one a DID's registration already comes from.
        """
        if not owns(self.own_keys or self.own_did, record.get("signer")):
            return False
        registration = _registration(record)
        return registration is not None and self.keep(registration)

    def keep(self, registration: Registration) -> bool:
        """Take ``registration`` (from another fold of the same records) unless a later one is held already."""
        current = self.entries.get(registration.did)
        if current is not None and current.seq >= registration.seq:
            return False
        self.entries[registration.did] = registration
        return True

    def get(self, did: str) -> Registration | None:
        return self.entries.get(did)

    def listing(self) -> list[Registration]:
        """Every registration, by DID."""
        return sorted(self.entries.values(), key=lambda entry: entry.did)
