"""Emit throughput and watch latency against a real daemon, driven by the official SDK.

Run: ``make bench`` (or ``python -m spl.soak.emit_bench [--records N]``). It starts a
throw-away daemon on 127.0.0.1 (auth off, its own temporary home), then measures:

1. emit throughput with 1 and with 16 concurrent SDK clients (records/s, p50/p99 latency);
2. watch latency: emit → delivery to an SDK ``subscribe`` callback, one record at a time.

Figures go to stdout as a table and, with ``--json``, as one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from syncropel import Client, Identity

from spl.daemon.launcher import DaemonProcess
from spl.soak.procfs import cpu_seconds
from spl.soak.stats import summary_ms


def measured(run: Any, daemon_pid: int) -> dict[str, Any]:
    """Run one benchmark and add CPU milliseconds per record on both sides of the wire."""
    client_before, daemon_before = time.process_time(), cpu_seconds(daemon_pid)
    result: dict[str, Any] = asyncio.run(run)
    client_cpu, daemon_cpu = time.process_time() - client_before, cpu_seconds(daemon_pid) - daemon_before
    result["client_cpu_ms_per_record"] = round(client_cpu * 1000 / result["records"], 3)
    result["daemon_cpu_ms_per_record"] = round(daemon_cpu * 1000 / result["records"], 3)
    return result


async def emit_run(url: str, clients: int, total: int, thread_prefix: str) -> dict[str, Any]:
    per_client = total // clients
    latencies: list[float] = []
    failures = 0

    async def worker(index: int) -> None:
        nonlocal failures
        async with Client(endpoint=url, identity=Identity.static(f"did:bench:client{index}")) as client:
            thread = f"{thread_prefix}.{index}"
            for _ in range(per_client):
                started = time.perf_counter()
                result = await client.emit(act="PUT", kind="bench.emit.record", body={"n": index}, thread=thread)
                latencies.append(time.perf_counter() - started)
                if not result.success:
                    failures += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker(index) for index in range(clients)))
    elapsed = time.perf_counter() - started
    done = per_client * clients
    return {
        "clients": clients,
        "records": done,
        "failures": failures,
        "seconds": round(elapsed, 3),
        "records_per_s": round(done / elapsed, 1),
        **summary_ms(latencies),
    }


async def raw_emit_run(url: str, connections: int, total: int, thread_prefix: str) -> dict[str, Any]:
    """Like ``emit_run`` but with a minimal HTTP/1.1 client (pre-built requests, keep-alive).

    The SDK spends about as much CPU per emit as the daemon does, and both share this
    machine's two cores; this run shows what the daemon sustains when the client is cheap.
    """
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    per_connection = total // connections
    latencies: list[float] = []

    async def worker(index: int) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for n in range(per_connection):
                body = json.dumps(
                    {
                        "act": "PUT",
                        "actor": f"did:bench:raw{index}",
                        "thread": f"{thread_prefix}.{index}",
                        "clock": n + 1,
                        "body": {"n": n, "kind": "bench.raw.record", "_v": 1},
                    }
                ).encode()
                request = (
                    f"POST /v1/records HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
                    f"content-length: {len(body)}\r\n\r\n"
                ).encode() + body
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 20"):
                    raise RuntimeError(head.decode(errors="replace"))
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker(index) for index in range(connections)))
    elapsed = time.perf_counter() - started
    done = per_connection * connections
    return {
        "clients": connections,
        "records": done,
        "failures": 0,
        "seconds": round(elapsed, 3),
        "records_per_s": round(done / elapsed, 1),
        **summary_ms(latencies),
    }


async def watch_run(url: str, count: int, thread: str) -> dict[str, Any]:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    opened = asyncio.Event()
    all_in = asyncio.Event()

    def on_record(record: dict[str, Any]) -> None:
        seen = time.perf_counter()
        marker = record.get("body", {}).get("marker")
        if marker in sent:
            latencies.append(seen - sent.pop(marker))
            if len(latencies) == count:
                all_in.set()

    async with (
        Client(endpoint=url, identity=Identity.static("did:bench:watcher")) as watcher,
        Client(endpoint=url, identity=Identity.static("did:bench:emitter")) as emitter,
    ):
        subscription = watcher.subscribe(thread, on_record, on_open=lambda: opened.set())
        await asyncio.wait_for(opened.wait(), 10)
        for index in range(count):
            marker = f"m{index}"
            sent[marker] = time.perf_counter()
            result = await emitter.emit(act="PUT", kind="bench.watch.record", body={"marker": marker}, thread=thread)
            assert result.success, result.error
            await asyncio.sleep(0.005)  # pacing between emits, not synchronisation
        await asyncio.wait_for(all_in.wait(), 30)
        subscription.close()
    return {"records": count, **summary_ms(latencies)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=4000, help="records per throughput run (default 4000)")
    parser.add_argument("--watch-records", type=int, default=500, help="records for the watch latency run")
    parser.add_argument("--json", action="store_true", help="also print one JSON object with every figure")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="spl-bench-") as tmp:
        daemon = DaemonProcess(Path(tmp) / "home")
        url = daemon.start(port=0)
        try:
            assert daemon.process is not None
            pid = daemon.process.pid
            results = {
                "emit_1_client": measured(emit_run(url, 1, args.records // 4, "bench.single"), pid),
                "emit_16_clients": measured(emit_run(url, 16, args.records, "bench.multi"), pid),
                "emit_16_raw_connections": measured(raw_emit_run(url, 16, args.records, "bench.raw"), pid),
                "watch": asyncio.run(watch_run(url, args.watch_records, "bench.watch")),
            }
        finally:
            daemon.stop()
    print("emit throughput (official SDK, loopback, auth off)")
    for key in ("emit_1_client", "emit_16_clients"):
        r = results[key]
        print(
            f"  {r['clients']:>2} client(s): {r['records_per_s']:>8.1f} records/s  "
            f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  ({r['records']} records, {r['failures']} failed)"
        )
        print(
            f"      CPU per record: daemon {r['daemon_cpu_ms_per_record']:.3f} ms, "
            f"client (SDK) {r['client_cpu_ms_per_record']:.3f} ms"
        )
    r = results["emit_16_raw_connections"]
    print(
        f"  16 raw HTTP connections (minimal client): {r['records_per_s']:>8.1f} records/s  "
        f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  ({r['records']} records)"
    )
    print(
        f"      CPU per record: daemon {r['daemon_cpu_ms_per_record']:.3f} ms, "
        f"client (raw) {r['client_cpu_ms_per_record']:.3f} ms"
    )
    w = results["watch"]
    print(
        f"watch latency (emit -> SSE callback): p50 {w['p50_ms']:.2f} ms  p99 {w['p99_ms']:.2f} ms  "
        f"({w['records']} records)"
    )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
