"""Talking to a peer's change feed over HTTP (httpx on trio), with failures classified.

Every failure becomes a :class:`PeerError` whose ``code`` is one of the pair error codes
of spec §8.4 (``CONNECT_REFUSED``, ``TIMEOUT``, ``DNS_FAILURE``, ``HTTP_4XX``,
``HTTP_5XX``, ``PARSE_ERROR``); messages never contain the token.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from spl.kernel.cursor import decode_cursor, encode_cursor
from spl.kernel.errors import InvalidRequest
from spl.transport.sse import SseParser

__all__ = ["ChangesPage", "PeerError", "StreamLagged", "classify", "fetch_changes", "stream_changes"]

_DNS_HINTS = (
    "name or service not known",
    "nodename nor servname",
    "temporary failure in name resolution",
    "no address associated",
    "getaddrinfo failed",
    "name resolution",
)


class PeerError(Exception):
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
    records: list[dict[str, Any]]
    next_cursor: int
    has_more: bool
    pending: int


def classify(exc: BaseException) -> PeerError:
    """Map a transport exception to a pair error code."""
    if isinstance(exc, PeerError):
        return exc
    if isinstance(exc, httpx.TimeoutException):
        return PeerError("TIMEOUT", f"peer did not answer in time ({type(exc).__name__})")
    if isinstance(exc, httpx.ConnectError | httpx.NetworkError | OSError):
        text = str(exc).lower()
        if any(hint in text for hint in _DNS_HINTS):
            return PeerError("DNS_FAILURE", "peer_url hostname does not resolve; check the URL")
        return PeerError("CONNECT_REFUSED", "peer not reachable; is its daemon running and bound to this address?")
    if isinstance(exc, httpx.RemoteProtocolError) and "disconnect" in str(exc).lower():
        return PeerError("CONNECT_REFUSED", "peer closed the connection without answering (stopping or restarting?)")
    if isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
        return PeerError("PARSE_ERROR", f"peer broke the HTTP protocol ({type(exc).__name__})")
    if isinstance(exc, ValueError | KeyError | TypeError | InvalidRequest):
        return PeerError("PARSE_ERROR", f"peer answered something that is not a change feed ({exc})"[:300])
    return PeerError("CONNECT_REFUSED", f"transport failure ({type(exc).__name__})")


def _headers(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def _http_error(response: httpx.Response) -> PeerError:
    try:
        payload = response.json()
        detail = f"{payload.get('code', '')}: {payload.get('message', '')}".strip(": ")
    except ValueError:
        detail = response.text[:200]
    code = "HTTP_4XX" if response.status_code < 500 else "HTTP_5XX"
    hint = (
        " (does the pair have a valid token? see `spl fleet sync add --token`)"
        if response.status_code
        in (
            401,
            403,
        )
        else ""
    )
    return PeerError(code, f"peer answered {response.status_code} {detail}{hint}"[:400])


async def fetch_changes(
    client: httpx.AsyncClient,
    peer_url: str,
    thread: str,
    cursor: int,
    *,
    token: str | None,
    limit: int = 1000,
    longpoll: float | None = None,
) -> ChangesPage:
    """One page of the peer's change feed after ``cursor``."""
    params: dict[str, Any] = {"thread": thread, "since": encode_cursor(cursor), "limit": limit}
    if longpoll is not None:
        params["feed"] = "longpoll"
        params["timeout"] = longpoll
    try:
        response = await client.get(f"{peer_url}/v1/sync/changes", params=params, headers=_headers(token))
    except Exception as exc:
        raise classify(exc) from None
    if response.status_code >= 400:
        raise _http_error(response)
    try:
        payload = json.loads(response.content)
        records = [item["record"] for item in payload["records"]]
        if not all(isinstance(record, dict) for record in records):
            raise ValueError("records must be objects")
        next_cursor = decode_cursor(payload.get("next_cursor")) or cursor
        return ChangesPage(records, next_cursor, bool(payload.get("has_more")), int(payload.get("pending", 0)))
    except Exception as exc:
        raise classify(ValueError(str(exc))) from None


async def stream_changes(
    client: httpx.AsyncClient,
    peer_url: str,
    thread: str,
    cursor: int,
    *,
    token: str | None,
    on_events: Callable[[list[tuple[int, dict[str, Any]]]], Awaitable[None]],
    on_open: Callable[[], None] = lambda: None,
) -> None:
    """Follow the peer's continuous feed after ``cursor``, handing records to ``on_events``.

    Records that arrive in one network chunk are handed over together (micro-batching);
    heartbeats call ``on_events([])``. Never returns normally: it ends by raising
    :class:`PeerError` (stream closed, lagged or failed) and the caller resumes from the
    last sequence it committed. A callback, not an async generator, so no cancel scope is
    ever held across a ``yield``.
    """
    params = {"thread": thread, "since": encode_cursor(cursor), "feed": "continuous"}
    try:
        async with client.stream(
            "GET", f"{peer_url}/v1/sync/changes", params=params, headers=_headers(token)
        ) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _http_error(response)
            on_open()
            parser = SseParser()
            async for chunk in response.aiter_bytes():
                batch: list[tuple[int, dict[str, Any]]] = []
                heartbeat = False
                for event in parser.feed(chunk):
                    if event.event == "heartbeat":
                        heartbeat = True
                    elif event.event == "record.created":
                        record = json.loads(event.data)["record"]
                        if not isinstance(record, dict) or event.id is None:
                            raise ValueError("record event without record or id")
                        batch.append((int(event.id), record))
                    elif event.event == "server_shutdown":
                        raise PeerError("CONNECT_REFUSED", "peer is shutting down")
                    elif event.event == "error":
                        if '"lagged"' in event.data:
                            raise StreamLagged()
                        raise PeerError("HTTP_5XX", f"peer ended the stream: {event.data[:200]}")
                if batch or heartbeat:
                    await on_events(batch)
    except PeerError:
        raise
    except Exception as exc:
        raise classify(exc) from None
    raise PeerError("CONNECT_REFUSED", "peer closed the stream")
