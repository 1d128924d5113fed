"""The scale benchmark (issue 9): what each read, the change feed and ingest cost as the store grows.

Run: ``python -m spl.soak.scale [--sizes 10k,100k,1m] [--layouts big-thread,many-threads,thread-per-record]
[--json]``. It prints one table per layout, one row per operation and one column per size (records in the
store), and the elapsed time at the end. The default run (10k, 100k, 1M; all three layouts) took 9-12 minutes on
a 2-core machine that other work kept at a load of 4-5, two thirds of it building the 3M records. ``--sizes 10m``
is the once-off run for the docs: give it ``--pull-timeout 1200`` and about 15 GB of disk (one 10M store at a
time; ``--workdir`` keeps them all).

Layouts, each in its own throw-away daemon home (auth off, 127.0.0.1):

- ``big-thread``: all N records in one thread (``th_big``); the thread rows are measured on it;
- ``many-threads``: N records round-robin over ``--threads`` threads (10,000), so at N = 10k each holds one
  record and at 1M a hundred; the thread rows are measured on the first of them;
- ``thread-per-record``: one thread per record, so N records make N threads. Only the ``GET /v1/threads``
  rows (and the flat ones) are measured here: the listing reads one row per thread, so a store with N threads
  is the honest way to see whether a page's cost grows with them. It costs one more build of N records.

How a store is built: records signed by the daemon home's own identity are written straight into the store
with the store's own ``commit_batch`` (5,000 per transaction), daemon stopped, as ``federation_bench.preload``
does. Validating and signing cost twice what committing does, so ``--build-workers`` processes (default 2) sign
batches ahead of the committing process; at most two batches per worker are in flight, so memory stays flat
however large N is. Stores grow in place: the 100k column adds 90k records to the 10k store. Besides the layout's
records a store holds ``th_lone`` (one record), the emits of the emit rows (``th_emit``, a few hundred) and, after
each column, the HTTP ingest sample (``th_push``, 20k by default) — a few percent of the next column's size.

Each column: the daemon is (re)started ``--restarts`` times; every start is timed to ``/health`` and followed by
the cold-fold measurement. Then each row with "median" is one warm-up call and the median of ``--repeats``
calls. Any call bounded by ``--timeout`` (``--pull-timeout`` for the full pull) prints ``>Ns`` when it runs out.

Rows of the thread layouts (``{id}`` = the measured thread, ``<clock>`` = its last clock minus 100):

- cold fold: ``GET /v1/threads/{id}``, first call after a restart; meanwhile (10 ms later) the first
  ``GET /v1/threads/th_lone`` and sequential emits (``POST /v1/records``): a slow fold must not hold them up;
- emit p50 when nothing else runs; warm ``GET /v1/threads/{id}``;
- ``GET /v1/threads/{id}/records?since=<clock>`` (a late page of ~100), and a watch opened with
  ``since_clock=<clock>``: time to its first replayed record;
- ``GET /v1/records?thread={id}&after_sequence=`` at the same place (flat already);
- change feed ``GET /v1/sync/changes?thread={id}&limit=1000``: the first page (``since`` empty), a page near the
  end (2,000 records before it, so ``has_more`` is true), and the daemon's CPU per 1,000 records over full pulls
  of the thread from the start (``spl.soak.procfs.cpu_seconds``; repeated until at least 10,000 records and 1 s,
  so a 10 ms clock tick does not dominate; with one record per thread it is the cost of a request);
- HTTP ingest: ``POST /v1/sync/records`` of pre-signed records (another identity, ``--push-batch`` per request):
  records/s and daemon CPU per 1,000 records.

Flat rows, every layout: start-up to ``/health``, daemon RSS after the reads, disk bytes per record (database +
WAL over the head sequence), and the store's own ingest during the build: records per second of wall time inside
``commit_batch`` (the signing workers compete with it for the cores) and its CPU per 1,000 records.

This machine has two cores shared with other work: latencies are medians and still move by 10-30 % between
runs; the CPU figures (per 1,000 records) are the robust ones.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
import trio

from spl.core.identity import Identity
from spl.core.record import Envelope, validate_envelope
from spl.core.stored import Accepted, Candidate
from spl.daemon.home import Home
from spl.daemon.launcher import DaemonProcess
from spl.soak.procfs import cpu_seconds, rss_kib
from spl.store.database import connect_writer
from spl.store.ingest import commit_batch, load_writer_state

__all__ = [
    "LAYOUTS",
    "ROWS",
    "Layout",
    "Options",
    "OverLimit",
    "format_table",
    "parse_size",
    "parse_sizes",
    "run_benchmark",
    "size_label",
]

# -- sizes ----------------------------------------------------------------------------------------------------

_SUFFIXES = {"k": 1_000, "m": 1_000_000}


def parse_size(text: str) -> int:
    """``"10k"`` → 10,000, ``"1m"`` / ``"1M"`` → 1,000,000, ``"2.5k"`` → 2,500, ``"200"`` → 200."""
    cleaned = text.strip().lower().replace("_", "")
    multiplier = 1
    if cleaned[-1:] in _SUFFIXES:
        multiplier, cleaned = _SUFFIXES[cleaned[-1]], cleaned[:-1]
    try:
        value = float(cleaned) * multiplier
    except ValueError:
        raise ValueError(f"not a size: {text!r} (write 200, 10k, 1.5m, 10m)") from None
    if not math.isfinite(value) or value < 1 or value != int(value):
        raise ValueError(f"not a whole positive number of records: {text!r}")
    return int(value)


def parse_sizes(text: str) -> list[int]:
    """``"1m,10k,100k"`` → [10000, 100000, 1000000]: ascending, since each column grows the previous store."""
    return sorted({parse_size(part) for part in text.split(",") if part.strip()})


def size_label(count: int) -> str:
    """10000 → ``10k``, 1000000 → ``1M``, 2500 → ``2.5k``, 200 → ``200``."""
    for unit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if count >= unit:
            return f"{count / unit:g}{suffix}"
    return str(count)


# -- layouts and the records that fill them -------------------------------------------------------------------

LONE_THREAD = "th_lone"  # one record: its GET during a cold fold shows whether one fold blocks another
EMIT_THREAD = "th_emit"
PUSH_THREAD = "th_push"
WRITERS = 4  # records of a thread are written by this many actors in turn (the fold tracks participants)


@dataclass(frozen=True)
class Layout:
    """How N records are spread over threads: all in one (``threads`` 1), round-robin over ``threads``, or one
    thread per record (``threads`` 0)."""

    name: str
    threads: int

    @property
    def title(self) -> str:
        if self.threads == 1:
            return "one big thread"
        if self.threads == 0:
            return "one thread per record"
        return f"{self.threads:,} threads"

    @property
    def per_record(self) -> bool:
        return self.threads == 0

    def thread_of(self, index: int) -> str:
        if self.threads == 1:
            return "th_big"
        if self.threads == 0:
            return f"th_one_{index:09d}"
        return f"th_rr_{index % self.threads:06d}"

    def clock_of(self, index: int) -> int:
        """The record's clock in its thread: 1, 2, 3… (records of a thread are unique by clock alone)."""
        return 1 if self.threads == 0 else index // self.threads + 1

    @property
    def measured_thread(self) -> str:
        return self.thread_of(0)

    def thread_length(self, size: int) -> int:
        """Records of the measured thread in a store of ``size`` layout records."""
        return 1 if self.threads == 0 else (size - 1) // self.threads + 1


def layouts(threads: int = 10_000) -> dict[str, Layout]:
    return {
        "big-thread": Layout("big-thread", 1),
        "many-threads": Layout("many-threads", threads),
        "thread-per-record": Layout("thread-per-record", 0),
    }


LAYOUTS = tuple(layouts())


def record_fields(layout: Layout, index: int) -> dict[str, Any]:
    """The envelope of the layout's record number ``index``: an INTEND opens each thread, PUTs follow."""
    clock = layout.clock_of(index)
    return {
        "act": "INTEND" if clock == 1 else "PUT",
        "actor": f"did:bench:writer{index % WRITERS}",
        "thread": layout.thread_of(index),
        "clock": clock,
        "body": {"n": index, "kind": "bench.scale.record", "_v": 1, "pad": "x" * 64},
    }


def sign_range(seed: bytes, layout: Layout, start: int, stop: int) -> list[tuple[Envelope, str]]:
    """Records ``start`` … ``stop - 1`` of the layout, validated (id computed) and signed by ``seed``'s key."""
    identity = Identity(seed)
    signed = []
    for index in range(start, stop):
        envelope = validate_envelope(record_fields(layout, index))
        signed.append((envelope, identity.sign_record_id(envelope.id)))
    return signed


def _sign_range_packed(seed: bytes, layout: Layout, start: int, stop: int) -> bytes:
    """:func:`sign_range` in a worker process, sent back as msgpack (a tenth of pickle's cost for envelopes)."""
    return msgspec.msgpack.encode(sign_range(seed, layout, start, stop))


def _unpack(data: bytes) -> list[tuple[Envelope, str]]:
    return msgspec.msgpack.decode(data, type=list[tuple[Envelope, str]])


def signed_batches(
    seed: bytes, layout: Layout, start: int, stop: int, *, batch: int, workers: int
) -> Iterator[list[tuple[Envelope, str]]]:
    """Signed records ``start`` … ``stop - 1``, ``batch`` at a time, in order.

    With ``workers`` > 0, worker processes sign while the caller commits; at most two batches per worker wait
    at any time, so a 10M-record build holds no more in memory than a 10k one.
    """
    ranges = [(first, min(first + batch, stop)) for first in range(start, stop, batch)]
    if workers <= 0 or len(ranges) < 2:
        for first, last in ranges:
            yield sign_range(seed, layout, first, last)
        return
    spawn = multiprocessing.get_context("spawn")  # no fork of a process that may hold threads (pytest, httpx)
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
        waiting: deque[Future[bytes]] = deque()
        for first, last in ranges:
            waiting.append(pool.submit(_sign_range_packed, seed, layout, first, last))
            if len(waiting) >= 2 * workers:
                yield _unpack(waiting.popleft().result())
        while waiting:
            yield _unpack(waiting.popleft().result())


@dataclass
class Build:
    """One column's growth of a store: records added, seconds in total, and wall and CPU seconds inside
    ``commit_batch`` (the CPU figure holds when signing workers or other work share the cores)."""

    records: int = 0
    seconds: float = 0.0
    commit_seconds: float = 0.0
    commit_cpu_seconds: float = 0.0


def build_store(home: Home, layout: Layout, start: int, stop: int, *, workers: int, batch: int = 5000) -> Build:
    """Add the layout's records ``start`` … ``stop - 1`` to the store of ``home`` (its daemon must be stopped).

    The first build also writes ``th_lone``'s record. Records are signed by the home's own identity.
    """
    identity = home.load_identity()
    figures = Build()
    started = time.perf_counter()
    connection = connect_writer(home.db_path)
    try:
        state = load_writer_state(connection, identity.did)
        if start == 0:
            lone = validate_envelope({"act": "INTEND", "actor": "did:bench:lone", "thread": LONE_THREAD, "clock": 1})
            commit_batch(connection, [[Candidate(lone, identity.did, identity.sign_record_id(lone.id))]], state)
        for signed in signed_batches(identity.seed, layout, start, stop, batch=batch, workers=workers):
            candidates = [Candidate(envelope, identity.did, sig) for envelope, sig in signed]
            committing, cpu = time.perf_counter(), time.process_time()
            outcomes = commit_batch(connection, [candidates], state)
            figures.commit_seconds += time.perf_counter() - committing
            figures.commit_cpu_seconds += time.process_time() - cpu
            figures.records += sum(1 for outcome in outcomes[0] if isinstance(outcome, Accepted) and outcome.created)
    finally:
        connection.close()
    figures.seconds = time.perf_counter() - started
    if figures.records != stop - start:
        raise RuntimeError(f"{layout.name}: {figures.records} of {stop - start} records committed")
    return figures


# -- figures --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OverLimit:
    """A measurement that ran out of its time bound: printed ``>Ns``."""

    seconds: float

    def __str__(self) -> str:
        return f">{self.seconds:g}s"


Figure = float | OverLimit | None  # None: not measured for this layout or size


def median_figure(values: Sequence[Figure]) -> Figure:
    """Median of the measured values; an :class:`OverLimit` counts as longer than any value."""
    measured = sorted(
        (value for value in values if value is not None),
        key=lambda value: math.inf if isinstance(value, OverLimit) else value,
    )
    if not measured:
        return None
    low, high = measured[(len(measured) - 1) // 2], measured[len(measured) // 2]
    if isinstance(high, OverLimit):
        return high
    assert not isinstance(low, OverLimit)  # sorted: an over-limit low implies an over-limit high
    return round((low + high) / 2, 2)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


# -- measuring: plain sequential reads --------------------------------------------------------------------------


def call_ms(client: httpx.Client, path: str, params: dict[str, Any] | None = None) -> float:
    started = time.perf_counter()
    client.get(path, params=params).raise_for_status()
    return _ms(started)


def median_ms(client: httpx.Client, path: str, params: dict[str, Any] | None, repeats: int, limit: float) -> Figure:
    """One warm-up call, then the median of ``repeats`` calls (ms); ``>limit`` when a call times out."""
    try:
        call_ms(client, path, params)
        return median_figure([call_ms(client, path, params) for _ in range(repeats)])
    except httpx.TimeoutException:
        return OverLimit(limit)


def watch_first_ms(client: httpx.Client, thread: str, since_clock: int) -> float:
    """Open ``/watch?since_clock=…`` and time the first replayed record (heartbeats are ``data: {}``)."""
    started = time.perf_counter()
    with client.stream("GET", f"/v1/threads/{thread}/watch", params={"since_clock": since_clock}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("data:") and '"record"' in line:
                return _ms(started)
    raise RuntimeError(f"the watch of {thread} ended before its first record")


def median_watch_ms(client: httpx.Client, thread: str, since_clock: int, repeats: int, limit: float) -> Figure:
    try:
        watch_first_ms(client, thread, since_clock)
        return median_figure([watch_first_ms(client, thread, since_clock) for _ in range(repeats)])
    except httpx.TimeoutException:
        return OverLimit(limit)


def sequence_at(client: httpx.Client, thread: str, clock: int) -> int:
    """The sequence of the thread's record with ``clock`` (the first record when ``clock`` < 1)."""
    page = client.get(f"/v1/threads/{thread}/records", params={"since": max(clock, 1) - 1, "limit": 1}).json()
    return int(page["data"][0]["sequence"])


class FeedPage(msgspec.Struct):
    """What a full pull reads of a change page; the records are only counted, never decoded."""

    records: list[msgspec.Raw]
    next_cursor: str
    has_more: bool


_FEED_DECODER = msgspec.json.Decoder(FeedPage)


def feed_pull_cpu(
    client: httpx.Client, pid: int, thread: str, limit: float, *, min_records: int = 10_000, min_seconds: float = 1.0
) -> Figure:
    """Daemon CPU (ms) per 1,000 records over full pulls of ``thread`` from the start, pages of 1,000.

    Pulls again until at least ``min_records`` records and ``min_seconds`` have passed, so the 10 ms tick of
    /proc's CPU clock is small against the total.
    """
    deadline = time.monotonic() + limit
    started, before = time.monotonic(), cpu_seconds(pid)
    pulled = 0
    while pulled < min_records or time.monotonic() - started < min_seconds:
        cursor = ""
        while True:
            if time.monotonic() > deadline:
                return OverLimit(limit)
            try:
                response = client.get("/v1/sync/changes", params={"thread": thread, "since": cursor, "limit": 1000})
            except httpx.TimeoutException:
                return OverLimit(limit)
            response.raise_for_status()
            page = _FEED_DECODER.decode(response.content)
            pulled += len(page.records)
            cursor = page.next_cursor
            if not page.has_more:
                break
    return round((cpu_seconds(pid) - before) * 1000 / pulled * 1000, 2)


LIST_DEPTH = 10  # the deep listing page: after following next_cursor this many times (or as far as it goes)


def listing_rows(client: httpx.Client, repeats: int, limit: float) -> dict[str, Figure]:
    """``GET /v1/threads?limit=100``: the first page and, when the daemon pages, a page up to ``LIST_DEPTH`` deep."""
    figures: dict[str, Figure] = {"list_first_ms": median_ms(client, "/v1/threads", {"limit": 100}, repeats, limit)}
    deepest: str | None = None
    try:
        for _ in range(LIST_DEPTH):
            params: dict[str, str | int] = {"limit": 100} if deepest is None else {"limit": 100, "cursor": deepest}
            cursor = client.get("/v1/threads", params=params).json().get("next_cursor")
            if not cursor:
                break
            deepest = cursor
    except httpx.TimeoutException:
        figures["list_deep_ms"] = OverLimit(limit)
        return figures
    if deepest:
        figures["list_deep_ms"] = median_ms(client, "/v1/threads", {"limit": 100, "cursor": deepest}, repeats, limit)
    return figures


@dataclass
class Emits:
    """Bodies for ``POST /v1/records`` on :data:`EMIT_THREAD`, clocks going on across restarts of one home."""

    clock: int = 0

    def next_body(self) -> dict[str, Any]:
        self.clock += 1
        return {"act": "PUT", "actor": "did:bench:emitter", "thread": EMIT_THREAD, "clock": self.clock, "body": {}}


def emit_p50(client: httpx.Client, emits: Emits, count: int = 50) -> float:
    """Median latency (ms) of ``count`` sequential emits after ten warm-up emits, so that the first emits after a
    restart, which pay for cold caches, stay out of the median."""
    for _ in range(10):
        client.post("/v1/records", json=emits.next_body()).raise_for_status()
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        client.post("/v1/records", json=emits.next_body()).raise_for_status()
        latencies.append(_ms(started))
    return round(statistics.median(latencies), 2)


def thread_rows(
    client: httpx.Client, pid: int, layout: Layout, size: int, emits: Emits, options: Options
) -> dict[str, Figure]:
    """Every warm read of the measured thread, the emit baseline and the change feed."""
    thread, length = layout.measured_thread, layout.thread_length(size)
    repeats, limit = options.repeats, options.timeout
    since = max(length - 100, 0)  # the late pages start here: about 100 records before the end
    figures: dict[str, Figure] = {
        "emit_p50_ms": emit_p50(client, emits, options.emits),
        "warm_fold_ms": median_ms(client, f"/v1/threads/{thread}", None, repeats, limit),
        "since_page_ms": median_ms(
            client, f"/v1/threads/{thread}/records", {"since": since, "limit": 100}, repeats, limit
        ),
        "watch_first_ms": median_watch_ms(client, thread, since, repeats, limit),
    }
    after = sequence_at(client, thread, since + 1) - 1
    figures["after_seq_page_ms"] = median_ms(
        client, "/v1/records", {"thread": thread, "after_sequence": after, "limit": 100}, repeats, limit
    )
    feed = {"thread": thread, "limit": 1000}
    figures["feed_first_page_ms"] = median_ms(client, "/v1/sync/changes", {**feed, "since": ""}, repeats, limit)
    near_end = sequence_at(client, thread, length - 2000) - 1 if length > 2000 else 0
    figures["feed_late_page_ms"] = median_ms(
        client, "/v1/sync/changes", {**feed, "since": f"s1.{near_end}" if near_end else ""}, repeats, limit
    )
    figures["feed_cpu_per_1k_ms"] = feed_pull_cpu(
        client, pid, thread, options.pull_timeout, min_records=options.pull_records, min_seconds=options.pull_seconds
    )
    return figures


# -- measuring: the cold fold, with a one-record thread and emits alongside -------------------------------------

HEAD_START = 0.01  # the cold call goes first; the figures hold whether or not the others overlap it


async def _timed_get(client: httpx.AsyncClient, path: str, limit: float) -> Figure:
    started = time.perf_counter()
    with trio.move_on_after(limit):
        try:
            (await client.get(path)).raise_for_status()
        except httpx.TimeoutException:
            return OverLimit(limit)
        return _ms(started)
    return OverLimit(limit)


async def cold_fold(url: str, thread: str, emits: Emits, limit: float) -> dict[str, Figure]:
    """First ``GET /v1/threads/{thread}`` after a restart, and what a one-record thread and emits see meanwhile."""
    figures: dict[str, Figure] = {}
    emit_latencies: list[float] = []
    folded = trio.Event()
    async with httpx.AsyncClient(base_url=url, timeout=limit) as client:

        async def fold_big() -> None:
            figures["cold_fold_ms"] = await _timed_get(client, f"/v1/threads/{thread}", limit)
            folded.set()

        async def fold_lone() -> None:
            await trio.sleep(HEAD_START)
            figures["cold_lone_ms"] = await _timed_get(client, f"/v1/threads/{LONE_THREAD}", limit)

        async def emit_meanwhile() -> None:
            await trio.sleep(HEAD_START)
            with trio.move_on_after(limit):
                while not (folded.is_set() and emit_latencies):  # at least one emit, however quick the fold
                    started = time.perf_counter()
                    (await client.post("/v1/records", json=emits.next_body())).raise_for_status()
                    emit_latencies.append(_ms(started))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fold_big)
            nursery.start_soon(fold_lone)
            nursery.start_soon(emit_meanwhile)
    figures["cold_emit_p50_ms"] = round(statistics.median(emit_latencies), 2) if emit_latencies else OverLimit(limit)
    return figures


# -- one column of one layout -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """How hard each column is measured (the command-line flags; the test shrinks them)."""

    repeats: int = 5
    restarts: int = 3
    timeout: float = 60.0
    pull_timeout: float = 300.0
    push_records: int = 20_000
    push_batch: int = 1000
    build_workers: int = 2
    emits: int = 50  # sequential emits behind the quiet emit p50
    pull_records: int = 10_000  # the full pull repeats until this many records and seconds
    pull_seconds: float = 1.0


@dataclass
class LayoutRun:
    """One layout's daemon home and what has been written to it so far."""

    layout: Layout
    daemon: DaemonProcess
    built: int = 0
    emits: Emits = field(default_factory=Emits)
    pushed: int = 0
    peer: Identity = field(default_factory=Identity.generate)


def push_bodies(peer: Identity, first_clock: int, count: int, batch: int) -> list[bytes]:
    """``POST /v1/sync/records`` bodies of records signed by ``peer``, encoded before the clock starts."""
    bodies = []
    for start in range(0, count, batch):
        records = []
        for clock in range(first_clock + start, first_clock + min(start + batch, count)):
            fields = {"act": "PUT", "actor": "did:bench:peer", "thread": PUSH_THREAD, "clock": clock}
            envelope = validate_envelope({**fields, "body": {"n": clock, "pad": "x" * 64}})
            records.append({**envelope.fields(), "signer": peer.did, "sig": peer.sign_record_id(envelope.id)})
        bodies.append(msgspec.json.encode({"records": records}))
    return bodies


def http_ingest(client: httpx.Client, pid: int, bodies: list[bytes], count: int) -> dict[str, Figure]:
    """Push the bodies one after another: records/s and daemon CPU (ms) per 1,000 records."""
    started, before = time.perf_counter(), cpu_seconds(pid)
    for body in bodies:
        response = client.post("/v1/sync/records", content=body, headers={"content-type": "application/json"})
        response.raise_for_status()
        refused = response.json()["refused"]
        if refused:
            raise RuntimeError(f"the daemon refused pushed records: {refused[:3]}")
    seconds, cpu = time.perf_counter() - started, cpu_seconds(pid) - before
    return {
        "http_ingest_per_s": round(count / seconds),
        "http_ingest_cpu_per_1k_ms": round(cpu * 1000 / count * 1000, 1),
    }


def disk_per_record(client: httpx.Client, home: Home) -> float:
    """Bytes of database + WAL per stored record (the head sequence counts every record)."""
    records = int(client.get("/v1/status").json()["sequence"])
    wal = home.db_path.with_name(home.db_path.name + "-wal")
    size = home.db_path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    return round(float(size) / records, 1)


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def measure_column(run: LayoutRun, size: int, options: Options) -> dict[str, Figure]:
    """Grow the layout's store to ``size`` records, then restart and measure its daemon (stopped again after)."""
    layout, daemon = run.layout, run.daemon
    progress(f"{layout.name}: building {size_label(size)} ({size - run.built:,} new records)")
    build = build_store(daemon.home, layout, run.built, size, workers=options.build_workers)
    run.built = size
    figures: dict[str, Figure] = {
        "store_ingest_per_s": round(build.records / build.commit_seconds),
        "store_ingest_cpu_per_1k_ms": round(build.commit_cpu_seconds * 1000 / build.records * 1000, 1),
    }
    progress(f"{layout.name}: built in {build.seconds:.1f} s; measuring")
    starts: list[Figure] = []
    colds: list[dict[str, Figure]] = []
    for attempt in range(options.restarts):
        if attempt:
            daemon.stop()
        started = time.perf_counter()
        daemon.start(port=None if daemon.port else 0)
        starts.append(_ms(started))
        if not layout.per_record:
            colds.append(trio.run(cold_fold, daemon.url, layout.measured_thread, run.emits, options.timeout))
    figures["startup_ms"] = median_figure(starts)
    for key in ("cold_fold_ms", "cold_lone_ms", "cold_emit_p50_ms") if colds else ():
        figures[key] = median_figure([cold[key] for cold in colds])
    try:
        with httpx.Client(base_url=daemon.url, timeout=options.timeout) as client:
            if layout.per_record:
                figures.update(listing_rows(client, options.repeats, options.timeout))
            else:
                figures.update(thread_rows(client, daemon.pid, layout, size, run.emits, options))
            figures["rss_mib"] = round(rss_kib(daemon.pid) / 1024, 1)
            figures["disk_bytes_per_record"] = disk_per_record(client, daemon.home)
            if not layout.per_record and options.push_records > 0:
                bodies = push_bodies(run.peer, run.pushed + 1, options.push_records, options.push_batch)
                figures.update(http_ingest(client, daemon.pid, bodies, options.push_records))
                run.pushed += options.push_records
    finally:
        daemon.stop()
    return figures


# -- the table ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    key: str
    label: str
    thread_layouts: bool = True  # measured on big-thread and many-threads
    per_record_layout: bool = False  # measured on thread-per-record


ROWS = (
    Row("cold_fold_ms", "`GET /v1/threads/{id}`, first call after a restart (cold fold), ms"),
    Row("cold_lone_ms", "… meanwhile, a one-record thread's first `GET /v1/threads/{id}`, ms"),
    Row("cold_emit_p50_ms", "… meanwhile, emit p50 (`POST /v1/records`), ms"),
    Row("emit_p50_ms", "emit p50, nothing else running, ms"),
    Row("warm_fold_ms", "`GET /v1/threads/{id}`, warm, ms"),
    Row("since_page_ms", "`…/records?since=<clock>` late page (~100 records), ms"),
    Row("watch_first_ms", "watch `since_clock=<clock>`: first replayed record, ms"),
    Row("after_seq_page_ms", "`/v1/records?thread&after_sequence=` late page, ms"),
    Row("feed_first_page_ms", "change feed, first page of 1,000, ms"),
    Row("feed_late_page_ms", "change feed, page of 1,000 near the end, ms"),
    Row("feed_cpu_per_1k_ms", "change feed full pull: source CPU per 1,000 records, ms"),
    Row("list_first_ms", "`GET /v1/threads?limit=100`, first page (N threads), ms", False, True),
    Row("list_deep_ms", f"`GET /v1/threads`, page {LIST_DEPTH + 1} (or the last) by `next_cursor`, ms", False, True),
    Row("startup_ms", "daemon start-up to `/health`, ms", True, True),
    Row("rss_mib", "daemon RSS after the reads, MiB", True, True),
    Row("disk_bytes_per_record", "disk per record (db + WAL), bytes", True, True),
    Row("store_ingest_per_s", "store ingest (`commit_batch`, 5,000 per transaction), records/s", True, True),
    Row("store_ingest_cpu_per_1k_ms", "store ingest: CPU per 1,000 records, ms", True, True),
    Row("http_ingest_per_s", "HTTP ingest (`POST /v1/sync/records`, 1,000 per request), records/s"),
    Row("http_ingest_cpu_per_1k_ms", "HTTP ingest: daemon CPU per 1,000 records, ms"),
)


def rows_for(layout: Layout) -> list[Row]:
    return [row for row in ROWS if (row.per_record_layout if layout.per_record else row.thread_layouts)]


def format_figure(value: Figure) -> str:
    if value is None:
        return "–"
    if isinstance(value, OverLimit):
        return str(value)
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def format_table(layout: Layout, columns: dict[int, dict[str, Figure]]) -> str:
    """A markdown table: one row per operation, one column per size."""
    sizes = sorted(columns)
    lines = [
        f"{layout.title} (`{layout.name}`)",
        "",
        "| operation | " + " | ".join(size_label(size) for size in sizes) + " |",
        "|---|" + "---:|" * len(sizes),
    ]
    for row in rows_for(layout):
        cells = [format_figure(columns[size].get(row.key)) for size in sizes]
        lines.append(f"| {row.label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_json(value: Figure) -> Any:
    return str(value) if isinstance(value, OverLimit) else value


# -- the run --------------------------------------------------------------------------------------------------


def run_benchmark(
    workdir: Path, sizes: Sequence[int], chosen: Sequence[Layout], options: Options, *, keep: bool = False
) -> dict[str, dict[int, dict[str, Figure]]]:
    """Every column of every chosen layout: ``{layout name: {size: {row key: figure}}}``.

    Each layout's home is ``workdir/<layout name>``, deleted once measured unless ``keep`` (a 10M store is
    about 10 GB: only one is on disk at a time).
    """
    results: dict[str, dict[int, dict[str, Figure]]] = {}
    for layout in chosen:
        home = workdir / layout.name
        if home.exists():
            raise FileExistsError(f"{home} exists: each run builds its stores from nothing")
        run = LayoutRun(layout, DaemonProcess(home))
        try:
            results[layout.name] = {size: measure_column(run, size, options) for size in sizes}
        finally:
            run.daemon.kill()
            if not keep:
                shutil.rmtree(home, ignore_errors=True)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        """The module docstring as written, and each flag's default."""

    parser = argparse.ArgumentParser(prog="python -m spl.soak.scale", description=__doc__, formatter_class=Help)

    def sizes_arg(text: str) -> list[int]:
        try:
            return parse_sizes(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def sample_arg(text: str) -> int:
        return 0 if text.strip() == "0" else sizes_arg(text)[0]

    default = Options()
    parser.add_argument("--sizes", type=sizes_arg, default="10k,100k,1m", help="records per column, ascending")
    parser.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated, of: {', '.join(LAYOUTS)}")
    parser.add_argument("--threads", type=parse_size, default=10_000, help="threads of the many-threads layout")
    parser.add_argument("--repeats", type=int, default=default.repeats, help="calls per median (after a warm-up)")
    parser.add_argument("--restarts", type=int, default=default.restarts, help="cold starts per column")
    parser.add_argument("--timeout", type=float, default=default.timeout, help="bound on one call, s")
    parser.add_argument(
        "--pull-timeout", type=float, default=default.pull_timeout, help="bound on a full pull, s (give 10m 1200)"
    )
    parser.add_argument(
        "--push-records",
        type=sample_arg,
        default=default.push_records,
        help="records of the HTTP ingest sample per column (0: none)",
    )
    parser.add_argument("--push-batch", type=int, default=default.push_batch, help="records per push request")
    parser.add_argument("--build-workers", type=int, default=default.build_workers, help="signing processes")
    parser.add_argument(
        "--workdir", type=Path, help="keep the daemon homes here, new folders (none: a temporary directory)"
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON object, as the last line")
    args = parser.parse_args(argv)
    if args.threads < 2:
        parser.error("--threads: at least 2 (one thread is the big-thread layout)")
    known = layouts(args.threads)
    names = [name.strip() for name in args.layouts.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        parser.error(f"--layouts: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(LAYOUTS)}")
    options = Options(
        repeats=args.repeats,
        restarts=max(args.restarts, 1),
        timeout=args.timeout,
        pull_timeout=args.pull_timeout,
        push_records=args.push_records,
        push_batch=args.push_batch,
        build_workers=args.build_workers,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spl-scale-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        chosen = [known[name] for name in names]
        results = run_benchmark(workdir, args.sizes, chosen, options, keep=args.workdir is not None)
    elapsed = time.monotonic() - started
    for name, columns in results.items():
        print(format_table(known[name], columns), end="\n\n")
    load = os.getloadavg()
    print(f"elapsed: {elapsed:.0f} s; load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    if args.json:
        document = {
            "sizes": args.sizes,
            "threads": args.threads,
            "elapsed_s": round(elapsed, 1),
            "load_average": load,
            "layouts": {
                name: {
                    size_label(size): {key: to_json(value) for key, value in figures.items()}
                    for size, figures in columns.items()
                }
                for name, columns in results.items()
            },
        }
        print(json.dumps(document))


if __name__ == "__main__":
    main()
