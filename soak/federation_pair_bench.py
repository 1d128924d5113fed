"""Federation pairs (issue 10) on one machine: the handshake, catch-up beside a sync pair, continuous lag.

Run: ``python -m spl.soak.federation_pair_bench [--handshakes 20] [--catchup 100k] [--threads 1000]
[--rounds 2] [--pairs sync,fed,fed-1t] [--rate 50] [--seconds 30] [--lag-pairs fed,sync]
[--only handshake,catchup,lag] [--json]``. The default run takes about five minutes on a 2-core machine.
Every daemon is a throw-away ``spl serve`` on 127.0.0.1 with auth on (its own temporary home); responders
accept pair requests (``federation.pair_approval = "auto"``, set in the home's config before the daemon
starts). Ctrl-C or SIGTERM stops every daemon it started and removes their homes (exit status 130 / 143; a
second signal ``kill -9``s them instead of waiting).

1. **handshake**: ``POST /v1/federation/pairs {url, mode: "on-demand"}`` on A naming B, then a revoke (so the
   next handshake is a fresh pair between the same two daemons) — wall time p50/p95 and the CPU each side
   spent. Interleaved with it, parts timed on their own from the bench process: fetching B's
   ``/.well-known/syncropel`` and verifying its signature (what A does first), the round trip of a signed
   ``POST /v1/federation/pair`` to B from a throw-away initiator identity (B's whole responder side: verify,
   unseal, a token minted, three records, the answer signed and sealed), and one ``POST /v1/records`` on B —
   one COMMIT, the unit most of a handshake's wall time is made of. The rest of A's time is its own work: a
   token minted, two records, the token file, the puller started and its first (empty) pull.
2. **catch-up**: ``--catchup`` records already in a source's store (signed by it, written before it starts,
   as ``spl.soak.scale`` builds stores); a fresh receiver per run. Records/s = records over (the receiver's
   own commit time, ``created_at``, of the last record − the moment before the pair's POST); CPU per 1,000
   records on both sides. ``--pairs``, run in each of ``--rounds`` rounds in a rotated order:

   - ``fed``: a federation pair (``mode: "on-demand"``: its first pull runs inside the POST, to the head) on a
     source whose records fill ``--threads`` threads of namespace ``default``;
   - ``sync``: the sync pair it is compared with — ``POST /v1/sync/pairs`` (polling 0.5 s, the source's token)
     pulling one thread of as many records from a second source (``federation_bench``'s catch-up, auth on);
   - ``fed-1t``: a federation pair on that one-thread source, which tells the pair's feed from the layout;
   - ``fed-poll`` (not by default): ``fed`` with ``mode: "polling"`` every 0.2 s. Both sides of a federation
     pair pull; the receiver does not serve the source its own records back (it once did: the source then
     verified 100,000 duplicates), so this is timed until the source has read the receiver's feed to its head.

   Progress is read every 0.25 s from a cheap route (one pair's status, one thread's counts).
3. **continuous lag**: a continuous pair; records emitted on the source at ``--rate``/s for ``--seconds``
   (``POST /v1/records``, paced, over ``--lag-threads`` threads). Lag = the receiver's commit time minus the
   source's (both ``created_at``, one clock) → p50/p99/max, and the CPU each side spent per record.
   ``--lag-pairs``: ``fed`` a federation pair (the source also pulls each record back: the table counts
   them), ``sync`` a sync pair as the reference, ``fed-noecho`` (not by default) a federation pair whose
   receiver serves nothing back (its thread allow-list names no emitted thread): what that echo costs.

Each section prints the load average before and after it: this machine has two cores and other work may run
beside the bench, so the CPU figures (per 1,000 records, per handshake, per record) are the ones to compare
across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from spl.core import tokens
from spl.core.handshake import build_notice, build_pair_request, check_pair_response
from spl.core.identity import Identity
from spl.core.manifest import signed_manifest_did
from spl.core.syncstats import parse_rfc3339
from spl.core.units import percentile
from spl.daemon.launcher import DaemonProcess
from spl.soak.interrupts import StopSignals
from spl.soak.procfs import cpu_seconds
from spl.soak.scale import Layout, build_store, parse_size

__all__ = [
    "Fleet",
    "Node",
    "Options",
    "catchup_rounds",
    "continuous_lag",
    "handshakes",
    "run_benchmark",
]

JSON = {"content-type": "application/json"}
POLL_EVERY = 0.25  # seconds between progress reads: cheap routes, so the daemons measured barely notice
STOP_TIMEOUT = 20.0
PAIR_TIMEOUT = 120.0  # a pair POST waits up to 60 s for its first pull; the client waits longer


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_average() -> float:
    """The 1-minute load average now (what else was running)."""
    return round(os.getloadavg()[0], 2)


# -- daemons ------------------------------------------------------------------------------------------------


@dataclass
class Node:
    """A running daemon with auth on, as the bench reaches it: its URL, its DID and its admin bearer header."""

    process: DaemonProcess
    did: str
    headers: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def token(self) -> str:
        return self.process.admin_token

    def cpu(self) -> float:
        """CPU seconds the daemon has used so far (user + system, every thread)."""
        return cpu_seconds(self.process.pid)


class Fleet:
    """The daemons of one run, each in its own home under ``root``; :meth:`stop` ends them all, :meth:`kill_now`
    is the hurried form a second signal uses."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []
        self._starting: DaemonProcess | None = None

    def home(self, name: str, *, approval: str = "auto") -> DaemonProcess:
        """A new daemon home (not started): responders accept pair requests without an operator."""
        process = DaemonProcess(self.root / name, insecure=False)
        config = process.home.load_config()
        config.federation.pair_approval = approval  # type: ignore[assignment]
        process.home.save_config(config)
        return process

    def start(self, process: DaemonProcess, client: httpx.Client) -> Node:
        self._starting = process
        process.start(port=0)
        headers = {"authorization": f"Bearer {process.admin_token}", **JSON}
        node = Node(process, "", headers)
        self.nodes.append(node)
        self._starting = None
        response = client.get(f"{process.url}/v1/identity", headers=headers)
        response.raise_for_status()
        node.did = str(response.json()["did"])
        return node

    def launch(self, name: str, client: httpx.Client, *, approval: str = "auto") -> Node:
        return self.start(self.home(name, approval=approval), client)

    def halt(self, node: Node) -> None:
        """Stop one daemon and keep its home (to grow its store and start it again)."""
        self._stop([node.process])
        self.nodes.remove(node)

    def retire(self, node: Node) -> None:
        """Stop one daemon and remove its home (a receiver of 100k records is ~100 MB)."""
        self.halt(node)
        shutil.rmtree(node.process.home.root, ignore_errors=True)

    def stop(self) -> None:
        processes = [node.process for node in self.nodes]
        if self._starting is not None:
            processes.append(self._starting)
        self._stop(processes)

    @staticmethod
    def _stop(processes: Sequence[DaemonProcess]) -> None:
        """SIGTERM each, wait, ``kill -9`` what ignores it."""
        running = [p.process for p in processes if p.process is not None and p.process.poll() is None]
        for child in running:
            try:
                child.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + STOP_TIMEOUT
        for child in running:
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)

    def kill_now(self) -> None:
        """``kill -9`` every daemon started here, without waiting: safe inside a signal handler."""
        processes = [node.process for node in self.nodes]
        if self._starting is not None:
            processes.append(self._starting)
        for process in processes:
            child = process.process
            if child is not None and child.returncode is None:
                try:
                    os.kill(child.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def checked(response: httpx.Response, *expected: int) -> dict[str, Any]:
    """The JSON of a response with one of the expected statuses; a RuntimeError naming what came back otherwise."""
    if response.status_code not in (expected or (200,)):
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} → {response.status_code}: {response.text[:300]}"
        )
    body: dict[str, Any] = response.json()
    return body


def wait_for(what: str, check: Callable[[], bool], limit: float) -> None:
    """Poll ``check`` every POLL_EVERY seconds until it holds: the daemons have no completion event to wait on."""
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not done after {limit:g} s")
        time.sleep(POLL_EVERY)


def pair_status(client: httpx.Client, node: Node, pair_id: str) -> dict[str, Any]:
    return checked(client.get(f"{node.url}/v1/federation/pairs/{pair_id}", headers=node.headers))


def pulled(client: httpx.Client, node: Node, pair_id: str) -> int:
    pull = pair_status(client, node, pair_id)["pull"] or {}
    return int(pull.get("records_pulled", 0))


def records_after(client: httpx.Client, node: Node, after: int) -> Iterator[dict[str, Any]]:
    """Every record of ``node`` past sequence ``after``, in sequence order (pages of 1,000)."""
    while True:
        params: dict[str, str | int] = {"after_sequence": after, "limit": 1000}
        page = checked(client.get(f"{node.url}/v1/records", params=params, headers=node.headers))["data"]
        if not page:
            return
        yield from page
        after = int(page[-1]["sequence"])


def head_sequence(client: httpx.Client, node: Node) -> int:
    return int(checked(client.get(f"{node.url}/v1/status", headers=node.headers))["sequence"])


def last_commit(client: httpx.Client, node: Node, back: int = 200) -> float:
    """The wall time ``node`` committed its newest records (their ``created_at``): the end of a catch-up."""
    head = head_sequence(client, node)
    times = [parse_rfc3339(r["created_at"]) for r in records_after(client, node, max(0, head - back))]
    return max(t for t in times if t is not None)


@contextmanager
def cpu_of(*nodes: Node) -> Iterator[list[float]]:
    """CPU seconds each node used inside the ``with`` (filled in when it ends)."""
    spent = [0.0] * len(nodes)
    before = [node.cpu() for node in nodes]
    yield spent
    for index, node in enumerate(nodes):
        spent[index] = node.cpu() - before[index]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def spread(values: Sequence[float]) -> dict[str, float]:
    """p50 / p95 / max of milliseconds (nearest rank, like every figure of the soak)."""
    return {
        "p50": round(percentile(values, 50), 2),
        "p95": round(percentile(values, 95), 2),
        "max": round(max(values), 2),
    }


# -- 1. the handshake -------------------------------------------------------------------------------------


def handshakes(fleet: Fleet, client: httpx.Client, count: int, *, warmups: int = 2) -> dict[str, Any]:
    """``count`` handshakes A → B (each revoked after), with the manifest, the pair POST and one emit on B (one
    COMMIT: what a single transaction costs here) timed beside each one."""
    a = fleet.launch("hs-a", client)
    b = fleet.launch("hs-b", client)
    load_before = load_average()
    parts: dict[str, list[float]] = {"whole_ms": [], "manifest_ms": [], "post_ms": [], "commit_ms": []}
    cpu = [0.0, 0.0]
    for n in range(warmups + count):
        started = time.perf_counter()
        with cpu_of(a, b) as spent:
            answer = checked(
                client.post(
                    f"{a.url}/v1/federation/pairs", json={"url": b.url, "mode": "on-demand"}, headers=a.headers
                ),
                201,
            )
        elapsed = time.perf_counter() - started
        revoked = checked(client.post(f"{a.url}/v1/federation/pairs/{answer['pair_id']}/revoke", headers=a.headers))
        if revoked.get("peer_notified") is not True:
            raise RuntimeError(f"B was not told of the revoke: {revoked.get('peer_notified')}")
        manifest_s = fetch_manifest(client, b)
        post_s = pair_round_trip(client, b)
        emitted = time.perf_counter()
        emit(client, b, "th_handshake_bench", n + 1)
        commit_s = time.perf_counter() - emitted
        if n >= warmups:
            for key, seconds in (
                ("whole_ms", elapsed),
                ("manifest_ms", manifest_s),
                ("post_ms", post_s),
                ("commit_ms", commit_s),
            ):
                parts[key].append(ms(seconds))
            cpu = [cpu[0] + spent[0], cpu[1] + spent[1]]
    fleet.retire(a)
    fleet.retire(b)
    return {
        "handshakes": count,
        **{key: spread(values) for key, values in parts.items()},
        # Summed over the handshakes, then divided: a single one is about the 10 ms tick of the CPU clock.
        "initiator_cpu_ms": round(cpu[0] * 1000 / count, 1),
        "responder_cpu_ms": round(cpu[1] * 1000 / count, 1),
        "load": [load_before, load_average()],
    }


def fetch_manifest(client: httpx.Client, node: Node) -> float:
    """Seconds to fetch ``node``'s manifest and verify its signature, as an initiator does first."""
    started = time.perf_counter()
    response = client.get(f"{node.url}/.well-known/syncropel")
    response.raise_for_status()
    did, _ = signed_manifest_did(response.content, where=node.url, now=time.time())
    elapsed = time.perf_counter() - started
    if did != node.did:
        raise RuntimeError(f"the manifest at {node.url} proves {did}, not {node.did}")
    return elapsed


def pair_round_trip(client: httpx.Client, responder: Node) -> float:
    """Seconds for one signed pair request to ``responder`` from a throw-away identity: the POST alone.

    The request is built and the answer checked outside the clock. The pair is revoked after (a signed notice),
    so the responder holds as many live pairs at every round.
    """
    guest = Identity.generate()
    now = time.time()
    request = build_pair_request(
        guest,
        responder_did=responder.did,
        initiator_url="http://127.0.0.1:9",  # never reached: an on-demand pair pulls only when asked
        mode="on-demand",
        poll_interval=300.0,
        token=tokens.mint("fed", "sa_bench").plaintext,
        token_expires_at=now + 86_400,
        now=now,
    )
    started = time.perf_counter()
    response = client.post(f"{responder.url}/v1/federation/pair", json=request)
    elapsed = time.perf_counter() - started
    answer = check_pair_response(
        checked(response, 200),
        initiator=guest,
        responder_did=responder.did,
        pair_id=request["pair_id"],
        nonce=request["nonce"],
        now=time.time(),
    )
    if answer.status != "active":
        raise RuntimeError(f"the responder answered {answer.status}, not active")
    notice = build_notice(
        guest, pair_id=answer.pair_id, receiver_did=responder.did, event="revoke", reason="bench", now=time.time()
    )
    checked(client.post(f"{responder.url}/v1/federation/pair/notify", json=notice))
    return elapsed


# -- 2. catch-up: a federation pair beside a sync pair ----------------------------------------------------


@dataclass(frozen=True)
class Source:
    """A source daemon and what it holds: ``records`` a pull of ``default`` serves (``thread`` for a sync pair)."""

    node: Node
    records: int
    thread: str


def build_source(fleet: Fleet, client: httpx.Client, name: str, layout: Layout, count: int, workers: int) -> Source:
    """A source whose store holds ``count`` records of ``layout`` (plus ``spl.soak.scale``'s one-record
    ``th_lone``), signed by its own identity and written before it starts."""
    process = fleet.home(name)
    build_store(process.home, layout, 0, count, workers=workers)
    node = fleet.start(process, client)
    return Source(node, count + 1, layout.measured_thread)


def sync_catchup(fleet: Fleet, client: httpx.Client, source: Source, name: str) -> dict[str, Any]:
    """A sync pair (polling 0.5 s, one thread) pulls ``source.thread`` into a fresh receiver."""
    receiver = fleet.launch(name, client)
    count = source.records - 1  # the thread, without th_lone
    try:
        started = time.time()
        with cpu_of(receiver, source.node) as spent:
            body = {
                "peer_did": source.node.did,
                "peer_url": source.node.url,
                "thread_id": source.thread,
                "poll_interval": 0.5,
                "token": source.node.token,
            }
            checked(client.post(f"{receiver.url}/v1/sync/pairs", json=body, headers=receiver.headers), 201)

            def done() -> bool:
                response = client.get(f"{receiver.url}/v1/threads/{source.thread}", headers=receiver.headers)
                return response.status_code == 200 and int(response.json()["record_count"]) >= count

            wait_for(f"sync pair catch-up of {count} records", done, 900)
        return catchup_figures("sync pair, 1 thread", count, last_commit(client, receiver) - started, spent)
    finally:
        fleet.retire(receiver)


def fed_catchup(
    fleet: Fleet, client: httpx.Client, source: Source, name: str, label: str, *, polling: bool = False
) -> dict[str, Any]:
    """A federation pair into a fresh receiver: on-demand (its first pull runs inside the POST, to the head), or
    ``polling`` every 0.2 s — then the source, which pulls too, also pulls every record back from the receiver
    (duplicates it verifies and drops), and the CPU window runs until it has: ``echo_s`` says how much longer."""
    receiver = fleet.launch(name, client)
    try:
        started = time.time()
        mode = {"mode": "polling", "poll_interval": 0.2} if polling else {"mode": "on-demand"}
        with cpu_of(receiver, source.node) as spent:
            answer = checked(
                client.post(
                    f"{receiver.url}/v1/federation/pairs",
                    json={"url": source.node.url, **mode},
                    headers=receiver.headers,
                    timeout=PAIR_TIMEOUT,
                ),
                201,
            )
            pair_id = answer["pair_id"]
            wait_for(
                f"federation pair catch-up of {source.records} records",
                lambda: pulled(client, receiver, pair_id) >= source.records,
                900,
            )
            caught_up = time.time()
            if polling:

                def echoed() -> bool:
                    # The receiver no longer serves the source its own records back (no echo): the source's
                    # pull reads the receiver's feed to its head and finds nothing for it.
                    pull = pair_status(client, source.node, pair_id)["pull"] or {}
                    return int(pull.get("pulls", 0)) >= 1 and int(pull.get("lag_records", 1)) == 0

                wait_for("the source reading the receiver's feed to its head", echoed, 900)
        figures = catchup_figures(label, source.records, last_commit(client, receiver) - started, spent)
        if polling:
            figures["echo_s"] = round(time.time() - caught_up, 1)
        return figures
    finally:
        fleet.retire(receiver)


def catchup_figures(label: str, count: int, seconds: float, spent: Sequence[float]) -> dict[str, Any]:
    return {
        "pair": label,
        "records": count,
        "seconds": round(seconds, 2),
        "records_per_s": round(count / seconds, 1),
        "receiver_cpu_per_1k_ms": round(spent[0] * 1000 / count * 1000, 1),
        "source_cpu_per_1k_ms": round(spent[1] * 1000 / count * 1000, 1),
        "load": load_average(),
    }


CATCHUP_KINDS = ("sync", "fed", "fed-1t", "fed-poll")
DEFAULT_CATCHUPS = ("sync", "fed", "fed-1t")


def catchup_rounds(
    fleet: Fleet, client: httpx.Client, count: int, threads: int, rounds: int, kinds: Sequence[str], workers: int
) -> dict[str, Any]:
    """``rounds`` rounds of the chosen catch-ups, each round in a rotated order (so none always runs first)."""
    load_before = load_average()
    spread_source = one_thread = None
    if "fed" in kinds or "fed-poll" in kinds:
        progress(f"catch-up: writing {count:,} records over {threads:,} threads into a source store")
        spread_source = build_source(fleet, client, "src-spread", Layout("many", threads), count, workers)
    if "sync" in kinds or "fed-1t" in kinds:
        progress(f"catch-up: writing {count:,} records in one thread into a source store")
        one_thread = build_source(fleet, client, "src-one", Layout("one", 1), count, workers)
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in kinds}
    for round_ in range(rounds):
        order = list(kinds[round_ % len(kinds) :]) + list(kinds[: round_ % len(kinds)])
        for kind in order:
            name = f"rx-{kind}-{round_}"
            if kind == "sync":
                assert one_thread is not None
                result = sync_catchup(fleet, client, one_thread, name)
            elif kind == "fed":
                assert spread_source is not None
                result = fed_catchup(fleet, client, spread_source, name, f"federation pair, {threads:,} threads")
            elif kind == "fed-1t":
                assert one_thread is not None
                result = fed_catchup(fleet, client, one_thread, name, "federation pair, 1 thread")
            else:
                assert spread_source is not None
                label = f"federation pair, {threads:,} threads, polling 0.2 s (with the echo)"
                result = fed_catchup(fleet, client, spread_source, name, label, polling=True)
            progress(
                f"catch-up round {round_ + 1}/{rounds}, {result['pair']}: {result['records_per_s']:,.0f} records/s, "
                f"receiver {result['receiver_cpu_per_1k_ms']} ms CPU per 1k (load {result['load']})"
            )
            runs[kind].append(result)
    for source in (spread_source, one_thread):
        if source is not None:
            fleet.retire(source.node)
    return {"rounds": rounds, "runs": runs, "load": [load_before, load_average()]}


def summarise_catchup(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Median records/s (with its range) and median CPU per 1,000 records over a kind's rounds."""
    rates = [run["records_per_s"] for run in runs]
    return {
        "pair": runs[0]["pair"],
        "records": runs[0]["records"],
        "records_per_s": round(statistics.median(rates), 1),
        "min": min(rates),
        "max": max(rates),
        "receiver_cpu_per_1k_ms": round(statistics.median(run["receiver_cpu_per_1k_ms"] for run in runs), 1),
        "source_cpu_per_1k_ms": round(statistics.median(run["source_cpu_per_1k_ms"] for run in runs), 1),
        **({"echo_s": statistics.median(run["echo_s"] for run in runs)} if "echo_s" in runs[0] else {}),
    }


# -- 3. continuous lag ----------------------------------------------------------------------------------------

LAG_KINDS = ("fed", "sync", "fed-noecho")
LAG_LABELS = {
    "fed": "federation pair",
    "sync": "sync pair (reference)",
    "fed-noecho": "federation pair, nothing served back",
}


def continuous_lag(
    fleet: Fleet, client: httpx.Client, kind: str, rate: float, seconds: float, threads: int
) -> dict[str, Any]:
    """A continuous pair; ``rate`` records/s emitted on the source for ``seconds``; lag per record from both
    sides' ``created_at``.

    ``kind``: ``fed`` a federation pair; ``sync`` a sync pair of one thread (``threads`` must be 1), the
    reference; ``fed-noecho`` a federation pair whose receiver serves the source nothing (its thread allow-list
    names no emitted thread), so the source does not pull its own records back: what that echo costs.
    """
    receiver = fleet.launch(f"lag-rx-{kind}", client)
    source = fleet.launch(f"lag-src-{kind}", client)
    load_before = load_average()
    names = [f"th_lag_{n:02d}" for n in range(threads)]
    pair_id = ""
    if kind == "sync":
        if threads != 1:
            raise ValueError("a sync pair carries one thread: run the sync reference with one lag thread")
        body = {
            "peer_did": source.did,
            "peer_url": source.url,
            "thread_id": names[0],
            "mode": "continuous",
            "token": source.token,
        }
        checked(client.post(f"{receiver.url}/v1/sync/pairs", json=body, headers=receiver.headers), 201)
    else:
        answer = checked(
            client.post(
                f"{receiver.url}/v1/federation/pairs",
                json={"url": source.url, "mode": "continuous"},
                headers=receiver.headers,
                timeout=PAIR_TIMEOUT,
            ),
            201,
        )
        pair_id = answer["pair_id"]
        if kind == "fed-noecho":
            allow = {"thread_allow": ["th_served_to_nobody"]}
            url = f"{receiver.url}/v1/federation/pairs/{pair_id}"
            checked(client.patch(url, json=allow, headers=receiver.headers))  # an open stream applies it at once

    def arrived() -> int:
        total = 0
        for thread in names:
            response = client.get(f"{receiver.url}/v1/threads/{thread}", headers=receiver.headers)
            total += int(response.json()["record_count"]) if response.status_code == 200 else 0
        return total

    # Warm-up: records that reach the receiver once the pair follows the stream, not counted.
    warm = 5
    for clock in range(1, warm + 1):
        emit(client, source, names[0], clock)
    wait_for("the continuous pair's warm-up records", lambda: arrived() >= warm, 60)
    progress(f"continuous lag, {LAG_LABELS[kind]}: paired; emitting")
    sent: dict[str, float] = {}
    interval = 1.0 / rate
    total = int(rate * seconds)
    with cpu_of(receiver, source) as spent:
        start = time.monotonic()
        for n in range(total):
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the emits, not synchronisation
            thread = n % threads
            clock = n // threads + 1 + (warm if thread == 0 else 0)  # the warm-up took clocks 1-5 of thread 0
            record_id, committed = emit(client, source, names[thread], clock)
            sent[record_id] = committed
        wait_for(f"{total} records on the receiver", lambda: arrived() >= warm + total, 60)
    landed: dict[str, float] = {}
    for record in records_after(client, receiver, 0):
        if record["id"] in sent:
            at = parse_rfc3339(record["created_at"])
            if at is not None:
                landed[record["id"]] = at
    lags = [landed[record_id] - sent[record_id] for record_id in landed]
    back = 0
    if pair_id:
        back = int((pair_status(client, source, pair_id)["pull"] or {}).get("records_duplicate", 0))
    figures = {
        "pair": LAG_LABELS[kind],
        "rate_per_s": rate,
        "seconds": seconds,
        "records": len(lags),
        "missing": total - len(lags),
        "lag_ms": {
            "p50": ms(percentile(lags, 50)),
            "p99": ms(percentile(lags, 99)),
            "max": ms(max(lags)),
        },
        "receiver_cpu_per_record_ms": round(spent[0] * 1000 / total, 3),
        "source_cpu_per_record_ms": round(spent[1] * 1000 / total, 3),
        "echoed_back": back,
        "load": [load_before, load_average()],
    }
    fleet.retire(receiver)
    fleet.retire(source)
    return figures


def emit(client: httpx.Client, node: Node, thread: str, clock: int) -> tuple[str, float]:
    """One ``POST /v1/records``: the record's id and the source's commit time (its ``created_at``)."""
    body = {"act": "PUT", "actor": "did:bench:lag", "thread": thread, "clock": clock, "body": {"n": clock}}
    record = checked(client.post(f"{node.url}/v1/records", json=body, headers=node.headers), 201)
    committed = parse_rfc3339(record["created_at"])
    if committed is None:
        raise RuntimeError(f"the source answered a record without created_at: {str(record)[:200]}")
    return str(record["id"]), committed


# -- the run ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What the run measures and how hard (the command-line flags; the test shrinks them)."""

    handshakes: int = 20
    catchup: int = 100_000
    threads: int = 1000
    rounds: int = 2
    kinds: tuple[str, ...] = DEFAULT_CATCHUPS
    rate: float = 50.0
    seconds: float = 30.0
    lag_threads: int = 1
    lag_kinds: tuple[str, ...] = ("fed", "sync")
    build_workers: int = 2
    only: tuple[str, ...] = ("handshake", "catchup", "lag")


def run_benchmark(root: Path, options: Options) -> dict[str, Any]:
    """Every chosen measurement; the daemons are stopped (and their homes removed) before it returns or raises.

    Raises:
        SoakInterrupted: SIGTERM stopped it (a KeyboardInterrupt for SIGINT), after the daemons were stopped.
    """
    results: dict[str, Any] = {}
    fleet = Fleet(root)
    with StopSignals() as signals:
        try:
            with httpx.Client(timeout=60) as client:
                if "handshake" in options.only:
                    progress(f"handshake: {options.handshakes} pairs A → B")
                    results["handshake"] = handshakes(fleet, client, options.handshakes)
                if "catchup" in options.only:
                    results["catchup"] = catchup_rounds(
                        fleet,
                        client,
                        options.catchup,
                        options.threads,
                        options.rounds,
                        options.kinds,
                        options.build_workers,
                    )
                    results["catchup"]["summary"] = [
                        summarise_catchup(runs) for runs in results["catchup"]["runs"].values()
                    ]
                if "lag" in options.only:
                    progress(f"continuous lag: {options.rate:g} records/s for {options.seconds:g} s")
                    results["lag"] = [
                        continuous_lag(fleet, client, kind, options.rate, options.seconds, options.lag_threads)
                        for kind in options.lag_kinds
                    ]
        except KeyboardInterrupt as stop:
            interrupted = signals.interrupted(stop)
            progress(f"interrupted ({interrupted}): stopping the daemons")
            raise interrupted from None
        finally:
            with signals.hurrying(fleet.kill_now):
                fleet.stop()
    return results


def format_report(results: dict[str, Any]) -> str:
    lines: list[str] = []
    if "handshake" in results:
        r = results["handshake"]
        lines += [
            f"Handshake, {r['handshakes']} fresh pairs A → B (auto approval, auth on; "
            f"load {r['load'][0]} → {r['load'][1]})",
            "",
            "| part | p50 ms | p95 ms | max ms |",
            "|---|---:|---:|---:|",
        ]
        for key, label in (
            ("whole_ms", "`POST /v1/federation/pairs` on A, whole"),
            ("manifest_ms", "… B's manifest fetched + verified (from the bench)"),
            ("post_ms", "… `POST /v1/federation/pair` to B, round trip (from the bench)"),
            ("commit_ms", "for scale: one `POST /v1/records` on B (one COMMIT)"),
        ):
            figure = r[key]
            lines.append(f"| {label} | {figure['p50']} | {figure['p95']} | {figure['max']} |")
        lines += [
            "",
            f"CPU per handshake (mean): initiator A {r['initiator_cpu_ms']} ms, responder B {r['responder_cpu_ms']} ms",
            "",
        ]
    if "catchup" in results:
        r = results["catchup"]
        lines += [
            f"Catch-up, median of {r['rounds']} alternating rounds (load {r['load'][0]} → {r['load'][1]})",
            "",
            "| pair | records | records/s (min–max) | receiver CPU / 1k, ms | source CPU / 1k, ms |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in r["summary"]:
            echo = f" (echo done {s['echo_s']} s later)" if "echo_s" in s else ""
            lines.append(
                f"| {s['pair']}{echo} | {s['records']:,} "
                f"| {s['records_per_s']:,.0f} ({s['min']:,.0f}–{s['max']:,.0f}) "
                f"| {s['receiver_cpu_per_1k_ms']} | {s['source_cpu_per_1k_ms']} |"
            )
        lines.append("")
    if "lag" in results:
        runs = results["lag"]
        first = runs[0]
        lines += [
            f"Continuous lag, {first['rate_per_s']:g} records/s for {first['seconds']:g} s: source commit → "
            "receiver commit (both `created_at`)",
            "",
            "| pair | p50 ms | p99 ms | max ms | receiver CPU / record, ms | source CPU / record, ms "
            "| pulled back by the source | load |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in runs:
            lag = r["lag_ms"]
            missing = f" ({r['missing']} missing)" if r["missing"] else ""
            lines.append(
                f"| {r['pair']}{missing} | {lag['p50']} | {lag['p99']} | {lag['max']} "
                f"| {r['receiver_cpu_per_record_ms']} | {r['source_cpu_per_record_ms']} | {r['echoed_back']} "
                f"| {r['load'][0]} → {r['load'][1]} |"
            )
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    class Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
        """The module docstring as written, and each flag's default."""

    parser = argparse.ArgumentParser(
        prog="python -m spl.soak.federation_pair_bench", description=__doc__, formatter_class=Help
    )

    def size(text: str) -> int:
        try:
            return parse_size(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    def choices(allowed: Sequence[str]) -> Callable[[str], tuple[str, ...]]:
        def parse(text: str) -> tuple[str, ...]:
            chosen = tuple(part.strip() for part in text.split(",") if part.strip())
            unknown = [part for part in chosen if part not in allowed]
            if unknown or not chosen:
                raise argparse.ArgumentTypeError(
                    f"unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(allowed)}"
                )
            return chosen

        return parse

    default = Options()
    parser.add_argument(
        "--handshakes", type=int, default=default.handshakes, help="handshakes timed (after 2 warm-ups)"
    )
    parser.add_argument("--catchup", type=size, default=default.catchup, help="records of each catch-up (100k, 1m…)")
    parser.add_argument("--threads", type=size, default=default.threads, help="threads the catch-up records fill")
    parser.add_argument("--rounds", type=int, default=default.rounds, help="alternating catch-up rounds")
    parser.add_argument(
        "--pairs",
        type=choices(CATCHUP_KINDS),
        default=",".join(default.kinds),
        help="catch-ups to run: sync (sync pair, one thread), fed (federation pair, --threads threads), "
        "fed-1t (federation pair, one thread), fed-poll (federation pair, --threads threads, polling 0.2 s: "
        "timed until the source has also pulled every record back)",
    )
    parser.add_argument("--rate", type=float, default=default.rate, help="emits per second on the lag run's source")
    parser.add_argument("--seconds", type=float, default=default.seconds, help="length of the lag run")
    parser.add_argument("--lag-threads", type=int, default=default.lag_threads, help="threads the lag run emits into")
    parser.add_argument(
        "--lag-pairs",
        type=choices(LAG_KINDS),
        default=",".join(default.lag_kinds),
        help="lag runs: fed (federation pair), sync (sync pair, the reference; one thread), fed-noecho "
        "(federation pair whose receiver serves nothing back: what the echo costs)",
    )
    parser.add_argument("--build-workers", type=int, default=default.build_workers, help="signing processes")
    parser.add_argument(
        "--only", type=choices(default.only), default=",".join(default.only), help="measurements to run"
    )
    parser.add_argument("--json", action="store_true", help="also print one JSON object, as the last line")
    args = parser.parse_args(argv)
    if min(args.handshakes, args.rounds, args.catchup, args.threads, args.lag_threads) < 1 or args.rate <= 0:
        parser.error("counts and the rate must be positive")
    if "sync" in args.lag_pairs and "lag" in args.only and args.lag_threads != 1:
        parser.error("--lag-threads: a sync pair carries one thread; leave sync out of --lag-pairs for more")
    options = Options(
        handshakes=args.handshakes,
        catchup=args.catchup,
        threads=args.threads,
        rounds=args.rounds,
        kinds=args.pairs,
        rate=args.rate,
        seconds=args.seconds,
        lag_threads=args.lag_threads,
        lag_kinds=args.lag_pairs,
        build_workers=args.build_workers,
        only=args.only,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spl-fedpair-") as scratch:
        try:
            results = run_benchmark(Path(scratch), options)
        except KeyboardInterrupt as stop:
            raise SystemExit(getattr(stop, "exit_status", 130)) from None
    print(format_report(results))
    print(f"elapsed: {time.monotonic() - started:.0f} s")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
