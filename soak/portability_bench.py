"""Export and import of a whole instance (issue 11, "Performance"): throughput, memory and size on this machine.

Run: ``python -m spl.soak.portability_bench [--records 1000000] [--threads 300] [--workdir DIR] [--keep]
[--no-store-passes] [--profile DIR] [--json]``. ``--records 20000`` runs in seconds; the default (1M) takes
several minutes on a 2-core machine, a third of it building the source store.

What it does, in order:

1. **build**: a source home is initialised (``spl.daemon.bootstrap.initialise``) and ``--records`` records,
   signed by that home's own identity, are committed straight into its ``hub.db`` with the store's
   ``commit_batch``, 5,000 per transaction, daemon stopped. Records look like real ones: a body of 300-500 bytes
   of word-like text (so zstd is not flattered by repeated bytes), spread round-robin over ``--threads`` threads,
   each opened by an INTEND. Worker processes sign while the main process commits (``scale.build_store``'s
   scheme), at most two batches per worker waiting.
2. **daemons**: the source daemon starts on that home and a fresh target daemon on an empty one; both ``spl
   serve`` on 127.0.0.1, port 0, auth on (admin token).
3. **export**: ``POST /v1/portability/export`` streamed to a file by a client in a process of its own (so its
   peak memory is its own). Export records/s = records in the bundle / the request's wall time.
4. **import**: ``POST /v1/portability/import`` into the target, uploaded from that file in 256 KiB chunks by the
   same kind of client process; records/s = records / (first byte sent … summary received), so it counts the
   upload, pass 1 (verify every id and signature) and pass 2 (commit in one transaction). The passes are split
   from outside: the upload ends when the client sends its last chunk, and pass 2 starts when the target's
   ``hub.db-wal`` first changes after that (pass 1 writes nothing; SQLite's page cache spills into the WAL
   within the first few hundred records of pass 2): an estimate to ~50 ms.
5. **round trip**: every thread's record ids, in sequence order, equal on both stores (read-only SQLite reads).
6. **store-level passes** (unless ``--no-store-passes``): ``verify_bundle`` and ``import_bundle`` timed
   in-process on the same bundle into a third, empty store, in a process of their own (no HTTP, no spooling):
   the second measurement of the two passes, and their peak memory.

Memory is each process's peak resident set (``VmHWM`` in ``/proc/<pid>/status``), read after each phase: the
source daemon's includes its start-up (which folds the store), the target's its start-up on an empty store. Sizes:
the bundle's bytes per record beside the store's (``hub.db`` + WAL over the record count).

``--profile DIR`` also records each daemon with ``py-spy`` during its phase (if ``py-spy`` is on the PATH or
beside this interpreter) and cProfiles the store-level passes; the files land in DIR and a summary of the
functions that take the most samples is printed. The profiler slows what it samples: time a run without it.

This machine has two cores shared with other work: the table prints the load average before and after.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import json
import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from spl.core.genesis import is_genesis
from spl.core.identity import Identity
from spl.core.record import Envelope, validate_envelope
from spl.core.reserved import is_reserved
from spl.core.stored import Candidate
from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home
from spl.daemon.launcher import DaemonProcess
from spl.soak.arguments import positive_int
from spl.soak.interrupts import StopSignals
from spl.soak.procfs import cpu_seconds
from spl.store.database import connect_reader, connect_writer, write_transaction
from spl.store.ingest import commit_batch, load_writer_state
from spl.store.portability import import_bundle, verify_bundle
from spl.store.verify_pool import VerifyPool

__all__ = ["GOALS", "Options", "format_table", "main", "record_fields", "run_benchmark", "store_passes"]

BATCH = 5_000  # records per commit_batch transaction while building the source store
CHUNK = 256 * 1024  # upload chunk
CLIENT_TIMEOUT = 1800.0  # a client waits this long for an answer (a 1M-record import commits for minutes)
TOKEN_ENV = "SPL_BENCH_TOKEN"  # how the client process gets the admin token: never on a command line (ps shows it)
WAL_POLL = 0.02  # seconds between two looks at the target's WAL during an import
# Issue 11's goals: what the table checks each figure against.
GOALS = {
    "export_per_s": 30_000,
    "import_per_s": 10_000,
    "round_trip_s_per_1m": 180.0,
    "peak_rss_mb": 200.0,
}

_WORDS = (
    "thread record steward import export bundle signature ledger migration peer federation namespace consent "
    "grant token cursor sequence clock actor intent promise review deploy release incident note draft merge "
    "branch commit patch build test runner cache index shard replica backup restore window schedule budget "
    "invoice customer order shipment warehouse ticket support escalation summary meeting agenda decision owner"
).split()


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the source store ---------------------------------------------------------------------------------------


def record_fields(index: int, threads: int, actor: str, rng: random.Random) -> dict[str, Any]:
    """Record number ``index``: thread ``index % threads``, its clock ``index // threads + 1``, a body of
    roughly 300-500 bytes of word-like text (zstd sees text, not one repeated byte)."""
    clock = index // threads + 1
    words = rng.choices(_WORDS, k=rng.randint(27, 45))
    body = {
        "kind": "bench.portability.note",
        "n": index,
        "title": " ".join(words[:6]).capitalize(),
        "text": " ".join(words[6:]) + ".",
        "tags": sorted(set(rng.choices(_WORDS, k=3))),
        "ref": f"{rng.getrandbits(64):016x}",
        "_v": 1,
    }
    return {
        "act": "INTEND" if clock == 1 else "DO",
        "actor": actor,
        "thread": f"th_port_{index % threads:05d}",
        "clock": clock,
        "body": body,
    }


def sign_range(seed: bytes, threads: int, start: int, stop: int) -> list[tuple[Envelope, str]]:
    """Records ``start`` … ``stop - 1``, validated (id computed) and signed by ``seed``'s key."""
    identity = Identity(seed)
    rng = random.Random(start)  # deterministic per batch, whoever signs it
    signed = []
    for index in range(start, stop):
        envelope = validate_envelope(record_fields(index, threads, identity.did, rng))
        signed.append((envelope, identity.sign_record_id(envelope.id)))
    return signed


def _sign_range_packed(seed: bytes, threads: int, start: int, stop: int) -> bytes:
    """:func:`sign_range` in a worker process, sent back as msgpack (far cheaper than pickling envelopes)."""
    return msgspec.msgpack.encode(sign_range(seed, threads, start, stop))


def _signed_batches(seed: bytes, threads: int, count: int, workers: int) -> Iterator[list[tuple[Envelope, str]]]:
    """Signed records in batches of :data:`BATCH`, in order; worker processes sign ahead of the caller."""
    ranges = [(first, min(first + BATCH, count)) for first in range(0, count, BATCH)]
    if workers <= 0 or len(ranges) < 2:
        for first, last in ranges:
            yield sign_range(seed, threads, first, last)
        return
    spawn = multiprocessing.get_context("spawn")  # never fork a process that may hold threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=spawn) as pool:
        waiting: deque[Future[bytes]] = deque()
        for first, last in ranges:
            waiting.append(pool.submit(_sign_range_packed, seed, threads, first, last))
            if len(waiting) >= 2 * workers:
                yield msgspec.msgpack.decode(waiting.popleft().result(), type=list[tuple[Envelope, str]])
        while waiting:
            yield msgspec.msgpack.decode(waiting.popleft().result(), type=list[tuple[Envelope, str]])


def build_source(home: Home, records: int, threads: int, workers: int) -> None:
    """Commit ``records`` signed records into the (stopped) home's store, :data:`BATCH` per transaction."""
    identity = home.load_identity()
    connection = connect_writer(home.db_path)
    try:
        state = load_writer_state(connection, identity.did)
        for signed in _signed_batches(identity.seed, threads, records, workers):
            commit_batch(connection, [[Candidate(envelope, identity.did, sig) for envelope, sig in signed]], state)
    finally:
        connection.close()


# -- what /proc and the disk say ------------------------------------------------------------------------------


def peak_rss_mb(pid: int | str = "self") -> float:
    """``VmHWM`` (peak resident set) of a process, MB (10^6 bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e6
    raise ValueError(f"process {pid} has no VmHWM (a zombie?)")


def store_bytes(db: Path) -> tuple[int, int]:
    """The store on disk: (``hub.db``, its WAL), bytes. An import's one transaction sits in the WAL until the
    next checkpoint, so the two are shown apart."""
    wal = db.with_name(db.name + "-wal")
    return db.stat().st_size, wal.stat().st_size if wal.exists() else 0


def thread_digests(db: Path) -> dict[str, tuple[int, str]]:
    """Each thread's (record count, sha256 of its record ids in sequence order): what a round trip must keep.

    Genesis records are left out: each home writes its own at ``spl init``, so the target holds its own beside
    the ones the bundle brings, and neither says anything about the round trip.
    """
    hashes: dict[str, Any] = {}
    counts: Counter[str] = Counter()
    connection = connect_reader(db)
    try:
        for thread, record_id, act, text in connection.execute(
            "SELECT thread, id, act, CASE WHEN act = 'INTEND' THEN json END FROM records ORDER BY seq"
        ):
            if text is not None and is_reserved(thread) and is_genesis(act, json.loads(text).get("body")):
                continue
            digest = hashes.get(thread)
            if digest is None:
                digest = hashes[thread] = hashlib.sha256()
            digest.update(record_id.encode() + b"\n")
            counts[thread] += 1
    finally:
        connection.close()
    return {thread: (counts[thread], digest.hexdigest()) for thread, digest in hashes.items()}


def record_count(db: Path) -> int:
    connection = connect_reader(db)
    try:
        for (count,) in connection.execute("SELECT COUNT(*) FROM records"):
            return int(count)
        return 0
    finally:
        connection.close()


class WalWatch:
    """Times of every change of a WAL file's (size, mtime) seen while it runs, polled every :data:`WAL_POLL` s.

    Pass 1 of an import writes nothing to the store, pass 2 writes from its first records (the page cache is
    small): the first change after the upload ended is where pass 2 began.
    """

    def __init__(self, wal: Path) -> None:
        self.wal = wal
        self.changes: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-watch", daemon=True)

    def _look(self) -> tuple[int, int]:
        try:
            stat = self.wal.stat()
        except FileNotFoundError:
            return (-1, 0)
        return (stat.st_size, stat.st_mtime_ns)

    def _run(self) -> None:
        seen = self._look()
        while not self._stop.wait(WAL_POLL):
            now = self._look()
            if now != seen:
                seen = now
                self.changes.append(time.time())

    def __enter__(self) -> WalWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()

    def first_after(self, moment: float) -> float | None:
        return next((t for t in self.changes if t >= moment), None)


# -- the client (a process of its own) -------------------------------------------------------------------------


def _client(action: str, url: str, path: Path) -> dict[str, Any]:
    """One export (download to ``path``) or import (upload of ``path``); run by ``--client`` in its own process."""
    headers = {"authorization": f"Bearer {os.environ[TOKEN_ENV]}"}
    timeout = httpx.Timeout(30.0, read=CLIENT_TIMEOUT)
    result: dict[str, Any] = {"started_at": time.time()}
    with httpx.Client(timeout=timeout) as http:
        if action == "export":
            written = 0
            with (
                http.stream("POST", f"{url}/v1/portability/export", json={}, headers=headers) as reply,
                path.open("wb") as out,
            ):
                if reply.status_code != 200:
                    raise SystemExit(f"export answered {reply.status_code}: {reply.read()[:500]!r}")
                for chunk in reply.iter_bytes(CHUNK):
                    out.write(chunk)
                    written += len(chunk)
            result["bytes"] = written
        else:

            def body() -> Iterator[bytes]:
                with path.open("rb") as src:
                    while chunk := src.read(CHUNK):
                        yield chunk
                result["uploaded_at"] = time.time()

            reply = http.post(
                f"{url}/v1/portability/import",
                content=body(),
                headers={**headers, "content-type": "application/zstd"},
            )
            if reply.status_code != 200:
                raise SystemExit(f"import answered {reply.status_code}: {reply.text[:500]}")
            result["summary"] = reply.json()
    result["answered_at"] = time.time()
    result["peak_rss_mb"] = peak_rss_mb()
    result["cpu_s"] = time.process_time()
    return result


def run_client(action: str, url: str, token: str, path: Path) -> dict[str, Any]:
    """:func:`_client` in a fresh interpreter: its peak memory is the client's alone."""
    env = {**os.environ, TOKEN_ENV: token}
    done = subprocess.run(
        [sys.executable, "-m", "spl.soak.portability_bench", "--client", action, url, str(path)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"the {action} client failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# -- the store-level passes (a process of their own) -------------------------------------------------------------


def store_passes(bundle: Path, db: Path, did: str, profile: Path | None = None) -> dict[str, float]:
    """``verify_bundle`` (the dry run's check) then ``import_bundle`` (verify + commit in one pass, worker
    processes) of ``bundle`` into a new store at ``db``, each timed.

    With ``profile``, each pass runs under cProfile (its main thread only: the two verification threads are
    not seen) and the stats are written beside ``profile`` as ``<name>.verify.prof`` / ``<name>.commit.prof``.
    """

    cpu_s: dict[str, float] = {}  # every thread of this process: the verification threads included

    def timed(name: str, work: Any) -> tuple[Any, float]:
        profiler = cProfile.Profile() if profile is not None else None
        started, cpu = time.perf_counter(), time.process_time()
        if profiler is not None:
            profiler.enable()
        try:
            value = work()
        finally:
            if profiler is not None:
                profiler.disable()
        seconds = time.perf_counter() - started
        cpu_s[name] = time.process_time() - cpu
        if profiler is not None and profile is not None:
            profiler.dump_stats(str(profile.with_name(f"{profile.name}.{name}.prof")))
        return value, seconds

    def verify() -> Any:
        with bundle.open("rb") as src:
            return verify_bundle(src, passphrase=None)

    verified, verify_s = timed("verify", verify)
    verify_rss = peak_rss_mb()
    connection = connect_writer(db)
    try:
        state = load_writer_state(connection, did)

        def commit() -> Any:
            connection.execute("PRAGMA cache_size = -65536")  # as the store writer does for an import
            with VerifyPool(2) as pool, bundle.open("rb") as src, write_transaction(connection):
                return import_bundle(connection, src, state, passphrase=None, force=False, submit=pool.submit)[0]

        summary, commit_s = timed("commit", commit)
    finally:
        connection.close()
    return {
        "verify_s": verify_s,
        "commit_s": commit_s,
        "verify_cpu_s": cpu_s["verify"],
        "commit_cpu_s": cpu_s["commit"],
        "records": float(summary.records_inserted),
        "verify_peak_rss_mb": verify_rss,
        "peak_rss_mb": peak_rss_mb(),
    }


def _run_store_passes(bundle: Path, db: Path, did: str, profile: Path | None) -> dict[str, float]:
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
        return pool.submit(store_passes, bundle, db, did, profile).result()


# -- py-spy ----------------------------------------------------------------------------------------------------


def _py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Sampler:
    """``py-spy record`` of one process for the length of a ``with`` block (raw collapsed stacks to ``out``)."""

    def __init__(self, pid: int, out: Path | None) -> None:
        self.pid, self.out = pid, out
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Sampler:
        tool = _py_spy()
        if self.out is not None and tool is not None:
            self.process = subprocess.Popen(
                [tool, "record", "--pid", str(self.pid), "--format", "raw", "--rate", "200", "-o", str(self.out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)  # py-spy attaches before the phase starts; nothing to synchronise with but its start
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


_LINE = re.compile(r":\d+\)$")
_OURS = re.compile(r"\((core|store|runtime|actors|transport|daemon|cli|soak)/")


def collapsed_summary(path: Path, top: int = 12) -> dict[str, list[tuple[str, float]]]:
    """The functions with the most samples in a py-spy raw file: ``self`` (on top of the stack) and ``total``
    (anywhere in it), as shares of all samples."""
    own: Counter[str] = Counter()  # every frame on top: libsodium, SQLite and zstd calls show as their wrapper
    anywhere: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_LINE.sub(")", frame) for frame in stack.split(";")[1:]]  # first frame: the thread
        if not frames:
            continue
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            if _OURS.search(frame):  # inclusive shares: spl's own functions (the rest is threading and trio)
                anywhere[frame] += count
    share = 100.0 / max(total, 1)
    return {
        "self": [(frame, round(n * share, 1)) for frame, n in own.most_common(top)],
        "total": [(frame, round(n * share, 1)) for frame, n in anywhere.most_common(top)],
    }


# -- the run ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    records: int = 1_000_000
    threads: int = 300
    sign_workers: int = 2
    store_passes: bool = True
    profile: Path | None = None


def _node(home: Path) -> DaemonProcess:
    initialise(Home.resolve(home))
    return DaemonProcess(home, insecure=False)


def run_benchmark(root: Path, options: Options) -> dict[str, Any]:
    """Every phase of the module docstring under ``root``; the figures (JSON-ready). Stops every daemon."""
    results: dict[str, Any] = {"records": options.records, "threads": options.threads, "load_before": _load()}
    source, target = _node(root / "source"), _node(root / "target")
    bundle = root / "export.tar.zst"
    profile = options.profile
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    daemons: list[DaemonProcess] = []
    try:
        progress(f"building the source store: {options.records:,} records over {options.threads} threads")
        started = time.perf_counter()
        build_source(source.home, options.records, options.threads, options.sign_workers)
        results["build_s"] = time.perf_counter() - started
        for daemon in (source, target):
            daemon.start(port=0)
            daemons.append(daemon)
        results["source_start_rss_mb"] = peak_rss_mb(source.pid)
        results["target_start_rss_mb"] = peak_rss_mb(target.pid)

        progress("export over HTTP")
        cpu = cpu_seconds(source.pid)
        with Sampler(source.pid, profile / "export.daemon.txt" if profile else None):
            exported = run_client("export", source.url, source.admin_token, bundle)
        results["export_s"] = exported["answered_at"] - exported["started_at"]
        results["export_daemon_cpu_s"] = cpu_seconds(source.pid) - cpu
        results["export_client_cpu_s"] = exported["cpu_s"]
        results["export_source_rss_mb"] = peak_rss_mb(source.pid)
        results["export_client_rss_mb"] = exported["peak_rss_mb"]
        results["bundle_bytes"] = exported["bytes"]

        progress("import over HTTP")
        cpu = cpu_seconds(target.pid)
        with (
            Sampler(target.pid, profile / "import.daemon.txt" if profile else None),
            WalWatch(target.home.db_path.with_name("hub.db-wal")) as wal,
        ):
            imported = run_client("import", target.url, target.admin_token, bundle)
        summary = imported["summary"]
        results["import_s"] = imported["answered_at"] - imported["started_at"]
        results["import_daemon_cpu_s"] = cpu_seconds(target.pid) - cpu
        results["import_client_cpu_s"] = imported["cpu_s"]
        results["upload_s"] = imported["uploaded_at"] - imported["started_at"]
        commit_start = wal.first_after(imported["uploaded_at"])
        if commit_start is not None:
            results["verify_s"] = commit_start - imported["uploaded_at"]
            results["commit_s"] = imported["answered_at"] - commit_start
        results["import_target_rss_mb"] = peak_rss_mb(target.pid)
        results["import_client_rss_mb"] = imported["peak_rss_mb"]
        results["import_summary"] = {
            key: summary[key] for key in ("records_inspected", "records_inserted", "records_deduplicated", "identity")
        }

        progress("comparing every thread")
        before, after = thread_digests(source.home.db_path), thread_digests(target.home.db_path)
        results["records_exported"] = record_count(source.home.db_path)  # the source's genesis records included
        results["threads_compared"] = len(before)
        results["round_trip_equal"] = before == after and summary["records_inserted"] == results["records_exported"]
        results["source_store_bytes"], results["source_wal_bytes"] = store_bytes(source.home.db_path)
        results["target_store_bytes"], results["target_wal_bytes"] = store_bytes(target.home.db_path)
    finally:
        for daemon in daemons:
            try:
                daemon.stop()
            except AssertionError:
                daemon.kill()
    if options.store_passes:
        progress("store-level passes: verify_bundle, import_bundle")
        passes = _run_store_passes(
            bundle, root / "passes.db", source.home.load_identity().did, profile / "passes" if profile else None
        )
        results["store_passes"] = passes
    if profile is not None:
        results["profiles"] = {
            path.name: collapsed_summary(path) for path in sorted(profile.glob("*.daemon.txt")) if path.exists()
        }
    results["load_after"] = _load()
    _derive(results)
    return results


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _derive(results: dict[str, Any]) -> None:
    records = results["records_exported"]
    results["export_per_s"] = records / results["export_s"]
    results["import_per_s"] = records / results["import_s"]
    results["round_trip_s"] = results["export_s"] + results["import_s"]
    results["bundle_bytes_per_record"] = results["bundle_bytes"] / records
    results["source_store_bytes_per_record"] = results["source_store_bytes"] / records
    results["target_store_bytes_per_record"] = results["target_store_bytes"] / records
    results["target_wal_bytes_per_record"] = results["target_wal_bytes"] / records
    for key in ("export_daemon", "export_client", "import_daemon", "import_client"):
        results[f"{key}_cpu_ms_per_1k"] = results[f"{key}_cpu_s"] * 1e6 / records
    passes = results.get("store_passes")
    if passes:
        passes["verify_cpu_ms_per_1k"] = passes["verify_cpu_s"] * 1e6 / records
        passes["commit_cpu_ms_per_1k"] = passes["commit_cpu_s"] * 1e6 / records
        passes["verify_per_s"] = records / passes["verify_s"]
        passes["commit_per_s"] = records / passes["commit_s"]


def _verdict(value: float, goal: float, *, at_most: bool = False) -> str:
    met = value <= goal if at_most else value >= goal
    return "met" if met else "MISSED"


def format_table(results: dict[str, Any]) -> str:
    """The figures as a Markdown table, each beside issue 11's goal where it has one."""
    records = results["records_exported"]
    scale = 1_000_000 / records
    rows: list[tuple[str, str, str]] = [
        ("export over HTTP, records/s", f"{results['export_per_s']:,.0f}", f"≥ {GOALS['export_per_s']:,}"),
        (
            "import over HTTP (upload + verify + commit), records/s",
            f"{results['import_per_s']:,.0f}",
            f"≥ {GOALS['import_per_s']:,}",
        ),
        ("… upload (spooled by the daemon), s", f"{results['upload_s']:.1f}", ""),
    ]
    cpu_rows = [
        ("export: CPU per 1,000 records, daemon / client, ms", "export_daemon", "export_client"),
        ("import: CPU per 1,000 records, daemon / client, ms", "import_daemon", "import_client"),
    ]
    if "verify_s" in results:
        rows += [
            ("… pass 1, verify (from the WAL), s", f"{results['verify_s']:.1f}", ""),
            ("… pass 2, commit (from the WAL), s", f"{results['commit_s']:.1f}", ""),
        ]
    rows += [
        (
            "round trip (export + import), s",
            f"{results['round_trip_s']:.1f}"
            + (f" (at 1M, scaled: {results['round_trip_s'] * scale:.0f})" if scale != 1 else ""),
            f"< {GOALS['round_trip_s_per_1m']:.0f} at 1M",
        ),
        *(
            (name, f"{results[daemon + '_cpu_ms_per_1k']:.0f} / {results[client + '_cpu_ms_per_1k']:.0f}", "")
            for name, daemon, client in cpu_rows
        ),
        ("source daemon peak RSS after start-up, MB", f"{results['source_start_rss_mb']:.0f}", ""),
        ("source daemon peak RSS after export, MB", f"{results['export_source_rss_mb']:.0f}", "≤ 200"),
        ("export client peak RSS, MB", f"{results['export_client_rss_mb']:.0f}", "≤ 200"),
        ("target daemon peak RSS after start-up, MB", f"{results['target_start_rss_mb']:.0f}", ""),
        ("target daemon peak RSS after import, MB", f"{results['import_target_rss_mb']:.0f}", "≤ 200"),
        ("import client peak RSS, MB", f"{results['import_client_rss_mb']:.0f}", "≤ 200"),
        ("bundle, bytes/record", f"{results['bundle_bytes_per_record']:.0f}", ""),
        ("source store (hub.db), bytes/record", f"{results['source_store_bytes_per_record']:.0f}", ""),
        (
            "target store after import: hub.db / WAL not yet checkpointed, bytes/record",
            f"{results['target_store_bytes_per_record']:.0f} / {results['target_wal_bytes_per_record']:.0f}",
            "",
        ),
    ]
    passes = results.get("store_passes")
    if passes:
        rows += [
            ("store level: verify_bundle, records/s", f"{passes['verify_per_s']:,.0f}", ""),
            ("store level: import_bundle (one pass), records/s", f"{passes['commit_per_s']:,.0f}", ""),
            (
                "store level: CPU per 1,000 records, verify / commit, ms",
                f"{passes['verify_cpu_ms_per_1k']:.0f} / {passes['commit_cpu_ms_per_1k']:.0f}",
                "",
            ),
            (
                "store level: peak RSS after verify / commit, MB",
                f"{passes['verify_peak_rss_mb']:.0f} / {passes['peak_rss_mb']:.0f}",
                "",
            ),
        ]
    lines = [
        f"{records:,} records over {results['threads_compared']} threads; round trip "
        + ("held (every thread's ids equal)" if results["round_trip_equal"] else "BROKEN (threads differ)")
        + f"; load average {results['load_before']} before, {results['load_after']} after",
        "",
        "| figure | value | goal |",
        "|---|---:|---|",
        *(f"| {name} | {value} | {goal} |" for name, value, goal in rows),
        "",
        "Goals: "
        + ", ".join(
            f"{name} {verdict}"
            for name, verdict in (
                ("export", _verdict(results["export_per_s"], GOALS["export_per_s"])),
                ("import", _verdict(results["import_per_s"], GOALS["import_per_s"])),
                (
                    "round trip",
                    _verdict(results["round_trip_s"] * scale, GOALS["round_trip_s_per_1m"], at_most=True),
                ),
                (
                    "memory",
                    _verdict(
                        max(
                            results["export_source_rss_mb"],
                            results["export_client_rss_mb"],
                            results["import_target_rss_mb"],
                            results["import_client_rss_mb"],
                        ),
                        GOALS["peak_rss_mb"],
                        at_most=True,
                    ),
                ),
            )
        ),
    ]
    for name, summary in results.get("profiles", {}).items():
        lines += ["", f"py-spy, {name}: most samples on top of the stack (self) / anywhere in it (total), %"]
        lines += [f"  self  {share:5.1f}  {frame}" for frame, share in summary["self"]]
        lines += [f"  total {share:5.1f}  {frame}" for frame, share in summary["total"]]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--client"]:  # the client process run_client starts: --client export|import URL FILE
        _, action, url, path = arguments
        print(json.dumps(_client(action, url, Path(path))))
        return
    parser = argparse.ArgumentParser(prog="python -m spl.soak.portability_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=positive_int, default=1_000_000, help="records in the source store")
    parser.add_argument("--threads", type=positive_int, default=300, help="threads they are spread over")
    parser.add_argument("--sign-workers", type=int, default=2, help="processes signing the source records")
    parser.add_argument("--workdir", type=Path, help="where the homes and the bundle go (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep the homes and the bundle afterwards")
    parser.add_argument("--no-store-passes", action="store_true", help="skip the in-process verify/commit timing")
    parser.add_argument("--profile", type=Path, help="py-spy the daemons and cProfile the passes into this folder")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(arguments)
    options = Options(
        records=args.records,
        threads=args.threads,
        sign_workers=args.sign_workers,
        store_passes=not args.no_store_passes,
        profile=args.profile,
    )
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="spl-portbench-", dir=args.workdir))
    started = time.perf_counter()
    try:
        with StopSignals():
            results = run_benchmark(root, options)
    except KeyboardInterrupt as error:
        progress(f"interrupted ({error}); the daemons were stopped")
        raise SystemExit(130) from None
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    results["elapsed_s"] = time.perf_counter() - started
    if not args.json:
        print(format_table(results))
        print(f"\nelapsed {results['elapsed_s']:.0f} s" + (f"; kept {root}" if args.keep else ""))
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
