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


def parse_cursor(value: str | None) -> int | None:
    """A ``Last-Event-ID`` as a sequence number; None when absent or garbage."""
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or len(text) > 19:
        return None
    return int(text)
