"""Server-sent event framing for thread watches (spec §3.7, §15.11), and the parser that reads a peer's. No I/O.

Every frame ends with a blank line and carries a ``data:`` line (the SDK discards frames
without one); only ``record.created`` frames carry an ``id:`` — the record's sequence —
so heartbeats never move the client's cursor. :class:`SseParser` reads the other way, a
peer's continuous feed, with bounds on what the peer can make it hold.
"""

from __future__ import annotations

import json

from spl.core.stored import StoredRecord

__all__ = [
    "MAX_FRAME",
    "MAX_LINE",
    "SseEvent",
    "SseParser",
    "error_frame",
    "heartbeat_frame",
    "parse_cursor",
    "record_frame",
    "shutdown_frame",
]

HEARTBEAT = b"event: heartbeat\ndata: {}\n\n"


def record_frame(record: StoredRecord) -> bytes:
    # record.json is ASCII-only already (core.stored.stored_json), so no line separator
    # can appear inside the data line.
    return f'event: record.created\nid: {record.seq}\ndata: {{"id":"{record.id}","record":{record.json}}}\n\n'.encode(
        "ascii"
    )


def heartbeat_frame() -> bytes:
    return HEARTBEAT


def shutdown_frame(retry_after_ms: int = 200) -> bytes:
    return f'event: server_shutdown\ndata: {{"retry_after_ms":{int(retry_after_ms)}}}\n\n'.encode("ascii")


def error_frame(code: str, message: str) -> bytes:
    data = json.dumps({"code": code, "message": message}, ensure_ascii=True, separators=(",", ":"))
    return f"event: error\ndata: {data}\n\n".encode("ascii")


MAX_CURSOR = 2**63 - 1  # sequences are SQLite integers


def parse_cursor(value: str | None) -> int | None:
    """A ``Last-Event-ID`` as a sequence number; None when absent or garbage.

    Only ASCII digits count (``str.isdigit`` also accepts e.g. ``²``, which ``int`` refuses),
    and a number beyond the SQLite integer range is garbage too, not an overflow mid-stream.
    """
    if value is None:
        return None
    text = value.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        return None
    cursor = int(text)
    return cursor if cursor <= MAX_CURSOR else None


class SseEvent:
    """One parsed server-sent event."""

    __slots__ = ("data", "event", "id")

    def __init__(self, event: str, id: str | None, data: str) -> None:
        self.event, self.id, self.data = event, id, data


MAX_LINE = 8 * 1024 * 1024  # a 1 MiB record, \uXXXX-escaped, fits in one data line
MAX_FRAME = 16 * 1024 * 1024


class SseParser:
    """Incremental SSE parser (sans-I/O): feed bytes, get complete events.

    Lines end with ``\\n``, ``\\r\\n`` or a lone ``\\r`` (the SSE specification allows all
    three), a blank line ends a frame, a frame without a ``data:`` line is dropped (as the SDK
    does), lines starting with ``:`` are comments. Unlike the browser's ``EventSource``, an
    ``id:`` belongs to its own frame only: a frame without one has ``id=None``, so a heartbeat
    never moves a cursor.

    The bytes come from a peer, so the parser must stay cheap and bounded whatever they are.
    Each chunk is looked at once: only the unfinished last line is carried over to the next
    call, never re-scanned text. A line longer than ``max_line`` bytes, or a frame whose data
    lines add up to more than ``max_frame`` bytes, raises :class:`ValueError`; so the memory
    held between calls stays below about ``max_line + max_frame``. After a ValueError the
    parser must be dropped. The events are the same however the bytes are split into chunks.
    """

    def __init__(self, max_frame: int = MAX_FRAME, *, max_line: int = MAX_LINE) -> None:
        self._max_frame = max_frame
        # A data line longer than a whole frame could never be accepted: fail as soon as it is seen.
        self._max_line = min(max_line, max_frame)
        self._partial = bytearray()  # the unfinished last line, without a line end
        self._skip_lf = False  # the last chunk ended in "\r": a "\n" opening the next one completes a CRLF
        # The frame being read.
        self._name = ""
        self._id: str | None = None
        self._data: list[str] = []
        self._data_bytes = 0

    def feed(self, chunk: bytes) -> list[SseEvent]:
        """The events that ``chunk`` completes; raises ValueError when a bound is exceeded."""
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk.startswith(b"\n"):
                chunk = chunk[1:]
        if b"\r" in chunk:
            # Every line end becomes "\n". A "\r" ending the chunk ends its line now; if the
            # next chunk starts with "\n", that "\n" is the rest of this CRLF and is skipped.
            self._skip_lf = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        unfinished = lines.pop()
        if lines and self._partial:
            lines[0] = bytes(self._partial) + lines[0]
            self._partial.clear()
        events: list[SseEvent] = []
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        self._partial += unfinished
        if len(self._partial) > self._max_line:
            raise ValueError(f"SSE line longer than {self._max_line} bytes")
        return events

    def _line(self, line: bytes) -> SseEvent | None:
        """Apply one complete line to the frame being read; the event, when it ends the frame."""
        if not line:
            event = SseEvent(self._name or "message", self._id, "\n".join(self._data)) if self._data else None
            self._name, self._id, self._data, self._data_bytes = "", None, [], 0
            return event
        if len(line) > self._max_line:
            raise ValueError(f"SSE line longer than {self._max_line} bytes")
        if line.startswith(b":"):
            return None  # a comment
        field, _, raw = line.partition(b":")
        if raw.startswith(b" "):
            raw = raw[1:]
        # Decoding line by line is safe: "\r" and "\n" never occur inside a UTF-8 sequence.
        if field == b"data":
            self._data_bytes += len(raw) + 1  # + the joining newline: empty data lines cost too
            if self._data_bytes > self._max_frame:
                raise ValueError(f"SSE frame larger than {self._max_frame} bytes")
            self._data.append(raw.decode("utf-8", errors="replace"))
        elif field == b"event":
            self._name = raw.decode("utf-8", errors="replace")
        elif field == b"id":
            self._id = raw.decode("utf-8", errors="replace")
        return None
