"""A peer's change feed as values, and the one exception tree for everything that can go wrong reading it.

Pure (no I/O): the peer client in ``transport/peer.py`` does the HTTP and hands the bytes here;
the pair actors catch :class:`PeerError` without importing any HTTP library.

Every failure talking to a peer is one :class:`PeerError` subclass, whose ``code`` is the pair error
code operators see (spec §8.4, ``/v1/sync/pairs/{id}.last_error.code``):

====================  ======================  =================================================
class                 code                    meaning
====================  ======================  =================================================
PeerUnreachable       CONNECT_REFUSED         nothing answers at ``peer_url`` (or it hung up)
PeerDnsFailure        DNS_FAILURE             the host name does not resolve
PeerTimeout           TIMEOUT                 no (complete) answer within our deadline
PeerRefused           HTTP_4XX                the peer refused the request (token, cursor …)
PeerFailed            HTTP_5XX                the peer failed serving it
PeerShuttingDown      PEER_SHUTTING_DOWN      the peer is stopping gracefully (SSE
                                              ``server_shutdown`` or 503 ``SHUTTING_DOWN``)
PeerProtocolError     PARSE_ERROR             the answer is not what the protocol allows
ManifestInvalid       MANIFEST_INVALID        unsigned, tampered with or expired manifest
PeerDidMismatch       PEER_DID_MISMATCH       the manifest names another DID than the pair's
StreamLagged          LAGGED                  we fell behind the peer's stream buffer (not a
                                              failure: catch up by pages and reopen)
====================  ======================  =================================================

Cursors are opaque (spec §15.6, §15.20): a peer's ``next_cursor`` or SSE ``id:`` is kept as the
exact string it sent, provided it is 1-256 printable ASCII characters.
"""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, TypeGuard, TypeVar

import msgspec

from spl.core.text import printable

__all__ = [
    "MAX_CURSOR_BYTES",
    "MAX_EVENT_CONTAINERS",
    "MAX_PAGE_CONTAINERS",
    "MAX_PENDING",
    "PEER_ERROR_CODES",
    "ChangesPage",
    "ManifestInvalid",
    "PeerDidMismatch",
    "PeerDnsFailure",
    "PeerError",
    "PeerFailed",
    "PeerHttpError",
    "PeerProtocolError",
    "PeerRefused",
    "PeerShuttingDown",
    "PeerTimeout",
    "PeerUnreachable",
    "StreamLagged",
    "is_peer_cursor",
    "parse_changes_page",
    "parse_record_event",
]

MAX_CURSOR_BYTES = 256
MAX_PENDING = 2**63 - 1
MAX_PAGE_CONTAINERS = 1_000_000  # objects + arrays in one page (~100 MB parsed at worst)
MAX_EVENT_CONTAINERS = 250_000  # objects + arrays in one SSE record event

_CURSOR = re.compile(rf"[\x21-\x7e]{{1,{MAX_CURSOR_BYTES}}}")


# -- the exception tree ------------------------------------------------------------------------------


class PeerError(Exception):
    """A failure talking to a peer: ``code`` is machine-readable, ``message`` says what to do.

    Catch this root to handle every peer failure; the subclasses tell the kinds apart.
    """

    code: ClassVar[str] = "PEER_ERROR"

    def __init__(self, message: str) -> None:
        super().__init__(f"{self.code}: {message}")
        self.message = message

    def redacted(self, secret: str | None) -> PeerError:
        """This error with ``secret`` (the pair's token) cut out of its message — a last guard."""
        if not secret or secret not in self.message:
            return self
        clone = copy.copy(self)
        clone.message = self.message.replace(secret, "<token>")
        clone.args = (f"{self.code}: {clone.message}",)
        return clone


class PeerUnreachable(PeerError):
    code = "CONNECT_REFUSED"


class PeerDnsFailure(PeerError):
    code = "DNS_FAILURE"


class PeerTlsFailure(PeerError):
    """The peer's HTTPS certificate does not verify against the system's CAs and ``federation.ca_file``."""

    code = "TLS_UNVERIFIED"


class PeerTimeout(PeerError):
    code = "TIMEOUT"


class PeerHttpError(PeerError):
    """The peer answered with an HTTP error status; ``status`` is that status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class PeerRefused(PeerHttpError):
    code = "HTTP_4XX"


class PeerFailed(PeerHttpError):
    code = "HTTP_5XX"


class PeerShuttingDown(PeerError):
    """The peer said it is stopping: expected during its restarts, so operators can tell it from an outage."""

    code = "PEER_SHUTTING_DOWN"


class PeerProtocolError(PeerError):
    code = "PARSE_ERROR"


class ManifestInvalid(PeerError):
    code = "MANIFEST_INVALID"


class PeerDidMismatch(PeerError):
    code = "PEER_DID_MISMATCH"


class StreamLagged(PeerError):
    """The peer ended our continuous feed because we fell behind its buffer: not a failure.

    The pair catches up by pages and reopens the stream at once, without backoff.
    """

    code = "LAGGED"

    def __init__(self, message: str = "fell behind the peer's stream buffer; catching up by pages") -> None:
        super().__init__(message)


PEER_ERROR_CODES = tuple(
    kind.code
    for kind in (
        PeerUnreachable,
        PeerDnsFailure,
        PeerTimeout,
        PeerRefused,
        PeerFailed,
        PeerShuttingDown,
        PeerProtocolError,
        ManifestInvalid,
        PeerDidMismatch,
    )
)


# -- checking what a peer sent ---------------------------------------------------------------------


@dataclass(frozen=True)
class ChangesPage:
    """One checked page of a peer's change feed.

    ``next_cursor`` is the peer's opaque cursor after these records, exactly as it sent it
    (or the cursor we sent, when the peer gave none).
    """

    records: list[dict[str, Any]]
    next_cursor: str
    has_more: bool
    pending: int


def is_peer_cursor(value: object) -> TypeGuard[str]:
    """True for a cursor we accept from a peer: a str of 1-256 printable ASCII characters (0x21-0x7E).

    The bound keeps what we store and send back small; printable ASCII keeps it safe in a
    query string, a log line and the store, without our having to understand it.
    """
    return isinstance(value, str) and _CURSOR.fullmatch(value) is not None


def brief(value: object, limit: int = 60) -> str:
    """A peer's value for a message: escaped, and only the type of a list or object (whose repr could be huge)."""
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return printable(value, limit)


def _cursor_problem(value: object) -> str:
    return f"peer sent the cursor {brief(value)}, which is not 1-{MAX_CURSOR_BYTES} printable ASCII characters"


def check_containers(body: bytes | str, budget: int) -> None:
    """Refuse JSON that would parse into more than ``budget`` objects and arrays.

    Bytes are not the whole cost: 64 MiB of ``{},{},…`` parse into 21 million dicts (about
    1.7 GB). Counting ``{`` and ``[`` (including any inside strings, so the count can only
    be high) bounds what parsing a page may allocate, at C speed, before parsing it. A body
    shorter than ``budget`` cannot hold more (each one takes a character), so it is not
    counted: a typical page is well under the budget, and counting it cost a third of parsing it.
    """
    if len(body) <= budget:
        return
    if isinstance(body, bytes):
        count = body.count(b"{") + body.count(b"[")
    else:
        count = body.count("{") + body.count("[")
    if count > budget:
        raise PeerProtocolError(f"peer sent JSON with {count} objects/arrays; the limit is {budget}")


class _WireEntry(msgspec.Struct):
    """One entry of a change page as the peer sends it: ``{"record": {...}, ...}`` (other keys ignored)."""

    record: dict[str, Any]


class _WirePage(msgspec.Struct):
    """A change-feed page on the wire (spec §8.4). Types are strict: ``true`` is not a count, ``1`` not a bool."""

    records: list[_WireEntry]
    next_cursor: str | None = None
    has_more: bool = False
    pending: Annotated[int, msgspec.Meta(ge=0, le=MAX_PENDING)] = 0


class _WireEvent(msgspec.Struct):
    """The data of a ``record.created`` SSE event."""

    record: dict[str, Any]


_W = TypeVar("_W", bound=msgspec.Struct)
_PAGE_DECODER = msgspec.json.Decoder(_WirePage)
_EVENT_DECODER = msgspec.json.Decoder(_WireEvent)


def _wire_problem(what: str, error: msgspec.ValidationError) -> PeerProtocolError:
    """A peer's answer of the wrong shape, worded with where it went wrong (msgspec names the JSON path)."""
    return PeerProtocolError(f"peer {what} is not a Syncropel {what}: {printable(str(error))[:200]}")


def _decode_wire(raw: bytes, decoder: msgspec.json.Decoder[_W], kind: type[_W], what: str) -> _W:
    """``raw`` as ``kind``: msgspec's typed decoder, and the standard library only for what msgspec will not read.

    msgspec refuses a lone surrogate escape (``"\\ud800"``) as malformed JSON; the standard library reads it,
    and the record holding it is then refused on its own by verification. Falling back keeps one such record
    from failing every page it is on (the pair would never get past it).
    """
    try:
        return decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _wire_problem(what, exc) from None
    except (msgspec.DecodeError, ValueError, RecursionError):
        pass
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise PeerProtocolError(f"peer {what} is not JSON; is peer_url a Syncropel daemon?") from None
    try:
        return msgspec.convert(payload, kind)
    except msgspec.ValidationError as exc:
        raise _wire_problem(what, exc) from None


def parse_changes_page(body: bytes, *, sent_cursor: str, limit: int) -> ChangesPage:
    """Check a change-feed page body (spec §8.4) and return it; PeerProtocolError for anything else.

    Decoded by a typed msgspec decoder after a container count (so a hostile page cannot make the
    decoder build millions of objects). ``sent_cursor`` is the cursor we asked after: a page without
    ``next_cursor`` (or with null or ``""``) leaves us there. ``limit`` is the page size we asked
    for; a peer sending more is broken or hostile.
    """
    check_containers(body, MAX_PAGE_CONTAINERS)
    page = _decode_wire(body, _PAGE_DECODER, _WirePage, "page")
    if len(page.records) > limit:
        raise PeerProtocolError(f"peer sent {len(page.records)} records in a page when we asked for at most {limit}")
    next_cursor = page.next_cursor
    if next_cursor is None or next_cursor == "":
        next_cursor = sent_cursor
    elif not is_peer_cursor(next_cursor):
        raise PeerProtocolError(_cursor_problem(next_cursor))
    return ChangesPage([entry.record for entry in page.records], next_cursor, page.has_more, page.pending)


def parse_record_event(event_id: str | None, data: str) -> tuple[str, dict[str, Any]]:
    """The ``(cursor, record)`` of a ``record.created`` SSE event; PeerProtocolError if malformed."""
    if not is_peer_cursor(event_id):
        if event_id is None:
            raise PeerProtocolError("peer sent a record event without an id: (the cursor to resume from)")
        raise PeerProtocolError(_cursor_problem(event_id))
    check_containers(data, MAX_EVENT_CONTAINERS)
    record = _decode_wire(data.encode("utf-8", "surrogatepass"), _EVENT_DECODER, _WireEvent, "record event").record
    return event_id, record
