"""A daemon anyone can reach, on the wire: the SDK, early answers, many clients, the Host header (issue 7).

What the app decides per request (tokens on every route, open routes, CORS, media types, ``/health`` while
degraded) is tested in-process in ``tests/transport/test_http_gates.py`` and ``test_http_host_check.py``.
Here, against real daemons on 127.0.0.1: the official SDK end to end, that a real server hands ``Host`` to the
gate unchanged, that an early 413 does not break a pooled client's next request, that half-open connections are
capped and dropped after ``serve.header_timeout``, that closed connections are released at once, and the
open-file limit.
"""

from __future__ import annotations

import os
import resource
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import Watch, assert_error, make_daemon, mint_token, run
from syncropel import Client, Identity

from spl.daemon.launcher import DaemonProcess

JSON = {"content-type": "application/json"}


def start(root: Path, *, insecure: bool, **config_fields: Any) -> DaemonProcess:
    """A daemon whose ``config.toml`` got ``config_fields`` before it started."""
    process = DaemonProcess(root, insecure=insecure)
    config = process.home.load_config()
    for name, value in config_fields.items():
        setattr(config, name, value)
    process.home.save_config(config)
    process.start(port=0)
    return process


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("hardening-secure") / "home", insecure=False)
    yield process
    process.kill()


@pytest.fixture(scope="module")
def insecure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("hardening-insecure") / "home")
    yield process
    process.kill()


@pytest.fixture(scope="module")
def rw_token(secure: DaemonProcess) -> str:
    return mint_token(secure, ["records:read", "records:write"], "hardening rw")


# -- 1. the official SDK, and the Host header as a real server passes it --------------------------


def test_a_rebound_host_is_refused_over_the_wire(insecure: DaemonProcess) -> None:
    """The Host gate (auth off) sees the header Hypercorn parsed from the wire, not a normalised one."""
    rebound = httpx.get(f"{insecure.url}/v1/threads", headers={"host": "rebind.attacker.example"}, timeout=10.0)
    assert_error(rebound, 421, "HOST_NOT_ALLOWED")
    for host in (f"127.0.0.1:{insecure.port}", f"localhost:{insecure.port}"):
        assert httpx.get(f"{insecure.url}/v1/threads", headers={"host": host}, timeout=10.0).status_code == 200


def test_the_official_sdk_still_works(secure: DaemonProcess, rw_token: str) -> None:
    """SDK 0.7.0 sends ``content-type: application/json`` on every request (its client default)."""

    async def scenario() -> tuple[Any, list[Any], dict[str, Any], list[Any]]:
        opened, streamed = Watch(), Watch()
        async with Client(endpoint=secure.url, identity=Identity.static("did:test:sdk"), api_key=rw_token) as client:
            subscription = client.subscribe("h.sdk", streamed, on_open=opened)
            try:
                await opened.wait_for_count(1, 10.0, "the SDK's watch to open")
                result = await client.emit(act="PUT", kind="x.e2e.sample", body={"n": 1}, thread="h.sdk")
                await streamed.wait_for_count(1, 10.0, "the record on the SDK's watch")
            finally:
                subscription.close()
            records = await client.query_thread("h.sdk")
            health = await client.health()
        return result, records, health, streamed.items

    result, records, health, streamed = run(scenario)
    assert result.success, result.error
    assert [record["id"] for record in records] == [result.record_id]
    assert health["status"] == "ok"
    assert [record["id"] for record in streamed] == [result.record_id]


# -- 2. an early 413 leaves a pooled client working -------------------------------------------

LIMIT = 1024 * 1024


@pytest.mark.parametrize(
    ("size", "chunked", "reused"),
    [(LIMIT + 10, False, True), (6 * LIMIT, False, False), (LIMIT + 300_000, True, False)],
    ids=["just-over-the-limit", "over-the-drain-limit", "chunked"],
)
def test_a_pooled_client_survives_oversized_posts(
    insecure: DaemonProcess, size: int, chunked: bool, reused: bool
) -> None:
    """20 x (oversized POST, then a normal request) on one pool: never "Server disconnected".

    Before the fix the daemon closed the connection after its early 413 without saying
    ``Connection: close``, and the pool's next request on it failed in 11 of 20 tries.
    A body the daemon can drain keeps the connection (one connection for all 40 requests);
    a larger or chunked one is answered with ``Connection: close`` and the client reconnects.
    """
    blob = b"x" * size
    clients: set[Any] = set()

    def remember(response: httpx.Response) -> None:
        stream = response.extensions["network_stream"]
        clients.add(stream.get_extra_info("client_addr"))

    with httpx.Client(base_url=insecure.url, timeout=10.0, event_hooks={"response": [remember]}) as client:
        for _ in range(20):
            content: Any = iter([blob[i : i + 65536] for i in range(0, size, 65536)]) if chunked else blob
            refused = client.post("/v1/records", content=content, headers=JSON)
            body = assert_error(refused, 413, "PAYLOAD_TOO_LARGE")
            assert str(LIMIT) in body["message"]
            assert (refused.headers.get("connection") == "close") is not reused
            assert client.get("/health").status_code == 200
    if reused:
        assert len(clients) == 1, clients


# -- 3. many clients -----------------------------------------------------------------------------


def descriptors(process: DaemonProcess) -> int:
    assert process.process is not None
    return len(os.listdir(f"/proc/{process.process.pid}/fd"))


def half_open(port: int) -> socket.socket:
    """A connection whose request head never completes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5.0)
    sock.sendall(b"GET /health HT")
    return sock


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts the daemon's descriptors in /proc")
def test_half_open_connections_are_capped_and_dropped(tmp_path: Path) -> None:
    header_timeout, cap, count = 1.0, 100, 160
    process = start(tmp_path / "home", insecure=True, header_timeout=header_timeout, max_connections=cap)
    sockets: list[socket.socket] = []
    try:
        baseline = descriptors(process)
        opened_at = time.monotonic()
        sockets = [half_open(process.port) for _ in range(count)]
        peak = descriptors(process)
        # Beyond the cap, clients wait in the listen backlog; a normal request is answered
        # once the half-open ones ahead of it have had their header_timeout.
        asked = time.monotonic()
        assert httpx.get(f"{process.url}/health", timeout=10.0).status_code == 200
        answered_after = time.monotonic() - asked
        closed_at: dict[socket.socket, float] = {}
        with selectors.DefaultSelector() as selector:
            for sock in sockets:
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ)
            deadline = opened_at + 2 * header_timeout + 8.0
            while len(closed_at) < count and time.monotonic() < deadline:
                peak = max(peak, descriptors(process))
                for key, _ in selector.select(timeout=0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    try:
                        data = sock.recv(65536)
                    except ConnectionResetError:
                        data = b""
                    if not data:  # the daemon closed it (Hypercorn sends nothing for an incomplete head)
                        closed_at[sock] = time.monotonic() - opened_at
                        selector.unregister(sock)
        times = sorted(closed_at.values())
        print(
            f"\n{count} half-open connections, cap {cap}, header_timeout {header_timeout}s: daemon descriptors "
            f"{baseline} -> peak {peak}; normal request answered after {answered_after:.2f}s; "
            f"closed by the daemon after {times[0] if times else 0:.2f}-{times[-1] if times else 0:.2f}s"
        )
        assert len(closed_at) == count, f"only {len(closed_at)} of {count} half-open connections were closed"
        assert times[0] >= 0.8 * header_timeout, "closed before the header timeout: not the timeout at work"
        assert peak <= baseline + cap + 10, f"{peak} descriptors with a cap of {cap} connections"
        assert answered_after < header_timeout + 5.0
    finally:
        for sock in sockets:
            sock.close()
        process.kill()


def daemon_sockets(process: DaemonProcess) -> int:
    assert process.process is not None
    count = 0
    for fd in Path(f"/proc/{process.process.pid}/fd").iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except FileNotFoundError:
            pass  # closed while we looked
    return count


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts the daemon's sockets in /proc")
def test_connections_the_client_closed_are_closed_at_once(tmp_path: Path) -> None:
    """Hypercorn waited out its keep-alive timer (75 s, now 10 s) before closing a connection
    whose client had left; short-lived clients piled up in CLOSE-WAIT holding descriptors."""
    process = make_daemon(tmp_path / "home")
    try:
        quiet = daemon_sockets(process)
        for index in range(50):
            with socket.create_connection(("127.0.0.1", process.port), timeout=5.0) as sock:
                if index % 2:  # half of them after a request, half without one
                    sock.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
                    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        deadline = time.monotonic() + 3.0  # well inside the 10 s header timeout
        while (held := daemon_sockets(process)) > quiet:
            assert time.monotonic() < deadline, f"{held - quiet} closed connections still held by the daemon"
            time.sleep(0.05)  # polling interval; the deadline above bounds the wait
    finally:
        process.kill()


def open_file_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no 'Max open files' line")


@pytest.mark.skipif(not Path("/proc/self/limits").exists(), reason="reads the daemon's limits in /proc")
def test_the_open_file_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 1024:
        pytest.skip("needs a finite hard limit above 1024")
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the daemon inherits the usual default
    try:
        process = make_daemon(tmp_path / "home")
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert process.process is not None
        assert open_file_limits(process.process.pid) == (hard, hard)
    finally:
        process.kill()
