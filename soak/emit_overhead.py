"""What spl itself costs per emit: server CPU per request, spl daemon minus a bare quart-trio route.

Run: ``python -m spl.soak.emit_overhead`` (``--help`` for the sizes). It starts, each in its own process on
127.0.0.1:0:

- **bare**: a quart-trio app with one ``POST /v1/records`` route that reads the body and returns a constant
  small JSON, served by Hypercorn with spl's own settings (``spl.transport.http_server.hypercorn_config``);
- **spl, auth off**: a real daemon (``spl serve --insecure-localhost``, its own temporary home);
- **spl, auth on**: a real daemon with tokens required, driven with its admin token.

Each is driven by the same minimal keep-alive HTTP/1.1 client (``spl.soak.raw_http``) with the requests the
SDK sends (its headers, its envelope; every request a new record: one actor and thread per connection, a new
clock each time), with 1 connection and with 16. What is measured is the server process's CPU time
(``/proc``, user + system, every thread) over the run, divided by the requests: robust to other load on the
machine, unlike a rate. The servers take turns, several rounds; the report gives medians and the spread, and
spl's share = spl's CPU per request minus the bare route's.

The bare route is the floor spl cannot go below on its stack (Hypercorn, h11, trio, Quart): everything above
it — the connection guard, the gates, JSON decoding and validation, the record id, the signature, the
hand-off to the writer and its COMMIT, the fan-out to folds and watchers — is spl's share.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio

from spl.daemon.launcher import DaemonProcess
from spl.soak.procfs import cpu_seconds
from spl.soak.raw_http import KeepAliveConnection
from spl.transport.http_server import ConnectionLimits, hypercorn_config

__all__ = ["Target", "bare_app", "emit_request", "main"]

HOST = "127.0.0.1"
BARE_ANSWER = b'{"object":"record","ok":true}'
# httpx's default headers as the SDK sends them (plus ``x-api-key`` when the daemon wants a token).
SDK_HEADERS = (
    "accept: */*\r\naccept-encoding: gzip, deflate\r\nconnection: keep-alive\r\n"
    "user-agent: python-httpx/0.28.1\r\ncontent-type: application/json\r\n"
)
START_TIMEOUT = 30.0


def bare_app() -> QuartTrio:
    """The baseline: a quart-trio app whose one route reads the body and answers a constant."""
    app = QuartTrio("spl-emit-overhead-bare")

    @app.post("/v1/records")
    async def emit() -> Response:
        await request.get_data(cache=False)
        return Response(BARE_ANSWER, status=201, content_type="application/json")

    return app


async def _serve_bare() -> None:
    """Serve :func:`bare_app` on 127.0.0.1:0 until SIGTERM; print the URL on stdout once bound."""
    config = hypercorn_config(HOST, 0, ConnectionLimits())
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        stop = trio.Event()

        async def stop_on_signal() -> None:
            async for _ in signals:
                stop.set()
                return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(stop_on_signal)
            binds = await nursery.start(partial(serve, bare_app(), config, shutdown_trigger=stop.wait))
            print(binds[0], flush=True)


class BareServer:
    """The bare route in a child process (``--serve-bare``): its CPU is its own, like a daemon's."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self) -> str:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spl.soak.emit_overhead", "--serve-bare"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()  # the child prints its URL once bound
        if not line.startswith("http://"):
            self.stop()
            raise RuntimeError(f"the bare server did not start (printed {line!r})")
        self.url = line
        return line

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def emit_request(host_port: str, actor: str, thread: str, clock: int, n: int, token: str | None) -> bytes:
    """One ``POST /v1/records`` as the SDK's ``client.emit(act="PUT", kind=…, body={"n": n})`` sends it."""
    body = json.dumps(
        {
            "act": "PUT",
            "actor": actor,
            "body": {"n": n, "kind": "bench.overhead.record", "_v": 1},
            "clock": clock,
            "data_type": "SCALAR",
            "parents": [],
            "thread": thread,
        }
    ).encode()
    auth = f"x-api-key: {token}\r\n" if token else ""
    head = f"POST /v1/records HTTP/1.1\r\nhost: {host_port}\r\n{SDK_HEADERS}{auth}content-length: {len(body)}\r\n\r\n"
    return head.encode() + body


@dataclass
class Target:
    """One server under test, and the CPU per request of each of its runs (by connection count)."""

    name: str
    url: str
    pid: int
    token: str | None = None
    runs: dict[int, list[float]] = field(default_factory=dict)
    rates: dict[int, list[float]] = field(default_factory=dict)

    @property
    def host_port(self) -> str:
        return self.url.split("://", 1)[1]


_clocks = itertools.count(1)  # one sequence for every request of this process: no (thread, actor, clock) repeats


async def drive(target: Target, connections: int, requests: int, label: str) -> tuple[float, float]:
    """``requests`` emits over ``connections`` keep-alive connections; returns (server CPU s, wall s)."""
    host, port = target.host_port.rsplit(":", 1)
    per_connection = max(1, requests // connections)
    opened = [await KeepAliveConnection.open(host, int(port)) for _ in range(connections)]
    failures: list[str] = []

    async def worker(index: int) -> None:
        actor, thread = f"did:bench:overhead{index}", f"bench.overhead.{label}.{index}"
        for n in range(per_connection):
            request = emit_request(target.host_port, actor, thread, next(_clocks), n, target.token)
            status, body, keep = await opened[index].round_trip(request)
            if status not in (200, 201):
                failures.append(f"{status} {body[:200]!r}")
                return
            if not keep:  # Hypercorn closes a connection after 1,000 requests (keep_alive_max_requests)
                await opened[index].aclose()
                opened[index] = await KeepAliveConnection.open(host, int(port))

    try:
        cpu_before, wall_before = cpu_seconds(target.pid), time.perf_counter()
        async with trio.open_nursery() as nursery:
            for index in range(connections):
                nursery.start_soon(worker, index)
        cpu, wall = cpu_seconds(target.pid) - cpu_before, time.perf_counter() - wall_before
    finally:
        for connection in opened:
            await connection.aclose()
    if failures:
        raise RuntimeError(f"{target.name}: {len(failures)} request(s) failed, first: {failures[0]}")
    return cpu, wall


async def measure(targets: Sequence[Target], connection_counts: Sequence[int], requests: int, rounds: int) -> None:
    """Alternate the targets, ``rounds`` times for each connection count; record CPU ms per request."""
    for connections in connection_counts:
        for target in targets:  # warm-up: imports, caches, the store's first pages
            await drive(target, connections, max(connections, requests // 10), f"warm{connections}")
        for round_index in range(rounds):
            # Rotate who goes first so that a burst of load on the machine does not always hit the same one.
            order = [*targets[round_index % len(targets) :], *targets[: round_index % len(targets)]]
            for target in order:
                done = max(1, requests // connections) * connections
                cpu, wall = await drive(target, connections, requests, f"c{connections}r{round_index}")
                target.runs.setdefault(connections, []).append(cpu * 1000 / done)
                target.rates.setdefault(connections, []).append(done / wall)


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def report(targets: Sequence[Target], connection_counts: Sequence[int], requests: int, rounds: int) -> str:
    """The table: CPU ms per request (median, min–max) per target, and spl's share over the bare route."""
    bare = targets[0]
    lines = [f"server CPU per request, ms (median of {rounds} rounds of {requests} requests; min-max)"]
    for connections in connection_counts:
        lines.append(f"  {connections} connection(s):")
        for target in targets:
            runs = target.runs[connections]
            lines.append(
                f"    {target.name:<14} {_median(runs):6.3f}  ({min(runs):.3f}-{max(runs):.3f})"
                f"  {_median(target.rates[connections]):7.0f} requests/s"
            )
        for target in targets[1:]:
            share = [spl - base for spl, base in zip(target.runs[connections], bare.runs[connections], strict=True)]
            lines.append(
                f"    spl share ({target.name.removeprefix('spl, ')}): {_median(share):6.3f} ms"
                f"  (per-round {min(share):.3f}-{max(share):.3f})"
            )
    return "\n".join(lines)


def summary(targets: Sequence[Target], connection_counts: Sequence[int]) -> dict[str, object]:
    """Every figure as one JSON object (``--json``)."""
    bare = targets[0]
    figures: dict[str, object] = {}
    for connections in connection_counts:
        for target in targets:
            key = target.name.replace(", ", "_").replace(" ", "_")
            figures[f"{key}_c{connections}_cpu_ms"] = round(_median(target.runs[connections]), 4)
        for target in targets[1:]:
            key = target.name.replace(", ", "_").replace(" ", "_")
            share = [spl - base for spl, base in zip(target.runs[connections], bare.runs[connections], strict=True)]
            figures[f"{key}_c{connections}_share_ms"] = round(_median(share), 4)
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m spl.soak.emit_overhead",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--requests", type=int, default=3000, help="requests per measured run (default 3000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per connection count (default 5)")
    parser.add_argument(
        "--connections", default="1,16", help="comma-separated connection counts to measure (default 1,16)"
    )
    parser.add_argument("--no-auth", action="store_true", help="skip the daemon with authentication on")
    parser.add_argument("--json", action="store_true", help="also print one JSON object with every figure")
    parser.add_argument("--serve-bare", action="store_true", help=argparse.SUPPRESS)  # the bare server's child
    args = parser.parse_args(argv)
    if args.serve_bare:
        trio.run(_serve_bare)
        return
    connection_counts = [int(part) for part in args.connections.split(",") if part.strip()]
    if args.requests < 1 or args.rounds < 1 or not connection_counts or min(connection_counts) < 1:
        parser.error("--requests, --rounds and every --connections count must be at least 1")
    bare = BareServer()
    daemons: list[DaemonProcess] = []
    with tempfile.TemporaryDirectory(prefix="spl-overhead-") as tmp:
        try:
            targets = [Target("bare route", bare.start(), bare.pid)]
            off = DaemonProcess(Path(tmp) / "off")
            daemons.append(off)
            targets.append(Target("spl, auth off", off.start(port=0), off.pid))
            if not args.no_auth:
                on = DaemonProcess(Path(tmp) / "on", insecure=False)
                daemons.append(on)
                targets.append(Target("spl, auth on", on.start(port=0), on.pid, token=on.admin_token))
            trio.run(measure, targets, connection_counts, args.requests, args.rounds)
        finally:
            for daemon in daemons:
                daemon.stop()
            bare.stop()
    print(report(targets, connection_counts, args.requests, args.rounds))
    if args.json:
        print(json.dumps(summary(targets, connection_counts)))


if __name__ == "__main__":
    main()
