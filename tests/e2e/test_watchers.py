"""SSE watchers that stop reading: bounded, cheap to drop, never holding the daemon (issue 7).

A "stuck" watcher here is a raw socket with a 4 KiB receive buffer that sends
``GET /v1/threads/{id}/watch`` and never reads: once the kernel buffers on both sides
are full, the daemon's write to it blocks. Before the fix, 100 of them disconnecting
held every other request for seconds (the streams went on formatting their buffered
records), one that never disconnected was kept forever, and two of them kept a SIGTERM'd
daemon from exiting at all.

Progress is observed through ``GET /v1/status`` (``streams.open``: watch streams the daemon
still serves), polled with a deadline; no sleep stands in for an event.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import envelope

from spl.daemon.launcher import DaemonProcess

PAD_1MB = "y" * 1_000_000  # under the 1 MiB body limit with the envelope around it


def start(root: Path, **config_fields: Any) -> DaemonProcess:
    process = DaemonProcess(root, insecure=True)
    config = process.home.load_config()
    for name, value in config_fields.items():
        setattr(config, name, value)
    process.home.save_config(config)
    process.start(port=0)
    return process


def stuck_watcher(port: int, thread: str) -> socket.socket:
    """A watch that reads its response head and nothing more.

    The daemon subscribes before it sends the head, so once the head is here every
    record committed later is on its way to this socket.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window from the start
    sock.settimeout(5.0)
    sock.connect(("127.0.0.1", port))
    head = f"GET /v1/threads/{thread}/watch HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n"
    sock.sendall(head.encode())
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(4096)
        assert chunk, "the daemon closed the watch before answering"
        received += chunk
    assert received.startswith(b"HTTP/1.1 200"), received[:200]
    assert received.endswith(b"\r\n\r\n"), "a frame came with the head, but nothing was emitted yet"
    return sock


def open_streams(process: DaemonProcess) -> int:
    response = httpx.get(f"{process.url}/v1/status", timeout=10.0)
    assert response.status_code == 200, response.text
    count = response.json()["streams"]["open"]
    assert isinstance(count, int)
    return count


def daemon_sockets(process: DaemonProcess) -> int:
    """Sockets the daemon holds open (its listener, clients, peers), from /proc."""
    assert process.process is not None
    fds = Path(f"/proc/{process.process.pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except FileNotFoundError:
            pass  # closed while we looked
    return count


def wait_until(condition: Callable[[], bool], within: float, what: str) -> float:
    """Poll ``condition`` until it holds; returns the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > within:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.05)  # polling interval; the deadline above bounds the wait
    return time.monotonic() - started


def emit(process: DaemonProcess, thread: str, count: int, pad: str, first_clock: int = 1) -> None:
    with httpx.Client(base_url=process.url, timeout=30.0) as client:
        for clock in range(first_clock, first_clock + count):
            response = client.post("/v1/records", json=envelope(thread, clock, body={"pad": pad}))
            assert response.status_code == 201, response.text[:300]


class HealthProbe:
    """``GET /health`` in a loop on its own thread, recording (start time, latency)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(30.0)

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=60.0) as client:
            while not self._stop.is_set():
                asked = time.monotonic()
                assert client.get("/health").status_code == 200
                self.samples.append((asked, time.monotonic() - asked))
                self._stop.wait(0.01)  # pacing, so the probe itself is not the load

    def worst_since(self, moment: float) -> float:
        return max((latency for asked, latency in self.samples if asked + latency >= moment), default=0.0)


@pytest.fixture
def sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="counts the daemon's sockets in /proc")
def test_stuck_watchers_disconnecting_do_not_stall_the_daemon(tmp_path: Path, sockets: list[socket.socket]) -> None:
    watchers, records, pad = 100, 300, "z" * 32_000
    process = start(tmp_path / "home")
    try:
        quiet = daemon_sockets(process)
        sockets.extend(stuck_watcher(process.port, "w.stuck") for _ in range(watchers))
        emit(process, "w.stuck", records, pad)  # ~9.6 MB per watcher: far more than the sockets take
        with HealthProbe(process.url) as probe:
            wait_until(lambda: len(probe.samples) >= 3, 10.0, "the health probe")
            closed_at = time.monotonic()
            for sock in sockets:
                sock.close()  # unread data: the kernel answers with a reset
            sockets.clear()
            # The probe's own keep-alive connection is the one socket more than before.
            gone_after = wait_until(lambda: daemon_sockets(process) <= quiet + 1, 60.0, "the stuck sockets to close")
            worst = probe.worst_since(closed_at)
        print(
            f"\n{watchers} stuck watchers x {records} records of {len(pad) // 1000} kB disconnecting: "
            f"worst /health {worst * 1000:.0f} ms, all connections gone after {gone_after:.2f}s"
        )
        assert worst < 1.0, f"/health took {worst:.2f}s while the stuck watchers were dropped"
        assert open_streams(process) == 0  # and the hub forgot every one of them
    finally:
        process.kill()


def test_a_watcher_that_stops_reading_is_dropped_by_the_write_deadline(
    tmp_path: Path, sockets: list[socket.socket]
) -> None:
    """Heartbeats of 1 s make the write deadline 2 s; an attentive watcher on the same thread stays."""
    process = start(tmp_path / "home", heartbeat_seconds=1.0)
    frames: list[bytes] = []

    def attentive() -> None:
        with httpx.stream("GET", f"{process.url}/v1/threads/w.deadline/watch", timeout=30.0) as response:
            for chunk in response.iter_raw():
                frames.append(chunk)
                if b"".join(frames).count(b"event: record.created") >= 24:
                    return

    reader = threading.Thread(target=attentive, daemon=True)
    try:
        reader.start()
        sockets.extend(stuck_watcher(process.port, "w.deadline") for _ in range(4))
        wait_until(lambda: open_streams(process) == 5, 10.0, "five watch streams")  # the attentive one too
        emit(process, "w.deadline", 24, PAD_1MB)  # 24 MB: the stuck sockets fill up after about 4
        reader.join(30.0)
        assert b"".join(frames).count(b"event: record.created") >= 24, "the attentive watcher missed records"
        # The attentive stream ended when its reader left; the stuck ones by the deadline.
        wait_until(lambda: open_streams(process) == 0, 15.0, "the stuck streams to be dropped")
        for sock in sockets:  # the daemon aborted them: a reset or an end of stream, after what was sent
            sock.settimeout(5.0)
            try:
                while sock.recv(1 << 20):
                    pass
            except ConnectionResetError:
                pass
    finally:
        process.kill()


def test_stuck_watchers_do_not_hold_a_stop(tmp_path: Path, sockets: list[socket.socket]) -> None:
    """With the default 30 s write deadline, a stop still takes about the 1 s grace period."""
    process = start(tmp_path / "home")
    try:
        sockets.extend(stuck_watcher(process.port, "w.stop") for _ in range(2))
        emit(process, "w.stop", 12, PAD_1MB)
        stopping = time.monotonic()
        assert process.stop(timeout=10.0) == 0
        assert time.monotonic() - stopping < 10.0
    finally:
        process.kill()


def test_a_lagged_watcher_gets_the_lagged_error_and_resumes_without_loss(tmp_path: Path) -> None:
    """A watcher that stalls past its buffer ends with ``event: error`` / ``lagged`` (spec §15.11)
    and nothing after it; resuming from its last ``id:`` replays the rest exactly once."""
    process = start(tmp_path / "home", sse_buffer=4)
    try:
        sock = stuck_watcher(process.port, "w.lag")
        emit(process, "w.lag", 16, PAD_1MB)  # the socket takes a few, the buffer 4 more: lagged
        raw = b""
        sock.settimeout(10.0)
        while not raw.endswith(b"\r\n0\r\n\r\n"):  # the last chunk: the stream ended (keep-alive stays)
            chunk = sock.recv(1 << 20)
            assert chunk, "the daemon closed the connection before the stream's end"
            raw += chunk
        sock.close()
        text = b"".join(  # undo the chunked transfer encoding
            part.split(b"\r\n", 1)[1][: int(part.split(b"\r\n", 1)[0], 16)] for part in _chunks(raw)
        ).decode("ascii")
        events = [frame for frame in text.split("\n\n") if frame]
        assert events[-1] == (
            'event: error\ndata: {"code":"lagged","message":'
            '"subscriber fell behind; reconnect with Last-Event-ID to resume"}'
        )
        delivered = [int(frame.split("\n")[1].removeprefix("id: ")) for frame in events[:-1]]
        assert delivered and all(frame.startswith("event: record.created\nid: ") for frame in events[:-1])
        assert delivered == list(range(delivered[0], delivered[0] + len(delivered)))
        with httpx.stream(
            "GET",
            f"{process.url}/v1/threads/w.lag/watch",
            headers={"last-event-id": str(delivered[-1])},
            timeout=30.0,
        ) as resumed:
            replayed: list[int] = []
            buffer = b""
            for chunk in resumed.iter_raw():
                buffer += chunk
                while b"\n\n" in buffer:
                    frame, buffer = buffer.split(b"\n\n", 1)
                    if frame.startswith(b"event: record.created"):
                        replayed.append(int(frame.split(b"\n")[1].removeprefix(b"id: ")))
                if len(delivered) + len(replayed) >= 16:
                    break
        assert delivered + replayed == list(range(delivered[0], delivered[0] + 16))
    finally:
        process.kill()


def _chunks(body: bytes) -> Iterator[bytes]:
    """The chunks of a chunked HTTP/1.1 body, each still with its size line."""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return
        yield body[: len(size_line) + 2 + size]
        body = rest[size + 2 :]
