"""Tasks, joins and folds (issue 12, "Performance"): three figures on this machine, each beside its goal.

Run: ``python -m spl.soak.tasks_bench [--records 100000] [--tasks 10000] [--children 200] [--calls 50]
[--cli-runs 5] [--workdir DIR] [--keep] [--profile] [--json]``. Example, a quick look in ~20 s:
``python -m spl.soak.tasks_bench --records 20000 --tasks 1000 --children 20``. The defaults take about 40 s on
a 2-core machine, most of it signing records.

What it does, in order:

1. **fold cost** (goal: flat). ``--records`` records on ONE task thread (a task INTEND, then a repeating mix of
   DO/KNOW/CALL events, comments, blocks and KNOWs whose ``fulfills`` names a DO or an unknown id, so the
   is-intent probe runs and the task never closes) are committed straight into a fresh store with the writer's
   own ``commit_batch``, :data:`BATCH` per transaction. Only ``commit_batch`` is timed (signing happens between
   two commits, outside the clock), in CPU time (the goal's figure) and wall time. The figure is µs per record
   over the first records and windows ending at 10 %, 50 % and 100 % of the run (``[1..1000]``,
   ``[9001..10000]``, ``[49001..50000]``, ``[99001..100000]`` at the default size), the ratio last/first, and
   the same ratio on a line fitted through every commit (far less noisy than two commits' worth). The same for a
   plain (non-task) thread, in a store of its own, for comparison.
2. **task listing** (goal: ≤ 200 ms from an index). ``--tasks`` tasks (labels, assignees, priorities and
   statuses varied) are committed into a fresh home's store the same way; a real daemon (``spl serve``,
   127.0.0.1, port 0, auth on) then answers ``GET /v1/tasks?limit=100`` with no filter, each filter, two
   filters, and the second page (``cursor=``), ``--calls`` times each after a warm-up: p50/p95/max ms. The same
   store queries in-process (no HTTP) for comparison, and each query's SQLite plan (captured from the store's
   own statements, so the plan shown is the one that runs): a plan that scans ``records`` is flagged. Then
   ``spl task list`` as a subprocess, ``--cli-runs`` times: that figure includes the interpreter's start-up and
   imports, so ``spl --help`` is timed beside it as the floor no command goes under.
3. **child close → synthesis** (goal: p50 ≤ 20 ms). On the same daemon: a parent task with ``join: "all"``
   fans out ``--children`` child tasks (``POST /v1/tasks/{alias}/fan-out``; when that route is absent, the
   parent's fork INTENDs and the children's INTENDs go through ``POST /v1/records``). A watch
   (``GET /v1/threads/{parent}/watch``, SSE) is opened on the parent; then each child in turn is closed
   (``POST /v1/tasks/{child}/events {"event": "done"}``, or a KNOW fulfilling its INTEND through
   ``POST /v1/records``) and the time from the close's HTTP answer to its synthesising record
   (``joins.SYNTHESIS_KIND``) arriving on the watch is taken: p50/p95/max ms. Then, from the stored records:
   exactly one synthesis per child, and the parent closed (``joins.CLOSED_KIND``) after the last one. If a
   synthesis never comes the joiner's lines in the daemon's log are printed.

Timing goals live here, never in the unit tests (``tests/soak/test_tasks_bench.py`` only checks that every
figure is printed). The machine has two cores shared with other work: the load average is printed.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import httpx

from spl.core import joins
from spl.core import tasks as task_fold
from spl.core.identity import Identity
from spl.core.record import validate_envelope
from spl.core.stored import Candidate
from spl.core.threadids import new_nonce, random_thread, sub_thread, task_thread
from spl.core.units import percentile
from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home
from spl.daemon.launcher import DaemonProcess
from spl.soak.arguments import positive_int
from spl.store import ingest
from spl.store import tasks as task_store
from spl.store.database import connect_reader, connect_writer
from spl.store.ingest import commit_batch, load_writer_state
from spl.store.threads import ThreadBook

__all__ = ["GOALS", "Options", "fold_records", "format_table", "main", "run_benchmark", "task_records", "windows"]

BATCH = 500  # records per commit_batch transaction, as the writer batches them
WINDOW = 1000  # records per fold-cost window at full size
PAGE = 100  # GET /v1/tasks?limit=
SYNTHESIS_TIMEOUT = 5.0  # seconds a child close waits for its synthesis before the run gives up on the joiner
BENCH_ACTOR = "did:example:tasks-bench"
GOALS = {"fold_ratio": 1.3, "list_ms": 200.0, "synthesis_p50_ms": 20.0}

LABELS = ("ops", "db", "frontend", "backend", "infra", "security", "docs", "ci", "billing", "search")
ASSIGNEES = tuple(f"did:example:agent-{n:02d}" for n in range(25))
PRIORITIES = ("p0", "p1", "p2", "p3")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p95 and max of ``seconds`` in ms (nearest rank, as every other benchmark here)."""
    ms = [value * 1000 for value in seconds]
    if not ms:
        return {"p50_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan"), "n": 0}
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "max_ms": round(max(ms), 2),
        "n": len(ms),
    }


# -- 1. fold cost --------------------------------------------------------------------------------------------


def windows(records: int) -> list[tuple[int, int]]:
    """The fold-cost windows (1-based, inclusive): the first records, then windows ending at 10 %, 50 % and 100 %.

    At 100,000 records they are the issue's ``[1..1000]``, ``[9001..10000]``, ``[49001..50000]`` and
    ``[99001..100000]``; a smaller run keeps the shape with narrower windows (never under one batch), and drops a
    window that would repeat the one before it.
    """
    width = min(records, max(BATCH, min(WINDOW, records // 100) // BATCH * BATCH))
    out = [(1, width)]
    for fraction in (0.1, 0.5, 1.0):
        end = min(records, max(width, -(-round(records * fraction) // BATCH) * BATCH))
        if end - width + 1 > out[-1][1]:
            out.append((end - width + 1, end))
    return out


def fold_records(index: int, thread: str, *, task: bool, last_do: str | None, nonce: str = "") -> dict[str, Any]:
    """Record ``index`` (from 0) of the one-thread fold run: an opening INTEND, then a cycle of eight events.

    The cycle moves a task through active/observed/blocked without ever closing it (a closed task would fold
    for free), and two of the eight name ``fulfills``: once the previous DO (not an INTEND: the probe answers
    no) and once an id that is not stored at all.
    """
    actor = f"did:example:worker-{index % 3}"
    if index == 0:
        body: dict[str, Any] = {"goal": "fold a long thread", "_v": 1}
        if task:
            body.update(task=True, alias="TASK-0001", nonce=nonce, labels=["bench"], assignee=actor)
        return {"act": "INTEND", "actor": actor, "thread": thread, "clock": 1, "body": body}
    cycle: dict[int, tuple[str, dict[str, Any]]] = {
        0: ("DO", {"task_event": "start"}),
        1: ("KNOW", {"task_event": "comment", "text": f"note {index}"}),
        2: ("KNOW", {"fulfills": last_do or "0" * 64, "summary": "not an intent"}),
        3: ("DO", {"step": index}),
        4: ("KNOW", {"summary": f"observed at {index}"}),
        5: ("KNOW", {"task_event": "block", "reason": "waiting"}),
        6: ("CALL", {"tool": "bench", "n": index}),
        7: ("KNOW", {"fulfills": [f"{index:064x}"], "summary": "unknown id"}),
    }
    act, body = cycle[index % 8]
    return {"act": act, "actor": actor, "thread": thread, "clock": index + 1, "body": {**body, "_v": 1}}


def _signed_fold_batches(identity: Identity, records: int, *, task: bool) -> Iterator[list[Candidate]]:
    nonce = new_nonce()
    thread = task_thread("TASK-0001", nonce) if task else random_thread("bench-plain")
    last_do: str | None = None
    batch: list[Candidate] = []
    for index in range(records):
        envelope = validate_envelope(fold_records(index, thread, task=task, last_do=last_do, nonce=nonce))
        if envelope.act == "DO":
            last_do = envelope.id
        batch.append(Candidate(envelope, identity.did, identity.sign_record_id(envelope.id)))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


class _TimedBook(ThreadBook):
    """The writer's :class:`ThreadBook`, with the CPU time of its per-record fold step (``add``) added up.

    ``add`` is the whole incremental fold: the thread fold, the task fold, the is-intent probe, the fork and
    outbox bookkeeping. What it does not cover is the INSERT of the record and the COMMIT: store costs that a
    plain thread pays as well, timed as the commit's total.
    """

    spent = 0.0

    def add(self, connection: apsw.Connection, **fields: Any) -> None:
        started = time.thread_time()
        try:
            super().add(connection, **fields)
        finally:
            _TimedBook.spent += time.thread_time() - started


@contextlib.contextmanager
def _timed_fold() -> Iterator[None]:
    """Have ``commit_batch`` build a :class:`_TimedBook` per transaction for the length of the block (this process
    only: the name it looks up in its module is swapped, and put back)."""
    original = ingest.ThreadBook  # type: ignore[attr-defined]
    ingest.ThreadBook = _TimedBook  # type: ignore[attr-defined]
    try:
        yield
    finally:
        ingest.ThreadBook = original  # type: ignore[attr-defined]


def fold_cost(db: Path, records: int, *, task: bool, profiler: cProfile.Profile | None = None) -> dict[str, Any]:
    """Commit ``records`` records on one thread into a fresh store at ``db``; µs/record per window.

    Each batch's commit is timed three ways: wall time (what a writer waits, fsync included), this thread's CPU
    time (nearly blind to the other processes on a shared machine), and the CPU time of the fold step alone
    (:class:`_TimedBook`): the issue's claim, "fold updates are incremental", is about that one, and the goal is
    judged on it. A window of 1,000 records is two commits, so one slow fsync moves it; the fitted ratios (a
    least-squares line through every commit's cost) use the whole run and move far less.
    """
    identity = Identity.generate()
    connection = connect_writer(db)
    costs: list[tuple[int, float, float, float]] = []  # (records in the batch, wall, CPU, fold CPU) seconds
    try:
        state = load_writer_state(connection, identity.did)
        with _timed_fold():
            for batch in _signed_fold_batches(identity, records, task=task):
                if profiler is not None:
                    profiler.enable()
                _TimedBook.spent = 0.0
                started, cpu = time.perf_counter(), time.thread_time()
                (outcomes,) = commit_batch(connection, [batch], state)
                cpu, wall = time.thread_time() - cpu, time.perf_counter() - started
                if profiler is not None:
                    profiler.disable()
                refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
                if refused:
                    raise RuntimeError(f"the store refused a benchmark record: {refused[0]!r}")
                costs.append((len(batch), wall, cpu, _TimedBook.spent))
        status = None
        for (head,) in connection.execute("SELECT head FROM tasks"):
            status = task_store.decode_head(head).status
    finally:
        connection.close()
    per_record: dict[str, list[float]] = {"us_per_record": [], "cpu_us_per_record": [], "fold_us_per_record": []}
    for count, *seconds in costs:
        for key, value in zip(per_record, seconds, strict=True):
            per_record[key].extend([value / count] * count)
    out: dict[str, Any] = {"records": records, "task_status": status, "windows": []}
    for first, last in windows(records):
        window: dict[str, Any] = {"first": first, "last": last}
        for key, values in per_record.items():
            share = values[first - 1 : last]
            window[key] = round(sum(share) / len(share) * 1e6, 1)
        out["windows"].append(window)
    first_window, last_window = out["windows"][0], out["windows"][-1]
    for key, name in (
        ("us_per_record", "ratio"),
        ("cpu_us_per_record", "cpu_ratio"),
        ("fold_us_per_record", "fold_ratio"),
    ):
        out[name] = round(last_window[key] / max(first_window[key], 0.1), 2)
        out["mean_" + key] = round(sum(per_record[key]) / len(per_record[key]) * 1e6, 1)
    out["fit_cpu_ratio"] = _fitted_ratio([(count, cpu) for count, _, cpu, _ in costs])
    out["fit_fold_ratio"] = _fitted_ratio([(count, fold) for count, _, _, fold in costs])
    return out


def _fitted_ratio(costs: Sequence[tuple[int, float]]) -> float:
    """Per-record cost at the last record over the cost at the first, on a least-squares line through the batches."""
    if len(costs) < 2:
        return 1.0
    points: list[tuple[float, float]] = []
    position = 0
    for count, seconds in costs:
        points.append((position + count / 2, seconds / count))
        position += count
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    start = mean_y + slope * (points[0][0] - mean_x)
    end = mean_y + slope * (points[-1][0] - mean_x)
    return round(end / start, 2) if start > 0 else float("nan")


# -- 2. task listing -----------------------------------------------------------------------------------------


def task_records(index: int, actor: str) -> list[dict[str, Any]]:
    """Task ``index``'s records: its opening INTEND and what moves it to its status (``index % 10`` decides).

    0-2 open, 3-4 active, 5 observed, 6 blocked, 7-8 done, 9 failed or cancelled. The opening INTEND's id is
    needed by done/cancel, so those are filled in by :func:`_sign_task`.
    """
    alias = task_fold.format_alias(index + 1)
    nonce = f"{index:032x}"
    thread = task_thread(alias, nonce)
    labels = [LABELS[index % len(LABELS)]]
    if index % 3 == 0:
        labels.append(LABELS[(index * 7 + 3) % len(LABELS)])
    body: dict[str, Any] = {
        "task": True,
        "alias": alias,
        "nonce": nonce,
        "goal": f"benchmark task {index}",
        "priority": PRIORITIES[index % len(PRIORITIES)],
        "labels": list(dict.fromkeys(labels)),
        "_v": 1,
    }
    if index % 10 != 1:
        body["assignee"] = ASSIGNEES[index % len(ASSIGNEES)]
    out = [{"act": "INTEND", "actor": actor, "thread": thread, "clock": 1, "body": body}]
    kind = index % 10
    follow: list[tuple[str, dict[str, Any]]] = {
        3: [("DO", {"task_event": "start"})],
        4: [("DO", {"task_event": "start"}), ("CALL", {"tool": "build"})],
        5: [("KNOW", {"summary": "looked at it"})],
        6: [("KNOW", {"task_event": "block", "reason": "waiting on review"})],
        7: [("DO", {"task_event": "start"}), ("KNOW", {"fulfills": "OPENING", "summary": "shipped"})],
        8: [("KNOW", {"fulfills": "OPENING", "summary": "done at once"})],
        9: [("KNOW", {"task_event": "fail", "reason": "broke"})]
        if index % 20 == 9
        else [("DO", {"cancels": "OPENING", "reason": "not needed"})],
    }.get(kind, [])
    for clock, (act, extra) in enumerate(follow, start=2):
        out.append({"act": act, "actor": actor, "thread": thread, "clock": clock, "body": {**extra, "_v": 1}})
    return out


def _sign_task(identity: Identity, index: int) -> list[Candidate]:
    """Task ``index``'s records signed by ``identity``, with "OPENING" replaced by its opening INTEND's id."""
    signed: list[Candidate] = []
    opening: str | None = None
    for fields in task_records(index, identity.did):
        body = fields["body"]
        for key in ("fulfills", "cancels"):
            if body.get(key) == "OPENING":
                body[key] = opening
        envelope = validate_envelope(fields)
        opening = opening or envelope.id
        signed.append(Candidate(envelope, identity.did, identity.sign_record_id(envelope.id)))
    return signed


def build_tasks(home: Home, count: int) -> int:
    """Commit ``count`` tasks into the (stopped) home's store, about :data:`BATCH` records per transaction."""
    identity = home.load_identity()
    connection = connect_writer(home.db_path)
    committed = 0
    try:
        state = load_writer_state(connection, identity.did)
        batch: list[Candidate] = []
        for index in range(count):
            batch.extend(_sign_task(identity, index))
            if len(batch) >= BATCH or index == count - 1:
                (outcomes,) = commit_batch(connection, [batch], state)
                refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
                if refused:
                    raise RuntimeError(f"the store refused a benchmark task record: {refused[0]!r}")
                committed += len(batch)
                batch = []
    finally:
        connection.close()
    return committed


# The listings timed: (name, GET /v1/tasks query, list_tasks keyword arguments). "page 2" is filled in from the
# first page's next_cursor (HTTP) or last opened_sequence (in-process).
LISTINGS: tuple[tuple[str, dict[str, str], dict[str, Any]], ...] = (
    ("no filter", {}, {}),
    ("status=blocked", {"status": "blocked"}, {"status": "blocked"}),
    ("status=failed", {"status": "failed"}, {"status": "failed"}),
    ("label=security", {"label": "security"}, {"label": "security"}),
    ("assignee=agent-07", {"assignee": ASSIGNEES[7]}, {"assignee": ASSIGNEES[7]}),
    (
        "label=ops&assignee=agent-10",
        {"label": "ops", "assignee": ASSIGNEES[10]},
        {"label": "ops", "assignee": ASSIGNEES[10]},
    ),
    ("page 2 (cursor)", {}, {}),
)


def _timed_calls(call: Callable[[], Any], calls: int, warmup: int = 3) -> tuple[list[float], Any]:
    for _ in range(warmup):
        call()
    seconds: list[float] = []
    answer: Any = None
    for _ in range(calls):
        started = time.perf_counter()
        answer = call()
        seconds.append(time.perf_counter() - started)
    return seconds, answer


def _answer(reply: httpx.Response) -> str:
    """``404 ROUTE_NOT_FOUND``: an error answer's status and code, short enough for a table cell."""
    try:
        code = reply.json().get("code")
    except ValueError:
        code = None
    return f"{reply.status_code} {code or reply.text[:80]}"


def http_listing(url: str, token: str, calls: int) -> dict[str, Any]:
    """``GET /v1/tasks`` per :data:`LISTINGS`, ``calls`` times each on one kept-alive connection."""
    out: dict[str, Any] = {}
    headers = {"authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as http:
        probe = http.get("/v1/tasks", params={"limit": PAGE})
        if probe.status_code != 200:
            return {"error": f"GET /v1/tasks answered {_answer(probe)}"}
        cursor = probe.json().get("next_cursor")
        for name, query, _ in LISTINGS:
            params = {"limit": str(PAGE), **query}
            if name.startswith("page 2"):
                if not cursor:
                    out[name] = {"error": "the first page had no next_cursor"}
                    continue
                params["cursor"] = cursor

            def call(params: dict[str, str] = params) -> Any:
                reply = http.get("/v1/tasks", params=params)
                reply.raise_for_status()
                return reply.json()

            seconds, answer = _timed_calls(call, calls)
            out[name] = {**_summary(seconds), "rows": len(answer["data"])}
    return out


def store_listing(db: Path, calls: int) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The same listings in-process on a read connection, and each one's query plan as SQLite runs it."""
    connection = connect_reader(db)
    figures: dict[str, Any] = {}
    plans: dict[str, list[str]] = {}
    try:
        first = task_store.list_tasks(connection, limit=PAGE)
        before = first[-1]["opened_sequence"] if first else None
        for name, _, arguments in LISTINGS:
            kwargs = {**arguments, "limit": PAGE}
            if name.startswith("page 2"):
                kwargs["before_seq"] = before

            def call(kwargs: dict[str, Any] = kwargs) -> Any:
                return task_store.list_tasks(connection, **kwargs)

            seconds, answer = _timed_calls(call, calls)
            figures[name] = {**_summary(seconds), "rows": len(answer)}
            plans[name] = _plan_of(connection, call)
    finally:
        connection.close()
    return figures, plans


def _plan_of(connection: apsw.Connection, call: Callable[[], Any]) -> list[str]:
    """``EXPLAIN QUERY PLAN`` of every statement ``call`` runs, captured with the bindings it ran with."""
    statements: list[tuple[str, Any]] = []

    def trace(_cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        if not sql.lstrip().upper().startswith("EXPLAIN"):
            statements.append((sql, bindings))
        return True

    connection.exec_trace = trace
    try:
        call()
    finally:
        connection.exec_trace = None
    lines: list[str] = []
    for sql, bindings in statements:
        for row in connection.execute("EXPLAIN QUERY PLAN " + sql, bindings):
            lines.append(str(row[-1]))
    return lines


def scans_records(plan: Sequence[str]) -> bool:
    """Whether a plan walks the ``records`` table (or a records index) instead of seeking in it."""
    return any(line.startswith("SCAN") and ("records" in line.split(" USING")[0]) for line in plan)


def cli_listing(home: Path, runs: int) -> dict[str, Any]:
    """``spl task list`` end to end in a fresh interpreter, ``runs`` times; ``spl --help`` as the floor."""
    env = {**os.environ, "SYNCROPEL_HOME": str(home)}
    env.pop("SPL_SERVE_URL", None)
    env.pop("SPL_TOKEN", None)
    base = [sys.executable, "-m", "spl.cli"]

    def run(arguments: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
        started = time.perf_counter()
        done = subprocess.run([*base, *arguments], env=env, capture_output=True, text=True, check=False)
        return time.perf_counter() - started, done

    out: dict[str, Any] = {}
    for name, arguments in (("spl task list", ["task", "list"]), ("spl --help (start-up floor)", ["--help"])):
        seconds: list[float] = []
        for _ in range(runs):
            elapsed, done = run(arguments)
            if done.returncode != 0:
                said = " ".join((done.stderr or done.stdout).split())  # one line: it goes into a table cell
                out[name] = {"error": f"exit {done.returncode}: {said[-200:]}"}
                break
            seconds.append(elapsed)
        else:
            out[name] = _summary(seconds)
    return out


# -- 3. child close -> synthesis -----------------------------------------------------------------------------


class Watch:
    """An SSE watch of one thread in a thread of its own: when each record arrived, by its body's kind.

    ``opened`` is set once the response headers are in: the route subscribes before answering, so every record
    committed after that reaches this watch.
    """

    def __init__(self, url: str, token: str, thread: str) -> None:
        self._url = f"{url}/v1/threads/{thread}/watch"
        self._headers = {"authorization": f"Bearer {token}", "accept": "text/event-stream"}
        self.opened = threading.Event()
        self.error: str | None = None
        self.arrivals: list[tuple[float, int, dict[str, Any]]] = []  # (perf_counter, sequence, body)
        self._changed = threading.Condition()
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="tasks-bench-watch", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        if not self.opened.wait(15.0):
            raise RuntimeError(f"the watch did not open: {self.error}")
        return self

    def __exit__(self, *exc_info: object) -> None:
        # Closing the client does not wake a read blocked in another thread (a heartbeat would, seconds later):
        # shutting the socket down does, at once.
        if self._socket is not None:
            with contextlib.suppress(OSError):
                self._socket.shutdown(socket.SHUT_RDWR)
        self._thread.join(10.0)
        self._client.close()

    def _run(self) -> None:
        try:
            with self._client.stream("GET", self._url, headers=self._headers) as reply:
                if reply.status_code != 200:
                    self.error = f"watch answered {reply.status_code}"
                    self.opened.set()
                    return
                self._socket = reply.extensions["network_stream"].get_extra_info("socket")
                self.opened.set()
                event = None
                for line in reply.iter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event == "record.created":
                        arrived = time.perf_counter()
                        data = json.loads(line[5:])
                        record = data["record"]
                        with self._changed:
                            self.arrivals.append((arrived, int(record.get("sequence") or 0), record.get("body") or {}))
                            self._changed.notify_all()
                    elif not line:
                        event = None
        except Exception as exc:  # noqa: BLE001 - closing the client ends the stream with an error; record why
            if self.error is None:
                self.error = repr(exc)
            self.opened.set()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float) -> tuple[float, int] | None:
        """(arrival time, sequence) of the first record whose body matches, waiting up to ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for arrived, seq, body in self.arrivals:
                    if predicate(body):
                        return arrived, seq
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return None
                self._changed.wait(remaining)

    def bodies(self) -> list[tuple[int, dict[str, Any]]]:
        with self._changed:
            return [(seq, body) for _, seq, body in self.arrivals]


@dataclass
class Child:
    thread: str
    alias: str | None
    opened_by: str | None  # its opening INTEND's id (needed to close it through POST /v1/records)


class Api:
    """The few daemon calls part 3 makes, each falling back to ``POST /v1/records`` where a route is missing."""

    def __init__(self, http: httpx.Client) -> None:
        self.http = http
        self.clock = 0
        self.paths: dict[str, str] = {}  # which way each step went (printed with the figures)

    def _emit(self, act: str, thread: str, body: dict[str, Any], clock: int | None = None) -> dict[str, Any]:
        if clock is None:
            self.clock += 1
            clock = self.clock
        record = {"act": act, "actor": BENCH_ACTOR, "thread": thread, "clock": clock, "body": {**body, "_v": 1}}
        reply = self.http.post("/v1/records", json=record)
        if reply.status_code not in (200, 201):
            raise RuntimeError(f"POST /v1/records answered {reply.status_code}: {reply.text[:300]}")
        return reply.json()  # type: ignore[no-any-return]

    def parent(self) -> tuple[str, str, str]:
        """A parent task with ``join: "all"``: (thread, alias, opening INTEND id)."""
        reply = self.http.post("/v1/tasks", json={"title": "tasks bench parent", "join": "all", "labels": ["bench"]})
        if reply.status_code == 201:
            task = reply.json()
            self.paths["parent"] = "POST /v1/tasks"
            return task["thread"], task["alias"], task["opened_by"]
        alias, nonce = "BENCH-PARENT", new_nonce()
        thread = task_thread(alias, nonce)
        body = {"task": True, "alias": alias, "nonce": nonce, "goal": "tasks bench parent", "join": "all"}
        stored = self._emit("INTEND", thread, body)
        self.paths["parent"] = f"POST /v1/records (POST /v1/tasks answered {_answer(reply)})"
        return thread, alias, stored["id"]

    def fan_out(self, parent: str, alias: str, count: int) -> list[Child]:
        children: list[Child] = []
        for first in range(0, count, 64):
            goals = [f"child {n}" for n in range(first, min(first + 64, count))]
            reply = self.http.post(f"/v1/tasks/{alias}/fan-out", json={"goals": goals, "join": "all"})
            if reply.status_code not in (200, 201):
                if first:
                    raise RuntimeError(f"fan-out answered {reply.status_code} after a first success: {reply.text}")
                self.paths["fan-out"] = f"POST /v1/records (fan-out answered {_answer(reply)})"
                return self._fan_out_by_records(parent, count)
            answer: Any = reply.json()
            rows: list[dict[str, Any]] = (
                answer.get("children") or answer.get("data") or [] if isinstance(answer, dict) else answer
            )
            children += [Child(row["thread"], row.get("alias"), None) for row in rows]
        self.paths["fan-out"] = (
            f"POST /v1/tasks/{{alias}}/fan-out, at most 64 goals a request: {-(-count // 64)} of them"
        )
        return children

    def _fan_out_by_records(self, parent: str, count: int) -> list[Child]:
        children: list[Child] = []
        now = time.time_ns() // 1000
        for n in range(count):
            child = sub_thread(parent, BENCH_ACTOR, now + n)
            self._emit("INTEND", parent, {"goal": f"sub-thread: child {n}", "sub_thread": child, "join": "all"})
            alias, nonce = f"BENCH-C{n:04d}", new_nonce()
            body = {"task": True, "alias": alias, "nonce": nonce, "goal": f"child {n}", "parent": parent}
            stored = self._emit("INTEND", child, body, clock=1)
            children.append(Child(child, alias, stored["id"]))
        return children

    def close(self, child: Child) -> None:
        if child.opened_by is None and "close" not in self.paths:
            self.paths["close"] = "POST /v1/tasks/{child}/events"
        if child.opened_by is None:
            reply = self.http.post(f"/v1/tasks/{child.alias or child.thread}/events", json={"event": "done"})
            if reply.status_code != 200 and reply.status_code != 201:
                raise RuntimeError(f"closing {child.alias} answered {reply.status_code}: {reply.text[:300]}")
            return
        self.paths.setdefault("close", "POST /v1/records (a KNOW fulfilling the child's INTEND)")
        self._emit("KNOW", child.thread, {"fulfills": child.opened_by, "summary": "ok"}, clock=2)


def _joiner_log(log: Path) -> list[str]:
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return []
    return [line[:300] for line in lines if "join" in line.lower() or "Traceback" in line][-12:]


def _synthesis_of(child: str) -> Callable[[dict[str, Any]], bool]:
    """Whether a parent's record body is the synthesis of ``child``'s close."""
    return lambda body: body.get("kind") == joins.SYNTHESIS_KIND and body.get("child") == child


def join_latency(daemon: DaemonProcess, count: int) -> dict[str, Any]:
    """Part 3 of the module docstring against ``daemon``: latencies and the exactly-once checks."""
    headers = {"authorization": f"Bearer {daemon.admin_token}"}
    out: dict[str, Any] = {"children": count}
    with httpx.Client(base_url=daemon.url, headers=headers, timeout=30.0) as http:
        api = Api(http)
        parent, alias, _ = api.parent()
        children = api.fan_out(parent, alias, count)
        out["parent"] = parent
        from_ack: list[float] = []
        from_send: list[float] = []
        with Watch(daemon.url, daemon.admin_token, parent) as watch:
            for child in children:
                sent = time.perf_counter()
                api.close(child)
                acked = time.perf_counter()
                arrival = watch.wait_for(_synthesis_of(child.thread), SYNTHESIS_TIMEOUT)
                if arrival is None:
                    out["error"] = (
                        f"no synthesising record for child {child.thread} within {SYNTHESIS_TIMEOUT:.0f} s "
                        f"(watch: {watch.error or 'open'}); the daemon log's joiner lines follow"
                    )
                    out["joiner_log"] = _joiner_log(daemon.log_path)
                    break
                from_ack.append(arrival[0] - acked)
                from_send.append(arrival[0] - sent)
            closing_kinds = (joins.CLOSED_KIND, joins.FAILED_KIND)
            closed_at = None if "error" in out else watch.wait_for(lambda body: body.get("kind") in closing_kinds, 5.0)
            bodies = watch.bodies()
        out["paths"] = api.paths
        out["from_ack"] = _summary(from_ack)
        out["from_send"] = _summary(from_send)
        out["negative_from_ack"] = sum(1 for value in from_ack if value < 0)
        out["watched_syntheses"] = sum(1 for _, body in bodies if body.get("kind") == joins.SYNTHESIS_KIND)
        # Exactly once is judged on what the store holds (the watch only timed the arrivals).
        stored = http.get("/v1/records", params={"thread": parent, "limit": 10_000})
        stored.raise_for_status()
        kept = [(int(record["sequence"]), record.get("body") or {}) for record in stored.json()["data"]]
        per_child = Counter(body.get("child") for _, body in kept if body.get("kind") == joins.SYNTHESIS_KIND)
        out["synthesised"] = len(per_child)
        out["exactly_once"] = len(per_child) == count and set(per_child.values()) == {1}
        last_synthesis = max((seq for seq, body in kept if body.get("kind") == joins.SYNTHESIS_KIND), default=0)
        closing = [seq for seq, body in kept if body.get("kind") in (joins.CLOSED_KIND, joins.FAILED_KIND)]
        out["closing_records"] = len(closing)
        out["closed_after_last"] = bool(closing) and closed_at is not None and closing[0] >= last_synthesis
        fold = http.get(f"/v1/threads/{parent}")
        out["parent_state"] = fold.json().get("state") if fold.status_code == 200 else f"HTTP {fold.status_code}"
    return out


# -- the run -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    records: int = 100_000
    tasks: int = 10_000
    children: int = 200
    calls: int = 50
    cli_runs: int = 5
    profile: bool = False


def _profile_summary(profiler: cProfile.Profile, top: int = 12) -> list[str]:
    stream = io.StringIO()
    stats = pstats.Stats(profiler, stream=stream)
    stats.sort_stats("tottime").print_stats(top)
    return [line.rstrip() for line in stream.getvalue().splitlines() if line.strip()][-top - 1 :]


def run_benchmark(root: Path, options: Options) -> dict[str, Any]:
    """The three parts of the module docstring under ``root``; the figures (JSON-ready). Stops its daemon."""
    results: dict[str, Any] = {"options": options.__dict__, "load_before": _load()}
    profiler = cProfile.Profile() if options.profile else None
    progress(f"fold cost: {options.records:,} records on one task thread")
    results["fold_task"] = fold_cost(root / "fold-task.db", options.records, task=True, profiler=profiler)
    if profiler is not None:
        results["fold_profile"] = _profile_summary(profiler)
    progress(f"fold cost: {options.records:,} records on one plain thread")
    results["fold_plain"] = fold_cost(root / "fold-plain.db", options.records, task=False)

    home = Home.resolve(root / "home")
    initialise(home)
    progress(f"building {options.tasks:,} tasks")
    started = time.perf_counter()
    results["task_records"] = build_tasks(home, options.tasks)
    results["build_s"] = round(time.perf_counter() - started, 2)
    daemon = DaemonProcess(home.root, insecure=False)
    try:
        daemon.start(port=0)
        progress("timing GET /v1/tasks")
        results["http_listing"] = http_listing(daemon.url, daemon.admin_token, options.calls)
        results["store_listing"], plans = store_listing(home.db_path, options.calls)
        results["plans"] = {name: {"plan": plan, "scans_records": scans_records(plan)} for name, plan in plans.items()}
        progress("timing spl task list (subprocess)")
        results["cli_listing"] = cli_listing(home.root, options.cli_runs)
        progress(f"child close -> synthesis over {options.children} children")
        results["join"] = join_latency(daemon, options.children)
    finally:
        try:
            daemon.stop()
        except AssertionError:
            daemon.kill()
    results["load_after"] = _load()
    return results


# -- the table -----------------------------------------------------------------------------------------------


def _verdict(value: float, goal: float) -> str:
    return "met" if value <= goal else "MISSED"


def _goal_verdicts(results: dict[str, Any]) -> list[str]:
    """One phrase per goal of issue 12: met, MISSED, or NOT MEASURED (a route or the joiner was missing)."""
    fold = results["fold_task"]
    ratio, fitted = fold["fold_ratio"], fold["fit_fold_ratio"]
    out = [
        f"fold flat: last/first window {_verdict(ratio, GOALS['fold_ratio'])} ({ratio:.2f}), fitted line "
        f"{_verdict(fitted, GOALS['fold_ratio'])} ({fitted:.2f}) (the fold step's CPU; two commits make a window, "
        "the line uses them all)"
    ]
    listed = [
        figure["p50_ms"]
        for figure in results["http_listing"].values()
        if isinstance(figure, dict) and "p50_ms" in figure
    ]
    if listed:
        out.append(
            f"list ≤ {GOALS['list_ms']:.0f} ms {_verdict(max(listed), GOALS['list_ms'])} (worst p50 {max(listed):.1f})"
        )
    else:
        out.append(f"list ≤ {GOALS['list_ms']:.0f} ms NOT MEASURED")
    latency = results["join"]["from_ack"]
    if latency["n"]:
        p50 = latency["p50_ms"]
        out.append(
            f"synthesis p50 ≤ {GOALS['synthesis_p50_ms']:.0f} ms {_verdict(p50, GOALS['synthesis_p50_ms'])} ({p50:.1f})"
        )
    else:
        out.append(f"synthesis p50 ≤ {GOALS['synthesis_p50_ms']:.0f} ms NOT MEASURED")
    return out


def _ms(figure: dict[str, Any]) -> str:
    if "error" in figure:
        return f"({figure['error']})"
    return f"{figure['p50_ms']:.1f} / {figure['p95_ms']:.1f} / {figure['max_ms']:.1f}"


def format_table(results: dict[str, Any]) -> str:
    """The figures as Markdown, each beside issue 12's goal where it has one."""
    task, plain = results["fold_task"], results["fold_plain"]
    lines = [
        f"load average {results['load_before']} before, {results['load_after']} after",
        "",
        f"### 1. Fold cost: {task['records']:,} records on one thread, commit_batch of {BATCH}, µs/record",
        "",
        "| window (records) | task: fold step | task: commit CPU | task: commit wall | plain: fold step "
        "| plain: commit CPU | plain: commit wall |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    keys = ("fold_us_per_record", "cpu_us_per_record", "us_per_record")
    for mine, theirs in zip(task["windows"], plain["windows"], strict=True):
        cells = [f"{mine[key]:.1f}" for key in keys] + [f"{theirs[key]:.1f}" for key in keys]
        lines.append(f"| [{mine['first']:,}..{mine['last']:,}] | " + " | ".join(cells) + " |")
    means = [f"{fold['mean_' + key]:.1f}" for fold in (task, plain) for key in keys]
    ratios = [f"{fold[name]:.2f}" for fold in (task, plain) for name in ("fold_ratio", "cpu_ratio", "ratio")]
    fitted = [f"{fold[name]:.2f}" for fold in (task, plain) for name in ("fit_fold_ratio", "fit_cpu_ratio")]
    lines += [
        "| whole run, mean | " + " | ".join(means) + " |",
        f"| ratio last/first window (goal < {GOALS['fold_ratio']} for the fold step) | " + " | ".join(ratios) + " |",
        f"| ratio on a line fitted through every commit | {fitted[0]} | {fitted[1]} | | {fitted[2]} | {fitted[3]} | |",
        "",
        f"task status at the end: {task['task_status']} (the cycle never closes it)",
    ]
    for line in results.get("fold_profile", []):
        lines.append(f"    {line}")
    http, store = results["http_listing"], results["store_listing"]
    lines += [
        "",
        f"### 2. Task listing over {results['options']['tasks']:,} tasks ({results['task_records']:,} records), "
        f"limit={PAGE}, p50 / p95 / max ms",
        "",
        "| query | rows | GET /v1/tasks | in-process list_tasks | plan scans records? |",
        "|---|---:|---:|---:|---|",
    ]
    for name, _, _ in LISTINGS:
        over_http = http.get(name, {"error": http.get("error", "not run")})
        in_process = store[name]
        rows = over_http.get("rows", in_process["rows"])
        scans = "SCAN (!)" if results["plans"][name]["scans_records"] else "no"
        lines.append(f"| {name} | {rows} | {_ms(over_http)} | {_ms(in_process)} | {scans} |")
    for name, figure in results["cli_listing"].items():
        lines.append(f"| `{name}` (subprocess, start-up included) | | {_ms(figure)} | | |")
    lines += ["", "Query plans (EXPLAIN QUERY PLAN of each statement list_tasks runs):"]
    for name, entry in results["plans"].items():
        lines.append(f"  {name}: " + " ; ".join(entry["plan"]))
    join = results["join"]
    lines += [
        "",
        f"### 3. Child close → parent's synthesis, {join['children']} children, join all",
        "",
    ]
    for step, path in join.get("paths", {}).items():
        lines.append(f"- {step}: {path}")
    lines += [
        "- from the close's HTTP answer to the synthesising record on the watch, p50 / p95 / max ms: "
        f"{_ms(join['from_ack'])} (n = {join['from_ack']['n']})",
        f"- from sending the close, p50 / p95 / max ms: {_ms(join['from_send'])}",
        f"- synthesising records: {join['synthesised']} for {join['children']} children; exactly once: "
        f"{join['exactly_once']}; closing records: {join['closing_records']}; parent closed after the last one: "
        f"{join['closed_after_last']} (parent state {join['parent_state']})",
    ]
    if "error" in join:
        lines.append(f"- ERROR: {join['error']}")
        lines += [f"    {line}" for line in join.get("joiner_log", [])]
    lines += ["", "Goals: " + ", ".join(_goal_verdicts(results))]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m spl.soak.tasks_bench",
        description=__doc__.split("\n")[0],
        epilog="example: python -m spl.soak.tasks_bench --records 20000 --tasks 1000 --children 20 "
        "(about 20 s; the defaults take about 40 s)",
    )
    parser.add_argument("--records", type=positive_int, default=100_000, help="records on the one thread of part 1")
    parser.add_argument("--tasks", type=positive_int, default=10_000, help="tasks in the store listed in part 2")
    parser.add_argument("--children", type=positive_int, default=200, help="children fanned out and closed in part 3")
    parser.add_argument("--calls", type=positive_int, default=50, help="timed calls per listing query")
    parser.add_argument("--cli-runs", type=positive_int, default=5, help="runs of `spl task list` as a subprocess")
    parser.add_argument("--workdir", type=Path, help="where the stores and the home go (default: a temporary dir)")
    parser.add_argument("--keep", action="store_true", help="keep them afterwards")
    parser.add_argument("--profile", action="store_true", help="cProfile the task thread's commits (part 1)")
    parser.add_argument("--json", action="store_true", help="print only the JSON line")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    options = Options(args.records, args.tasks, args.children, args.calls, args.cli_runs, args.profile)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="spl-tasksbench-", dir=args.workdir))
    started = time.perf_counter()
    try:
        results = run_benchmark(root, options)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    results["elapsed_s"] = round(time.perf_counter() - started, 1)
    if not args.json:
        print(format_table(results))
        print(f"\nelapsed {results['elapsed_s']:.0f} s" + (f"; kept {root}" if args.keep else ""))
    print(json.dumps(results, default=str))


if __name__ == "__main__":
    main()
