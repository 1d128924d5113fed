"""``PeerClient`` over an injected ``httpx.MockTransport``: one exception tree, each failure its own kind."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from spl.core.feed import (
    PeerDidMismatch,
    PeerError,
    PeerFailed,
    PeerRefused,
    PeerShuttingDown,
    PeerUnreachable,
)
from spl.core.identity import Identity
from spl.core.manifest import federation_manifest
from spl.transport.peer import PeerPool

URL = "http://peer.test"
PEER = Identity.generate()

pytestmark = pytest.mark.filterwarnings("ignore:Async generator 'httpx:ResourceWarning")


async def fetch_with(handler: Callable[[httpx.Request], httpx.Response]) -> PeerError:
    async with PeerPool(httpx.MockTransport(handler)) as pool:
        with pytest.raises(PeerError) as caught:
            await pool.client(URL).fetch_changes({"thread": "th_x"}, "", token="tok", limit=10)
    return caught.value


async def test_a_500_with_an_empty_body_still_says_something() -> None:
    error = await fetch_with(lambda request: httpx.Response(500, content=b""))
    assert isinstance(error, PeerFailed) and error.code == "HTTP_5XX" and error.status == 500
    assert error.message.startswith("peer answered 500 ") and "Internal Server Error" in error.message


async def test_a_4xx_keeps_the_peers_code_and_message() -> None:
    body = {"object": "error", "code": "INVALID_CURSOR", "message": "not my cursor"}
    error = await fetch_with(lambda request: httpx.Response(400, json=body))
    assert isinstance(error, PeerRefused) and error.code == "HTTP_4XX"
    assert "INVALID_CURSOR: not my cursor" in error.message


async def test_a_peer_answering_503_shutting_down_is_stopping_not_refusing() -> None:
    body = {"object": "error", "code": "SHUTTING_DOWN", "message": "the daemon is stopping"}
    error = await fetch_with(lambda request: httpx.Response(503, json=body))
    assert isinstance(error, PeerShuttingDown) and error.code == "PEER_SHUTTING_DOWN"


async def test_a_stream_ended_with_server_shutdown_is_peer_shutting_down() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = b'event: server_shutdown\ndata: {"retry_after_ms":200}\n\n'
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    async def ignore(batch: object) -> None:
        pass

    async with PeerPool(httpx.MockTransport(handler)) as pool:
        with pytest.raises(PeerShuttingDown):
            await pool.client(URL).stream_changes(
                {"thread": "th_x"}, "", token=None, on_events=ignore, on_open=lambda: None
            )


async def test_a_refused_connection_is_connect_refused() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused")

    error = await fetch_with(handler)
    assert isinstance(error, PeerUnreachable) and error.code == "CONNECT_REFUSED"


async def test_a_bug_is_not_turned_into_a_peer_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise ZeroDivisionError("a bug on our side")

    async with PeerPool(httpx.MockTransport(handler)) as pool:
        with pytest.raises(ZeroDivisionError):
            await pool.client(URL).fetch_changes({"thread": "th_x"}, "", token=None, limit=10)


async def test_the_peer_did_is_what_its_signed_manifest_proves_and_verify_checks_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == "/.well-known/syncropel"
        manifest = federation_manifest(PEER, endpoint=URL)
        return httpx.Response(200, content=json.dumps({"federation_manifest": manifest}).encode())

    async with PeerPool(httpx.MockTransport(handler)) as pool:
        client = pool.client(URL)
        assert await client.peer_did() == PEER.did
        await client.verify(PEER.did)
        with pytest.raises(PeerDidMismatch):
            await client.verify(Identity.generate().did)
