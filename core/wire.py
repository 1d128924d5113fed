"""Typed HTTP request payloads, decoded once at the door.

Each write route's body is a ``msgspec.Struct`` decoded straight from the request bytes by
a typed decoder (no intermediate ``dict`` on the common path). Decoding is strict: a field
of the wrong type is a refusal, never a silent conversion.

Errors must stay as helpful as the field rules they replace, so a refusal never surfaces
msgspec's own wording. When the typed decoder refuses a body, the body is parsed again with
the standard library (:func:`parse_json`, which words malformed JSON for a client) and the
refusal is explained per field: a record envelope by the same rules every record passes
(:func:`spl.core.record.validate_envelope`, which also accepts the integral floats a JSON
client may send as a clock), the small admin payloads from the field msgspec names.

Hashing is untouched: a record's id is still computed over the standard library's
canonical JSON of the decoded values (``spl.core.canonical``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgspec

from spl.core import tokens
from spl.core.canonical import MAX_DEPTH
from spl.core.errors import InvalidRecord, InvalidRequest, SplError
from spl.core.namespaces import validate_namespace_id
from spl.core.record import Envelope, envelope_of, validate_envelope

__all__ = [
    "MAX_PUSH_RECORDS",
    "NamespaceCreate",
    "RecordPush",
    "RecordSubmission",
    "TokenMint",
    "decode_namespace_create",
    "decode_push",
    "decode_record",
    "decode_token_mint",
    "parse_json",
]

T = TypeVar("T")

MAX_PUSH_RECORDS = 10_000


class RecordSubmission(msgspec.Struct):
    """A record envelope as a client sends it (``POST /v1/records``), before defaults and its id.

    Keys other than these (``id``, ``signer``, …) are ignored: the id is computed here and the
    instance signs.
    """

    act: str
    actor: str
    thread: str
    clock: int
    body: dict[str, Any] | None = None
    data_type: str | None = None
    parents: list[str] | None = None
    judged_by: str | None = None

    def envelope(self) -> Envelope:
        return envelope_of(
            act=self.act,
            actor=self.actor,
            thread=self.thread,
            body=self.body,
            clock=self.clock,
            data_type=self.data_type,
            parents=self.parents,
            judged_by=self.judged_by,
        )


class NamespaceCreate(msgspec.Struct):
    """``POST /v1/namespaces``: ``{"id": "acme/ops", "description": "…"}`` (``namespace`` is the older key)."""

    id: str | msgspec.UnsetType = msgspec.UNSET
    namespace: str | msgspec.UnsetType = msgspec.UNSET
    description: str = ""

    @property
    def namespace_id(self) -> str:
        chosen = self.id if self.id is not msgspec.UNSET else self.namespace
        if isinstance(chosen, msgspec.UnsetType):
            raise InvalidRequest(_NAMESPACE_REQUIRED, code="INVALID_NAMESPACE")
        return chosen


class TokenMint(msgspec.Struct):
    """``POST /v1/tokens``: ``{"scopes": ["records:read"], "label": "ci", "env": "local"}``."""

    scopes: Annotated[list[str], msgspec.Meta(min_length=1)]
    label: str = ""
    env: str = "local"
    target_namespace: str | None = None  # bind the token to the consent filter (docs/federation-pairs.md)


class RecordPush(msgspec.Struct):
    """``POST /v1/sync/records``: signed records as the peer stored them, verified one by one later."""

    records: Annotated[list[Any], msgspec.Meta(max_length=MAX_PUSH_RECORDS)]


# -- JSON as the standard library reads it (the fallback that words errors) --------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# A record's body may nest MAX_DEPTH levels and sits one level inside the envelope: anything deeper is
# refused before a recursive parser sees it, so the answer never depends on how deep the caller's stack is.
MAX_JSON_DEPTH = MAX_DEPTH + 1
_OPENERS, _CLOSERS, _QUOTE, _BACKSLASH = frozenset(b"[{"), frozenset(b"]}"), ord('"'), ord("\\")


def nesting_depth(raw: bytes) -> int:
    """How deeply arrays/objects nest in ``raw`` (strings skipped), in one loop: no recursion, any size."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
            deepest = max(deepest, depth)
        elif byte in _CLOSERS:
            depth -= 1
    return deepest


def body_too_deep() -> InvalidRecord:
    return InvalidRecord(
        "body",
        f"nests arrays/objects more than {MAX_DEPTH} levels deep (the body itself is level 1); "
        "flatten it, or carry deep structures as a JSON string",
        code="BODY_TOO_DEEP",
    )


def parse_json(raw: bytes) -> Any:
    """``raw`` parsed as strict JSON (no NaN/Infinity), or a 400 ``INVALID_JSON`` naming the fix.

    Nesting deeper than :data:`MAX_JSON_DEPTH` is refused before parsing (the standard library's
    parser recurses, and how much stack is left depends on the caller), as ``BODY_TOO_DEEP``: the
    only place such depth is legitimate at all is a record body, which is held to ``MAX_DEPTH``.
    """
    if not raw.strip():
        raise InvalidRequest("request body is empty; send a JSON object", code="INVALID_JSON")
    if nesting_depth(raw) > MAX_JSON_DEPTH:
        raise body_too_deep()
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not UTF-8; send UTF-8 encoded JSON", code="INVALID_JSON") from None
    except ValueError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON ({exc}); send a JSON object", code="INVALID_JSON"
        ) from None


# -- typed decoding ------------------------------------------------------------------------------

# What msgspec refuses with: malformed or mistyped input, invalid UTF-8 (a ValueError), or nesting
# deeper than its own limit.
_REFUSED = (msgspec.DecodeError, ValueError, RecursionError)
_FIELD = re.compile(r"at `\$\.([A-Za-z_]+)|missing required field `([A-Za-z_]+)`")

_RECORD_DECODER = msgspec.json.Decoder(RecordSubmission)
_NAMESPACE_DECODER = msgspec.json.Decoder(NamespaceCreate)
_TOKEN_DECODER = msgspec.json.Decoder(TokenMint)
_PUSH_DECODER = msgspec.json.Decoder(RecordPush)


def _field_of(error: msgspec.ValidationError) -> str | None:
    """The top-level field a validation error is about; None when it is about the whole body."""
    match = _FIELD.search(str(error))
    return (match.group(1) or match.group(2)) if match else None


def _decode(
    raw: bytes, decoder: msgspec.json.Decoder[T], kind: type[T], explain: Callable[[str | None], SplError]
) -> T:
    """``raw`` decoded to ``kind``; any refusal explained by ``explain(field)`` (None: the body as a whole)."""
    try:
        return decoder.decode(raw)
    except _REFUSED:
        pass
    # Slow path, refusals only: word malformed JSON as the standard library sees it, and let a body
    # msgspec cannot read but Python can (a lone surrogate escape, left for the field rules) through.
    payload = parse_json(raw)
    try:
        return msgspec.convert(payload, kind)
    except msgspec.ValidationError as exc:
        raise explain(_field_of(exc)) from None


def decode_record(raw: bytes) -> Envelope:
    """A client's record envelope, validated, defaults filled, id computed.

    Raises:
        InvalidRequest: 400 ``INVALID_JSON`` for a body that is not JSON.
        InvalidRecord: 400 naming the first field that is wrong and how to fix it.
    """
    try:
        submission = _RECORD_DECODER.decode(raw)
    except _REFUSED:
        # The field rules word every refusal, and accept what strict typing alone would not
        # (a clock sent as 5.0 is the integer 5).
        return validate_envelope(parse_json(raw))
    return submission.envelope()


_NAMESPACE_REQUIRED = 'the namespace id is required: {"id": "acme/ops"}'


def _namespace_problem(field: str | None) -> SplError:
    if field in ("id", "namespace"):
        return InvalidRequest(_NAMESPACE_REQUIRED, code="INVALID_NAMESPACE")
    if field == "description":
        return InvalidRequest("description must be a string")
    return InvalidRequest('send a JSON object such as {"id": "acme/ops", "description": "…"}')


def decode_namespace_create(raw: bytes) -> tuple[str, str]:
    """``(namespace id, description)`` of a namespace create, the id checked against the naming rule.

    Raises:
        InvalidRequest: 400 naming the field at fault (``INVALID_NAMESPACE`` for the id).
    """
    request = _decode(raw, _NAMESPACE_DECODER, NamespaceCreate, _namespace_problem)
    return validate_namespace_id(request.namespace_id), request.description


def _scopes_problem() -> InvalidRequest:
    return InvalidRequest(
        f"scopes must be a non-empty list drawn from: {', '.join(tokens.SCOPES)}", code="INVALID_SCOPES"
    )


def _token_problem(field: str | None) -> SplError:
    if field == "scopes":
        return _scopes_problem()
    if field == "label":
        tokens.validate_label(None)  # raises the label rule
    if field == "env":
        tokens.validate_env(None)  # raises the env rule
    return InvalidRequest('send a JSON object such as {"scopes": ["records:read"], "label": "ci"}')


def decode_token_mint(raw: bytes) -> TokenMint:
    """A token mint request with known scopes, a printable label and a well-formed env (lowercased).

    Raises:
        InvalidRequest: 400 ``INVALID_SCOPES``, ``INVALID_LABEL`` or ``INVALID_ENV`` naming the rule.
    """
    request = _decode(raw, _TOKEN_DECODER, TokenMint, _token_problem)
    unknown = tokens.unknown_scopes(request.scopes)
    if unknown:
        raise InvalidRequest(
            f"unknown scope(s) {', '.join(unknown)}; choose from: {', '.join(tokens.SCOPES)}", code="INVALID_SCOPES"
        )
    target = request.target_namespace
    if target is not None and not set(request.scopes) <= {"federation:sync", "federation:subscribe"}:
        # Only the change feed honours the binding: a bound token that could also read records directly
        # (records:read, admin…) would read around the consent filter.
        raise InvalidRequest(
            "target_namespace binds a token to the consent filter of the change feed, so it goes only with the "
            "scopes federation:sync and federation:subscribe; mint it with --scopes federation:sync",
            code="INVALID_SCOPES",
        )
    return TokenMint(
        request.scopes,
        tokens.validate_label(request.label),
        tokens.validate_env(request.env),
        validate_namespace_id(target) if target is not None else None,
    )


def _push_problem(field: str | None) -> SplError:
    return InvalidRequest(
        f'send {{"records": [signed record, …]}} (at most {MAX_PUSH_RECORDS})', code="INVALID_REQUEST"
    )


def decode_push(raw: bytes) -> list[Any]:
    """The records of a push, at most :data:`MAX_PUSH_RECORDS`; each is verified later, on its own."""
    return _decode(raw, _PUSH_DECODER, RecordPush, _push_problem).records
