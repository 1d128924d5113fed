"""Talking to a peer over HTTP (httpx on trio): its change feed and its manifest, bounded and classified.

A peer is not trusted. Whatever it sends — or does not send — must end in a value we
checked or in a :class:`PeerError`, within a deadline and a memory bound we chose
(spec §15.20):

- a page body is streamed and refused past :data:`MAX_PAGE_BYTES` (an error body past
  :data:`MAX_ERROR_BYTES`, a manifest past :data:`MAX_MANIFEST_BYTES`), never buffered whole
  first, and compressed answers are refused (a few KiB of zstd can expand to gigabytes);
- a page fetch has one total deadline (connect, headers and whole body), so a peer that
  drips a byte at a time cannot hold a pair "running" forever; a continuous feed must
  deliver a complete SSE event (a heartbeat will do) every ``frame_deadline`` seconds;
- a page has at most the records we asked for, each an object; ``has_more`` is a bool and
  ``pending`` an int in 0..2^63-1;
- cursors are opaque (spec §15.6, §15.20): a peer's ``next_cursor`` or SSE ``id:`` is kept
  as the exact string it sent, provided it is 1-256 printable ASCII characters, and is
  handed back as ``since`` unchanged. Nothing here parses a cursor or turns one into a number;
- text from the peer that ends up in an error message goes through
  :func:`spl.core.text.printable`, so it cannot forge log lines or terminal escapes, and
  the pair's token never appears in a message.

Every failure is a :class:`PeerError` whose ``code`` is a pair error code of spec §8.4
(``CONNECT_REFUSED``, ``TIMEOUT``, ``DNS_FAILURE``, ``HTTP_4XX``, ``HTTP_5XX``,
``PARSE_ERROR``), or, from :func:`fetch_manifest`, ``MANIFEST_INVALID`` /
``PEER_DID_MISMATCH``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

import httpx
import trio

from spl.core.errors import InvalidRequest
from spl.core.manifest import verify_manifest
from spl.core.text import printable
from spl.transport.sse import MAX_LINE, SseEvent, SseParser

__all__ = [
    "MAX_CURSOR_BYTES",
    "MAX_ERROR_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_PAGE_BYTES",
    "MAX_PENDING",
    "MAX_SSE_LINE",
    "ChangesPage",
    "PeerError",
    "StreamLagged",
    "classify",
    "fetch_changes",
    "fetch_manifest",
    "is_peer_cursor",
    "parse_changes_page",
    "stream_changes",
]

MAX_PAGE_BYTES = 32 * 1024 * 1024  # a source fills a page to at most 16 MiB of records (routes_sync)
MAX_PAGE_CONTAINERS = 1_000_000  # objects + arrays in one page (~100 MB parsed at worst)
MAX_EVENT_CONTAINERS = 250_000  # objects + arrays in one SSE record event
MAX_ERROR_BYTES = 4 * 1024  # enough for a JSON error body; the rest is not worth reading
MAX_MANIFEST_BYTES = 256 * 1024
MAX_SSE_LINE = MAX_LINE  # 8 MiB: a 1 MiB record, \uXXXX-escaped in its data line, is at most ~6 MiB
MAX_CURSOR_BYTES = 256
MAX_PENDING = 2**63 - 1

_CURSOR = re.compile(rf"[\x21-\x7e]{{1,{MAX_CURSOR_BYTES}}}")

# We ask for an uncompressed answer and refuse any other: a decoder would expand bytes the
# size cap has already counted.
_IDENTITY = {"accept-encoding": "identity"}

_DNS_HINTS = (
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
    "no address associated",
    "getaddrinfo failed",
    "name resolution",
)

_TOKEN_HINT = " (does the pair have a valid token? see `spl fleet sync add --token`)"


class PeerError(Exception):
    """A failure talking to a peer: ``code`` is machine-readable, ``message`` says what to do."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class StreamLagged(PeerError):
    """The peer ended our continuous feed because we fell behind its buffer: not a failure.

    The pair catches up by pages and reopens the stream at once, without backoff.
    """

    def __init__(self) -> None:
        super().__init__("LAGGED", "fell behind the peer's stream buffer; catching up by pages")


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


# -- checking what a peer sent ---------------------------------------------------------------------


def is_peer_cursor(value: object) -> TypeGuard[str]:
    """True for a cursor we accept from a peer: a str of 1-256 printable ASCII characters (0x21-0x7E).

    The bound keeps what we store and send back small; printable ASCII keeps it safe in a
    query string, a log line and the store, without our having to understand it.
    """
    return isinstance(value, str) and _CURSOR.fullmatch(value) is not None


def _brief(value: object, limit: int = 60) -> str:
    """A peer's value for a message: escaped, and only the type of a list or object (whose repr could be huge)."""
    if isinstance(value, dict | list):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    return printable(value, limit)


def _cursor_problem(value: object) -> str:
    return f"peer sent the cursor {_brief(value)}, which is not 1-{MAX_CURSOR_BYTES} printable ASCII characters"


def _check_containers(body: bytes | str, budget: int) -> None:
    """Refuse JSON that would parse into more than ``budget`` objects and arrays.

    Bytes are not the whole cost: 64 MiB of ``{},{},…`` parse into 21 million dicts (about
    1.7 GB). Counting ``{`` and ``[`` (including any inside strings, so the count can only
    be high) bounds what parsing a page may allocate, at C speed, before parsing it.
    """
    if isinstance(body, bytes):
        count = body.count(b"{") + body.count(b"[")
    else:
        count = body.count("{") + body.count("[")
    if count > budget:
        raise PeerError("PARSE_ERROR", f"peer sent JSON with {count} objects/arrays; the limit is {budget}")


def parse_changes_page(body: bytes, *, sent_cursor: str, limit: int) -> ChangesPage:
    """Check a change-feed page body (spec §8.4) and return it; PeerError(PARSE_ERROR) for anything else.

    Pure, so it can be tested on arbitrary bytes. ``sent_cursor`` is the cursor we asked
    after: a page without ``next_cursor`` (or with null or ``""``) leaves us there.
    ``limit`` is the page size we asked for; a peer sending more is broken or hostile.
    """
    _check_containers(body, MAX_PAGE_CONTAINERS)
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
        raise PeerError(
            "PARSE_ERROR", "peer answered something that is not JSON; is peer_url a Syncropel daemon?"
        ) from None
    if not isinstance(payload, dict):
        raise PeerError("PARSE_ERROR", "peer page is not a JSON object; is peer_url a Syncropel daemon?")
    items = payload.get("records")
    if not isinstance(items, list):
        raise PeerError("PARSE_ERROR", "peer page has no records list; is peer_url a Syncropel daemon?")
    if len(items) > limit:
        raise PeerError("PARSE_ERROR", f"peer sent {len(items)} records in a page when we asked for at most {limit}")
    records: list[dict[str, Any]] = []
    for item in items:
        record = item.get("record") if isinstance(item, dict) else None
        if not isinstance(record, dict):
            raise PeerError("PARSE_ERROR", "peer page has an entry without a record object")
        records.append(record)
    next_cursor = payload.get("next_cursor")
    if next_cursor is None or next_cursor == "":
        next_cursor = sent_cursor
    elif not is_peer_cursor(next_cursor):
        raise PeerError("PARSE_ERROR", _cursor_problem(next_cursor))
    has_more = payload.get("has_more", False)
    if not isinstance(has_more, bool):
        raise PeerError("PARSE_ERROR", f"peer sent has_more={_brief(has_more)}, not true or false")
    pending = payload.get("pending", 0)
    # bool is an int in Python: `true` is not a count.
    if not isinstance(pending, int) or isinstance(pending, bool) or not 0 <= pending <= MAX_PENDING:
        raise PeerError("PARSE_ERROR", f"peer sent pending={_brief(pending)}, not a count in 0..2^63-1")
    return ChangesPage(records, next_cursor, has_more, pending)


def _record_event(event_id: str | None, data: str) -> tuple[str, dict[str, Any]]:
    """The ``(cursor, record)`` of a ``record.created`` SSE event; PeerError(PARSE_ERROR) if malformed."""
    if not is_peer_cursor(event_id):
        if event_id is None:
            raise PeerError("PARSE_ERROR", "peer sent a record event without an id: (the cursor to resume from)")
        raise PeerError("PARSE_ERROR", _cursor_problem(event_id))
    _check_containers(data, MAX_EVENT_CONTAINERS)
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise PeerError("PARSE_ERROR", "peer sent a record event whose data is not JSON") from None
    record = payload.get("record") if isinstance(payload, dict) else None
    if not isinstance(record, dict):
        raise PeerError("PARSE_ERROR", "peer sent a record event without a record object")
    return event_id, record


def _stream_error(data: str, token: str | None) -> PeerError:
    """What an ``event: error`` frame means: we lagged (resume at once) or the peer gave up."""
    payload = _json_or_none(data)
    if isinstance(payload, dict) and payload.get("code") == "lagged":
        return StreamLagged()
    return PeerError("HTTP_5XX", f"peer ended the stream: {_error_detail(payload, data, token)}")


# -- messages --------------------------------------------------------------------------------------


def _peer_text(value: object, token: str | None, limit: int = 200) -> str:
    """Peer-supplied text made safe for a message: the token cut out first (so no part of it
    survives truncation), then escaped and shortened."""
    if not isinstance(value, str):
        return _brief(value, limit)
    return printable(value.replace(token, "<token>") if token else value, limit)


def _json_or_none(text: str | bytes) -> Any:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _error_detail(payload: Any, raw: str, token: str | None) -> str:
    """What a peer said about an error, escaped: ``code: message`` of a JSON error body, else its text."""
    if isinstance(payload, dict):
        code = _peer_text(payload.get("code", ""), token, 60)
        message = _peer_text(payload.get("message", ""), token)
        return f"{code}: {message}".strip(": ")
    return _peer_text(raw, token)


def _hide_token(error: PeerError, token: str | None) -> PeerError:
    """``error`` without the token in its message (a last guard: messages are built without it)."""
    if token and token in error.message:
        return PeerError(error.code, error.message.replace(token, "<token>"))
    return error


def _exception_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not turn classification into a crash
        return ""


def classify(exc: BaseException) -> PeerError:
    """Map any exception met while talking to a peer to a :class:`PeerError`; never raises."""
    if isinstance(exc, PeerError):
        return exc
    try:
        return _classify(exc)
    except Exception:
        return PeerError("CONNECT_REFUSED", f"transport failure ({type(exc).__name__})")


def _classify(exc: BaseException) -> PeerError:
    name = type(exc).__name__
    text = _exception_text(exc)
    if isinstance(exc, httpx.TimeoutException | trio.TooSlowError):
        return PeerError("TIMEOUT", f"peer did not answer in time ({name})")
    if isinstance(exc, httpx.ConnectError | httpx.NetworkError | OSError):
        if any(hint in text.lower() for hint in _DNS_HINTS):
            return PeerError("DNS_FAILURE", "peer_url hostname does not resolve; check the URL")
        return PeerError("CONNECT_REFUSED", "peer not reachable; is its daemon running and bound to this address?")
    if isinstance(exc, httpx.RemoteProtocolError) and "disconnect" in text.lower():
        return PeerError("CONNECT_REFUSED", "peer closed the connection without answering (stopping or restarting?)")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
        return PeerError("PARSE_ERROR", f"peer broke the HTTP protocol ({name}: {printable(text, 120)})")
    if isinstance(exc, ValueError | KeyError | TypeError | InvalidRequest | RecursionError):
        return PeerError("PARSE_ERROR", f"peer answered something unexpected ({name}: {printable(text, 200)})")
    return PeerError("CONNECT_REFUSED", f"transport failure ({name})")


# -- reading bounded bodies ------------------------------------------------------------------------


def _headers(token: str | None) -> dict[str, str]:
    return {**_IDENTITY, "authorization": f"Bearer {token}"} if token else dict(_IDENTITY)


def _is_compressed(response: httpx.Response) -> bool:
    return response.headers.get("content-encoding", "identity").strip().lower() not in ("", "identity")


def _announces_more_than(response: httpx.Response, cap: int) -> bool:
    """True when the peer's Content-Length already exceeds ``cap`` (checked without int() on a huge string)."""
    declared = response.headers.get("content-length", "").strip()
    return declared.isascii() and declared.isdigit() and (len(declared) > 19 or int(declared) > cap)


async def _read_capped(response: httpx.Response, cap: int, *, what: str) -> bytes:
    """The whole body, refused with PARSE_ERROR as soon as it exceeds ``cap`` bytes.

    Leaving the loop early is safe: the caller's ``client.stream`` block then closes the
    response, and with it the connection, so the rest is never read.
    """
    too_large = PeerError("PARSE_ERROR", f"peer {what} larger than {cap} bytes; refused without reading the rest")
    if _is_compressed(response):
        raise PeerError("PARSE_ERROR", f"peer sent a compressed {what} although we asked for identity encoding")
    if _announces_more_than(response, cap):
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > cap:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _read_prefix(response: httpx.Response, cap: int) -> bytes:
    """At most the first ``cap`` bytes of the body (for error bodies: enough to show, no more)."""
    if _is_compressed(response):
        return b""
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk[: cap - size])
        size += len(chunks[-1])
        if size >= cap:
            break
    return b"".join(chunks)


async def _http_error(response: httpx.Response, token: str | None, *, hint: str = "") -> PeerError:
    """The PeerError for a 4xx/5xx answer, quoting (escaped) what the peer said about it."""
    body = await _read_prefix(response, MAX_ERROR_BYTES)
    detail = _error_detail(_json_or_none(body), body.decode("utf-8", errors="replace"), token)
    status = response.status_code
    code = "HTTP_4XX" if status < 500 else "HTTP_5XX"
    return PeerError(code, f"peer answered {status} {detail}{hint if status in (401, 403) else ''}")


async def _check_status(response: httpx.Response, token: str | None, *, what: str, hint: str = "") -> None:
    """Raise the PeerError for anything but a 2xx answer."""
    if response.status_code >= 400:
        raise await _http_error(response, token, hint=hint)
    if not 200 <= response.status_code < 300:
        # Redirects are not followed: a pair talks to the URL it was given, with its token.
        raise PeerError("PARSE_ERROR", f"peer answered {response.status_code} instead of a {what}; check peer_url")


async def _get(
    client: httpx.AsyncClient,
    url: str,
    *,
    params: dict[str, Any] | None,
    token: str | None,
    cap: int,
    deadline: float,
    what: str,
    hint: str = "",
) -> bytes:
    """GET ``url`` and return its body: connect, headers and whole body within ``deadline`` seconds."""
    try:
        with trio.move_on_after(deadline):
            async with client.stream("GET", url, params=params, headers=_headers(token)) as response:
                await _check_status(response, token, what=what, hint=hint)
                return await _read_capped(response, cap, what=what)
    except PeerError as error:
        raise _hide_token(error, token) from None
    except Exception as exc:
        raise _hide_token(classify(exc), token) from None
    raise PeerError("TIMEOUT", f"peer did not deliver its whole {what} within {deadline:g} s")


# -- the change feed -------------------------------------------------------------------------------


async def fetch_changes(
    client: httpx.AsyncClient,
    peer_url: str,
    thread: str,
    cursor: str,
    *,
    token: str | None,
    limit: int = 1000,
    longpoll: float | None = None,
    deadline: float = 60.0,
    max_bytes: int = MAX_PAGE_BYTES,
) -> ChangesPage:
    """One checked page of the peer's change feed after the opaque ``cursor`` ("" = from the start).

    The whole fetch must finish within ``deadline`` seconds; with ``longpoll`` the peer may
    also hold the request that many seconds first, so the wait is added to the deadline.
    A body over ``max_bytes`` is refused as it streams in.
    """
    params: dict[str, Any] = {"thread": thread, "limit": limit}
    if cursor:
        params["since"] = cursor
    if longpoll is not None:
        params["feed"] = "longpoll"
        params["timeout"] = longpoll
    body = await _get(
        client,
        f"{peer_url}/v1/sync/changes",
        params=params,
        token=token,
        cap=max_bytes,
        deadline=deadline + (longpoll or 0.0),
        what="page",
        hint=_TOKEN_HINT,
    )
    try:
        return parse_changes_page(body, sent_cursor=cursor, limit=limit)
    except PeerError as error:  # it may quote a value in which the peer echoed our token
        raise _hide_token(error, token) from None


async def stream_changes(
    client: httpx.AsyncClient,
    peer_url: str,
    thread: str,
    cursor: str,
    *,
    token: str | None,
    on_events: Callable[[list[tuple[str, dict[str, Any]]]], Awaitable[None]],
    on_open: Callable[[], None] = lambda: None,
    frame_deadline: float = 90.0,
    max_line: int = MAX_SSE_LINE,
) -> None:
    """Follow the peer's continuous feed after the opaque ``cursor``, handing records to ``on_events``.

    Each record comes as ``(event_id, record)``: the event's ``id:`` is the opaque cursor to
    resume from after that record. Records completed by one network chunk are handed over
    together (micro-batching); heartbeats call ``on_events([])``.

    Never returns normally: it ends by raising :class:`PeerError` (stream closed, lagged,
    failed, or silent: no complete event for ``frame_deadline`` seconds, counting from the
    request and not counting time spent in ``on_events``) and the caller resumes from the
    last cursor it committed. A callback, not an async generator, so no cancel scope is
    ever held across a ``yield``.
    """
    params = {"thread": thread, "feed": "continuous"}
    if cursor:
        params["since"] = cursor
    opened = False
    try:
        with trio.move_on_after(frame_deadline) as silence:
            async with client.stream(
                "GET", f"{peer_url}/v1/sync/changes", params=params, headers=_headers(token)
            ) as response:
                await _check_status(response, token, what="continuous feed", hint=_TOKEN_HINT)
                if _is_compressed(response):
                    raise PeerError("PARSE_ERROR", "peer compressed its feed although we asked for identity encoding")
                opened = True
                on_open()
                parser = SseParser(max_line=max_line)
                async for chunk in response.aiter_bytes():
                    events = _feed(parser, chunk)
                    if not events:
                        continue  # a partial frame is not a sign of life: a dripping peer times out
                    batch: list[tuple[str, dict[str, Any]]] = []
                    heartbeat = False
                    for event in events:
                        if event.event == "record.created":
                            batch.append(_record_event(event.id, event.data))
                        elif event.event == "heartbeat":
                            heartbeat = True
                        elif event.event == "server_shutdown":
                            raise PeerError("CONNECT_REFUSED", "peer is shutting down")
                        elif event.event == "error":
                            raise _stream_error(event.data, token)
                    if batch or heartbeat:
                        # Time spent on our side (a slow commit) is not the peer's silence.
                        silence.deadline = math.inf
                        await on_events(batch)
                    silence.deadline = trio.current_time() + frame_deadline
            raise PeerError("CONNECT_REFUSED", "peer closed the stream")
    except PeerError as error:
        raise _hide_token(error, token) from None
    except Exception as exc:
        raise _hide_token(classify(exc), token) from None
    if opened:
        raise PeerError("TIMEOUT", f"peer sent no complete event (not even a heartbeat) for {frame_deadline:g} s")
    raise PeerError("TIMEOUT", f"peer did not open its continuous feed within {frame_deadline:g} s")


def _feed(parser: SseParser, chunk: bytes) -> list[SseEvent]:
    try:
        return parser.feed(chunk)
    except ValueError as exc:  # a line or frame over the parser's bounds
        raise PeerError("PARSE_ERROR", f"peer feed broke a limit: {exc}") from None


# -- the manifest ----------------------------------------------------------------------------------


async def fetch_manifest(
    client: httpx.AsyncClient,
    peer_url: str,
    *,
    expected_did: str,
    deadline: float = 30.0,
    now: float | None = None,
) -> dict[str, Any]:
    """The peer's federation manifest, verified: signed by its own DID, not expired, and that DID is ``expected_did``.

    ``GET <peer_url>/.well-known/syncropel`` serves an envelope whose ``federation_manifest``
    is the signed document (spec §8.2); a bare manifest is accepted too. This is how a pair
    knows it pulls from the peer it was created for and not from whoever answers at the URL
    now. ``now`` (wall-clock seconds) is for tests. Raises PeerError: ``MANIFEST_INVALID``
    (unsigned, bad signature, expired, malformed), ``PEER_DID_MISMATCH``, or a transport code.
    """
    url = printable(peer_url, 120)
    body = await _get(
        client,
        f"{peer_url}/.well-known/syncropel",
        params=None,
        token=None,
        cap=MAX_MANIFEST_BYTES,
        deadline=deadline,
        what="manifest",
    )
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise PeerError(
            "MANIFEST_INVALID", f"{url}/.well-known/syncropel is not JSON; is it a Syncropel daemon?"
        ) from None
    manifest = payload
    if isinstance(payload, dict) and payload.get("object") != "federation_manifest":
        manifest = payload.get("federation_manifest")
    if not isinstance(manifest, dict):
        raise PeerError(
            "MANIFEST_INVALID", f"peer at {url} publishes no federation manifest (has it a signing identity?)"
        )
    try:
        signed = verify_manifest(manifest)
    except Exception:  # e.g. a DID that is not did:key, or nesting too deep to canonicalise
        signed = False
    if not signed:
        raise PeerError(
            "MANIFEST_INVALID",
            f"peer at {url} serves a federation manifest whose signature does not verify; "
            "it is not the daemon it claims to be, or its manifest was altered",
        )
    expiry = _expires_at(manifest["signature"].get("expires_at"))
    moment = time.time() if now is None else now
    if expiry is None:
        raise PeerError("MANIFEST_INVALID", f"peer at {url} serves a manifest without a valid expires_at")
    if expiry <= moment:
        raise PeerError(
            "MANIFEST_INVALID", f"peer at {url} serves a manifest that has expired; restart the peer to re-sign it"
        )
    did = manifest["daemon"]["did"]  # verify_manifest checked it is a str
    if did != expected_did:
        raise PeerError(
            "PEER_DID_MISMATCH",
            f"peer at {url} is {printable(did, 120)}, not the pair's peer {printable(expected_did, 120)}; "
            "check peer_url, or re-create the pair with the DID of the daemon at that URL",
        )
    return manifest


def _expires_at(value: object) -> float | None:
    """An RFC 3339 timestamp with a zone as POSIX seconds; None when absent or malformed."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None
