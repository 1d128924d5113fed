"""Hostile input that needs a real server, and what a daemon writes to its log about credentials.

Everything a route decides from a request (malformed JSON, wrong types, threads, namespaces, limits, query
parameters, routes, methods, 401/403, token labels, the fuzz test) is checked in-process, far faster, in
``tests/transport/test_http_bad_input.py``. Here, against ``spl serve`` processes: a chunked body, early answers
on a kept-alive connection, a garbage ``Last-Event-ID`` on a live stream, the official SDK, and the daemon log.

Both daemons log at ``debug`` (the most they ever write), so a token that reached any log line would be found by
``test_no_token_text_in_the_daemon_logs``.
"""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_support import assert_error, envelope, make_daemon, mint_token, run, secrets_in
from syncropel import Client, Identity

from spl.core.identity import Identity as InstanceIdentity
from spl.daemon.launcher import DaemonProcess

LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("bad-input") / "home", log_level="debug")
    yield process
    process.kill()


@pytest.fixture(scope="module")
def secure_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("bad-input-secure") / "home", insecure=False, log_level="debug")
    yield process
    process.kill()


@pytest.fixture(scope="module")
def tokens(secure_node: DaemonProcess) -> dict[str, str]:
    minted = {
        "rw": mint_token(secure_node, ["records:read", "records:write"], "bad-input rw"),
        "ro": mint_token(secure_node, ["records:read"], "bad-input ro"),
        "wo": mint_token(secure_node, ["records:write"], "bad-input wo"),
        "revoked": mint_token(secure_node, ["records:read", "records:write"], "bad-input revoked"),
    }
    listing = httpx.get(f"{secure_node.url}/v1/tokens", headers={"x-api-key": secure_node.admin_token}, timeout=10.0)
    token_id = next(t["token_id"] for t in listing.json()["data"] if t["label"] == "bad-input revoked")
    revoked = httpx.delete(
        f"{secure_node.url}/v1/tokens/{token_id}",
        headers={"x-api-key": secure_node.admin_token, "content-type": "application/json"},
        timeout=10.0,
    )
    assert revoked.status_code == 200, revoked.text
    return minted


def post_json(process: DaemonProcess, payload: Any) -> httpx.Response:
    return httpx.post(f"{process.url}/v1/records", json=payload, timeout=10.0)


# -- what needs the wire -------------------------------------------------------------------


def test_empty_thread_segment_in_url(node: DaemonProcess) -> None:
    # The SDK does not URL-encode threads: query_thread("a/") requests /v1/threads/a//records, a 404
    # (test_http_bad_input.py::test_bad_thread_in_url), which the SDK turns into an empty list.
    async def scenario() -> list[dict[str, Any]]:
        async with Client(endpoint=node.url, identity=Identity.static("did:test:bad")) as client:
            return await client.query_thread("a/")

    assert run(scenario) == []


def test_oversized_body_chunked(node: DaemonProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"act":"PUT","actor":"did:test:bad","clock":1,"thread":"b.big","body":{"blob":"'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}}'

    response = httpx.post(
        f"{node.url}/v1/records", content=chunks(), headers={"content-type": "application/json"}, timeout=10.0
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def _early_reply_then_next_request(process: DaemonProcess, head: bytes, body: bytes) -> tuple[bytes, bytes | None]:
    """Send only the request head, read the daemon's early answer, then the body and a second request.

    httpx writes a request's head and body with separate sends, so a daemon that decides
    from the headers alone (auth, scope, Content-Length) can answer before the body has
    arrived (observed with the SDK's emit_sync and plain httpx). The connection must stay
    usable for the next request (keep-alive).
    """
    with socket.create_connection(("127.0.0.1", process.port), timeout=5.0) as sock:
        sock.sendall(head)
        first = b""
        while b"\r\n\r\n" not in first:
            first += sock.recv(65536)
        headers, _, rest = first.partition(b"\r\n\r\n")
        length = int(re.search(rb"content-length: *(\d+)", headers, re.IGNORECASE).group(1))  # type: ignore[union-attr]
        while len(rest) < length:
            rest += sock.recv(65536)
        # Let the daemon finish with the first request before its body arrives: a request on
        # another connection is answered only after the daemon's loop has moved on.
        assert httpx.get(f"{process.url}/health", timeout=5.0).status_code == 200
        sock.settimeout(2.0)
        second: bytes | None = None
        try:
            sock.sendall(body)
            sock.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
            second = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            second = b""  # closed by the daemon: a clean end, the client reconnects
        except TimeoutError:
            pass
    return first, second


def _post_head(length: int, token: str | None = None) -> bytes:
    auth = f"x-api-key: {token}\r\n" if token else ""
    return (
        f"POST /v1/records HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n{auth}"
        f"content-length: {length}\r\n\r\n"
    ).encode()


@pytest.mark.parametrize("case", ["401-bad-token", "403-no-write-scope", "413-too-large"])
def test_connection_is_usable_after_an_early_error(
    node: DaemonProcess, secure_node: DaemonProcess, tokens: dict[str, str], case: str
) -> None:
    record = json.dumps(envelope("b.early", 1)).encode()
    if case == "401-bad-token":
        process, head, body, status = secure_node, _post_head(len(record), "garbage"), record, 401
    elif case == "403-no-write-scope":
        process, head, body, status = secure_node, _post_head(len(record), tokens["ro"]), record, 403
    else:
        big = b"x" * (LIMIT + 10)
        process, head, body, status = node, _post_head(len(big)), big, 413
    first, second = _early_reply_then_next_request(process, head, body)
    assert first.startswith(f"HTTP/1.1 {status}".encode()), first[:200]
    # Either the connection is recycled (the next request is answered) or it is closed
    # cleanly (EOF, the client reconnects); never left wedged with the next request unanswered.
    assert second is not None, "the next request on the same connection got no answer (wedged)"
    assert second == b"" or second.startswith(b"HTTP/1.1 200"), second[:200]


@pytest.mark.parametrize("cursor", [b"garbage", b"-1", b"\xb2", b"9" * 30, b"0x10", b"\xff\xfe"])
def test_garbage_last_event_id_replays_from_the_start(node: DaemonProcess, cursor: bytes) -> None:
    if post_json(node, envelope("b.watch", 1)).status_code not in (200, 201):
        pytest.fail("could not seed the thread")
    first = httpx.get(f"{node.url}/v1/threads/b.watch/records", timeout=10.0).json()["data"][0]["id"]
    with httpx.stream(
        "GET", f"{node.url}/v1/threads/b.watch/watch", headers={"last-event-id": cursor}, timeout=10.0
    ) as response:
        assert response.status_code == 200
        raw = b""
        for chunk in response.iter_raw():
            raw += chunk
            if b"\n\n" in raw:
                break
    frame = raw.split(b"\n\n", 1)[0].decode("ascii")
    assert frame.startswith("event: record.created\nid: ")
    assert json.loads(frame.split("data: ", 1)[1])["id"] == first


def test_sdk_with_bad_credentials_fails_cleanly(secure_node: DaemonProcess, tokens: dict[str, str]) -> None:
    def client(key: str | None) -> Client:
        return Client(endpoint=secure_node.url, identity=Identity.static("did:test:bad"), api_key=key, timeout=10.0)

    async def scenario() -> list[Any]:
        out: list[Any] = []
        for key in (None, "garbage", tokens["revoked"], tokens["ro"]):
            # A fresh client per call: a rejected POST can wedge its pooled connection
            # (see test_connection_is_usable_after_an_early_error).
            async with client(key) as emitter:
                result = await emitter.emit(act="PUT", kind="x.e2e.sample", body={}, thread="b.sdk")
            async with client(key) as reader:
                records = await reader.query_thread("b.sdk") if key != tokens["ro"] else []
            out.append((key, result, records))
        return out

    for key, result, records in run(scenario):
        assert result.success is False and result.retried == 0
        assert result.error.startswith(("HTTP 401", "HTTP 403")), result.error
        if key:
            assert key not in result.error
        assert records == []


def nested_record(depth: int) -> bytes:
    """A record whose body's ``x`` holds ``depth`` nested lists: the body nests ``depth + 1`` levels."""
    body = '{"x":' + "[" * depth + "]" * depth + "}"
    return (
        f'{{"act":"PUT","actor":"did:test:bad","body":{body},"clock":{depth},'
        '"data_type":"SCALAR","parents":[],"thread":"b.raw"}'
    ).encode()


@pytest.mark.parametrize("depth", [490, 700, 950])
def test_very_deeply_nested_bodies_are_refused_with_the_limit(node: DaemonProcess, depth: int) -> None:
    # These used to pass the JSON parser and blow the recursion limit in canonicalisation (500). Shallower
    # cases run in-process (tests/transport/test_http_bad_input.py); these stay here because the answer
    # depends on the stack depth the request is decoded at, which only a real daemon has as in production.
    response = httpx.post(
        f"{node.url}/v1/records",
        content=nested_record(depth),
        headers={"content-type": "application/json"},
        timeout=10.0,
    )
    body = assert_error(response, 400, "BODY_TOO_DEEP")
    assert "64 levels" in body["message"] and "flatten" in body["message"], body


# -- afterwards -------------------------------------------------------------------------------

PEER_TOKEN = "spl_local_sa_0123456789abcdef_" + "5e" * 32  # what a peer minted for us, handed in a pair request


def present_everywhere(process: DaemonProcess, token: str) -> None:
    """Send ``token`` in every place a client can put one (``x-api-key``, ``Authorization`` as Bearer, bare and
    Basic), to open, protected, refused, failing and streaming routes alike."""
    placements = [
        {"x-api-key": token},
        {"authorization": f"Bearer {token}"},
        {"authorization": token},
        {"authorization": f"Basic {token}"},
    ]
    paths = ["/health", "/v1/identity", "/.well-known/syncropel", "/v1/threads", "/v1/tokens", "/v1/sync/pairs"]
    paths += ["/v1/records?limit=1", "/v1/records?limit=abc", "/no/such/route"]
    with httpx.Client(base_url=process.url, timeout=10.0) as http:
        for headers in placements:
            for path in paths:
                http.get(path, headers=headers)
            http.post("/v1/records", json=envelope("b.logs", 1), headers=headers)
            http.post("/v1/records", content=b"{", headers={**headers, "content-type": "application/json"})
            http.post("/v1/records", content=b"{}", headers={**headers, "content-type": "text/plain"})
            http.put("/v1/records", headers=headers)
            with http.stream("GET", "/v1/threads/b.logs/watch", headers=headers) as stream:
                assert stream.status_code in (200, 401, 403)  # opened (or refused), then closed by us


def pair_with_a_token(process: DaemonProcess) -> None:
    """Hand the daemon a peer's token in a pair request, and wait until the pair has tried to use it.

    The peer's port is closed, so the pair fails (and logs why) with the token in its requests' headers.
    """
    admin = {"x-api-key": process.admin_token}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    payload = {
        "peer_did": InstanceIdentity.generate().did,
        "peer_url": f"http://127.0.0.1:{closed_port}",
        "thread_id": "b.logs",
        "token": PEER_TOKEN,
    }
    created = httpx.post(f"{process.url}/v1/sync/pairs", json=payload, headers=admin, timeout=10.0)
    assert created.status_code == 201, created.text
    pair_url = f"{process.url}/v1/sync/pairs/{created.json()['pair_id']}"
    deadline = time.monotonic() + 20.0
    while (state := httpx.get(pair_url, headers=admin, timeout=10.0).json()["state"]) != "failing":
        assert time.monotonic() < deadline, f"the pair never tried its peer (state {state!r})"
        time.sleep(0.05)  # polling interval; the deadline bounds the wait
    removed = httpx.delete(pair_url, headers={**admin, "content-type": "application/json"}, timeout=10.0)
    assert removed.status_code == 200, removed.text


def test_no_token_text_in_the_daemon_logs(
    node: DaemonProcess, secure_node: DaemonProcess, tokens: dict[str, str]
) -> None:
    minted = mint_token(secure_node, ["records:read"], "bad-input logs")  # the plaintext is in the answer only
    unknown = "spl_local_sa_0123456789abcdef_" + "0" * 64
    presented = [*tokens.values(), minted, unknown, secure_node.admin_token]
    for process in (node, secure_node):
        for token in presented:
            present_everywhere(process, token)
    pair_with_a_token(secure_node)
    presented.append(PEER_TOKEN)

    for process in (node, secure_node):
        log = process.log_path.read_text(errors="replace")
        assert " INFO spl.daemon: serving" in log, f"no start-up line: is this the daemon's log?\n{log[-2000:]}"
        assert secrets_in(log, presented) == [], f"token text in {process.log_path}"
        # The scan can fail: the same log with one line that printed a token (or its secret alone) is caught.
        for token in (tokens["rw"], PEER_TOKEN):
            assert secrets_in(log + f"DEBUG spl.http: x-api-key: {token}\n", presented) == [token]
            assert secrets_in(log + f"DEBUG spl.http: secret {token.rpartition('_')[2]}\n", presented) == [token]
    debug_lines = [line for line in secure_node.log_path.read_text().splitlines() if " DEBUG " in line]
    assert debug_lines, "the daemon does not log at debug level: the scan above saw less than it could"


def test_daemons_are_still_healthy(node: DaemonProcess, secure_node: DaemonProcess, tokens: dict[str, str]) -> None:
    for process, headers in ((node, {}), (secure_node, {"x-api-key": tokens["rw"]})):
        health = httpx.get(f"{process.url}/health", timeout=10.0)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        response = httpx.post(
            f"{process.url}/v1/records", json=envelope("b.after", 1, body={"ok": True}), headers=headers, timeout=10.0
        )
        assert response.status_code == 201, response.text
        stored = httpx.get(f"{process.url}/v1/records/{response.json()['id']}", headers=headers, timeout=10.0)
        assert stored.status_code == 200 and stored.json()["body"] == {"ok": True}
        log = process.log_path.read_text(errors="replace") if process.log_path.exists() else ""
        assert "unhandled error" not in log and "Traceback" not in log, log[-3000:]
