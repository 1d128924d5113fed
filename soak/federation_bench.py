"""Federation figures on one machine: catch-up rate, continuous lag, memory per pair.

Run: ``python -m spl.soak.federation_bench [--catchup 50000] [--rate 100] [--seconds 20] [--pairs 200]``.
It starts throw-away daemons on 127.0.0.1 (auth off, own temporary homes) and prints:

1. catch-up: N records already on A (signed by A, written into A's store before it
   starts), one pair on B pulls them — records/s verified and committed on B, from the
   moment the pair is created to B's own commit time (``created_at``) of the last record.
   The bench only polls B every 0.1 s to see that it is done: polling B's thread every
   10 ms, as it once did, took about a tenth of the CPU B spent on the catch-up it measured;
2. continuous lag: one continuous pair, records emitted on A at ``--rate`` per second;
   lag = B's commit time (its ``created_at``) minus the emit time on the client;
3. memory: ``--pairs`` continuous pairs (one thread each) between A and B; resident
   memory added per pair on the source (A) and on the receiving side (B).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from spl.core.record import validate_envelope
from spl.core.stored import Candidate
from spl.core.syncstats import parse_rfc3339
from spl.daemon.launcher import DaemonProcess
from spl.soak.procfs import rss_kib
from spl.soak.stats import summary_ms
from spl.store.database import connect_writer
from spl.store.ingest import commit_batch, load_writer_state


def preload(daemon: DaemonProcess, thread: str, count: int) -> None:
    """Write ``count`` records signed by the daemon's own identity straight into its store."""
    identity = daemon.home.load_identity()
    connection = connect_writer(daemon.home.db_path)
    state = load_writer_state(connection, identity.did)
    batch: list[Candidate] = []
    for n in range(count):
        envelope = validate_envelope(
            {
                "act": "PUT",
                "actor": "did:bench:source",
                "thread": thread,
                "clock": n + 1,
                "body": {"n": n, "kind": "bench.catchup.record", "_v": 1, "pad": "x" * 64},
            }
        )
        batch.append(Candidate(envelope, identity.did, identity.sign_record_id(envelope.id)))
        if len(batch) == 5000:
            commit_batch(connection, [batch], state)
            batch = []
    if batch:
        commit_batch(connection, [batch], state)
    connection.close()


def pair(client: httpx.Client, receiver: DaemonProcess, source: DaemonProcess, thread: str, **extra: Any) -> str:
    did = client.get(f"{source.url}/v1/identity").json()["did"]
    response = client.post(
        f"{receiver.url}/v1/sync/pairs",
        json={"peer_did": did, "peer_url": source.url, "thread_id": thread, **extra},
    )
    response.raise_for_status()
    return str(response.json()["pair_id"])


def wait_for_count(
    client: httpx.Client, daemon: DaemonProcess, thread: str, count: int, limit: float, *, every: float = 0.01
) -> float:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        response = client.get(f"{daemon.url}/v1/threads/{thread}")
        if response.status_code == 200 and response.json()["record_count"] >= count:
            return time.monotonic()
        time.sleep(every)  # polling: the daemon has no completion event to wait on
    raise TimeoutError(f"{thread}: fewer than {count} records on {daemon.url} after {limit}s")


def last_commit(client: httpx.Client, daemon: DaemonProcess, thread: str, count: int) -> float:
    """When ``daemon`` committed the newest of the ``count`` records of ``thread`` (its ``created_at``, wall clock).

    Its few records of its own (the pair's settings) come first, so the newest lie past sequence ``count - 100``.
    """
    params: dict[str, str | int] = {"thread": thread, "after_sequence": max(0, count - 100), "limit": 1000}
    records = client.get(f"{daemon.url}/v1/records", params=params).json()["data"]
    times = [parse_rfc3339(record["created_at"]) for record in records]
    return max(t for t in times if t is not None)


def catchup(tmp: Path, count: int) -> dict[str, Any]:
    source, receiver = DaemonProcess(tmp / "cu-a"), DaemonProcess(tmp / "cu-b")
    preload(source, "th_catchup", count)
    source.start(port=0)
    receiver.start(port=0)
    try:
        with httpx.Client(timeout=30) as client:
            started = time.time()  # wall clock, as the receiver's created_at
            pair(client, receiver, source, "th_catchup", poll_interval=0.5)
            wait_for_count(client, receiver, "th_catchup", count, 600, every=0.1)
            finished = last_commit(client, receiver, "th_catchup", count)
        seconds = finished - started
        return {"records": count, "seconds": round(seconds, 2), "records_per_s": round(count / seconds, 1)}
    finally:
        source.stop()
        receiver.stop()


async def emit_paced(url: str, thread: str, rate: float, seconds: float) -> dict[str, float]:
    """Emit at ``rate``/s; returns record id → wall time just before its POST."""
    sent: dict[str, float] = {}
    interval = 1.0 / rate
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        start = time.monotonic()
        for n in range(int(rate * seconds)):
            target = start + n * interval
            delay = target - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)  # pacing, not synchronisation
            at = time.time()
            body = {"act": "PUT", "actor": "did:bench:lag", "thread": thread, "clock": n + 1, "body": {"n": n}}
            response = await client.post("/v1/records", json=body)
            response.raise_for_status()
            sent[response.json()["id"]] = at
    return sent


def continuous_lag(tmp: Path, rate: float, seconds: float) -> dict[str, Any]:
    source, receiver = DaemonProcess(tmp / "lag-a"), DaemonProcess(tmp / "lag-b")
    source.start(port=0)
    receiver.start(port=0)
    try:
        with httpx.Client(timeout=30) as client:
            pair(client, receiver, source, "th_lag", mode="continuous")
            time.sleep(0.5)  # let the stream open before the clock starts (setup, not synchronisation)
            sent = asyncio.run(emit_paced(source.url, "th_lag", rate, seconds))
            wait_for_count(client, receiver, "th_lag", len(sent), 60)
            records = client.get(f"{receiver.url}/v1/records", params={"thread": "th_lag", "limit": 10000}).json()
        lags = [
            parse_rfc3339(r["created_at"]) - sent[r["id"]]  # type: ignore[operator]
            for r in records["data"]
            if r["id"] in sent
        ]
        return {"records": len(lags), "rate_per_s": rate, **summary_ms(lags)}
    finally:
        source.stop()
        receiver.stop()


def memory_per_pair(tmp: Path, pairs: int) -> dict[str, Any]:
    source, receiver = DaemonProcess(tmp / "mem-a"), DaemonProcess(tmp / "mem-b")
    source.start(port=0)
    receiver.start(port=0)
    try:
        assert source.process is not None and receiver.process is not None
        with httpx.Client(timeout=60) as client:
            for n in range(3):  # warm both daemons' code paths before the baseline
                client.post(
                    f"{source.url}/v1/records",
                    json={"act": "PUT", "actor": "did:bench:m", "thread": "th_warm", "clock": n + 1},
                )
            pair(client, receiver, source, "th_warm", mode="continuous")
            time.sleep(2)
            base_source, base_receiver = rss_kib(source.process.pid), rss_kib(receiver.process.pid)
            for n in range(pairs):
                pair(client, receiver, source, f"th_mem_{n}", mode="continuous")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                health = client.get(f"{receiver.url}/v1/sync/health").json()
                if health["pairs_by_state"]["running"] >= pairs + 1:
                    break
                time.sleep(0.2)
            for n in range(pairs):  # one record per thread so every stream carried traffic
                client.post(
                    f"{source.url}/v1/records",
                    json={"act": "PUT", "actor": "did:bench:m", "thread": f"th_mem_{n}", "clock": 1},
                )
            time.sleep(3)
            source_kib, receiver_kib = rss_kib(source.process.pid), rss_kib(receiver.process.pid)
            running = client.get(f"{receiver.url}/v1/sync/health").json()["pairs_by_state"]["running"]
        return {
            "pairs": pairs,
            "running": running,
            "source_kib_per_pair": round((source_kib - base_source) / pairs, 1),
            "receiver_kib_per_pair": round((receiver_kib - base_receiver) / pairs, 1),
            "source_rss_mib": round(source_kib / 1024, 1),
            "receiver_rss_mib": round(receiver_kib / 1024, 1),
        }
    finally:
        source.stop()
        receiver.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--catchup", type=int, default=50_000, help="records for the catch-up run")
    parser.add_argument("--rate", type=float, default=100.0, help="emit rate for the continuous-lag run")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the continuous-lag run")
    parser.add_argument("--pairs", type=int, default=200, help="continuous pairs for the memory run")
    parser.add_argument("--only", choices=("catchup", "lag", "memory"), help="run one measurement")
    parser.add_argument("--json", action="store_true", help="also print one JSON object")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="spl-fedbench-") as name:
        tmp = Path(name)
        if args.only in (None, "catchup"):
            results["catchup"] = catchup(tmp, args.catchup)
            r = results["catchup"]
            print(
                f"catch-up: {r['records']} records in {r['seconds']} s = {r['records_per_s']} records/s (goal ≥ 10000)"
            )
        if args.only in (None, "lag"):
            results["continuous_lag"] = continuous_lag(tmp, args.rate, args.seconds)
            r = results["continuous_lag"]
            print(
                f"continuous lag at {r['rate_per_s']}/s: p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms "
                f"({r['records']} records; goal p50 ≤ 6, p99 ≤ 30)"
            )
        if args.only in (None, "memory"):
            results["memory"] = memory_per_pair(tmp, args.pairs)
            r = results["memory"]
            print(
                f"memory, {r['pairs']} continuous pairs ({r['running']} running): "
                f"source {r['source_kib_per_pair']} KiB/pair, "
                f"receiver {r['receiver_kib_per_pair']} KiB/pair (goal ≤ 200 KB each)"
            )
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
