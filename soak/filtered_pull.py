"""A namespace pull costs what it serves, not what the store holds (issue 10).

Run: ``python -m spl.soak.filtered_pull [--sizes 100k,1m] [--share 100] [--repeats 5] [--json]``.
The default run takes 3-5 minutes on a 2-core machine, most of it writing the 1M-record store.

One throw-away daemon (127.0.0.1, auth on, its own temporary home). Its store grows in place to each size
(ascending): one record in ``--share`` (1 %) is in namespace ``music`` (10 threads), the rest in ``default``
(1,000 threads), all signed by the daemon's own identity and written while it is stopped, 5,000 per
transaction, with ``--build-workers`` processes signing ahead (as ``spl.soak.scale`` builds stores). The
namespace ``music`` is registered by the store's first record, as ``spl namespace create`` would.

At each size the daemon starts and every full pull of ``music`` — ``GET /v1/sync/changes?namespace=music``,
pages of 1,000 followed by ``next_cursor`` until ``has_more`` is false — is timed once as a warm-up, then
``--repeats`` times or more, until the timed pulls served 20,000 records and took 2 s (so the 10 ms tick of the
CPU clock is noise); rows are medians:

- ``namespace=music``, the admin token (records:read): the feed walks the partial index
  ``records_namespace (namespace, seq)``, so it reads the matching rows and nothing else;
- the same with ``target_namespace=music``: the pull runs through the consent filter (a decision per record,
  policy cursors), as a sync pair bound to a namespace does;
- ``target_namespace=default`` under an L1 grant ``music → default`` (made at the first size): every record is
  served as a redacted projection the daemon mints and signs on the fly.

Per row: wall ms per pull, µs per matched record (wall), and the daemon's CPU µs per matched record (its
``/proc`` CPU time over the repeats). Flat per-record figures as the store grows ×10 mean the pull is
proportional to what it serves. The load average at each size is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from spl.core.identity import Identity
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD
from spl.core.record import Envelope, validate_envelope
from spl.core.stored import Accepted, Candidate
from spl.daemon.home import Home
from spl.soak.federation_pair_bench import Fleet, Node, checked, cpu_of, load_average, progress
from spl.soak.interrupts import StopSignals
from spl.soak.scale import parse_sizes, size_label
from spl.store.database import connect_writer
from spl.store.ingest import commit_batch, load_writer_state

__all__ = ["NAMESPACE", "Options", "build", "pull_all", "record_fields", "run_benchmark"]

NAMESPACE = "music"
OTHER_THREADS = 1000
MATCHED_THREADS = 10
BATCH = 5000


def record_fields(index: int, share: int) -> dict[str, Any]:
    """Record number ``index`` of the store: every ``share``-th is in ``music``, the rest in ``default``.

    Clocks are the index plus one, so (thread, actor, clock) never repeats.
    """
    body: dict[str, Any] = {"n": index, "kind": "bench.filtered.record", "_v": 1, "pad": "x" * 64}
    if index % share == 0:
        thread = f"th_music_{(index // share) % MATCHED_THREADS:02d}"
        body["namespace"] = NAMESPACE
    else:
        thread = f"th_rest_{index % OTHER_THREADS:04d}"
    return {"act": "PUT", "actor": "did:bench:writer", "thread": thread, "clock": index + 1, "body": body}


def _sign(seed: bytes, start: int, stop: int, share: int) -> bytes:
    """Records ``start`` … ``stop - 1``, validated and signed, as msgpack (cheap to send back from a worker)."""
    identity = Identity(seed)
    signed = []
    for index in range(start, stop):
        envelope = validate_envelope(record_fields(index, share))
        signed.append((envelope, identity.sign_record_id(envelope.id)))
    return msgspec.msgpack.encode(signed)


def _signed_batches(seed: bytes, start: int, stop: int, share: int, workers: int) -> Iterator[bytes]:
    """Signed batches in order; with ``workers``, at most two per worker wait, so memory stays flat."""
    ranges = [(first, min(first + BATCH, stop)) for first in range(start, stop, BATCH)]
    if workers <= 0 or len(ranges) < 2:
        for first, last in ranges:
            yield _sign(seed, first, last, share)
        return
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that holds threads (httpx, pytest)
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
        waiting: deque[Future[bytes]] = deque()
        for first, last in ranges:
            waiting.append(pool.submit(_sign, seed, first, last, share))
            if len(waiting) >= 2 * workers:
                yield waiting.popleft().result()
        while waiting:
            yield waiting.popleft().result()


def build(home: Home, start: int, stop: int, *, share: int, workers: int) -> float:
    """Add records ``start`` … ``stop - 1`` to the (stopped) daemon's store; returns the seconds it took.

    The first build begins with the registry record that makes ``music`` an active namespace.
    """
    identity = home.load_identity()
    started = time.perf_counter()
    connection = connect_writer(home.db_path)
    try:
        state = load_writer_state(connection, identity.did)
        if start == 0:
            body = {"kind": NAMESPACE_KIND, "_v": 1, "namespace_id": NAMESPACE, "status": "active", "description": ""}
            fields = {"act": "LEARN", "actor": identity.did, "thread": REGISTRY_THREAD, "clock": 1, "body": body}
            registry = validate_envelope(fields)
            commit_batch(connection, [[Candidate(registry, identity.did, identity.sign_record_id(registry.id))]], state)
        stored = 0
        for packed in _signed_batches(identity.seed, start, stop, share, workers):
            signed = msgspec.msgpack.decode(packed, type=list[tuple[Envelope, str]])
            outcomes = commit_batch(connection, [[Candidate(e, identity.did, sig) for e, sig in signed]], state)
            stored += sum(1 for outcome in outcomes[0] if isinstance(outcome, Accepted) and outcome.created)
    finally:
        connection.close()
    if stored != stop - start:
        raise RuntimeError(f"{stored} of {stop - start} records committed (is {NAMESPACE} registered?)")
    return time.perf_counter() - started


def matched(size: int, share: int) -> int:
    """Records of ``music`` among the first ``size``."""
    return (size - 1) // share + 1


def pull_all(client: httpx.Client, node: Node, params: dict[str, str]) -> tuple[int, int]:
    """One full pull of the feed ``params`` name: (records served, pages)."""
    cursor, records, pages = "", 0, 0
    while True:
        query = {**params, "limit": "1000", **({"since": cursor} if cursor else {})}
        page = checked(client.get(f"{node.url}/v1/sync/changes", params=query, headers=node.headers))
        records += len(page["records"])
        pages += 1
        cursor = page["next_cursor"]
        if not page["has_more"]:
            return records, pages


FEEDS = {
    "namespace": {"namespace": NAMESPACE},
    "consent": {"namespace": NAMESPACE, "target_namespace": NAMESPACE},
    # Another target namespace, under an L1 grant: every record served is a redacted projection minted on the fly.
    "projection": {"namespace": NAMESPACE, "target_namespace": "default"},
}
GRANT = {"source_namespace": NAMESPACE, "target_namespace": "default", "hash_levels": ["L1"], "purpose": "bench"}


@dataclass(frozen=True)
class Options:
    sizes: tuple[int, ...] = (100_000, 1_000_000)
    share: int = 100
    repeats: int = 5
    build_workers: int = 2
    min_records: int = 20_000  # a feed's timed pulls serve at least this many records in all …
    min_seconds: float = 2.0  # … and take at least this long


def measure(client: httpx.Client, node: Node, expected: int, options: Options) -> dict[str, Any]:
    """Each feed: one warm-up pull, then the timed pulls (medians) and the daemon's CPU over them."""
    figures: dict[str, Any] = {}
    for name, params in FEEDS.items():
        served, pages = pull_all(client, node, params)
        if served != expected:
            raise RuntimeError(f"a pull of {NAMESPACE} served {served} records, not {expected}")
        walls: list[float] = []
        with cpu_of(node) as spent:
            # At least ``repeats`` pulls, and enough records and time that a 10 ms CPU clock tick is noise.
            while (
                len(walls) < options.repeats
                or len(walls) * expected < options.min_records
                or sum(walls) < options.min_seconds
            ):
                started = time.perf_counter()
                pull_all(client, node, params)
                walls.append(time.perf_counter() - started)
        wall = statistics.median(walls)
        figures[name] = {
            "pull_ms": round(wall * 1000, 1),
            "pages": pages,
            "pulls": len(walls),
            "us_per_record": round(wall * 1e6 / expected, 1),
            "cpu_us_per_record": round(spent[0] * 1e6 / (expected * len(walls)), 1),
        }
    return figures


def run_benchmark(root: Path, options: Options) -> dict[int, dict[str, Any]]:
    """``{size: figures}`` for each size, ascending; the daemon is stopped before it returns or raises.

    Raises:
        SoakInterrupted: SIGTERM stopped it (a KeyboardInterrupt for SIGINT), after the daemon was stopped.
    """
    results: dict[int, dict[str, Any]] = {}
    fleet = Fleet(root)
    process = fleet.home("source")
    built = 0
    with StopSignals() as signals:
        try:
            with httpx.Client(timeout=120) as client:
                for size in sorted(options.sizes):
                    progress(f"filtered pull: writing records {built:,} … {size:,}")
                    seconds = build(process.home, built, size, share=options.share, workers=options.build_workers)
                    built = size
                    node = fleet.start(process, client)
                    if not results:  # the grant is a record: it stays in the store for the next sizes
                        checked(client.post(f"{node.url}/v1/consent/grants", json=GRANT, headers=node.headers), 201)
                    expected = matched(size, options.share)
                    progress(f"filtered pull: {size_label(size)} built in {seconds:.0f} s; pulling {expected:,}")
                    load = load_average()
                    figures = measure(client, node, expected, options)
                    results[size] = {"matched": expected, **figures, "load": [load, load_average()]}
                    fleet.halt(node)  # its home stays: the next size grows this store
        except KeyboardInterrupt as stop:
            interrupted = signals.interrupted(stop)
            progress(f"interrupted ({interrupted}): stopping the daemon")
            raise interrupted from None
        finally:
            with signals.hurrying(fleet.kill_now):
                fleet.stop()
    return results


def format_table(results: dict[int, dict[str, Any]], share: int) -> str:
    sizes = sorted(results)
    head = " | ".join(f"{size_label(s)} ({results[s]['matched']:,} matched)" for s in sizes)
    lines = [
        f"Full pull of namespace `{NAMESPACE}` ({100 / share:g} % of the store), medians",
        "",
        f"| figure | {head} |",
        "|---|" + "---:|" * len(sizes),
    ]
    rows = (
        ("pull_ms", "pull, ms"),
        ("us_per_record", "wall per matched record, µs"),
        ("cpu_us_per_record", "daemon CPU per matched record, µs"),
    )
    feeds = (
        ("namespace", "`namespace=music`"),
        ("consent", "`…&target_namespace=music` (consent)"),
        ("projection", "`…&target_namespace=default` (L1 projections)"),
    )
    for feed, title in feeds:
        for key, label in rows:
            cells = " | ".join(str(results[s][feed][key]) for s in sizes)
            lines.append(f"| {title}: {label} | {cells} |")
    loads = " | ".join(f"{results[s]['load'][0]} → {results[s]['load'][1]}" for s in sizes)
    lines.append(f"| load average | {loads} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        """The module docstring as written, and each flag's default."""

    parser = argparse.ArgumentParser(prog="python -m spl.soak.filtered_pull", description=__doc__, formatter_class=Help)

    def sizes_arg(text: str) -> list[int]:
        try:
            return parse_sizes(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    default = Options()
    parser.add_argument("--sizes", type=sizes_arg, default="100k,1m", help="records in the store, ascending")
    parser.add_argument("--share", type=int, default=default.share, help="one record in SHARE is in the namespace")
    parser.add_argument("--repeats", type=int, default=default.repeats, help="timed pulls per feed (after a warm-up)")
    parser.add_argument("--build-workers", type=int, default=default.build_workers, help="signing processes")
    parser.add_argument("--json", action="store_true", help="also print one JSON object, as the last line")
    args = parser.parse_args(argv)
    if args.share < 1 or args.repeats < 1:
        parser.error("--share and --repeats must be at least 1")
    options = Options(tuple(args.sizes), args.share, args.repeats, args.build_workers)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spl-filtered-") as scratch:
        try:
            results = run_benchmark(Path(scratch), options)
        except KeyboardInterrupt as stop:
            raise SystemExit(getattr(stop, "exit_status", 130)) from None
    print(format_table(results, args.share))
    load = os.getloadavg()
    print(f"elapsed: {time.monotonic() - started:.0f} s; load average at the end {load[0]:.1f} / {load[1]:.1f}")
    if args.json:
        print(json.dumps({size_label(size): figures for size, figures in results.items()}))


if __name__ == "__main__":
    main()
