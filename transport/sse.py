"""Server-sent event framing for thread watches (spec §3.7, §15.11). Pure functions.

Every frame ends with a blank line and carries a ``data:`` line (the SDK discards frames
without one); only ``record.created`` frames carry an ``id:`` — the record's sequence —
so heartbeats never move the client's cursor.
"""

from __future__ import annotations

import json

from spl.kernel.store import StoredRecord

__all__ = ["error_frame", "heartbeat_frame", "parse_cursor", "record_frame", "shutdown_frame"]

HEARTBEAT = b"event: heartbeat\ndata: {}\n\n"


def record_frame(record: StoredRecord) -> bytes:
    # record.json is ASCII-only already (kernel.store.stored_json), so no line separator
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


class SseParser:
    """Incremental SSE parser (sans-I/O): feed bytes, get complete events.

    Frames end with a blank line (``\\n\\n`` or ``\\r\\n\\r\\n``); a frame without a ``data:``
    line is dropped, as the SDK does; lines starting with ``:`` are comments.
    """

    def __init__(self, max_frame: int = 16 * 1024 * 1024) -> None:
        self._buffer = b""
        self._max_frame = max_frame

    def feed(self, chunk: bytes) -> list[SseEvent]:
        # Normalise CRLF on the whole buffer, so a CRLF split across two chunks is still seen.
        self._buffer = (self._buffer + chunk).replace(b"\r\n", b"\n")
        events: list[SseEvent] = []
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                if len(self._buffer) > self._max_frame:
                    raise ValueError("SSE frame larger than the limit")
                return events
            frame, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            event = self._parse(frame.decode("utf-8", errors="replace"))
            if event is not None:
                events.append(event)

    @staticmethod
    def _parse(frame: str) -> SseEvent | None:
        name, ident, data = "message", None, []
        for line in frame.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "id":
                ident = value
            elif field == "data":
                data.append(value)
        return SseEvent(name, ident, "\n".join(data)) if data else None
