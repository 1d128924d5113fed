"""Helpers shared by the end-to-end suites: daemons, envelopes, loopback proxies, waiting.

Everything here talks to real ``spl serve`` processes over loopback. Nothing sleeps to
let something happen: callers wait on a :class:`Watch` (an append-only list plus an
event) with a deadline, so a test fails with a message instead of hanging.

Two loopback proxies sit in front of a daemon when a test needs to misbehave on the
wire: :class:`FaultProxy` (HTTP level: answers 5xx on demand, forwards everything
else) and :class:`StreamGate` (TCP level: logs request heads, refuses connections
while closed, cuts live streams). Both bind 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from spl.daemon.launcher import DaemonProcess

__all__ = [
    "configure",
    "FaultProxy",
    "RequestHead",
    "StreamGate",
    "Watch",
    "assert_error",
    "envelope",
    "make_daemon",
    "mint_token",
    "run",
    "secrets_in",
]

T = TypeVar("T")

SCENARIO_TIMEOUT = 45.0


def run(scenario: Callable[[], Coroutine[Any, Any, T]], timeout: float = SCENARIO_TIMEOUT) -> T:
    """Run an asyncio scenario (the SDK is asyncio-based) under a hard time guard."""

    async def guarded() -> T:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(guarded())


# -- daemons ---------------------------------------------------------------------------


def configure(
    process: DaemonProcess,
    *,
    heartbeat_seconds: float | None = None,
    sse_buffer: int | None = None,
) -> DaemonProcess:
    """Edit the home's ``config.toml`` ``[serve]`` section before the daemon starts."""
    config = process.home.load_config()
    if heartbeat_seconds is not None:
        config.heartbeat_seconds = heartbeat_seconds
    if sse_buffer is not None:
        config.sse_buffer = sse_buffer
    process.home.save_config(config)
    return process


def make_daemon(
    root: Path,
    *,
    insecure: bool = True,
    heartbeat_seconds: float | None = None,
    sse_buffer: int | None = None,
    log_level: str = "warning",
) -> DaemonProcess:
    """A started daemon on its own home under ``root`` (for module-scoped fixtures)."""
    process = DaemonProcess(root, insecure=insecure, log_level=log_level)
    configure(process, heartbeat_seconds=heartbeat_seconds, sse_buffer=sse_buffer)
    process.start(port=0)
    return process


def mint_token(process: DaemonProcess, scopes: list[str], label: str) -> str:
    """Mint a token through ``POST /v1/tokens`` with the daemon's admin credential."""
    response = httpx.post(
        f"{process.url}/v1/tokens",
        json={"scopes": scopes, "label": label},
        headers={"x-api-key": process.admin_token},
        timeout=10.0,
    )
    assert response.status_code == 201, response.text
    token = response.json()["token"]
    assert isinstance(token, str) and token.startswith("spl_")
    return token


def secrets_in(log: str, tokens: list[str]) -> list[str]:
    """The tokens of ``tokens`` whose text, or whose secret part alone, appears in ``log``.

    A token is ``spl_<env>_<sa>_<secret>``; a line that printed only the secret (a parsed token, say) leaks it just
    as well, so the part after the last ``_`` is looked for too when it is long enough to be one.
    """
    leaked = []
    for token in tokens:
        secret = token.rpartition("_")[2]
        if token in log or (len(secret) >= 16 and secret in log):
            leaked.append(token)
    return leaked


# -- records and errors ----------------------------------------------------------------


def envelope(thread: str, clock: int, *, actor: str = "did:test:e2e", **fields: Any) -> dict[str, Any]:
    """The seven-key envelope the SDK sends (spec §2.2), with overrides."""
    record: dict[str, Any] = {
        "act": "PUT",
        "actor": actor,
        "body": {"kind": "x.e2e.sample", "_v": 1},
        "clock": clock,
        "data_type": "SCALAR",
        "parents": [],
        "thread": thread,
    }
    record.update(fields)
    return record


def assert_error(response: httpx.Response, status: int | None = None, code: str | None = None) -> dict[str, Any]:
    """Assert the spec §15.9 error envelope: a 4xx JSON object with type, code and message."""
    assert 400 <= response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if status is not None:
        assert response.status_code == status, f"expected {status}, got {response.status_code}: {response.text[:300]}"
    assert response.headers.get("content-type", "").startswith("application/json"), response.headers
    body = response.json()
    assert isinstance(body, dict), body
    assert body.get("object") == "error", body
    for key in ("type", "code", "message"):
        assert isinstance(body.get(key), str) and body[key], f"missing {key!r} in {body}"
    assert body["code"] == body["code"].upper(), body
    if code is not None:
        assert body["code"] == code, body
    return body


# -- waiting ---------------------------------------------------------------------------


class Watch:
    """An append-only list that coroutines can wait on (callbacks feed it from the loop)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.times: list[float] = []
        self._changed = asyncio.Event()

    def __call__(self, item: Any = None) -> None:
        self.items.append(item)
        self.times.append(time.monotonic())
        self._changed.set()

    def __len__(self) -> int:
        return len(self.items)

    def touch(self) -> None:
        self._changed.set()

    async def wait_until(self, predicate: Callable[[list[Any]], bool], within: float, what: str) -> None:
        deadline = time.monotonic() + within
        while not predicate(self.items):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out after {within}s waiting for {what}; have {self.items!r}"[:2000])
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                continue

    async def wait_for_count(self, count: int, within: float, what: str) -> None:
        await self.wait_until(lambda items: len(items) >= count, within, f"{count} x {what}")


# -- loopback proxies ------------------------------------------------------------------


@dataclass
class RequestHead:
    at: float
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)


def _parse_head(raw: bytes) -> tuple[str, str, dict[str, str]]:
    lines = raw.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        await writer.wait_closed()
    except (ConnectionError, OSError):
        pass


class StreamGate:
    """A TCP proxy for SSE streams: logs every request head, refuses while closed, cuts streams.

    ``requests`` gets one :class:`RequestHead` per request sent through the gate (the
    subscriber's client only sends body-less GETs); ``attempts`` one timestamp per TCP
    connection attempt, including refused ones.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.open = True
        self.requests = Watch()
        self.attempts = Watch()
        self._live: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.url = ""

    async def __aenter__(self) -> StreamGate:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self.drop_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def drop_all(self) -> None:
        """Close every live connection (a FIN in the middle of the chunked SSE body)."""
        live, self._live = list(self._live), set()
        for client, upstream in live:
            await _close_writer(client)
            await _close_writer(upstream)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            self.attempts(time.monotonic())
            if not self.open:
                await _close_writer(writer)
                return
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                await _close_writer(writer)
                return
            pair = (writer, upstream_writer)
            self._live.add(pair)
            try:
                await asyncio.gather(
                    self._pump(reader, upstream_writer, sniff=True),
                    self._pump(upstream_reader, writer, sniff=False),
                )
            finally:
                self._live.discard(pair)
                await _close_writer(writer)
                await _close_writer(upstream_writer)
        finally:
            self._tasks.discard(task)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, sniff: bool) -> None:
        pending = b""
        try:
            while data := await reader.read(65536):
                if sniff:
                    pending += data
                    while b"\r\n\r\n" in pending:
                        head, pending = pending.split(b"\r\n\r\n", 1)
                        method, target, headers = _parse_head(head)
                        self.requests(RequestHead(time.monotonic(), method, target, headers))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


class FaultProxy:
    """An HTTP/1.1 proxy that answers a status (503 by default) for the next N matching requests.

    Everything else is forwarded to the daemon. ``seen`` lists ``(method, path)`` of
    every request that reached the proxy, faulted or not.
    """

    def __init__(self, upstream_url: str) -> None:
        self.upstream_url = upstream_url
        self.seen: list[tuple[str, str]] = []
        self._faults: list[tuple[str, str, int]] = []
        self._server: asyncio.Server | None = None
        self._client: httpx.AsyncClient | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.url = ""

    def fail_next(self, count: int, *, method: str = "POST", path: str = "/v1/records", status: int = 503) -> None:
        self._faults.extend([(method, path, status)] * count)

    async def __aenter__(self) -> FaultProxy:
        self._client = httpx.AsyncClient(base_url=self.upstream_url, timeout=30.0)
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None and self._client is not None
        self._server.close()
        for writer in list(self._writers):
            await _close_writer(writer)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        await self._client.aclose()

    def _take_fault(self, method: str, path: str) -> int | None:
        for index, (fault_method, fault_path, status) in enumerate(self._faults):
            if fault_method == method and path == fault_path:
                del self._faults[index]
                return status
        return None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                method, target, headers = _parse_head(head[:-4])
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                path = target.split("?", 1)[0]
                self.seen.append((method, path))
                status = self._take_fault(method, path)
                if status is not None:
                    error = {"object": "error", "type": "api_error", "code": "INJECTED", "message": "FaultProxy"}
                    payload = json.dumps(error).encode()
                    content_type = "application/json"
                else:
                    assert self._client is not None
                    forwarded = {
                        name: value
                        for name, value in headers.items()
                        if name not in ("host", "content-length", "connection", "transfer-encoding")
                    }
                    upstream = await self._client.request(method, target, headers=forwarded, content=body)
                    status, payload = upstream.status_code, upstream.content
                    content_type = upstream.headers.get("content-type", "application/octet-stream")
                writer.write(
                    f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
                    f"content-length: {len(payload)}\r\n\r\n".encode("latin-1")
                    + payload
                )
                await writer.drain()
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            return
        finally:
            self._writers.discard(writer)
            await _close_writer(writer)
            self._tasks.discard(task)
