"""Scripted hostile federation peers for the attack suite (tests/e2e/test_federation_pair_attacks.py).

Two roles, both driven by the test and both lying only where the test asks them to:

- :class:`Stranger` is an initiator with no daemon behind it: a key pair and the handshake documents of
  :mod:`spl.core.handshake`. It signs whatever it is told to (maps the responder never offered, a poll
  interval of 50 ms, a notice about another pair), so a test can post it to a real daemon's open routes
  and see what the signature alone buys.
- :class:`HostileResponder` is the responder an initiator is pointed at: a real HTTP server on loopback
  (``http.server`` in a thread, like ``fake_peer.FakePeer``) that serves a manifest signed by its own key,
  answers ``POST /v1/federation/pair`` with whatever :attr:`HostileResponder.answer` scripts, and serves an
  empty change feed. It records every request, so a test can assert what reached it.

Nothing here sleeps to let something happen; the server thread only waits on sockets.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from spl.core.canonical import canonical_json
from spl.core.handshake import (
    DEFAULT_MAPS,
    NamespaceMap,
    PairResponse,
    build_notice,
    build_pair_request,
    build_pair_response,
    build_poll,
    check_pair_request,
    check_pair_response,
    unseal,
)
from spl.core.identity import Identity
from spl.core.manifest import MANIFEST_LIFETIME, federation_manifest, rfc3339

__all__ = ["HostileResponder", "Seen", "Stranger", "resign"]

# The token a hostile responder hands out: well-formed, recognised by nobody.
FAKE_TOKEN = "spl_fed_sa_hostile_" + "ab" * 32


def resign(identity: Identity, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (a handshake document the test edited) signed again by ``identity``, as a liar would."""
    unsigned = {key: value for key, value in document.items() if key != "signature"}
    return {**unsigned, "signature": identity.sign(canonical_json(unsigned))}


@dataclass
class Stranger:
    """An initiator that is only a key: it signs handshake documents addressed to ``responder_did``.

    ``url`` is the ``initiator_url`` it claims; nothing listens there unless the test puts a server there.
    """

    responder_did: str
    identity: Identity = field(default_factory=Identity.generate)
    url: str = "http://127.0.0.1:9"

    @property
    def did(self) -> str:
        return self.identity.did

    def request(
        self,
        *,
        maps: Sequence[NamespaceMap] = DEFAULT_MAPS,
        poll_interval: float = 300.0,
        mode: str = "polling",
        token: str = "spl_fed_sa_stranger_" + "cd" * 32,
    ) -> dict[str, Any]:
        """A genuine, signed ``pair_request`` for the namespaces ``maps`` (wire orientation: ours first)."""
        now = time.time()
        return build_pair_request(
            self.identity,
            responder_did=self.responder_did,
            initiator_url=self.url,
            maps=maps,
            mode=mode,
            poll_interval=poll_interval,
            token=token,
            token_expires_at=now + 86400,
            now=now,
        )

    def accept(self, request: dict[str, Any], answer: object) -> PairResponse:
        """The responder's answer to ``request`` checked as a genuine initiator would; its token unsealed."""
        return check_pair_response(
            answer,
            initiator=self.identity,
            responder_did=self.responder_did,
            pair_id=request["pair_id"],
            nonce=request["nonce"],
            now=time.time(),
        )

    def poll(self, pair_id: str, *, nonce: str | None = None) -> dict[str, Any]:
        return build_poll(
            self.identity, pair_id=pair_id, responder_did=self.responder_did, now=time.time(), nonce=nonce
        )

    def notice(self, pair_id: str, event: str, *, reason: str = "", nonce: str | None = None) -> dict[str, Any]:
        return build_notice(
            self.identity,
            pair_id=pair_id,
            receiver_did=self.responder_did,
            event=event,  # type: ignore[arg-type]
            reason=reason,
            now=time.time(),
            nonce=nonce,
        )


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    body: bytes
    at: float = field(default_factory=time.monotonic)


Answer = Callable[["HostileResponder", dict[str, Any]], tuple[int, bytes]]


def genuine_answer(peer: HostileResponder, request: dict[str, Any]) -> tuple[int, bytes]:
    """What an honest auto-approving responder answers: 200 ``active`` with a token sealed to the initiator."""
    return 200, json.dumps(peer.active_answer(request)).encode()


@dataclass
class HostileResponder:
    """A responder under the test's control. ``answer`` maps the pair request (JSON) to (status, raw body).

    ``edit_manifest`` changes the manifest before it is signed (so it still verifies: the peer is lying,
    not broken); ``edit_signature_block`` changes the signature block afterwards (which the signature does
    not cover). ``manifest_signed_at`` signs it as of that time.
    """

    identity: Identity = field(default_factory=Identity.generate)
    answer: Answer = genuine_answer
    edit_manifest: Callable[[dict[str, Any]], None] | None = None
    edit_signature_block: Callable[[dict[str, Any]], None] | None = None
    manifest_signed_at: float | None = None
    url: str = ""
    seen: list[Seen] = field(default_factory=list)

    @property
    def did(self) -> str:
        return self.identity.did

    # -- documents -------------------------------------------------------------------------------------------

    def manifest(self) -> dict[str, Any]:
        signed_at = time.time() if self.manifest_signed_at is None else self.manifest_signed_at
        manifest = federation_manifest(self.identity, endpoint=self.url, now=signed_at, pair_approval="auto")
        if self.edit_manifest is not None:
            unsigned = {key: value for key, value in manifest.items() if key != "signature"}
            self.edit_manifest(unsigned)
            block = dict(manifest["signature"])
            block["signature"] = self.identity.sign(canonical_json(unsigned))
            manifest = {**unsigned, "signature": block}
        if self.edit_signature_block is not None:
            self.edit_signature_block(manifest["signature"])
        return manifest

    def active_answer(
        self, request: dict[str, Any], *, maps: Sequence[NamespaceMap] | None = None, token: str = FAKE_TOKEN
    ) -> dict[str, Any]:
        """A signed 200 ``active`` answer to ``request`` (``maps``: the maps it claims, default the requested)."""
        now = time.time()
        checked = check_pair_request(request, own_did=self.did, now=now)
        return build_pair_response(
            self.identity,
            request=checked,
            status="active",
            maps=checked.maps if maps is None else maps,
            token=token,
            token_expires_at=now + 86400,
            poll_endpoint=f"{self.url}/v1/federation/pair/poll",
            now=now,
        )

    def token_of(self, request: dict[str, Any]) -> str:
        """The token the initiator sealed to us in ``request`` (we hold the key it was sealed to)."""
        return unseal(self.identity, request["token_sealed"])

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in list(self.seen) if seen.path == path]

    # -- the server ------------------------------------------------------------------------------------------

    @contextmanager
    def running(self) -> Iterator[HostileResponder]:
        peer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                path = urlsplit(self.path).path
                peer.seen.append(Seen("GET", path, b""))
                if path == "/.well-known/syncropel":
                    self._send(200, json.dumps(peer.manifest()).encode())
                elif path == "/v1/sync/changes":
                    empty = {
                        "object": "sync_changes",
                        "records": [],
                        "next_cursor": "",
                        "has_more": False,
                        "pending": 0,
                    }
                    self._send(200, json.dumps(empty).encode())
                else:
                    self._send(404, b'{"object":"error","code":"ROUTE_NOT_FOUND","message":"no such route"}')

            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                length = int(self.headers.get("content-length", "0") or 0)
                body = self.rfile.read(min(length, 1 << 20))
                peer.seen.append(Seen("POST", path, body))
                if path == "/v1/federation/pair":
                    status, raw = peer.answer(peer, json.loads(body))
                    self._send(status, raw)
                else:
                    self._send(404, b'{"object":"error","code":"ROUTE_NOT_FOUND","message":"no such route"}')

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass  # the initiator hung up (it refused an oversized answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = _QuietServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """An initiator hanging up on an answer it refused (too large) is the point of the test, not noise."""


def expired_block_made_fresh(block: dict[str, Any]) -> None:
    """Edit a manifest's signature block so an expired manifest claims another week: the signature never
    covered ``signed_at`` / ``expires_at``, so the edit leaves it verifying."""
    now = time.time()
    block["signed_at"] = rfc3339(now)
    block["expires_at"] = rfc3339(now + MANIFEST_LIFETIME)
