"""Talking to a peer over HTTP (httpx on trio): its change feed and its manifest, bounded and classified.

:class:`PeerClient` is what the pair actors are handed (through ``daemon/wiring.py``): one peer's
feed and manifest over a pool of httpx clients (:class:`PeerPool`), whose transport is injected,
so tests run it over ``httpx.MockTransport``. The module-level functions are the protocol itself,
over any ``httpx.AsyncClient``.

A peer is not trusted. Whatever it sends — or does not send — must end in a value we
checked or in a :class:`~spl.core.feed.PeerError`, within a deadline and a memory bound we chose
(spec §15.20):

- a page body is streamed and refused past :data:`MAX_PAGE_BYTES` (an error body past
  :data:`MAX_ERROR_BYTES`, a manifest past :data:`MAX_MANIFEST_BYTES`), never buffered whole
  first, and compressed answers are refused (a few KiB of zstd can expand to gigabytes);
- a page fetch has one total deadline (connect, headers and whole body), so a peer that
  drips a byte at a time cannot hold a pair "running" forever; a continuous feed must
  deliver a complete SSE event (a heartbeat will do) every ``frame_deadline`` seconds;
- the page and the record events are checked by the pure parsers of :mod:`spl.core.feed`;
- text from the peer that ends up in an error message goes through
  :func:`spl.core.text.printable`, so it cannot forge log lines or terminal escapes, and
  the pair's token never appears in a message.

Every failure is one subclass of :class:`~spl.core.feed.PeerError` (the table is in
:mod:`spl.core.feed`). :func:`classify` maps the transport's exceptions to them and re-raises
anything it does not know: a bug stays a bug, it does not become ``CONNECT_REFUSED``.
"""

from __future__ import annotations

import json
import math
import ssl
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import httpx
import trio

from spl.core.feed import (
    MAX_CURSOR_BYTES,
    MAX_PENDING,
    ChangesPage,
    ManifestInvalid,
    PeerDnsFailure,
    PeerError,
    PeerFailed,
    PeerHttpError,
    PeerProtocolError,
    PeerRefused,
    PeerShuttingDown,
    PeerTimeout,
    PeerTlsFailure,
    PeerUnreachable,
    StreamLagged,
    brief,
    is_peer_cursor,
    parse_changes_page,
    parse_record_event,
)
from spl.core.manifest import check_peer_manifest, manifest_keys, signed_manifest_did
from spl.core.rotation import RotationInvalid, check_extends
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
    "PeerClient",
    "PeerError",
    "PeerPool",
    "StreamLagged",
    "classify",
    "fetch_changes",
    "fetch_manifest",
    "fetch_peer_did",
    "post_document",
    "is_peer_cursor",
    "parse_changes_page",
    "stream_changes",
]

MAX_PAGE_BYTES = 32 * 1024 * 1024  # a source fills a page to at most 16 MiB of records (routes_sync)
MAX_ERROR_BYTES = 4 * 1024  # enough for a JSON error body; the rest is not worth reading
MAX_MANIFEST_BYTES = 256 * 1024
MAX_HANDSHAKE_BYTES = 64 * 1024  # a signed pair answer is ~2 KiB; an error body less
MAX_SSE_LINE = MAX_LINE  # 8 MiB: a 1 MiB record, \uXXXX-escaped in its data line, is at most ~6 MiB

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

# What the transport raises that says something about the peer; anything else is our bug and propagates.
TRANSPORT_FAILURES = (httpx.TransportError, httpx.DecodingError, httpx.TooManyRedirects, OSError, trio.TooSlowError)


def _stream_error(data: str, token: str | None) -> PeerError:
    """What an ``event: error`` frame means: we lagged (resume at once) or the peer gave up."""
    payload = _json_or_none(data)
    if isinstance(payload, dict) and payload.get("code") == "lagged":
        return StreamLagged()
    return PeerFailed(f"peer ended the stream: {_error_detail(payload, data, token)}", 0)


# -- messages --------------------------------------------------------------------------------------


def _peer_text(value: object, token: str | None, limit: int = 200) -> str:
    """Peer-supplied text made safe for a message: the token cut out first (so no part of it
    survives truncation), then escaped and shortened."""
    if not isinstance(value, str):
        return brief(value, limit)
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


def _exception_text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not turn classification into a crash
        return ""


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, kind):
            return True
        current, seen = current.__cause__ or current.__context__, seen + 1
    return False


def classify(exc: BaseException) -> PeerError:
    """The :class:`PeerError` for an exception met while talking to a peer.

    Raises:
        BaseException: ``exc`` itself when it is not a transport failure (a bug, a cancellation):
            mapping it to a peer error code would hide it.
    """
    if isinstance(exc, PeerError):
        return exc
    name = type(exc).__name__
    text = _exception_text(exc).lower()
    if isinstance(exc, httpx.TimeoutException | trio.TooSlowError):
        return PeerTimeout(f"peer did not answer in time ({name})")
    if isinstance(exc, httpx.RemoteProtocolError) and "disconnect" in text:
        return PeerUnreachable("peer closed the connection without answering (stopping or restarting?)")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
        return PeerProtocolError(f"peer broke the HTTP protocol ({name}: {printable(text, 120)})")
    if isinstance(exc, httpx.ConnectError | httpx.NetworkError | OSError):
        if "certificate verify failed" in text or _caused_by(exc, ssl.SSLCertVerificationError):
            return PeerTlsFailure(
                "peer's HTTPS certificate does not verify (self-signed, expired, or for another name); fix its "
                "chain, or add the CA that signed it with federation.ca_file (verification is never turned off)"
            )
        if any(hint in text for hint in _DNS_HINTS):
            return PeerDnsFailure("peer_url hostname does not resolve; check the URL")
        return PeerUnreachable("peer not reachable; is its daemon running and bound to this address?")
    if isinstance(exc, httpx.TransportError | httpx.TooManyRedirects):
        return PeerUnreachable(f"transport failure talking to the peer ({name}: {printable(text, 120)})")
    raise exc


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
    too_large = PeerProtocolError(f"peer {what} larger than {cap} bytes; refused without reading the rest")
    if _is_compressed(response):
        raise PeerProtocolError(f"peer sent a compressed {what} although we asked for identity encoding")
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


async def _http_error(response: httpx.Response, token: str | None, *, hint: str = "") -> PeerHttpError:
    """The error for a 4xx/5xx answer, quoting (escaped) what the peer said about it.

    A body with nothing to say still gives a detail (the status's reason phrase), so an operator never
    reads ``HTTP_5XX: peer answered 500`` and nothing else. 503 ``SHUTTING_DOWN`` is a peer stopping
    gracefully: its own kind, not a failure of the peer.
    """
    body = await _read_prefix(response, MAX_ERROR_BYTES)
    payload = _json_or_none(body)
    detail = _error_detail(payload, body.decode("utf-8", errors="replace"), token).strip()
    status = response.status_code
    if not detail:
        detail = f"({response.reason_phrase or 'no reason given'}, empty body)"
    message = f"peer answered {status} {detail}{hint if status in (401, 403) else ''}"
    if status == 503 and isinstance(payload, dict) and payload.get("code") == "SHUTTING_DOWN":
        raise PeerShuttingDown(f"peer is shutting down ({detail}); the pair retries once it is back")
    return (PeerRefused if status < 500 else PeerFailed)(message, status)


async def _check_status(response: httpx.Response, token: str | None, *, what: str, hint: str = "") -> None:
    """Raise the PeerError for anything but a 2xx answer."""
    if response.status_code >= 400:
        raise await _http_error(response, token, hint=hint)
    if not 200 <= response.status_code < 300:
        # Redirects are not followed: a pair talks to the URL it was given, with its token.
        raise PeerProtocolError(f"peer answered {response.status_code} instead of a {what}; check peer_url")


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
        raise error.redacted(token) from None
    except TRANSPORT_FAILURES as exc:
        raise classify(exc).redacted(token) from None
    raise PeerTimeout(f"peer did not deliver its whole {what} within {deadline:g} s")


# -- the change feed -------------------------------------------------------------------------------


async def fetch_changes(
    client: httpx.AsyncClient,
    peer_url: str,
    feed: dict[str, str],
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
    params: dict[str, Any] = {**feed, "limit": limit}
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
        raise error.redacted(token) from None


async def stream_changes(
    client: httpx.AsyncClient,
    peer_url: str,
    feed: dict[str, str],
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
    params = {**feed, "feed": "continuous"}
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
                    raise PeerProtocolError("peer compressed its feed although we asked for identity encoding")
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
                            batch.append(parse_record_event(event.id, event.data))
                        elif event.event == "heartbeat":
                            heartbeat = True
                        elif event.event == "server_shutdown":
                            raise PeerShuttingDown("peer is shutting down; the pair reopens the feed once it is back")
                        elif event.event == "error":
                            raise _stream_error(event.data, token)
                    if batch or heartbeat:
                        # Time spent on our side (a slow commit) is not the peer's silence.
                        silence.deadline = math.inf
                        await on_events(batch)
                    silence.deadline = trio.current_time() + frame_deadline
            raise PeerUnreachable("peer closed the stream")
    except PeerError as error:
        raise error.redacted(token) from None
    except TRANSPORT_FAILURES as exc:
        raise classify(exc).redacted(token) from None
    if opened:
        raise PeerTimeout(f"peer sent no complete event (not even a heartbeat) for {frame_deadline:g} s")
    raise PeerTimeout(f"peer did not open its continuous feed within {frame_deadline:g} s")


def _feed(parser: SseParser, chunk: bytes) -> list[SseEvent]:
    try:
        return parser.feed(chunk)
    except ValueError as exc:  # a line or frame over the parser's bounds
        raise PeerProtocolError(f"peer feed broke a limit: {exc}") from None


# -- the manifest ----------------------------------------------------------------------------------


async def _manifest_body(client: httpx.AsyncClient, peer_url: str, deadline: float) -> bytes:
    return await _get(
        client,
        f"{peer_url}/.well-known/syncropel",
        params=None,
        token=None,
        cap=MAX_MANIFEST_BYTES,
        deadline=deadline,
        what="manifest",
    )


async def fetch_manifest(
    client: httpx.AsyncClient,
    peer_url: str,
    *,
    expected_did: str,
    deadline: float = 30.0,
    now: float | None = None,
) -> dict[str, Any]:
    """The peer's federation manifest, verified: signed by its own DID, not expired, and that DID is ``expected_did``.

    This is how a pair knows it pulls from the peer it was created for and not from whoever
    answers at the URL now. ``now`` (wall-clock seconds) is for tests. Raises ``ManifestInvalid``
    (unsigned, bad signature, expired, malformed), ``PeerDidMismatch``, or a transport error.
    """
    body = await _manifest_body(client, peer_url, deadline)
    return check_peer_manifest(body, where=peer_url, expected_did=expected_did, now=time.time() if now is None else now)


async def fetch_peer_did(client: httpx.AsyncClient, peer_url: str, *, deadline: float = 10.0) -> str:
    """The DID the daemon at ``peer_url`` proves it holds (its signed manifest), whatever it is."""
    body = await _manifest_body(client, peer_url, deadline)
    return signed_manifest_did(body, where=peer_url, now=time.time())[0]


async def fetch_manifest_body(client: httpx.AsyncClient, peer_url: str, *, deadline: float = 30.0) -> bytes:
    """The raw body of the peer's ``/.well-known/syncropel`` (bounded); the caller verifies it."""
    return await _manifest_body(client, peer_url, deadline)


async def post_document(
    client: httpx.AsyncClient, url: str, document: dict[str, Any], *, deadline: float = 30.0
) -> tuple[int, bytes]:
    """POST a signed handshake document (no bearer: its signature authenticates it) and return status and body.

    The answer is bounded (:data:`MAX_HANDSHAKE_BYTES`) and must arrive whole within ``deadline``;
    any status comes back to the caller, which maps the peer's error codes (410, 401, 403…) to
    its own messages. Transport failures raise :class:`PeerError`.
    """
    payload = json.dumps(document, separators=(",", ":")).encode()
    headers = {**_IDENTITY, "content-type": "application/json"}
    try:
        with trio.move_on_after(deadline):
            async with client.stream("POST", url, content=payload, headers=headers) as response:
                if _is_compressed(response):
                    raise PeerProtocolError("peer compressed its answer although we asked for identity encoding")
                body = await _read_capped(response, MAX_HANDSHAKE_BYTES, what="handshake answer")
                return response.status_code, body
    except PeerError:
        raise
    except TRANSPORT_FAILURES as exc:
        raise classify(exc) from None
    raise PeerTimeout(f"peer did not answer within {deadline:g} s")


# -- the client the pairs are handed ---------------------------------------------------------------


class PeerClient:
    """One peer, as the pair actors see it: its feed and its manifest, each call bounded and classified.

    Built by :meth:`PeerPool.client`; shares the pool's connections with every other pair.
    """

    def __init__(
        self,
        peer_url: str,
        *,
        http: httpx.AsyncClient,
        streams: httpx.AsyncClient,
        pinned: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.peer_url = peer_url
        self._http = http
        self._streams = streams
        self._pinned = pinned if pinned is not None else {}

    async def fetch_changes(self, feed: dict[str, str], cursor: str, *, token: str | None, limit: int) -> ChangesPage:
        return await fetch_changes(self._http, self.peer_url, feed, cursor, token=token, limit=limit)

    async def stream_changes(
        self,
        feed: dict[str, str],
        cursor: str,
        *,
        token: str | None,
        on_events: Callable[[list[tuple[str, dict[str, Any]]]], Awaitable[None]],
        on_open: Callable[[], None],
    ) -> None:
        """Follow the peer's continuous feed; never returns normally (see :func:`stream_changes`)."""
        await stream_changes(
            self._streams, self.peer_url, feed, cursor, token=token, on_events=on_events, on_open=on_open
        )

    async def verify(self, expected_did: str) -> None:
        """The peer's signed manifest must name ``expected_did``, signed by the current key of a rotation chain that
        extends the one this daemon saw before for that DID (a fork or a rollback is refused); raises PeerError.

        A peer that ran ``spl identity rotate`` passes with no change to the pair: its chain starts at the DID the
        pair pinned. The keys it proved are remembered for the daemon's life (``PeerPool``).
        """
        manifest = await fetch_manifest(self._http, self.peer_url, expected_did=expected_did)
        try:
            keys = manifest_keys(manifest)
            check_extends(self._pinned.get(expected_did, ()), keys, who=f"peer at {printable(self.peer_url, 120)}")
        except RotationInvalid as exc:
            raise ManifestInvalid(exc.message) from None
        self._pinned[expected_did] = keys

    async def peer_did(self) -> str:
        """The DID the peer proves it holds (for refusing a pair with ourselves)."""
        return await fetch_peer_did(self._http, self.peer_url)

    async def manifest_body(self) -> bytes:
        """The peer's raw ``/.well-known/syncropel`` (the handshake verifies it with its own rules)."""
        return await fetch_manifest_body(self._http, self.peer_url)

    async def post(self, url: str, document: dict[str, Any]) -> tuple[int, bytes]:
        """POST a signed handshake document to ``url`` (an endpoint the peer's verified manifest named)."""
        return await post_document(self._http, url, document)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificates are always verified: the system's CAs, plus the operator's ``federation.ca_file``.

    There is no switch to turn verification off. A peer with a self-signed certificate is
    reached by adding the CA that signed it (a private CA), never by trusting whatever answers.
    """
    context = ssl.create_default_context()
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


class PeerPool:
    """The federation's HTTP connections: one pool for pages and manifests, one for long-lived streams.

    An async context manager; ``transport`` replaces the network (``httpx.MockTransport`` in tests).
    """

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, *, ca_file: str | None = None) -> None:
        self._pinned: dict[str, tuple[str, ...]] = {}  # peer DID -> the keys its rotation chain proved
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        verify = tls_context(ca_file)
        self._http = httpx.AsyncClient(
            limits=limits, timeout=httpx.Timeout(30.0, connect=5.0), transport=transport, verify=verify
        )
        self._streams = httpx.AsyncClient(
            limits=limits,
            timeout=httpx.Timeout(connect=5.0, read=60.0, write=10.0, pool=None),
            transport=transport,
            verify=verify,
        )

    def client(self, peer_url: str) -> PeerClient:
        return PeerClient(peer_url, http=self._http, streams=self._streams, pinned=self._pinned)

    async def __aenter__(self) -> PeerPool:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        with trio.CancelScope(shield=True):
            await self._http.aclose()
            await self._streams.aclose()
