"""Records: validation of the wire envelope, defaults, and the content-addressed id.

Spec §2 with the decisions of §15.2–§15.5 and §15.10: the seven hashed fields are
``act, actor, body, clock, data_type, parents, thread``; missing ``body``/``parents``/
``data_type`` get their defaults *before* hashing; parents are sorted and de-duplicated;
``judged_by`` and every other key stay out of the hash.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import msgspec

from spl.core.canonical import MAX_DEPTH, CanonicalError, NestingTooDeep, canonical_json
from spl.core.errors import InvalidRecord

__all__ = [
    "ACTS",
    "DATA_TYPES",
    "MAX_CLOCK",
    "Envelope",
    "envelope_of",
    "hashed_fields",
    "record_id",
    "validate_envelope",
    "validate_thread",
]

ACTS = ("GET", "PUT", "CALL", "MAP", "INTEND", "DO", "KNOW", "LEARN")
DATA_TYPES = ("SCALAR", "FORMULA", "DISTRIBUTION", "REFERENCE", "MORPHISM", "VOID")
MAX_CLOCK = 2**63 - 1
# Anchored with \A…\Z (not ^…$, whose $ also matches before a final "\n") so that even a caller
# using .match cannot accept "th_x\n"; this module itself always uses .fullmatch.
RECORD_ID = re.compile(r"\A[0-9a-f]{64}\Z")
THREAD = re.compile(r"\A[A-Za-z0-9_.:@-]{1,256}\Z")
MAX_ACTOR_LENGTH = 512


class Envelope(msgspec.Struct, frozen=True):
    """A validated record envelope with defaults filled and its id computed."""

    id: str
    act: str
    actor: str
    body: dict[str, Any]
    clock: int
    data_type: str
    parents: list[str]
    thread: str
    judged_by: str | None = None

    def fields(self) -> dict[str, Any]:
        """``id`` and the seven hashed fields, as they travel on the wire."""
        return {
            "id": self.id,
            "act": self.act,
            "actor": self.actor,
            "body": self.body,
            "clock": self.clock,
            "data_type": self.data_type,
            "parents": self.parents,
            "thread": self.thread,
        }

    @property
    def namespace(self) -> str:
        """The record's namespace: ``body.namespace`` or the implicit ``default``."""
        value = self.body.get("namespace")
        return value if isinstance(value, str) and value else "default"


def hashed_fields(
    *,
    act: str,
    actor: str,
    body: dict[str, Any],
    clock: int,
    data_type: str,
    parents: list[str],
    thread: str,
) -> dict[str, Any]:
    """The seven fields that make up a record's identity (spec §2.4)."""
    return {
        "act": act,
        "actor": actor,
        "body": body,
        "clock": clock,
        "data_type": data_type,
        "parents": parents,
        "thread": thread,
    }


def record_id(fields: dict[str, Any]) -> str:
    """Lowercase hex SHA-256 of the canonical JSON of the hashed fields."""
    return hashlib.sha256(canonical_json(fields)).hexdigest()


def validate_thread(thread: object, field: str = "thread") -> str:
    """Return ``thread`` if it is a legal thread string (spec §15.10), else raise."""
    if not isinstance(thread, str) or not THREAD.fullmatch(thread):
        raise InvalidRecord(
            field,
            "must be 1-256 characters from A-Z a-z 0-9 _ . : @ - (for example th_ followed by 64 hex)",
            code="INVALID_THREAD",
        )
    return thread


def _non_empty_string(value: object, field: str, limit: int) -> str:
    if type(value) is str and 0 < len(value) <= limit:  # the common case, decided in one test
        return value
    if not isinstance(value, str) or not value:
        raise InvalidRecord(field, "is required and must be a non-empty string")
    if len(value) > limit:
        raise InvalidRecord(field, f"must be at most {limit} characters")
    return value


_ABSENT: Any = object()  # a field the sender left out (as opposed to one sent as null)


def _clock(value: object) -> int:
    if value is _ABSENT:
        raise InvalidRecord("clock", "is required: an integer 0 <= clock < 2^63")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord("clock", "must be an integer 0 <= clock < 2^63")
    if value < 0 or value > MAX_CLOCK:
        raise InvalidRecord("clock", "must be an integer 0 <= clock < 2^63")
    return value


def _parents(value: object) -> list[str]:
    if value is None or value == []:  # most records have none
        return []
    if not isinstance(value, list):
        raise InvalidRecord("parents", "must be an array of record ids (64 lowercase hex)")
    for parent in value:
        if not isinstance(parent, str) or not RECORD_ID.fullmatch(parent):
            raise InvalidRecord("parents", "every parent must be a record id (64 lowercase hex)")
    return sorted(set(value))


def validate_envelope(payload: object) -> Envelope:
    """Validate a decoded JSON envelope, fill defaults, sort parents and compute the id.

    Raises:
        InvalidRecord: naming the first field that is wrong and how to fix it.
    """
    if not isinstance(payload, dict):
        raise InvalidRecord("record", "the request body must be a JSON object")
    return envelope_of(
        act=payload.get("act"),
        actor=payload.get("actor"),
        thread=payload.get("thread"),
        body=payload.get("body", {}),
        clock=payload.get("clock", _ABSENT),
        data_type=payload.get("data_type", "SCALAR"),
        parents=payload.get("parents", []),
        judged_by=payload.get("judged_by"),
    )


def envelope_of(
    *,
    act: object,
    actor: object,
    thread: object,
    body: object,
    clock: object,
    data_type: object,
    parents: object,
    judged_by: object,
) -> Envelope:
    """The envelope of these field values as received (``None`` where a field was null), validated.

    One set of rules, checked in one order, whether the fields come from a dict
    (:func:`validate_envelope`: peers, parked records) or from a typed wire decoder (a
    client's emit, ``spl.core.wire``), so both report the same first problem the same way.

    Raises:
        InvalidRecord: naming the first field that is wrong and how to fix it.
    """
    act = _non_empty_string(act, "act", 32)
    if act not in ACTS:
        raise InvalidRecord("act", f"must be one of {', '.join(ACTS)}")
    actor = _non_empty_string(actor, "actor", MAX_ACTOR_LENGTH)
    thread = validate_thread(thread)
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidRecord("body", "must be a JSON object")
    namespace = body.get("namespace")
    if namespace is not None and not isinstance(namespace, str):
        raise InvalidRecord("body.namespace", "must be a string namespace id such as acme/ops")
    clock = _clock(clock)
    if data_type is None:
        data_type = "SCALAR"
    if data_type not in DATA_TYPES:
        raise InvalidRecord("data_type", f"must be one of {', '.join(DATA_TYPES)}")
    assert isinstance(data_type, str)
    parents = _parents(parents)
    if judged_by is not None and (not isinstance(judged_by, str) or not RECORD_ID.fullmatch(judged_by)):
        raise InvalidRecord("judged_by", "must be null or a record id (64 lowercase hex)")
    fields = hashed_fields(
        act=act, actor=actor, body=body, clock=clock, data_type=data_type, parents=parents, thread=thread
    )
    try:
        rid = record_id(fields)
    except NestingTooDeep:
        raise InvalidRecord(
            "body",
            f"nests arrays/objects more than {MAX_DEPTH} levels deep (the body itself is level 1); "
            "flatten it, or carry deep structures as a JSON string",
            code="BODY_TOO_DEEP",
        ) from None
    except CanonicalError as exc:
        raise InvalidRecord("body", f"has no canonical JSON form: {exc}") from None
    except UnicodeEncodeError:  # a lone surrogate such as "\ud800": valid JSON syntax, but no UTF-8 exists
        raise InvalidRecord(
            "record", "contains a lone UTF-16 surrogate escape (\\ud800-\\udfff); send valid Unicode text"
        ) from None
    return Envelope(
        id=rid,
        act=act,
        actor=actor,
        body=body,
        clock=clock,
        data_type=data_type,
        parents=parents,
        thread=thread,
        judged_by=judged_by,
    )
