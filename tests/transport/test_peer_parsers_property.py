"""Property tests of everything that parses bytes from a peer: SSE frames, change pages, cursors, log text.

Whatever a peer sends, a parser either returns something inside the documented bounds or
refuses with the documented error: never another exception, never a value nobody checked.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spl.core.text import printable
from spl.transport.peer import (
    MAX_CURSOR_BYTES,
    MAX_PENDING,
    PeerError,
    is_peer_cursor,
    parse_changes_page,
    stream_changes,
)
from spl.transport.sse import SseParser

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- SSE -------------------------------------------------------------------------------------------

# Pieces that make SSE-shaped streams likely, plus raw bytes for everything else.
SSE_PIECES = st.sampled_from(
    [b"\n", b"\r", b"\r\n", b"\n\n", b"data:", b"data: ", b"id: ", b"event: ", b"event:heartbeat", b":", b" "]
    + [b"x", b"7", b"{}", b"\xff", b"\xe2\x80", b"\xe2\x80\xa8", b"\x00", b"\x1b[31m"]
)
SSE_STREAMS = st.one_of(st.lists(SSE_PIECES, max_size=60).map(b"".join), st.binary(max_size=300))

Outcome = list[tuple[str, str | None, str]] | str


def run_parser(chunks: list[bytes], max_line: int) -> Outcome:
    """Every event from feeding ``chunks`` in order, or "refused" if the parser raised ValueError."""
    parser = SseParser(max_line=max_line)
    events: list[tuple[str, str | None, str]] = []
    try:
        for chunk in chunks:
            events.extend((event.event, event.id, event.data) for event in parser.feed(chunk))
    except ValueError:
        return "refused"
    return events


def reference(stream: bytes) -> Outcome:
    """The SSE rules applied to the whole stream at once: an independent, non-incremental oracle."""
    lines = re.split(rb"\r\n|\r|\n", stream)
    lines.pop()  # the unfinished last line ("" when the stream ends with a line end)
    events: list[tuple[str, str | None, str]] = []
    name, ident, data = "", None, list[str]()
    for line in lines:
        if not line:
            if data:
                events.append((name or "message", ident, "\n".join(data)))
            name, ident, data = "", None, []
            continue
        if line.startswith(b":"):
            continue
        field, _, value = line.decode("utf-8", errors="replace").partition(":")
        value = value.removeprefix(" ")
        if field == "data":
            data.append(value)
        elif field == "event":
            name = value
        elif field == "id":
            ident = value
    return events


@SETTINGS
@given(stream=SSE_STREAMS, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_sse_parser_gives_the_same_events_however_the_bytes_are_split(stream: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    chunks = [stream[start:end] for start, end in zip(points, points[1:], strict=False)]
    unbounded = 1 << 20
    whole = run_parser([stream], unbounded)
    assert run_parser(chunks, unbounded) == whole == reference(stream)
    # One byte at a time, the hardest split (a CRLF is always cut in two).
    assert run_parser([stream[i : i + 1] for i in range(len(stream))], unbounded) == whole


@SETTINGS
@given(stream=SSE_STREAMS, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_sse_parser_bounds_refuse_the_same_way_however_the_bytes_are_split(stream: bytes, cuts: list[int]) -> None:
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    chunks = [stream[start:end] for start, end in zip(points, points[1:], strict=False)]
    longest = max(len(line) for line in re.split(rb"\r\n|\r|\n", stream))
    outcome = run_parser(chunks, max_line=8)
    assert outcome == run_parser([stream], max_line=8)
    assert (outcome == "refused") == (longest > 8)


# -- change pages ----------------------------------------------------------------------------------

JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
CURSORS = st.one_of(
    st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=MAX_CURSOR_BYTES + 2),
    st.text(max_size=10),
    JSON_SCALARS,
)
ENTRIES = st.one_of(st.fixed_dictionaries({"id": st.text(max_size=5), "record": JSON_VALUES}), JSON_VALUES)
PAGES = st.fixed_dictionaries(
    {"records": st.one_of(st.lists(ENTRIES, max_size=6), JSON_VALUES)},
    optional={"next_cursor": CURSORS, "has_more": JSON_SCALARS, "pending": JSON_SCALARS},
)
BODIES = st.one_of(
    PAGES.map(lambda page: json.dumps(page).encode()),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=200),
    st.just(b'{"records": [], "pending": 1e400}'),
    st.just(b"[" * 50_000),
)


def assert_refused(error: PeerError) -> None:
    assert error.code == "PARSE_ERROR"
    assert all(char.isprintable() for char in error.message)


@SETTINGS
@given(body=BODIES, sent=st.sampled_from(["", "s1.9", "opaque"]), limit=st.integers(min_value=0, max_value=5))
def test_a_page_is_either_refused_or_within_bounds(body: bytes, sent: str, limit: int) -> None:
    try:
        page = parse_changes_page(body, sent_cursor=sent, limit=limit)
    except PeerError as error:
        assert_refused(error)
        return
    assert isinstance(page.records, list) and len(page.records) <= limit
    assert all(isinstance(record, dict) for record in page.records)
    assert page.next_cursor == sent or is_peer_cursor(page.next_cursor)
    assert isinstance(page.has_more, bool)
    assert type(page.pending) is int and 0 <= page.pending <= MAX_PENDING
    payload = json.loads(body)
    assert page.records == [item["record"] for item in payload["records"]]  # nothing invented, nothing lost
    if payload.get("next_cursor"):
        assert page.next_cursor == payload["next_cursor"]  # kept exactly as sent


# -- cursors ---------------------------------------------------------------------------------------


def is_printable_ascii(text: str) -> bool:
    return all(0x21 <= ord(char) <= 0x7E for char in text)


@SETTINGS
@given(
    value=st.one_of(
        st.text(max_size=MAX_CURSOR_BYTES + 5),
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7F), max_size=MAX_CURSOR_BYTES + 5),
        JSON_SCALARS,
        st.binary(max_size=10),
    )
)
def test_cursor_validation_accepts_exactly_printable_ascii_up_to_256_bytes(value: object) -> None:
    expected = (
        isinstance(value, str)
        and 1 <= len(value.encode("utf-8", errors="surrogatepass")) <= MAX_CURSOR_BYTES
        and is_printable_ascii(value)
    )
    assert is_peer_cursor(value) == expected


def test_cursor_validation_edges() -> None:
    assert is_peer_cursor("!" * MAX_CURSOR_BYTES) and is_peer_cursor("~") and is_peer_cursor("99999999999999999999999")
    for bad in ("", " ", "a b", "!" * (MAX_CURSOR_BYTES + 1), "\x7f", "é", "a\n", "ÿ", None, 5, b"abc"):
        assert not is_peer_cursor(bad), bad


# -- the continuous feed end to end (in memory) ----------------------------------------------------


class Chunks(httpx.AsyncByteStream):
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk


RECORD_FRAMES = st.builds(
    lambda ident, record: f"event: record.created\nid: {ident}\ndata: {json.dumps({'record': record})}\n\n".encode(),
    CURSORS,
    JSON_VALUES,
)
FEEDS = st.lists(st.one_of(RECORD_FRAMES, SSE_STREAMS, st.just(b"event: heartbeat\ndata: {}\n\n")), max_size=8)


@pytest.mark.filterwarnings("ignore:Async generator 'http:ResourceWarning")
@SETTINGS
@given(frames=FEEDS, cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=6))
def test_a_continuous_feed_hands_over_only_checked_records_and_ends_in_a_peer_error(
    frames: list[bytes], cuts: list[int]
) -> None:
    stream = b"".join(frames)
    points = sorted({0, len(stream), *(cut % (len(stream) + 1) for cut in cuts)})
    chunks = [stream[start:end] for start, end in zip(points, points[1:], strict=False)]
    handed: list[tuple[str, dict[str, Any]]] = []

    async def on_events(batch: list[tuple[str, dict[str, Any]]]) -> None:
        handed.extend(batch)

    def peer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Chunks(chunks))

    async def main() -> PeerError:
        async with httpx.AsyncClient(transport=httpx.MockTransport(peer)) as client:
            try:
                await stream_changes(
                    client, "http://peer.test", {"thread": "th_x"}, "", token="t0k", on_events=on_events
                )
            except PeerError as error:
                return error
        raise AssertionError("stream_changes returned normally")

    error = trio.run(main)
    assert error.code in {"PARSE_ERROR", "CONNECT_REFUSED", "HTTP_5XX", "LAGGED"}
    assert all(char.isprintable() for char in error.message)
    assert all(is_peer_cursor(cursor) and isinstance(record, dict) for cursor, record in handed)


# -- printable -------------------------------------------------------------------------------------

LINE_BREAKERS = set("\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


@SETTINGS
@given(value=st.one_of(st.text(), JSON_VALUES, st.binary(max_size=30)), limit=st.integers(min_value=0, max_value=300))
def test_printable_is_one_safe_line_within_the_limit(value: object, limit: int) -> None:
    text = printable(value, limit)
    assert len(text) <= limit + 1
    assert all(char.isprintable() for char in text)  # no C0/C1/DEL, surrogates, bidi or format characters
    assert not LINE_BREAKERS & set(text) and text.splitlines() in ([], [text])
    if isinstance(value, str) and value.isprintable() and len(value) <= limit:
        assert text == value  # ordinary text is left alone


def test_printable_escapes_what_could_forge_a_line() -> None:
    assert printable("a\nCRITICAL\r\x1b[31m\x7f\x85\u2028\u202e\ud800") == (
        "a\\x0aCRITICAL\\x0d\\x1b[31m\\x7f\\x85\\u2028\\u202e\\ud800"
    )
    assert printable("x" * 10, 4) == "xxxx…" and printable("\n" * 3, 9) == "\\x0a\\x0a…"
    assert printable(b"\x1b") == "b'\\x1b'" and printable(None) == "None"


def test_empty_data_lines_count_against_the_frame_limit() -> None:
    # Attacker review: `data:` lines with nothing after them used to add entries for free,
    # so one frame of them grew without bound (250 MiB of them: 43.7 M list entries).
    parser = SseParser(max_frame=1000, max_line=100)
    with pytest.raises(ValueError):
        for _ in range(2000):
            parser.feed(b"data:\n")


def test_a_page_that_would_parse_into_millions_of_objects_is_refused_before_parsing() -> None:
    # Attacker review: 64 MiB of `{},{},…` used to parse into 21 M dicts (RSS 166 MB → 1.7 GB).
    record = {"id": "x", "thread": "th", "body": {"a": [{}] * 1_100_000}}
    body = json.dumps({"records": [{"id": "x", "record": record}], "next_cursor": "c"}).encode()
    with pytest.raises(PeerError) as caught:
        parse_changes_page(body, sent_cursor="", limit=10)
    assert caught.value.code == "PARSE_ERROR" and "objects/arrays" in caught.value.message
