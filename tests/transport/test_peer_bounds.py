"""The peer-facing client against a hostile peer: every answer ends in a checked value or a PeerError, in bounds.

The peer here is a tiny raw-HTTP server on 127.0.0.1 (trio sockets), so it can do what no
well-behaved framework would: drip bytes, announce a 1 GiB body, send an endless one, lie in
its JSON, put ANSI escapes and newlines in its errors, send SSE ids beyond 2^63-1. Timing
tests run on trio's MockClock (autojump): the loopback socket delivers data within the send
call, so virtual time only jumps when both sides are really waiting on a timer.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
import trio
import trio.testing

from spl.core.identity import Identity
from spl.core.manifest import MANIFEST_LIFETIME, federation_manifest
from spl.transport.peer import (
    MAX_ERROR_BYTES,
    MAX_PAGE_BYTES,
    ChangesPage,
    PeerError,
    StreamLagged,
    classify,
    fetch_changes,
    fetch_manifest,
    stream_changes,
)

# Refusing a body means leaving httpx's nested body generators early; trio finalises the inner
# ones later and warns (harmless, and the connection itself is closed at once).
pytestmark = pytest.mark.filterwarnings("ignore:Async generator 'http:ResourceWarning")

THREAD = "th_bounds"
TOKEN = "spl_tok_s3cr3t-peer-token-value"
SLACK = 16 * 1024 * 1024  # what loopback socket buffers can hold beyond what the client read
RECORD = {"act": "PUT", "actor": "did:test:x", "thread": THREAD, "clock": 1, "body": {}}

# -- the hostile peer ------------------------------------------------------------------------------


@dataclass
class Request:
    target: str
    headers: dict[str, str]

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))


class Conn:
    """One accepted connection: write a status line and headers, then body bytes (counted)."""

    def __init__(self, peer: HostilePeer, stream: trio.SocketStream) -> None:
        self.peer, self.stream = peer, stream

    async def head(self, status: int, headers: dict[str, str]) -> None:
        lines = [f"HTTP/1.1 {status} X"] + [f"{name}: {value}" for name, value in headers.items()]
        await self.stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def body(self, data: bytes) -> None:
        await self.stream.send_all(data)
        self.peer.body_bytes += len(data)

    async def chunk(self, data: bytes) -> None:
        """One chunk of a ``transfer-encoding: chunked`` body."""
        await self.stream.send_all(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.peer.body_bytes += len(data)

    async def answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        headers = {"content-type": content_type, "content-length": str(len(body)), "connection": "close"}
        await self.head(status, headers)
        await self.body(body)

    async def open_sse(self) -> None:
        """Start an event stream whose body ends when the connection closes."""
        await self.head(200, {"content-type": "text/event-stream", "connection": "close"})


Respond = Callable[[Request, Conn], Awaitable[None]]


@dataclass
class HostilePeer:
    respond: Respond
    url: str = ""
    requests: list[Request] = field(default_factory=list)
    body_bytes: int = 0  # body bytes the peer managed to hand to its socket
    closed: int = 0  # connections finished (the client hung up, or the answer was complete)
    _closed_event: trio.Event = field(default_factory=trio.Event)

    async def handle(self, stream: trio.SocketStream) -> None:
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
            request_line, *header_lines = head.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
            headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
            request = Request(request_line.split(" ")[1], headers)
            self.requests.append(request)
            await self.respond(request, Conn(self, stream))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client hung up on us: what a bounded client does to a hostile peer
        finally:
            self.closed += 1
            self._closed_event.set()
            self._closed_event = trio.Event()
            await stream.aclose()

    async def wait_closed(self, count: int = 1) -> None:
        while self.closed < count:
            await self._closed_event.wait()


@asynccontextmanager
async def hostile_peer(respond: Respond) -> AsyncIterator[tuple[HostilePeer, httpx.AsyncClient]]:
    """A running hostile peer and a client configured like the federation actor's."""
    peer = HostilePeer(respond)
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, peer.handle, 0, host="127.0.0.1"))
        peer.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        timeout = httpx.Timeout(30.0, connect=5.0)  # as actors/federation.py: 30 s between bytes
        async with httpx.AsyncClient(timeout=timeout) as client:
            yield peer, client
        nursery.cancel_scope.cancel()


def page(records: int = 0, **fields: Any) -> bytes:
    body: dict[str, Any] = {"records": [{"id": f"r{n}", "record": RECORD} for n in range(records)]}
    return json.dumps({**body, **fields}).encode()


def answering(status: int, body: bytes) -> Respond:
    async def respond(request: Request, conn: Conn) -> None:
        await conn.answer(status, body)

    return respond


def assert_safe(error: PeerError) -> None:
    """A message fit for one log line: no control or separator characters, no token."""
    assert all(char.isprintable() for char in error.message), repr(error.message)
    assert TOKEN not in error.message and TOKEN not in str(error)


async def fetch(client: httpx.AsyncClient, url: str, cursor: str = "", **options: Any) -> ChangesPage:
    return await fetch_changes(client, url, {"thread": THREAD}, cursor, token=TOKEN, **options)


# -- opaque cursors --------------------------------------------------------------------------------

FOREIGN = "abc123/Q+=~!%&?#[]:z"  # printable ASCII a query string must carry byte for byte


async def test_a_foreign_opaque_cursor_round_trips_byte_for_byte() -> None:
    async def respond(request: Request, conn: Conn) -> None:
        if "since" not in request.query:
            await conn.answer(200, page(2, next_cursor=FOREIGN, has_more=True, pending=5))
        else:
            assert request.query["since"] == FOREIGN
            await conn.answer(200, page(1, next_cursor="abc124", has_more=False))

    async with hostile_peer(respond) as (peer, client):
        with trio.fail_after(10):
            first = await fetch(client, peer.url)
            assert first.next_cursor == FOREIGN and first.has_more and first.pending == 5
            second = await fetch(client, peer.url, first.next_cursor)
    assert second == ChangesPage([RECORD], "abc124", False, 0)
    assert [request.query.get("since") for request in peer.requests] == [None, FOREIGN]
    assert peer.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert peer.requests[0].headers["accept-encoding"] == "identity"


@pytest.mark.parametrize("missing", [{}, {"next_cursor": None}, {"next_cursor": ""}])
async def test_a_page_without_a_next_cursor_keeps_the_cursor_we_sent(missing: dict[str, Any]) -> None:
    async with hostile_peer(answering(200, page(0, **missing))) as (peer, client):
        with trio.fail_after(10):
            result = await fetch(client, peer.url, "opaque-1")
    assert result.next_cursor == "opaque-1" and result.records == [] and not result.has_more


# -- malformed pages -------------------------------------------------------------------------------

BAD_PAGES = {
    "not json": b"<html>hello</html>",
    "not utf-8": b'{"records": [], "next_cursor": "\xff"}',
    "nested 100k deep": b"[" * 100_000 + b"]" * 100_000,
    "a list": b"[]",
    "no records": b'{"next_cursor": "a"}',
    "more records than asked": page(3),
    "a record that is not an object": b'{"records": [{"record": 5}]}',
    "an entry that is not an object": b'{"records": ["x"]}',
    "a non-ascii cursor": page(0, next_cursor="opaque-ÿ"),
    "a cursor with a space": page(0, next_cursor="a b"),
    "a cursor with a newline": page(0, next_cursor="a\nCRITICAL"),
    "a cursor of 257 bytes": page(0, next_cursor="c" * 257),
    "a numeric cursor": page(0, next_cursor=12),
    "pending true": page(0, pending=True),
    "pending 1e400": b'{"records": [], "pending": 1e400}',
    "pending negative": page(0, pending=-1),
    "pending over 2^63-1": page(0, pending=2**63),
    "pending a string": page(0, pending="5"),
    "has_more a string": page(0, has_more="yes"),
    "has_more 1": page(0, has_more=1),
}


@pytest.mark.parametrize("body", BAD_PAGES.values(), ids=BAD_PAGES.keys())
async def test_a_malformed_page_is_a_parse_error(body: bytes) -> None:
    async with hostile_peer(answering(200, body)) as (peer, client):
        with trio.fail_after(10), pytest.raises(PeerError) as caught:
            await fetch(client, peer.url, limit=2)
    assert caught.value.code == "PARSE_ERROR", caught.value
    assert_safe(caught.value)


async def test_the_limit_we_asked_for_is_allowed_exactly() -> None:
    async with hostile_peer(answering(200, page(2, pending=2**63 - 1))) as (peer, client):
        with trio.fail_after(10):
            result = await fetch(client, peer.url, limit=2)
    assert len(result.records) == 2 and result.pending == 2**63 - 1
    assert peer.requests[0].query["limit"] == "2"


# -- size bounds -----------------------------------------------------------------------------------


async def endless(conn: Conn, *, chunked: bool) -> None:
    zeros = b"0" * 65536
    while True:
        await (conn.chunk(zeros) if chunked else conn.body(zeros))


async def test_a_body_announced_as_one_gib_is_refused_before_reading_it() -> None:
    async def respond(request: Request, conn: Conn) -> None:
        await conn.head(200, {"content-type": "application/json", "content-length": str(2**30)})
        await endless(conn, chunked=False)

    async with hostile_peer(respond) as (peer, client):
        with trio.fail_after(20):
            with pytest.raises(PeerError) as caught:
                await fetch(client, peer.url)
            await peer.wait_closed()
    assert caught.value.code == "PARSE_ERROR" and "larger than" in caught.value.message
    assert peer.body_bytes < SLACK, peer.body_bytes


async def test_an_endless_body_is_cut_off_at_the_cap() -> None:
    async def respond(request: Request, conn: Conn) -> None:
        await conn.head(200, {"content-type": "application/json", "transfer-encoding": "chunked"})
        await endless(conn, chunked=True)

    async with hostile_peer(respond) as (peer, client):
        with trio.fail_after(60):
            with pytest.raises(PeerError) as caught:
                await fetch(client, peer.url)
            await peer.wait_closed()
    assert caught.value.code == "PARSE_ERROR"
    assert caught.value.message.startswith(f"peer page larger than {MAX_PAGE_BYTES} bytes")
    # The client read just past the cap, then hung up: the peer got no further than its buffers.
    assert MAX_PAGE_BYTES < peer.body_bytes < MAX_PAGE_BYTES + SLACK, peer.body_bytes


async def test_the_cap_is_a_keyword_and_a_page_at_it_is_accepted() -> None:
    body = page(1)
    async with hostile_peer(answering(200, body)) as (peer, client):
        with trio.fail_after(10):
            assert len((await fetch(client, peer.url, max_bytes=len(body))).records) == 1
            with pytest.raises(PeerError, match="larger than"):
                await fetch(client, peer.url, max_bytes=len(body) - 1)


async def test_a_compressed_answer_is_refused() -> None:
    async def respond(request: Request, conn: Conn) -> None:
        body = b"\x28\xb5\x2f\xfd" + b"\x00" * 16  # looks like zstd; never decoded
        headers = {"content-encoding": "zstd", "content-length": str(len(body)), "connection": "close"}
        await conn.head(200, headers)
        await conn.body(body)

    async with hostile_peer(respond) as (peer, client):
        with trio.fail_after(10), pytest.raises(PeerError) as caught:
            await fetch(client, peer.url)
    assert caught.value.code == "PARSE_ERROR" and "compressed" in caught.value.message


# -- deadlines (virtual time) ----------------------------------------------------------------------


async def test_a_peer_dripping_a_byte_every_29_seconds_times_out_at_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    body = page(1)

    async def respond(request: Request, conn: Conn) -> None:
        await conn.head(200, {"content-type": "application/json", "content-length": str(len(body))})
        for byte in body:
            await conn.body(bytes([byte]))
            await trio.sleep(29)  # under httpx's 30 s read timeout: only a total deadline catches it

    async with hostile_peer(respond) as (peer, client):
        start = trio.current_time()
        with trio.fail_after(3600), pytest.raises(PeerError) as caught:
            await fetch(client, peer.url, deadline=60.0)
        assert caught.value.code == "TIMEOUT"
        assert trio.current_time() - start == pytest.approx(60.0, abs=0.5)
        assert 0 < peer.body_bytes < len(body)


async def test_a_peer_that_never_finishes_its_headers_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def respond(request: Request, conn: Conn) -> None:
        await conn.stream.send_all(b"HTTP/1.1 200 OK\r\n")
        while True:  # one more header line every 29 s, never the blank line that ends them
            await conn.stream.send_all(b"x-drip: 1\r\n")
            await trio.sleep(29)

    async with hostile_peer(respond) as (peer, client):
        start = trio.current_time()
        with trio.fail_after(3600), pytest.raises(PeerError) as caught:
            await fetch(client, peer.url, deadline=45.0)
        assert caught.value.code == "TIMEOUT" and trio.current_time() - start == pytest.approx(45.0, abs=0.5)


async def test_a_long_poll_may_hold_the_request_for_its_wait_on_top_of_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def respond(request: Request, conn: Conn) -> None:
        assert request.query["feed"] == "longpoll" and request.query["timeout"] == "30.0"
        await trio.sleep(25)  # longer than the deadline, shorter than deadline + long-poll wait
        await conn.answer(200, page(1, next_cursor="n1"))

    async with hostile_peer(respond) as (peer, client):
        with trio.fail_after(3600):
            result = await fetch(client, peer.url, longpoll=30.0, deadline=5.0)
    assert result.next_cursor == "n1"


# -- error bodies ----------------------------------------------------------------------------------

FORGED = f"denied\n2026-01-01 00:00:00 CRITICAL spl: admin token is {TOKEN}\r\x1b[31mred\x1b[0m\u2028\u202e"


@pytest.mark.parametrize(
    ("status", "body", "code"),
    [
        (500, json.dumps({"code": "BOOM\n\x1b[31mCRITICAL", "message": FORGED}).encode(), "HTTP_5XX"),
        (401, json.dumps({"code": "UNAUTHORIZED", "message": FORGED}).encode(), "HTTP_4XX"),
        (503, FORGED.encode(), "HTTP_5XX"),
        (404, b"\xff\xfe\x00" + FORGED.encode("utf-16"), "HTTP_4XX"),
        (400, json.dumps({"code": ["x"] * 100, "message": {"nested": TOKEN}}).encode(), "HTTP_4XX"),
    ],
)
async def test_error_bodies_are_escaped_and_never_carry_the_token(status: int, body: bytes, code: str) -> None:
    async with hostile_peer(answering(status, body)) as (peer, client):
        with trio.fail_after(10), pytest.raises(PeerError) as caught:
            await fetch(client, peer.url)
    error = caught.value
    assert error.code == code and error.message.startswith(f"peer answered {status}")
    assert_safe(error)
    if b"\x1b" in body and b"\xff" not in body:
        assert "\\x1b" in error.message  # escaped, not dropped: the operator sees what was sent
    if status == 401:
        assert "--token" in error.message  # the hint names the fix


async def test_an_endless_error_body_is_read_only_up_to_a_few_kib() -> None:
    async def respond(request: Request, conn: Conn) -> None:
        await conn.head(502, {"content-type": "text/plain", "transfer-encoding": "chunked"})
        await conn.chunk(b"\x1b[2J" * 10)
        await endless(conn, chunked=True)

    async with hostile_peer(respond) as (peer, client):
        with trio.fail_after(20):
            with pytest.raises(PeerError) as caught:
                await fetch(client, peer.url)
            await peer.wait_closed()
    assert caught.value.code == "HTTP_5XX" and "\\x1b[2J" in caught.value.message
    assert_safe(caught.value)
    assert len(caught.value.message) < 400 and peer.body_bytes < MAX_ERROR_BYTES + SLACK


async def test_a_redirect_is_not_followed() -> None:
    async def respond(request: Request, conn: Conn) -> None:
        await conn.head(302, {"location": "http://attacker.invalid/steal", "content-length": "0"})

    async with hostile_peer(respond) as (peer, client):
        with trio.fail_after(10), pytest.raises(PeerError) as caught:
            await fetch(client, peer.url)
    assert caught.value.code == "PARSE_ERROR" and "302" in caught.value.message and len(peer.requests) == 1


# -- the continuous feed ---------------------------------------------------------------------------


def record_event(event_id: str | None, record: Any = RECORD) -> bytes:
    id_line = f"id: {event_id}\n" if event_id is not None else ""
    return f"event: record.created\n{id_line}data: {json.dumps({'id': 'r', 'record': record})}\n\n".encode()


HEARTBEAT = b"event: heartbeat\ndata: {}\n\n"


async def follow(
    client: httpx.AsyncClient, url: str, cursor: str = "", **options: Any
) -> tuple[PeerError, list[list[tuple[str, dict[str, Any]]]]]:
    """Run stream_changes to its end; the PeerError it ended with and every batch it handed over."""
    batches: list[list[tuple[str, dict[str, Any]]]] = []

    async def on_events(batch: list[tuple[str, dict[str, Any]]]) -> None:
        batches.append(batch)

    with pytest.raises(PeerError) as caught:
        await stream_changes(client, url, {"thread": THREAD}, cursor, token=TOKEN, on_events=on_events, **options)
    return caught.value, batches


def sse(*frames: bytes) -> Respond:
    async def respond(request: Request, conn: Conn) -> None:
        await conn.open_sse()
        for frame in frames:
            await conn.body(frame)

    return respond


async def test_a_stream_id_beyond_2_63_is_just_an_opaque_cursor() -> None:
    huge = "99999999999999999999999"
    async with hostile_peer(sse(record_event(huge), HEARTBEAT, record_event("opaque.cursor-2"))) as (peer, client):
        with trio.fail_after(10):
            error, batches = await follow(client, peer.url, "s1.41")
    assert error.code == "CONNECT_REFUSED" and "closed the stream" in error.message
    assert [cursor for batch in batches for cursor, _ in batch] == [huge, "opaque.cursor-2"]
    assert all(record == RECORD for batch in batches for _, record in batch)
    assert peer.requests[0].query == {"thread": THREAD, "feed": "continuous", "since": "s1.41"}


async def test_a_stream_from_the_start_sends_no_since() -> None:
    async with hostile_peer(sse(HEARTBEAT)) as (peer, client):
        with trio.fail_after(10):
            error, batches = await follow(client, peer.url, "")
    assert "since" not in peer.requests[0].query and batches == [[]] and error.code == "CONNECT_REFUSED"


BAD_EVENTS = {
    "no id": record_event(None),
    "an empty id": record_event(""),
    "a non-ascii id": record_event("opaque-ÿ"),
    "an id of 257 bytes": record_event("i" * 257),
    "an id with a control character": b"event: record.created\nid: a\x1bb\ndata: {}\n\n",
    "data that is not json": b"event: record.created\nid: 1\ndata: {nope\n\n",
    "data nested 100k deep": b"event: record.created\nid: 1\ndata: " + b"[" * 100_000 + b"\n\n",
    "a record that is not an object": record_event("1", record=[1, 2]),
}


@pytest.mark.parametrize("frame", BAD_EVENTS.values(), ids=BAD_EVENTS.keys())
async def test_a_malformed_record_event_is_a_parse_error(frame: bytes) -> None:
    async with hostile_peer(sse(record_event("1"), frame)) as (peer, client):
        with trio.fail_after(10):
            error, batches = await follow(client, peer.url)
    assert error.code == "PARSE_ERROR", error
    assert_safe(error)
    assert [cursor for batch in batches for cursor, _ in batch] in ([], ["1"])  # nothing after the bad event


async def test_an_overlong_sse_line_is_cut_off_at_the_limit() -> None:
    async def respond(request: Request, conn: Conn) -> None:
        await conn.open_sse()
        await conn.body(b"event: record.created\nid: 1\ndata: ")
        await endless(conn, chunked=False)  # one data line that never ends

    async with hostile_peer(respond) as (peer, client):
        with trio.fail_after(20):
            error, _ = await follow(client, peer.url, max_line=1024 * 1024)
            await peer.wait_closed()
    assert error.code == "PARSE_ERROR" and "longer than" in error.message
    assert peer.body_bytes < 1024 * 1024 + SLACK


async def test_a_silent_stream_times_out_and_heartbeats_keep_it_alive(autojump_clock: trio.testing.MockClock) -> None:
    async def respond(request: Request, conn: Conn) -> None:
        await conn.open_sse()
        for _ in range(4):
            await conn.body(HEARTBEAT)
            await trio.sleep(25)  # under the frame deadline (and httpx's 30 s read timeout): alive
        for byte in HEARTBEAT[:-1]:  # then a frame that never completes, a byte every 10 s
            await conn.body(bytes([byte]))
            await trio.sleep(10)
        await trio.sleep_forever()

    async with hostile_peer(respond) as (peer, client):
        start = trio.current_time()
        with trio.fail_after(3600):
            error, batches = await follow(client, peer.url, frame_deadline=90.0)
        # The last complete event came at start + 75; a partial frame is not a sign of life.
        assert error.code == "TIMEOUT" and "no complete event" in error.message
        assert trio.current_time() - start == pytest.approx(75 + 90, abs=0.5)
    assert batches == [[]] * 4


async def test_a_peer_that_never_opens_its_stream_times_out(autojump_clock: trio.testing.MockClock) -> None:
    async def respond(request: Request, conn: Conn) -> None:
        await trio.sleep_forever()

    async with hostile_peer(respond) as (peer, client):
        start = trio.current_time()
        with trio.fail_after(3600):
            error, batches = await follow(client, peer.url, frame_deadline=20.0)
        assert error.code == "TIMEOUT" and "open" in error.message
        assert trio.current_time() - start == pytest.approx(20.0, abs=0.5) and batches == []


async def test_time_spent_committing_is_not_the_peers_silence(autojump_clock: trio.testing.MockClock) -> None:
    async with hostile_peer(sse(record_event("1"))) as (peer, client):

        async def slow_commit(batch: list[tuple[str, dict[str, Any]]]) -> None:
            await trio.sleep(500)  # far beyond the frame deadline

        with trio.fail_after(3600), pytest.raises(PeerError) as caught:
            await stream_changes(
                client, peer.url, {"thread": THREAD}, "", token=TOKEN, on_events=slow_commit, frame_deadline=9
            )
    assert caught.value.code == "CONNECT_REFUSED"  # the stream ended, it did not time out


async def test_stream_errors_are_escaped_and_lagging_is_recognised() -> None:
    forged = json.dumps({"code": "boom", "message": FORGED})
    async with hostile_peer(sse(f"event: error\ndata: {forged}\n\n".encode())) as (peer, client):
        with trio.fail_after(10):
            error, _ = await follow(client, peer.url)
    assert error.code == "HTTP_5XX" and "\\x1b[31m" in error.message
    assert_safe(error)
    lagged = b'event: error\ndata: {"code":"lagged","message":"too slow"}\n\n'
    async with hostile_peer(sse(lagged)) as (peer, client):
        with trio.fail_after(10):
            error, _ = await follow(client, peer.url)
    assert isinstance(error, StreamLagged)


async def test_a_stream_refused_with_401_says_so_without_the_token() -> None:
    body = json.dumps({"code": "UNAUTHORIZED", "message": f"bad token {TOKEN}\n"}).encode()
    async with hostile_peer(answering(401, body)) as (peer, client):
        with trio.fail_after(10):
            error, batches = await follow(client, peer.url)
    assert error.code == "HTTP_4XX" and "<token>" in error.message and batches == []
    assert_safe(error)


# -- the manifest ----------------------------------------------------------------------------------


def envelope(manifest: dict[str, Any]) -> bytes:
    return json.dumps({"object": "discovery", "federation_manifest": manifest}).encode()


async def get_manifest(body: bytes, expected: str, **options: Any) -> dict[str, Any]:
    async def respond(request: Request, conn: Conn) -> None:
        assert request.target == "/.well-known/syncropel" and "authorization" not in request.headers
        await conn.answer(200, body)

    async with hostile_peer(respond) as (peer, client):
        with trio.fail_after(10):
            try:
                return await fetch_manifest(client, peer.url, expected_did=expected, **options)
            except PeerError as error:
                refused = error  # raised out here, not through the peer's nursery (an ExceptionGroup)
    raise refused


async def test_fetch_manifest_accepts_a_real_signed_manifest() -> None:
    identity = Identity.generate()
    signed = federation_manifest(identity, endpoint="http://peer.example:9100")
    assert await get_manifest(envelope(signed), identity.did) == signed
    assert await get_manifest(json.dumps(signed).encode(), identity.did) == signed  # a bare manifest too


async def test_fetch_manifest_refuses_another_daemons_did() -> None:
    impostor, expected = Identity.generate(), Identity.generate()
    with pytest.raises(PeerError) as caught:
        await get_manifest(envelope(federation_manifest(impostor, endpoint="http://x")), expected.did)
    assert caught.value.code == "PEER_DID_MISMATCH"
    assert impostor.did in caught.value.message and expected.did in caught.value.message


async def test_fetch_manifest_refuses_a_tampered_manifest() -> None:
    identity = Identity.generate()
    tampered = federation_manifest(identity, endpoint="http://peer.example")
    tampered["federation"]["sync_change_endpoint"] = "http://attacker.example/v1/sync/changes"
    with pytest.raises(PeerError) as caught:
        await get_manifest(envelope(tampered), identity.did)
    assert caught.value.code == "MANIFEST_INVALID"


async def test_fetch_manifest_refuses_an_expired_manifest() -> None:
    identity = Identity.generate()
    old = federation_manifest(identity, endpoint="http://x", now=time.time() - MANIFEST_LIFETIME - 60)
    with pytest.raises(PeerError) as caught:
        await get_manifest(envelope(old), identity.did)
    assert caught.value.code == "MANIFEST_INVALID" and "expired" in caught.value.message
    fresh = federation_manifest(identity, endpoint="http://x", now=1_000_000.0)
    with pytest.raises(PeerError, match="expired"):
        await get_manifest(envelope(fresh), identity.did, now=1_000_000.0 + MANIFEST_LIFETIME)
    assert await get_manifest(envelope(fresh), identity.did, now=1_000_000.0 + MANIFEST_LIFETIME - 1) == fresh


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"object": "discovery"}',
        b'{"object": "discovery", "federation_manifest": {"daemon": {"did": "did:key:z6Mk"}}}',
        json.dumps(
            {"federation_manifest": {"daemon": {"did": "x"}, "signature": {"alg": "Ed25519", "signature": "!"}}}
        ).encode(),
    ],
)
async def test_fetch_manifest_refuses_what_is_not_a_signed_manifest(body: bytes) -> None:
    with pytest.raises(PeerError) as caught:
        await get_manifest(body, Identity.generate().did)
    assert caught.value.code == "MANIFEST_INVALID"
    assert_safe(caught.value)


async def test_fetch_manifest_bounds_the_body() -> None:
    with pytest.raises(PeerError) as caught:
        await get_manifest(b" " * (256 * 1024 + 1), Identity.generate().did)
    assert caught.value.code == "PARSE_ERROR" and "larger than" in caught.value.message


# -- classify --------------------------------------------------------------------------------------


class Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no")


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ConnectError("line\nCRITICAL \x1b[31m"),
        httpx.RemoteProtocolError("illegal \x1b[31m status\nline"),
        httpx.ReadError("reset\r\nforged"),
        trio.TooSlowError(),
        OSError("refused\n"),
    ],
)
def test_classify_turns_transport_failures_into_a_safe_peer_error(exc: BaseException) -> None:
    error = classify(exc)
    assert isinstance(error, PeerError) and error.code in {"CONNECT_REFUSED", "TIMEOUT", "PARSE_ERROR"}
    assert_safe(error)


@pytest.mark.parametrize("exc", [Unprintable(), ValueError("Expecting value"), KeyError("x"), KeyboardInterrupt()])
def test_classify_re_raises_what_is_not_a_transport_failure(exc: BaseException) -> None:
    """A bug in our code is not CONNECT_REFUSED: it propagates as itself."""
    with pytest.raises(type(exc)):
        classify(exc)
