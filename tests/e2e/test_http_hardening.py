"""A daemon anyone can reach: trust, browsers, early answers, many clients, health (issue 7).

Spec §15.19: loopback is not an identity; every route but ``/health``, ``/v1/identity``
and ``/.well-known/*`` needs a token; no CORS unless the operator lists origins; write
routes require ``content-type: application/json``. Then what many or careless clients can
cost: an early 413 must not break a pooled client's next request, half-open connections
are capped and dropped after ``serve.header_timeout``, and ``/health`` answers 503 while
something is degraded. The health cases run in-process (no daemon can be made degraded on
demand from outside); everything else talks to real daemons on 127.0.0.1.
"""

from __future__ import annotations

import json
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
from e2e_support import Watch, assert_error, envelope, make_daemon, mint_token, run
from syncropel import Client, Identity

from spl.core.config import Config
from spl.core.identity import Identity as InstanceIdentity
from spl.daemon.launcher import DaemonProcess
from spl.transport.app import create_app
from spl.transport.auth import TokenBook
from spl.transport.services import Services

ORIGIN = "https://app.example"
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
    process = start(tmp_path_factory.mktemp("hardening-secure") / "home", insecure=False, cors_origins=[ORIGIN])
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


def thread_records(process: DaemonProcess, thread: str, headers: dict[str, str] | None = None) -> list[Any]:
    response = httpx.get(f"{process.url}/v1/threads/{thread}/records", headers=headers or {}, timeout=10.0)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert isinstance(data, list)
    return data


# -- 1. loopback is not an identity ------------------------------------------------------------

PROTECTED = [
    ("GET", "/v1/records"),
    ("POST", "/v1/records"),
    ("GET", "/v1/threads"),
    ("GET", "/v1/threads/h.auth/records"),
    ("GET", "/v1/threads/h.auth/watch"),
    ("GET", "/v1/status"),
    ("GET", "/v1/capabilities"),
    ("GET", "/v1/namespaces"),
    ("POST", "/v1/namespaces"),
    ("GET", "/v1/tokens"),
    ("POST", "/v1/tokens"),
    ("GET", "/v1/sync/changes?thread=h.auth"),
    ("POST", "/v1/sync/records"),
    ("GET", "/v1/sync/pairs"),
    ("POST", "/v1/sync/pairs"),
    ("GET", "/v1/sync/health"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_loopback_callers_need_a_token(secure: DaemonProcess, method: str, path: str) -> None:
    # These requests all come from 127.0.0.1: before issue 7 the /v1/sync/* ones were
    # served as the local operator (change feeds read, records pushed, pairs created).
    kwargs: dict[str, Any] = {"json": {}} if method == "POST" else {}
    response = httpx.request(method, f"{secure.url}{path}", timeout=10.0, **kwargs)
    assert_error(response, 401, "AUTH_REQUIRED")


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "garbage"},
        {"x-api-key": "spl_local_sa_0123456789abcdef_" + "0" * 64},
        {"authorization": "Bearer nope"},
        {"authorization": "Basic Zm9vOmJhcg=="},
    ],
    ids=["none", "garbage", "unknown", "bearer-garbage", "basic"],
)
def test_open_routes_answer_any_token_alike(secure: DaemonProcess, headers: dict[str, str]) -> None:
    for path in ("/health", "/v1/identity", "/.well-known/syncropel"):
        response = httpx.get(f"{secure.url}{path}", headers=headers, timeout=10.0)
        assert response.status_code == 200, (path, response.text)
    identity = httpx.get(f"{secure.url}/v1/identity", headers=headers, timeout=10.0).json()
    assert identity["is_authenticated"] is False and identity["scopes"] == []


def test_open_routes_accept_a_revoked_token_as_anonymous(secure: DaemonProcess) -> None:
    token = mint_token(secure, ["records:read"], "hardening revoked")
    listing = httpx.get(f"{secure.url}/v1/tokens", headers={"x-api-key": secure.admin_token}, timeout=10.0)
    token_id = next(t["token_id"] for t in listing.json()["data"] if t["label"] == "hardening revoked")
    revoked = httpx.delete(
        f"{secure.url}/v1/tokens/{token_id}", headers={"x-api-key": secure.admin_token, **JSON}, timeout=10.0
    )
    assert revoked.status_code == 200, revoked.text
    assert httpx.get(f"{secure.url}/health", headers={"x-api-key": token}, timeout=10.0).status_code == 200
    assert_error(httpx.get(f"{secure.url}/v1/threads", headers={"x-api-key": token}, timeout=10.0), 401)


def test_a_valid_token_is_still_seen_on_open_routes(secure: DaemonProcess, rw_token: str) -> None:
    identity = httpx.get(f"{secure.url}/v1/identity", headers={"x-api-key": rw_token}, timeout=10.0).json()
    assert identity["is_authenticated"] is True
    assert identity["scopes"] == ["records:read", "records:write"]


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("GET", "/v1/recordz"), ("POST", "/v1/nope"), ("GET", "/.well-known/other"), ("GET", "/v1/")],
)
def test_unknown_routes_are_404_before_authentication(secure: DaemonProcess, method: str, path: str) -> None:
    response = httpx.request(method, f"{secure.url}{path}", headers=JSON, timeout=10.0)
    body = assert_error(response, 404, "ROUTE_NOT_FOUND")
    assert "docs/api.md" in body["message"]


def test_a_wrong_method_is_405_before_authentication(secure: DaemonProcess) -> None:
    assert_error(httpx.put(f"{secure.url}/v1/records", headers=JSON, timeout=10.0), 405, "METHOD_NOT_ALLOWED")


# -- 2. no web page can drive the daemon ----------------------------------------------------


def preflight(process: DaemonProcess, origin: str, path: str = "/v1/records") -> httpx.Response:
    return httpx.options(
        f"{process.url}{path}",
        headers={
            "origin": origin,
            "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-api-key",
        },
        timeout=10.0,
    )


def test_no_cors_for_an_origin_nobody_listed(secure: DaemonProcess, insecure: DaemonProcess) -> None:
    for process in (secure, insecure):
        for response in (
            httpx.get(f"{process.url}/health", headers={"origin": "https://evil.example"}, timeout=10.0),
            httpx.get(f"{process.url}/v1/threads", headers={"origin": "https://evil.example"}, timeout=10.0),
            preflight(process, "https://evil.example"),
        ):
            assert "access-control-allow-origin" not in response.headers, response.headers
            assert "access-control-allow-methods" not in response.headers


def test_a_listed_origin_gets_cors(secure: DaemonProcess, rw_token: str) -> None:
    answer = preflight(secure, ORIGIN)
    assert answer.status_code in (200, 204), answer.text
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    assert "origin" in answer.headers["vary"].lower()
    methods = {method.strip() for method in answer.headers["access-control-allow-methods"].split(",")}
    assert {"GET", "POST"} <= methods
    allowed = {name.strip().lower() for name in answer.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "x-api-key", "content-type", "last-event-id"} <= allowed
    # The page's real request, and an error answer the page must be able to read.
    headers = {"origin": ORIGIN, "x-api-key": rw_token}
    created = httpx.post(f"{secure.url}/v1/records", json=envelope("h.cors", 1), headers=headers, timeout=10.0)
    assert created.status_code == 201 and created.headers["access-control-allow-origin"] == ORIGIN
    refused = httpx.get(f"{secure.url}/v1/threads", headers={"origin": ORIGIN}, timeout=10.0)
    assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == ORIGIN
    assert (
        httpx.get(f"{secure.url}/health", headers={"origin": ORIGIN.upper()}, timeout=10.0).headers[
            "access-control-allow-origin"
        ]
        == ORIGIN.upper()
    )


SIMPLE_REQUEST_TYPES = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    None,
    "application/jsonx",
    "text/json",
]


@pytest.mark.parametrize("content_type", SIMPLE_REQUEST_TYPES)
def test_a_browser_simple_request_cannot_write(insecure: DaemonProcess, content_type: str | None) -> None:
    # Auth off (--insecure-localhost): the media type is all that stands between any web
    # page the operator visits and the store (a cross-origin "simple request" needs no preflight).
    thread = f"h.csrf.{SIMPLE_REQUEST_TYPES.index(content_type)}"
    headers = {"content-type": content_type} if content_type else {}
    response = httpx.post(
        f"{insecure.url}/v1/records", content=json.dumps(envelope(thread, 1)), headers=headers, timeout=10.0
    )
    body = assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert "content-type: application/json" in body["message"]
    assert thread_records(insecure, thread) == []


@pytest.mark.parametrize(
    ("method", "path", "content", "content_type"),
    [
        ("DELETE", "/v1/tokens/tok_x", None, None),
        ("POST", "/v1/tokens", b'{"scopes":["admin"]}', "text/plain"),
        ("POST", "/v1/namespaces", b"id=acme", "application/x-www-form-urlencoded"),
        ("POST", "/v1/sync/records", b'{"records":[]}', "text/plain"),
        ("POST", "/v1/sync/pairs", b"{}", None),
        ("POST", "/v1/sync/pairs/pair_0123456789abcdef/pause", None, None),
    ],
)
def test_every_write_needs_the_json_media_type_before_anything_else(
    secure: DaemonProcess,
    insecure: DaemonProcess,
    method: str,
    path: str,
    content: bytes | None,
    content_type: str | None,
) -> None:
    headers = {"content-type": content_type} if content_type else {}
    for process, extra in ((insecure, {}), (secure, {}), (secure, {"x-api-key": secure.admin_token})):
        # Even with no token at all the answer is 415, not 401: the media type is checked first.
        response = httpx.request(method, f"{process.url}{path}", content=content, headers={**headers, **extra})
        assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")


JSON_TYPES = ["application/json", "application/json; charset=utf-8", "Application/JSON"]


@pytest.mark.parametrize("content_type", JSON_TYPES)
def test_the_json_media_type_with_parameters_is_accepted(insecure: DaemonProcess, content_type: str) -> None:
    thread = f"h.json.{JSON_TYPES.index(content_type)}"
    response = httpx.post(
        f"{insecure.url}/v1/records",
        content=json.dumps(envelope(thread, 1)),
        headers={"content-type": content_type},
        timeout=10.0,
    )
    assert response.status_code == 201, response.text


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


# -- 3. an early 413 leaves a pooled client working -------------------------------------------

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


# -- 4. many clients -----------------------------------------------------------------------------


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


# -- 7. /health tells the truth ----------------------------------------------------------------


def app_services(tmp_path: Path, problems: list[str]) -> Services:
    """Just enough of the daemon for ``/health`` (the actors it never touches stay None)."""
    return Services(
        home_root=tmp_path / "home",
        config=Config(did="did:test:health", created_at=0.0),
        identity=InstanceIdentity.generate(),
        pool=None,  # type: ignore[arg-type]
        writer=None,  # type: ignore[arg-type]
        hub=None,  # type: ignore[arg-type]
        folds=None,  # type: ignore[arg-type]
        tokens=TokenBook(),
        auth_required=True,
        problems=lambda: problems,
    )


async def test_health_answers_503_while_degraded_or_stopping(tmp_path: Path) -> None:
    problems: list[str] = []
    services = app_services(tmp_path, problems)
    client = create_app(services).test_client()

    ok = await client.get("/health")
    assert ok.status_code == 200
    assert (await ok.get_json())["status"] == "ok" and (await ok.get_json())["problems"] == []

    problems.append("federation: stopped after 5 restarts in 30 s (last error: boom)")
    degraded = await client.get("/health")
    body = await degraded.get_json()
    assert degraded.status_code == 503
    assert body["status"] == "degraded" and body["problems"] == problems
    assert body["instance_did"] == services.identity.did  # still the usual fields

    problems.clear()
    services.stopping.set()
    stopping = await client.get("/health")
    assert stopping.status_code == 503 and (await stopping.get_json())["status"] == "stopping"


async def test_health_survives_a_failing_problems_callback(tmp_path: Path) -> None:
    services = app_services(tmp_path, [])

    def broken() -> list[str]:
        raise RuntimeError("boom")

    services.problems = broken
    response = await create_app(services).test_client().get("/health")
    assert response.status_code == 503
    assert (await response.get_json())["status"] == "degraded"
