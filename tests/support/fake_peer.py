"""A scripted peer for federation tests: a real HTTP server on loopback that the test controls.

``FakePeer`` serves what a Syncropel peer serves — a signed manifest at
``/.well-known/syncropel``, pages of ``/v1/sync/changes`` and its continuous SSE feed —
from records the test hands it, with cursors of the test's choosing (opaque strings that
are not spl's ``s1.<n>``, an SSE ``id:`` past 2^63), and it records every request it gets
(path, query, headers). Pointed at by a planted pair, it is the "attacker": a test asserts
it was never contacted, or never saw a token.

It runs ``http.server`` in a thread, so it needs no event loop of its own; every wait in
the tests that use it polls a condition with a deadline.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fed_support import wire_record

from spl.core.identity import Identity
from spl.core.manifest import federation_manifest

__all__ = ["FakePeer", "SeenRequest"]


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None


@dataclass
class FakePeer:
    identity: Identity = field(default_factory=Identity.generate)
    # The cursor that stands for "after the n-th record"; "" is the start.
    cursor_for: Callable[[int], str] = lambda n: f"opaque~{n}" if n else ""
    manifest_did: str | None = None  # serve a manifest claiming this DID (signed by `identity`: a lie)
    tamper_manifest: bool = False
    manifest_signed_at: float | None = None  # sign the manifest as of this time (long ago = expired)
    url: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)
    requests: list[SeenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._changed = threading.Condition()
        self._closing = threading.Event()

    # -- what the test controls -----------------------------------------------------------

    def serve(self, *records: dict[str, Any]) -> None:
        with self._changed:
            for record in records:
                self.records.append(wire_record(record, len(self.records) + 1))
            self._changed.notify_all()

    def close_streams(self) -> None:
        """End every open continuous feed (as a peer restart would)."""
        with self._changed:
            self._closing.set()
            self._changed.notify_all()

    def feed_requests(self) -> list[SeenRequest]:
        return [r for r in list(self.requests) if r.path == "/v1/sync/changes"]

    def position(self, cursor: str | None) -> int | None:
        """The record count a cursor stands for, or None for a cursor this peer never issued."""
        if not cursor:
            return 0
        for n in range(len(self.records) + 1):
            if self.cursor_for(n) == cursor:
                return n
        return None

    # -- the server -------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        manifest = federation_manifest(self.identity, endpoint=self.url, now=self.manifest_signed_at)
        if self.manifest_did is not None:
            manifest["daemon"]["did"] = self.manifest_did
        if self.tamper_manifest:
            manifest["federation"]["endpoint"] = "http://tampered.invalid"
        return manifest

    def page(self, after: int, limit: int) -> dict[str, Any]:
        with self._changed:
            rest = self.records[after:]
        page = rest[:limit]
        has_more = len(rest) > len(page)
        return {
            "object": "sync_changes",
            "records": [{"id": record["id"], "record": record} for record in page],
            "next_cursor": self.cursor_for(after + len(page)),
            "has_more": has_more,
            "pending": len(rest) - len(page) if has_more else 0,
        }

    @contextmanager
    def running(self) -> Iterator[FakePeer]:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query, keep_blank_values=True)
                peer.requests.append(
                    SeenRequest("GET", parts.path, query, {k.lower(): v for k, v in self.headers.items()})
                )
                if parts.path == "/.well-known/syncropel":
                    self._json(200, peer.manifest())
                    return
                if parts.path != "/v1/sync/changes":
                    self._json(404, {"object": "error", "code": "ROUTE_NOT_FOUND", "message": "no such route"})
                    return
                after = peer.position(query.get("since", [""])[0])
                if after is None:
                    self._json(400, {"object": "error", "code": "INVALID_CURSOR", "message": "not my cursor"})
                    return
                if query.get("feed", [""])[0] == "continuous":
                    self._stream(after)
                    return
                self._json(200, peer.page(after, int(query.get("limit", ["1000"])[0])))

            def _json(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream(self, after: int) -> None:
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                self.close_connection = True
                sent = after
                try:
                    while not peer._closing.is_set():
                        with peer._changed:
                            pending = peer.records[sent:]
                        for record in pending:
                            sent += 1
                            data = json.dumps({"id": record["id"], "record": record})
                            self.wfile.write(
                                f"event: record.created\nid: {peer.cursor_for(sent)}\ndata: {data}\n\n".encode()
                            )
                        self.wfile.write(b"event: heartbeat\ndata: {}\n\n")
                        self.wfile.flush()
                        with peer._changed:
                            peer._changed.wait(0.2)
                except OSError:
                    pass  # the pair hung up

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.close_streams()
            server.shutdown()
            server.server_close()
            thread.join(5)
