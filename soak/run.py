"""The federation soak driver: real daemons, a paced emitter, samplers, the mixed workload.

:func:`run_soak` starts (or reuses) the daemons, then runs one trio program:

- a **producer** paces emits on trio's clock (:func:`spl.soak.plan.emits_due`: the
  integral of the window's rate, times the number of pairs) into a bounded channel;
- **emit workers**, each one raw HTTP/1.1 keep-alive connection to the source
  (a minimal client: the SDK costs ~0.9 ms CPU per emit and this machine has 2 cores);
  an emit is acknowledged with the record's id and the source's commit time;
- **samplers** on the receiver: ``/v1/sync/health`` (reconcile queue) every 100 ms,
  ``/v1/sync/pairs`` (``errors_total``, state) every 0.5 s or slower for many pairs,
  and a **read-back** of the receiver's records (``/v1/records?after_sequence=``)
  every 2 s, which gives each record's commit time on the receiver;
- the **controller** pauses and resumes the pairs, and with ``--faults`` restarts the
  receiving daemon gracefully and with ``kill -9``, while emitting goes on.

After the last window it drains (reads back until every acknowledged record is on the
receiver, bounded by ``drain_timeout``) and aggregates per window. Every loop is bounded
in time, concurrency is bounded everywhere, and the daemons it started are stopped in a
``finally`` (also on Ctrl-C).
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import httpx
import trio

from spl.core.identity import Identity
from spl.core.record import validate_envelope
from spl.core.syncstats import parse_rfc3339
from spl.daemon.launcher import DaemonProcess
from spl.soak.plan import (
    SEED_STEADY_RATE,
    ErrorSample,
    QueueSample,
    RecordSample,
    Window,
    WindowFigures,
    aggregate,
    emits_due,
    error_deltas_by_window,
    lag_ms,
    pause_seconds,
    problems,
    queue_max_by_window,
    rate_at,
    window_index,
    workload_plan,
)

__all__ = [
    "EMIT_PATHS",
    "MODES",
    "Cluster",
    "Progress",
    "Relay",
    "ResourceSample",
    "SoakConfig",
    "SoakError",
    "SoakResult",
    "proc_resources",
    "relay_main",
    "result_config",
    "run_soak",
]

MODES = ("continuous", "polling")
EMIT_PATHS = ("records", "push")
PUSH_BATCH = 500  # records per POST /v1/sync/records
EMIT_ATTEMPTS = 6
ROUND_TRIP_TIMEOUT = 30.0
READBACK_PAGE = 10_000
CONTROL_CONCURRENCY = 8
EMITTER_ACTOR = "did:soak:emitter"
#: Pairs paused and resumed in steady. Pausing hundreds at once would measure the control
#: API (one persisted record per call), not sync lag; a handful exercises the path.
PAUSED_PAIRS = 8
SAMPLE_DUTY = 0.02  # samplers may keep the receiver busy 2 % of the time at most


class SoakError(Exception):
    """The soak could not run (setup failed, peer unreachable …); the message names the fix."""


@dataclass(frozen=True)
class SoakConfig:
    """What one run does; ``windows`` comes from :func:`spl.soak.plan.plan_windows`."""

    windows: tuple[Window, ...]
    rate: float = SEED_STEADY_RATE  # steady emit rate per pair, records/s
    pairs: int = 1
    mode: str = "continuous"
    poll_interval: float = 0.2
    faults: bool = False
    peer_url: str | None = None
    peer_token: str | None = None
    connections: int | None = None  # emit connections; None = by peak rate
    drain_timeout: float = 60.0
    setup_timeout: float | None = None  # None = 60 s + 0.1 s per pair
    log_level: str = "warning"
    queue_interval: float = 0.1
    readback_interval: float = 2.0
    settle: float = 1.0  # after the pairs are live, before the clock starts
    relay: bool = False  # pairs reach the source through a byte-counting relay (bandwidth per pair)
    emit: str = "records"  # "records": POST /v1/records per record; "push": signed batches, POST /v1/sync/records
    resource_interval: float = 1.0  # RSS / fd samples of the daemons started here

    @property
    def total_seconds(self) -> float:
        return self.windows[-1].end

    @property
    def peak_total_rate(self) -> float:
        return self.rate * self.pairs * max(max(w.rate_from, w.rate_to) for w in self.windows)

    def emit_connections(self) -> int:
        if self.connections is not None:
            return max(1, self.connections)
        if self.emit == "push":
            return 2  # each request carries a batch: two keep one in flight while the other is built
        return int(min(16, max(2, math.ceil(self.peak_total_rate / 200))))

    def pairs_interval(self) -> float:
        return min(5.0, 0.5 * max(1.0, self.pairs / 100))

    def describe(self) -> dict[str, Any]:
        """The config as written into the ``--out`` JSON (never the token)."""
        return {
            "rate_per_pair": self.rate,
            "pairs": self.pairs,
            "mode": self.mode,
            "poll_interval": self.poll_interval if self.mode == "polling" else None,
            "faults": self.faults,
            "peer_url": self.peer_url,
            "peer_token": "(given)" if self.peer_token else None,
            "emit_connections": self.emit_connections(),
            "drain_timeout": self.drain_timeout,
            "total_seconds": self.total_seconds,
            "relay": self.relay,
            "emit": self.emit,
        }


@dataclass(frozen=True)
class ResourceSample:
    """One look at a local daemon in /proc: resident memory, open fds, and how many of them are sockets."""

    t: float
    role: str  # "source" or "receiver"
    rss_kib: int
    fds: int
    sockets: int


def proc_resources(pid: int) -> tuple[int, int, int] | None:
    """(VmRSS KiB, open fds, socket fds) of a process from /proc; None when it is gone."""
    try:
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
                break
        fds = sockets = 0
        for entry in Path(f"/proc/{pid}/fd").iterdir():
            fds += 1
            try:
                if entry.readlink().name.startswith("socket:"):
                    sockets += 1
            except OSError:
                pass  # closed while we looked
        return rss, fds, sockets
    except (OSError, ValueError):
        return None


@dataclass
class SoakResult:
    config: SoakConfig
    rows: list[WindowFigures]
    records: list[RecordSample]
    queue: list[QueueSample]
    events: list[tuple[float, str]]
    problems: list[str]
    notes: list[str] = field(default_factory=list)
    started_at: float = 0.0  # wall time of run time 0
    drain_seconds: float = 0.0
    emit_failures: int = 0
    resources: list[ResourceSample] = field(default_factory=list)
    baseline: dict[str, ResourceSample] = field(default_factory=dict)  # before any pair existed
    traffic: list[tuple[float, int, int]] = field(default_factory=list)  # (t, bytes to source, bytes from source)
    missing: dict[str, str] = field(default_factory=dict)  # record id → why it counts as not synced (first 1,000)

    @property
    def passed(self) -> bool:
        return not self.problems


# -- progress on stderr ---------------------------------------------------------------------


@dataclass
class Status:
    phase: str = "setup"
    t: float = 0.0
    window: str = ""
    emitted: int = 0
    synced: int = 0
    queue: int = 0
    errors: int = 0
    rate: float = 0.0


class Progress:
    """Progress on stderr: one self-rewriting line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, *, tty: bool | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.quiet = quiet
        self.total = 0.0
        self._bar_shown = False
        self._last_plain = -math.inf
        self._last_window = ""

    def note(self, text: str) -> None:
        if self.quiet:
            return
        if self._bar_shown:
            self.stream.write("\r\x1b[K")
            self._bar_shown = False
        self.stream.write(f"soak: {text}\n")
        self.stream.flush()

    def update(self, status: Status) -> None:
        if self.quiet:
            return
        clock = f"{_mmss(status.t)}/{_mmss(self.total)}"
        figures = (
            f"emitted {status.emitted} ({status.rate:.0f}/s)  synced {status.synced}  "
            f"queue {status.queue}  errors {status.errors}"
        )
        if self.tty:
            done = min(1.0, status.t / self.total) if self.total else 0.0
            bar = "#" * int(done * 20) + "." * (20 - int(done * 20))
            self.stream.write(f"\r\x1b[K{status.phase:<8} {status.window:<8} {clock} [{bar}] {figures}")
            self.stream.flush()
            self._bar_shown = True
            return
        every = max(10.0, self.total / 20)
        if status.window != self._last_window or status.t - self._last_plain >= every:
            self._last_window = status.window
            self._last_plain = status.t
            self.note(f"{status.phase} {status.window} {clock}  {figures}")

    def close(self) -> None:
        if self._bar_shown:
            self.stream.write("\n")
            self.stream.flush()
            self._bar_shown = False


def _mmss(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


# -- the daemons ------------------------------------------------------------------------------


class Cluster:
    """The throw-away daemons of one run: a source (unless ``--peer-url``) and the receiver."""

    def __init__(self, config: SoakConfig, root: Path) -> None:
        self.root = root
        self.source = None if config.peer_url else DaemonProcess(root / "source", log_level=config.log_level)
        self.receiver = DaemonProcess(root / "receiver", log_level=config.log_level)
        self.peer_url = config.peer_url.rstrip("/") if config.peer_url else None
        self.use_relay = config.relay
        self.relay: Relay | None = None

    @property
    def pair_url(self) -> str:
        """The URL the pairs pull from: the source's own, or the counting relay in front of it."""
        return self.relay.url if self.relay is not None else self.source_url

    @property
    def source_url(self) -> str:
        if self.source is not None:
            return self.source.url
        assert self.peer_url is not None
        return self.peer_url

    def daemons(self) -> list[DaemonProcess]:
        return [d for d in (self.source, self.receiver) if d is not None]

    def start(self) -> None:
        with ThreadPoolExecutor(max_workers=2) as pool:
            for future in [pool.submit(d.start, 0) for d in self.daemons()]:
                future.result()
        if self.use_relay:
            self.relay = Relay.start(self.source_url, self.root / "relay.json")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM every daemon still running, wait, ``kill -9`` what ignores it."""
        if self.relay is not None:
            self.relay.stop()
        running = [d.process for d in self.daemons() if d.process is not None and d.process.poll() is None]
        for process in running:
            try:
                process.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        for process in running:
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


# -- a byte-counting relay (bandwidth per pair) ----------------------------------------------


class Relay:
    """``python -m spl.soak.run relay``: a TCP relay in front of the source, in its own process.

    The pairs pull through it, so it counts exactly the bytes a pair puts on the wire
    in each direction (requests to the source, change feeds back) and nothing else —
    not the emits, not the samplers. It writes its two counters to a JSON file every
    quarter second. A separate process, so relaying does not compete with the emitter
    for this process's GIL; it costs one loopback hop (tens of microseconds) per chunk.
    """

    def __init__(self, process: subprocess.Popen[str], url: str, stats: Path) -> None:
        self.process = process
        self.url = url
        self.stats = stats

    @classmethod
    def start(cls, target_url: str, stats: Path) -> Relay:
        parts = urlsplit(target_url)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spl.soak.run",
                "relay",
                parts.hostname or "127.0.0.1",
                str(parts.port),
                str(stats),
            ],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        if not line.isdigit():
            process.kill()
            raise SoakError(f"the relay did not start (it said {line!r})")
        return cls(process, f"http://127.0.0.1:{line}", stats)

    def counters(self) -> tuple[int, int] | None:
        """(bytes towards the source, bytes from the source) so far; None before the first write."""
        try:
            data = json.loads(self.stats.read_text())
            return int(data["to_source"]), int(data["from_source"])
        except (OSError, ValueError, KeyError):
            return None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


async def _relay(host: str, port: int, stats: Path) -> None:
    counts = {"to_source": 0, "from_source": 0}

    async def pump(source: trio.SocketStream, sink: trio.SocketStream, key: str) -> None:
        try:
            while data := await source.receive_some(65536):
                counts[key] += len(data)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass

    async def handle(client: trio.SocketStream) -> None:
        try:
            upstream = await trio.open_tcp_stream(host, port)
        except OSError:
            await client.aclose()
            return
        async with client, upstream, trio.open_nursery() as nursery:

            async def one_way(a: trio.SocketStream, b: trio.SocketStream, key: str) -> None:
                await pump(a, b, key)
                nursery.cancel_scope.cancel()  # one side closed: close both

            nursery.start_soon(one_way, client, upstream, "to_source")
            nursery.start_soon(one_way, upstream, client, "from_source")

    async def write_stats() -> None:
        temporary = stats.with_suffix(".tmp")
        while True:
            await trio.Path(temporary).write_text(json.dumps(counts))
            await trio.Path(temporary).replace(stats)
            await trio.sleep(0.25)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    print(listeners[0].socket.getsockname()[1], flush=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_stats)
        await trio.serve_listeners(handle, listeners)


def relay_main(argv: list[str]) -> None:
    """Entry point of the relay process: ``relay HOST PORT STATS_FILE``; SIGTERM ends it."""
    host, port, stats = argv[0], int(argv[1]), Path(argv[2])
    signal.signal(signal.SIGTERM, lambda signum, frame: os._exit(0))  # nothing to flush: counters are on disk
    try:
        trio.run(_relay, host, port, stats)
    except KeyboardInterrupt:
        pass


# -- a minimal HTTP/1.1 client for emits ---------------------------------------------------------


class _ProtocolError(Exception):
    pass


class _RawConnection:
    """One keep-alive HTTP/1.1 connection; one request in flight."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = bytearray()

    @classmethod
    async def open(cls, host: str, port: int) -> _RawConnection:
        return cls(await trio.open_tcp_stream(host, port))

    async def round_trip(self, request: bytes) -> tuple[int, bytes, bool]:
        """Send one request; returns (status, body, server keeps the connection)."""
        await self.stream.send_all(request)
        while (end := self.buffer.find(b"\r\n\r\n")) < 0:
            await self._fill()
        head = bytes(self.buffer[:end]).decode("latin-1")
        del self.buffer[: end + 4]
        lines = head.split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise _ProtocolError(f"bad status line {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        while len(self.buffer) < length:
            await self._fill()
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return int(parts[1]), body, headers.get("connection", "").lower() != "close"

    async def _fill(self) -> None:
        data = await self.stream.receive_some(65536)
        if not data:
            raise _ProtocolError("connection closed by the server")
        self.buffer.extend(data)

    async def aclose(self) -> None:
        with trio.move_on_after(1):
            await self.stream.aclose()


# -- the run ----------------------------------------------------------------------------------------


@dataclass
class _Emitted:
    t: float
    window: int
    source_committed: float | None  # None until read back from the source (push acks carry no time)


class _Run:
    def __init__(self, config: SoakConfig, cluster: Cluster, progress: Progress) -> None:
        self.config = config
        self.cluster = cluster
        self.progress = progress
        self.windows = config.windows
        self.run_id = secrets.token_hex(4)
        self.threads = [f"th_soak_{self.run_id}_{n:04d}" for n in range(config.pairs)]
        self.thread_set = set(self.threads)
        self.clocks = [1] * config.pairs  # clock 1 is the priming record
        self.pair_ids: list[str] = []
        self.t0 = 0.0
        self.epoch = 0
        self.receiver_down = False
        self.emitted: dict[str, _Emitted] = {}
        self.emitted_by_window = [0] * len(config.windows)
        self.skipped_by_window = [0] * len(config.windows)
        self.synced: dict[str, float] = {}  # id → receiver commit time
        self.primed = [False] * config.pairs  # the clock-1 record of each thread has reached the receiver
        self.readback_after = 0
        self.source_after = 0  # --emit push: source records read back so far
        self.unconfirmed = 0  # pushed records whose source commit time is not known yet
        self.source_times: dict[str, float] = {}  # --emit push: id → commit time on the source, as read back
        self.signer = Identity.generate() if config.emit == "push" else None
        self.queue_samples: list[QueueSample] = []
        self.error_samples: list[ErrorSample] = []
        self.events: list[tuple[float, str]] = []
        self.emit_failures: list[str] = []
        self.last_errors: dict[str, str] = {}  # pair id → its last error, as the receiver reported it
        self.resources: list[ResourceSample] = []
        self.final_errors_read = False
        self.baseline: dict[str, ResourceSample] = {}
        self.traffic: list[tuple[float, int, int]] = []
        self.status = Status()
        self.source_headers: dict[str, str] = (
            {"authorization": f"Bearer {config.peer_token}"} if config.peer_token else {}
        )
        self.http: httpx.AsyncClient | None = None
        self.samples_http: httpx.AsyncClient | None = None

    # -- helpers -------------------------------------------------------------------------------

    def now(self) -> float:
        return trio.current_time() - self.t0

    @property
    def receiver_url(self) -> str:
        return self.cluster.receiver.url

    def _client(self) -> httpx.AsyncClient:
        assert self.http is not None
        return self.http

    async def _request(
        self, method: str, url: str, *, attempts: int = 4, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """A control request, retried on transport errors (a restarted receiver breaks pooled connections)."""
        for attempt in range(attempts):
            try:
                response = await self._client().request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if attempt == attempts - 1:
                    raise SoakError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None
                await trio.sleep(0.2 * (attempt + 1))
                continue
            if response.status_code >= 500 and attempt < attempts - 1:
                await trio.sleep(0.2 * (attempt + 1))
                continue
            return response
        raise AssertionError("unreachable")

    def _emit_body(self, index: int, clock: int) -> bytes:
        return json.dumps(
            {
                "act": "PUT",
                "actor": EMITTER_ACTOR,
                "thread": self.threads[index],
                "clock": clock,
                "body": {"kind": "soak.record", "n": clock, "run": self.run_id},
            },
            separators=(",", ":"),
        ).encode()

    # -- setup ------------------------------------------------------------------------------------

    async def setup(self) -> None:
        source = self.cluster.source_url
        response = await self._request("GET", f"{source}/v1/identity", headers=self.source_headers)
        if response.status_code != 200:
            raise SoakError(f"the peer at {source} answered {response.status_code} to GET /v1/identity")
        did = response.json().get("did")
        if not isinstance(did, str):
            raise SoakError(f"the peer at {source} has no identity (GET /v1/identity gave no did)")
        limiter = trio.CapacityLimiter(CONTROL_CONCURRENCY)
        pair_ids: dict[int, str] = {}
        for sample in await trio.to_thread.run_sync(self._look_at_daemons, 0.0):
            self.baseline[sample.role] = sample

        async def create(index: int) -> None:
            async with limiter:
                body: dict[str, Any] = {
                    "peer_did": did,
                    "peer_url": self.cluster.pair_url,
                    "thread_id": self.threads[index],
                    "mode": self.config.mode,
                }
                if self.config.mode == "polling":
                    body["poll_interval"] = self.config.poll_interval
                if self.config.peer_token:
                    body["token"] = self.config.peer_token
                answer = await self._request("POST", f"{self.receiver_url}/v1/sync/pairs", json=body)
                if answer.status_code != 201:
                    raise SoakError(f"creating a pair on the receiver failed: {answer.status_code} {answer.text[:300]}")
                pair_ids[index] = str(answer.json()["pair_id"])

        async def prime(index: int) -> None:
            async with limiter:
                answer = await self._request(
                    "POST",
                    f"{source}/v1/records",
                    headers={**self.source_headers, "content-type": "application/json"},
                    content=self._emit_body(index, 1),
                )
                if answer.status_code not in (200, 201):
                    raise SoakError(
                        f"emitting to {source} failed: {answer.status_code} {answer.text[:300]}"
                        + (" (is --peer-token valid, with records:write?)" if answer.status_code in (401, 403) else "")
                    )

        async with trio.open_nursery() as nursery:
            for index in range(self.config.pairs):
                nursery.start_soon(create, index)
        self.pair_ids = [pair_ids[index] for index in range(self.config.pairs)]
        if self.config.emit == "push":  # read the source back from its current head, not from its first record
            status = await self._request("GET", f"{source}/v1/status", headers=self.source_headers)
            if status.status_code == 200:
                self.source_after = int(status.json().get("sequence") or 0)
        async with trio.open_nursery() as nursery:
            for index in range(self.config.pairs):
                nursery.start_soon(prime, index)
        self.progress.note(f"{self.config.pairs} {self.config.mode} pair(s) created; waiting for them to pull")
        limit = self.config.setup_timeout or 60.0 + 0.1 * self.config.pairs
        with trio.move_on_after(limit) as scope:
            while True:
                await self.readback()
                states = await self._pair_states()
                if all(self.primed) and states.get("running", 0) >= self.config.pairs:
                    break
                await trio.sleep(0.2)
        if scope.cancelled_caught:
            raise SoakError(
                f"the pairs did not start within {limit:.0f}s (priming records synced: "
                f"{sum(self.primed)}/{self.config.pairs}); see the receiver's log"
            )
        await trio.sleep(self.config.settle)  # let continuous streams open after their first pull

    async def _pair_states(self) -> dict[str, int]:
        response = await self._request("GET", f"{self.receiver_url}/v1/sync/pairs")
        counts: dict[str, int] = {}
        ours = set(self.pair_ids)
        for pair in response.json().get("data", []):
            if pair.get("pair_id") in ours:
                counts[str(pair.get("state"))] = counts.get(str(pair.get("state")), 0) + 1
        return counts

    # -- read-back ---------------------------------------------------------------------------------

    async def _read_after(self, base_url: str, after: int, headers: dict[str, str]) -> tuple[list[Any], int, bool]:
        """One page of ``base_url``'s records after sequence ``after``: (records, new after, more to read)."""
        assert self.samples_http is not None
        response = await self.samples_http.get(
            f"{base_url}/v1/records",
            params={"after_sequence": after, "limit": READBACK_PAGE},
            headers=headers,
            timeout=60.0,
        )
        response.raise_for_status()
        page: list[Any] = json.loads(response.content).get("data", [])
        if page:
            after = max(after, int(page[-1].get("sequence", 0)))
        return page, after, len(page) == READBACK_PAGE

    async def readback(self) -> None:
        """Read the receiver's records after the last one seen: their receiver commit times."""
        more = True
        while more:
            page, self.readback_after, more = await self._read_after(self.receiver_url, self.readback_after, {})
            for record in page:
                thread = record.get("thread")
                if thread in self.thread_set:
                    committed = parse_rfc3339(record.get("created_at"))
                    if committed is not None:
                        self.synced[record["id"]] = committed
                    if record.get("clock") == 1:
                        self.primed[int(thread.rsplit("_", 1)[1])] = True

    async def source_readback(self) -> None:
        """``--emit push``: the source's commit time of each pushed record (a push ack carries none)."""
        more = True
        while more:
            page, self.source_after, more = await self._read_after(
                self.cluster.source_url, self.source_after, self.source_headers
            )
            for record in page:
                if record.get("thread") not in self.thread_set:
                    continue
                committed = parse_rfc3339(record.get("created_at"))
                if committed is None:
                    continue
                # The read-back can see a record before its push is acknowledged: keep every time.
                self.source_times[record["id"]] = committed
                emitted = self.emitted.get(record["id"])
                if emitted is not None and emitted.source_committed is None:
                    emitted.source_committed = committed
                    self.unconfirmed -= 1

    # -- emitting --------------------------------------------------------------------------------------

    async def produce(self, send: trio.MemorySendChannel[tuple[int, int]]) -> None:
        """Pace emits on trio's clock; skip (and count) what the source cannot take in time.

        The emitter never runs more than half a second behind the schedule, and what a
        window scheduled but could not send by its end is dropped, not carried into the
        next window: a saturated source shows as ``emitted < target``, never as a spike
        that spills into recovery.
        """
        config = self.config
        total = config.total_seconds
        connections = config.emit_connections()
        tick = min(0.02, max(0.002, 1.0 / max(config.peak_total_rate, 1.0)))
        done = 0  # emits produced or skipped so far
        current_window = 0
        async with send:
            while (t := self.now()) < total:
                window = window_index(self.windows, t)
                due = int(config.pairs * emits_due(self.windows, config.rate, t))
                if window != current_window:  # the previous window's backlog is dropped
                    behind = int(config.pairs * emits_due(self.windows, config.rate, self.windows[window].start)) - done
                    if behind > 0:
                        self.skipped_by_window[current_window] += behind
                        done += behind
                    current_window = window
                allowed = max(4 * connections, int(0.5 * config.pairs * rate_at(self.windows, config.rate, t)))
                if due - done > allowed:
                    self.skipped_by_window[window] += due - done - allowed
                    done = due - allowed
                deadline = trio.current_time() + 0.05
                while done < due and trio.current_time() < deadline:
                    index = done % config.pairs
                    self.clocks[index] += 1
                    await send.send((index, self.clocks[index]))
                    done += 1
                if done >= due:
                    await trio.sleep(tick)

    async def emit_worker(self, jobs: trio.MemoryReceiveChannel[tuple[int, int]]) -> None:
        parts = urlsplit(self.cluster.source_url)
        raw = parts.scheme == "http"
        host, port = parts.hostname or "127.0.0.1", parts.port or (80 if raw else 443)
        auth = "".join(f"{name}: {value}\r\n" for name, value in self.source_headers.items())
        connection: _RawConnection | None = None
        try:
            async for index, clock in jobs:
                body = self._emit_body(index, clock)
                request = (
                    f"POST {parts.path.rstrip('/')}/v1/records HTTP/1.1\r\nhost: {parts.netloc}\r\n{auth}"
                    f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
                ).encode() + body
                t_sent = self.now()
                outcome: str | None = None
                for attempt in range(EMIT_ATTEMPTS):
                    try:
                        if raw:
                            if connection is None:
                                connection = await _RawConnection.open(host, port)
                            with trio.fail_after(ROUND_TRIP_TIMEOUT):
                                status, payload, keep = await connection.round_trip(request)
                            if not keep:
                                await connection.aclose()
                                connection = None
                        else:
                            response = await self._client().post(
                                f"{self.cluster.source_url}/v1/records",
                                content=body,
                                headers={**self.source_headers, "content-type": "application/json"},
                            )
                            status, payload = response.status_code, response.content
                    except (OSError, trio.BrokenResourceError, trio.TooSlowError, _ProtocolError, httpx.HTTPError):
                        if connection is not None:
                            await connection.aclose()
                            connection = None
                        outcome = "connection failed"
                        await trio.sleep(min(1.0, 0.05 * 2**attempt))
                        continue
                    if status in (200, 201):
                        record = json.loads(payload)
                        committed = parse_rfc3339(record.get("created_at"))
                        window = window_index(self.windows, t_sent)
                        self.emitted[record["id"]] = _Emitted(t_sent, window, committed or time.time())
                        self.emitted_by_window[window] += 1
                        outcome = None
                        break
                    outcome = f"HTTP {status}: {payload[:200].decode(errors='replace')}"
                    if status < 500 and status != 429:
                        break
                    await trio.sleep(min(1.0, 0.05 * 2**attempt))
                if outcome is not None:
                    self.emit_failures.append(outcome)
                    if len(self.emit_failures) <= 3:
                        self.progress.note(f"emit failed after retries: {outcome}")
        finally:
            if connection is not None:
                await connection.aclose()

    def _signed(self, index: int, clock: int) -> dict[str, Any]:
        """A record signed by this run's own key, as ``POST /v1/sync/records`` takes it."""
        assert self.signer is not None
        envelope = validate_envelope(json.loads(self._emit_body(index, clock)))
        return {
            **envelope.fields(),
            "signer": self.signer.did,
            "sig": self.signer.sign_record_id(envelope.id),
        }

    async def push_worker(self, jobs: trio.MemoryReceiveChannel[tuple[int, int]]) -> None:
        """``--emit push``: whatever is queued (up to PUSH_BATCH) goes out as one signed batch."""
        parts = urlsplit(self.cluster.source_url)
        url = f"{self.cluster.source_url}/v1/sync/records"
        headers = {**self.source_headers, "content-type": "application/json"}
        async for first in jobs:
            items = [first]
            while len(items) < PUSH_BATCH:
                try:
                    items.append(jobs.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            records = [self._signed(index, clock) for index, clock in items]
            body = json.dumps({"records": records}, separators=(",", ":")).encode()
            t_sent = self.now()
            outcome: str | None = "no attempt"
            for attempt in range(EMIT_ATTEMPTS):
                try:
                    response = await self._client().post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    outcome = f"{type(exc).__name__} ({parts.netloc})"
                    await trio.sleep(min(1.0, 0.05 * 2**attempt))
                    continue
                if response.status_code == 200:
                    answer = response.json()
                    window = window_index(self.windows, t_sent)
                    for record_id in [*answer.get("accepted", []), *answer.get("duplicates", [])]:
                        if record_id not in self.emitted:
                            committed = self.source_times.get(record_id)
                            self.emitted[record_id] = _Emitted(t_sent, window, committed)
                            self.emitted_by_window[window] += 1
                            self.unconfirmed += committed is None
                    for refusal in answer.get("refused", []):
                        self.emit_failures.append(f"refused {refusal.get('code')}: {refusal.get('reason')}")
                    outcome = None
                    break
                outcome = f"HTTP {response.status_code}: {response.text[:200]}"
                if response.status_code < 500 and response.status_code != 429:
                    break
                await trio.sleep(min(1.0, 0.05 * 2**attempt))
            if outcome is not None:
                self.emit_failures.extend([outcome] * len(items))
                if len(self.emit_failures) <= 3 * len(items):
                    self.progress.note(f"push failed after retries: {outcome}")

    async def emit(self) -> None:
        connections = self.config.emit_connections()
        push = self.config.emit == "push"
        send, receive = trio.open_memory_channel[tuple[int, int]](PUSH_BATCH * 2 if push else connections)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.produce, send)
            async with receive:
                for _ in range(connections):
                    nursery.start_soon(self.push_worker if push else self.emit_worker, receive.clone())

    # -- sampling -------------------------------------------------------------------------------------

    async def _sample(self, path: str) -> tuple[int, dict[str, Any]] | None:
        """GET on the receiver unless it is restarting; None when it did not answer in this epoch."""
        if self.receiver_down:
            return None
        epoch = self.epoch
        assert self.samples_http is not None
        try:
            response = await self.samples_http.get(f"{self.receiver_url}{path}", timeout=10.0 + self.config.pairs / 50)
        except httpx.HTTPError:
            return None
        if self.receiver_down or epoch != self.epoch or response.status_code != 200:
            return None
        payload: dict[str, Any] = response.json()
        return epoch, payload

    async def sample_queue(self) -> None:
        answer = await self._sample("/v1/sync/health")
        if answer is None:
            return
        epoch, health = answer
        queue = health.get("reconcile_queue") or {}
        sample = QueueSample(self.now(), epoch, int(queue.get("depth", 0)), int(queue.get("high_water", 0)))
        self.queue_samples.append(sample)
        self.status.queue = sample.depth

    async def sample_pairs(self) -> bool:
        """Read every pair's ``errors_total``; False when the receiver did not answer."""
        answer = await self._sample("/v1/sync/pairs")
        if answer is None:
            return False
        epoch, listing = answer
        t = self.now()
        ours = set(self.pair_ids)
        for pair in listing.get("data", []):
            if pair.get("pair_id") in ours:
                self.error_samples.append(ErrorSample(t, epoch, str(pair["pair_id"]), int(pair.get("errors_total", 0))))
                error = pair.get("last_error")
                if isinstance(error, dict) and error.get("code"):
                    self.last_errors[str(pair["pair_id"])] = f"{error.get('code')}: {error.get('message')}"
        self.status.errors = sum(error_deltas_by_window(self.windows, self.error_samples))
        return True

    def _look_at_daemons(self, t: float) -> list[ResourceSample]:
        samples = []
        for role, daemon in (("source", self.cluster.source), ("receiver", self.cluster.receiver)):
            if daemon is None or daemon.process is None or daemon.process.poll() is not None:
                continue
            found = proc_resources(daemon.process.pid)
            if found is not None:
                samples.append(ResourceSample(t, role, *found))
        return samples

    async def sample_resources(self) -> None:
        """RSS and fds of the daemons started here, and the relay's byte counters (local /proc reads)."""
        t = self.now()
        if not self.receiver_down:
            self.resources.extend(await trio.to_thread.run_sync(self._look_at_daemons, t))
        if self.cluster.relay is not None:
            counters = await trio.to_thread.run_sync(self.cluster.relay.counters)
            if counters is not None:
                self.traffic.append((t, *counters))

    async def _every(self, interval: float, action: Callable[[], Awaitable[object]], *, stretch: bool = True) -> None:
        """Run ``action`` every ``interval`` seconds until cancelled; a failure is skipped, not fatal.

        With ``stretch`` the period grows so that sampling keeps the receiver busy at most
        ``SAMPLE_DUTY`` of the time: ``/v1/sync/health`` walks every pair's last hour of
        figures, so at high rates one call costs tens of milliseconds, and sampling it every
        100 ms would take a fifth of the receiver's CPU and distort the lag being measured.
        Peaks between samples are not lost: the queue's high-water mark carries them.
        """
        while True:
            started = trio.current_time()
            try:
                with trio.move_on_after(max(5.0, interval * 10)):
                    await action()
            except (httpx.HTTPError, ValueError, KeyError):
                pass
            took = trio.current_time() - started
            await trio.sleep_until(started + (max(interval, took / SAMPLE_DUTY) if stretch else interval))

    async def report_progress(self) -> None:
        while True:
            t = self.now()
            status = self.status
            status.t = min(t, self.config.total_seconds)
            status.window = self.windows[window_index(self.windows, t)].name if t < self.config.total_seconds else ""
            status.emitted = len(self.emitted)
            status.synced = len(self.synced) - sum(self.primed)
            status.rate = self.config.pairs * rate_at(self.windows, self.config.rate, t)
            self.progress.update(status)
            await trio.sleep(0.5)

    # -- the mixed workload -----------------------------------------------------------------------------

    async def control(self) -> None:
        for at, action in workload_plan(self.windows, faults=self.config.faults):
            await trio.sleep_until(self.t0 + at)
            started = self.now()
            if action == "pause":
                self.events.append((started, "pairs paused"))
                await self._pause_and_resume(pause_seconds(self.windows))
                self.events.append((self.now(), "pairs resumed"))
                paused = min(PAUSED_PAIRS, len(self.pair_ids))
                self.progress.note(
                    f"paused {paused} pair(s) at {started:.1f}s for {pause_seconds(self.windows):.2f}s each; "
                    f"all resumed after {self.now() - started:.2f}s"
                )
                continue
            await self._restart_receiver(kill=action == "kill")
            label = "receiver restarted (kill -9)" if action == "kill" else "receiver restarted (SIGTERM)"
            self.events.append((started, label))
            self.progress.note(f"{label} at {started:.1f}s, took {self.now() - started:.2f}s")

    async def _pause_and_resume(self, hold: float) -> None:
        """Pause the (first eight) pairs, hold each for ``hold`` seconds from its own pause, then resume it.

        Pauses and resumes have separate concurrency limits, so with many pairs a resume
        never queues behind the pauses of other pairs (each pair's pause stays ``hold``).
        """
        limiters = {action: trio.CapacityLimiter(CONTROL_CONCURRENCY // 2) for action in ("pause", "resume")}

        async def call(pair_id: str, action: str) -> None:
            async with limiters[action]:
                response = await self._request("POST", f"{self.receiver_url}/v1/sync/pairs/{pair_id}/{action}", json={})
            if response.status_code != 200:
                raise SoakError(f"{action} {pair_id}: {response.status_code} {response.text[:200]}")

        async def cycle(pair_id: str) -> None:
            await call(pair_id, "pause")
            await trio.sleep(hold)
            await call(pair_id, "resume")

        async with trio.open_nursery() as nursery:
            for pair_id in self.pair_ids[:PAUSED_PAIRS]:
                nursery.start_soon(cycle, pair_id)

    async def _restart_receiver(self, *, kill: bool) -> None:
        with trio.move_on_after(5):
            await self.sample_pairs()  # the last errors_total of this incarnation
        self.receiver_down = True
        receiver = self.cluster.receiver
        try:
            if kill:
                await trio.to_thread.run_sync(receiver.kill)
            else:
                await trio.to_thread.run_sync(receiver.stop)
            self.epoch += 1
            await trio.to_thread.run_sync(receiver.start)
        finally:
            self.receiver_down = False

    # -- draining and the figures -----------------------------------------------------------------------

    async def drain(self) -> float:
        started = trio.current_time()
        with trio.move_on_after(self.config.drain_timeout):
            while True:
                try:
                    await self.readback()
                except (httpx.HTTPError, ValueError):
                    pass
                if self.config.emit == "push" and self.unconfirmed:
                    try:
                        await self.source_readback()
                    except (httpx.HTTPError, ValueError):
                        pass
                if not self.unconfirmed and all(record_id in self.synced for record_id in self.emitted):
                    break
                await trio.sleep(0.25)
        for _ in range(5):  # the figures that decide the verdict: never skip them silently
            if await self.sample_pairs():
                self.final_errors_read = True
                break
            await trio.sleep(1.0)
        return trio.current_time() - started

    async def run(self) -> SoakResult:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=16)
        async with (
            httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=5.0), limits=limits) as self.http,
            httpx.AsyncClient(timeout=httpx.Timeout(10.0, connect=2.0), limits=limits) as self.samples_http,
        ):
            await self.setup()
            self.t0 = trio.current_time()
            started_at = time.time()
            self.status.phase = "running"
            self.progress.total = self.config.total_seconds
            self.progress.note(
                f"running {self.config.total_seconds:.0f}s: {self.config.pairs} pair(s) × {self.config.rate:g} "
                f"records/s steady, {self.config.emit_connections()} emit connection(s)"
                + (", with faults" if self.config.faults else "")
            )
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._every, self.config.queue_interval, self.sample_queue)
                nursery.start_soon(self._every, self.config.pairs_interval(), self.sample_pairs)
                # Read-backs are not stretched: a later one would only have more to read.
                nursery.start_soon(
                    partial(self._every, stretch=False), self.config.readback_interval, self._readback_live
                )
                nursery.start_soon(self._every, self.config.resource_interval, self.sample_resources)
                if self.config.emit == "push":
                    nursery.start_soon(
                        partial(self._every, stretch=False), self.config.readback_interval, self.source_readback
                    )
                nursery.start_soon(self.report_progress)
                async with trio.open_nursery() as load:
                    load.start_soon(self.emit)
                    load.start_soon(self.control)
                self.status.phase = "draining"
                self.progress.note(f"emitting done ({len(self.emitted)} records); draining")
                drain_seconds = await self.drain()
                nursery.cancel_scope.cancel()
            self.progress.close()
        return self._result(started_at, drain_seconds)

    async def _readback_live(self) -> None:
        if not self.receiver_down:
            await self.readback()

    def _result(self, started_at: float, drain_seconds: float) -> SoakResult:
        records = [
            RecordSample(
                e.t,
                e.window,
                lag_ms(e.source_committed, self.synced[record_id])
                if record_id in self.synced and e.source_committed is not None
                else None,
            )
            for record_id, e in self.emitted.items()
        ]
        missing: dict[str, str] = {}
        for record_id, e in self.emitted.items():
            if len(missing) >= 1000:
                break
            if e.source_committed is None:
                missing[record_id] = "acknowledged by the source, never found in its records"
            elif record_id not in self.synced:
                missing[record_id] = "on the source, not on the receiver"
        queue_max = queue_max_by_window(self.windows, self.queue_samples)
        pair_errors = error_deltas_by_window(self.windows, self.error_samples)
        targets = [
            self.config.pairs
            * (emits_due(self.windows, self.config.rate, w.end) - emits_due(self.windows, self.config.rate, w.start))
            for w in self.windows
        ]
        rows = aggregate(self.windows, records, queue_max, pair_errors, targets)
        found = problems(rows)
        if not self.final_errors_read:
            found.append("the receiver did not answer GET /v1/sync/pairs after the drain: pair-level errors unknown")
        notes: list[str] = []
        for row, skipped in zip(rows, self.skipped_by_window, strict=True):
            if row.target_emits and row.records_emitted < 0.95 * row.target_emits - 1:
                notes.append(
                    f"{row.window}: emitted {row.records_emitted} of {row.target_emits:.0f} scheduled "
                    f"({row.records_emitted / row.target_emits:.0%}; {skipped} skipped because the source fell "
                    "behind): the source's emit path is the limit, not the pair"
                )
        if any(row.pair_errors for row in rows):
            for pair_id, error in sorted(self.last_errors.items()):
                notes.append(f"pair {pair_id}: last error {error}")
        if self.unconfirmed:
            notes.append(f"{self.unconfirmed} pushed record(s) were never seen on the source (counted as not synced)")
        if self.emit_failures:
            notes.append(f"{len(self.emit_failures)} emit(s) failed after retries (first: {self.emit_failures[0]})")
        if drain_seconds >= self.config.drain_timeout:
            notes.append(f"the drain hit its {self.config.drain_timeout:.0f}s limit (--drain-timeout)")
        return SoakResult(
            config=self.config,
            rows=rows,
            records=records,
            queue=self.queue_samples,
            events=sorted(self.events),
            problems=found,
            notes=notes,
            started_at=started_at,
            drain_seconds=drain_seconds,
            emit_failures=len(self.emit_failures),
            resources=self.resources,
            baseline=self.baseline,
            traffic=self.traffic,
            missing=missing,
        )


def run_soak(
    config: SoakConfig, progress: Progress | None = None, *, workdir: Path | None = None, keep: bool = False
) -> SoakResult:
    """Run one soak end to end; the daemons it starts are always stopped (and their homes removed unless ``keep``).

    Raises:
        SoakError: the run could not start or a control action failed.
    """
    if config.pairs < 1:
        raise SoakError("--pairs must be at least 1")
    if config.mode not in MODES:
        raise SoakError(f"--mode {config.mode!r} is not a mode; use continuous or polling")
    if config.rate <= 0:
        raise SoakError("--rate must be above zero")
    if config.emit not in EMIT_PATHS:
        raise SoakError(f"--emit {config.emit!r}: use records or push")
    progress = progress or Progress()
    root = Path(tempfile.mkdtemp(prefix="spl-soak-", dir=workdir))
    cluster = Cluster(config, root)
    try:
        where = f"the peer {config.peer_url}" if config.peer_url else "a throw-away source"
        progress.note(f"starting the receiving daemon and {where} on 127.0.0.1")
        cluster.start()
        run = _Run(config, cluster, progress)
        try:
            return trio.run(run.run)
        except BaseExceptionGroup as group:
            raise _unwrap(group) from None
    except (RuntimeError, OSError) as exc:
        raise SoakError(f"{type(exc).__name__}: {exc}") from None
    finally:
        progress.close()
        cluster.stop()
        if keep:
            progress.note(f"kept the daemons' homes and logs (test-daemon.log) in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def _unwrap(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception a nursery raised: a SoakError if there is one (Ctrl-C passes through)."""
    leaves: list[BaseException] = []

    def walk(error: BaseException) -> None:
        if isinstance(error, BaseExceptionGroup):
            for inner in error.exceptions:
                walk(inner)
        else:
            leaves.append(error)

    walk(group)
    for kinds in ((KeyboardInterrupt,), (SoakError,), (BaseException,)):
        for leaf in leaves:
            if isinstance(leaf, kinds):
                return leaf
    return group


def result_config(result: SoakResult) -> dict[str, Any]:
    """The config plus run facts, for the ``--out`` JSON."""
    return {
        **result.config.describe(),
        "windows_seconds": [w.seconds for w in result.config.windows],
        "started_at": result.started_at,
        "drain_seconds": round(result.drain_seconds, 3),
        "emit_failures": result.emit_failures,
        "notes": result.notes,
        "config_raw": {k: v for k, v in asdict(result.config).items() if k not in ("windows", "peer_token")},
    }


if __name__ == "__main__":
    if sys.argv[1:2] == ["relay"]:
        relay_main(sys.argv[2:])
    else:
        sys.exit("usage: python -m spl.soak.run relay HOST PORT STATS_FILE")
