"""What ``GET /metrics`` exports: the daemon's state read at scrape time, plus HTTP request counts.

Two sources, one :class:`prometheus_client.CollectorRegistry` of the daemon's own (never the library's global
registry: two daemons in one process, as the in-process tests run them, must not share figures):

- :class:`StateCollector` reads what the daemon already keeps (pairs and their delivery-latency histograms,
  reconcile queue, head sequence, records committed, SSE streams, supervision tree, kill switch, the joiner's
  figures and outbox) through :class:`Services` when Prometheus scrapes. Nothing is updated on the hot path for
  these figures. The trio thread only copies plain numbers (the actors' state is only ever read there, so no
  lock is needed and no figure is torn); the text is written from that copy in a worker thread, by hand rather
  than through ``prometheus_client``'s metric objects, which cost ~75 µs per pair to build and format.
- :class:`RequestMetrics` counts every HTTP request by route *template* (``/v1/sync/pairs/<pair_id>``, never
  the raw path: a path carries thread and pair ids, which would make label values unbounded), method and
  status, with a latency histogram. The app's request hooks (``transport/app.py``) feed it.

Every label value is bounded: pair ids (one per configured pair), states and refusal codes from fixed sets,
route templates from the route table, methods from :data:`METHODS`, statuses as three digits. A value that
does not fit its set is exported as ``other``, so hostile input cannot grow the series count.

Names follow Prometheus conventions: ``spl_`` prefix, base units (``_seconds``), counters end in ``_total``;
the process collector keeps the standard ``process_`` names every exporter shares.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import apsw
import msgspec
import trio
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest

from spl.core.federation_pairs import FED_STATES
from spl.core.fleet_control import LEVELS
from spl.core.pairs import STATES as SYNC_STATES
from spl.core.syncstats import EXPORT_BUCKETS_S, PairStats
from spl.transport.services import Services

__all__ = [
    "METHODS",
    "METRICS_KEY",
    "Metrics",
    "PairFigures",
    "RequestMetrics",
    "StateCollector",
    "StateSnapshot",
    "join_outbox_depth",
    "render_state",
]

log = logging.getLogger("spl.metrics")

METRICS_KEY = "SPL_METRICS"  # where the app keeps its :class:`Metrics` (``app.config``)

# Methods counted by name; anything else a client invents is ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # 404 and 405: no route template to name (the raw path is never a label)

# Latency buckets in seconds: an emit answers in about a millisecond, an import may take minutes.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

# What a federation pair's state may read besides its recorded one (``FederationPairs.state_of``).
FED_OVERLAY_STATES = ("degraded", "peer_manifest_changed", "endpoint_moving")
FED_ALL_STATES = FED_STATES + FED_OVERLAY_STATES
# Where a committed record came from (``spl_records_committed_total{origin}``); anything else is ``other``.
ORIGIN = re.compile(r"[a-z][a-z_]{0,31}")
OUTBOX_COUNT_CAP = 100_000  # the outbox gauge counts this many rows at most (a COUNT over more is not worth it)
# A refusal code as our reconciler names it (``RESERVED_THREAD``, ``INVALID_SIGNATURE``…).
REFUSAL_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


class RequestMetrics:
    """HTTP requests by route template, method and status, and their latency by route and method.

    The latency is measured from the first request hook to the response object (for an SSE watch: until the
    stream starts, not while it runs). The labelled children are cached: ``labels()`` takes a lock and builds
    a key on each call, and this runs on every request, emits included.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "spl_http_requests",
            "HTTP requests answered, by route template, method and status",
            ("route", "method", "status"),
            registry=registry,
        )
        self.latency = Histogram(
            "spl_http_request_duration_seconds",
            "Time from a request's arrival to its response (headers; an SSE stream's life is not included)",
            ("route", "method"),
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def observe(self, route: str | None, method: str, status: int, seconds: float) -> None:
        """Count one answered request. ``route`` is the matched URL rule (None when nothing matched)."""
        key = (route or UNMATCHED_ROUTE, method if method in METHODS else "other", status)
        children = self._children.get(key)
        if children is None:
            route_label, method_label, _ = key
            status_label = str(status) if 100 <= status <= 599 else "other"
            children = (
                self.requests.labels(route_label, method_label, status_label),
                self.latency.labels(route_label, method_label),
            )
            self._children[key] = children
        counter, histogram = children
        counter.inc()
        histogram.observe(max(seconds, 0.0))


class StateCollector:
    """The daemon's state, copied as plain numbers on the trio thread (:meth:`snapshot`) and formatted anywhere.

    The copy is all the trio thread pays per scrape: a few attribute reads and a list copy per pair. Building the
    text (:func:`render_state`) reads only the copy, so it runs in a worker thread while the actors go on.
    """

    def __init__(self, services: Services) -> None:
        self.services = services

    def snapshot(self, *, outbox_depth: int | None = None) -> StateSnapshot:
        """Everything a scrape exports, now. Call it on the trio thread (the actors' state lives there)."""
        services = self.services
        streams = services.hub.stats()
        federation = services.federation
        committed = services.records_committed
        tree = services.snapshot()
        pairs_tree = None
        if federation is not None and not _holds_child(tree, "federation"):
            # A tree without the federation child (a bare app): its pair supervisor is read on its own.
            supervisor = getattr(federation, "supervisor", None)
            pairs_tree = supervisor.snapshot() if supervisor is not None else None
        return StateSnapshot(
            now=time.time(),
            head_sequence=services.head_sequence(),
            streams_open=streams["open"],
            streams_lagged=streams["lagged_total"],
            fleet_level=services.fleet().level,
            joiner=dict(services.joiner()),
            outbox_depth=outbox_depth,
            committed=dict(committed()),
            tree=tree,
            pairs_tree=pairs_tree,
            pairs=_pair_rows(federation),
            reconcile=(
                (federation.reconciler.queue_depth, federation.reconciler.queue_high_water)
                if federation is not None
                else None
            ),
        )


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """One scrape's state, as plain values nothing else changes (safe to read from any thread)."""

    now: float
    head_sequence: int
    streams_open: int
    streams_lagged: int
    fleet_level: str
    joiner: dict[str, Any]
    outbox_depth: int | None  # None: not read (a bare app, or the read failed)
    committed: dict[str, int] | None  # records committed by origin, where the daemon provides them
    tree: Mapping[str, Any]  # the root supervisor's snapshot (builtins)
    pairs_tree: Any  # the pair supervisor's snapshot, when the root's does not hold it
    pairs: list[PairRow]
    reconcile: tuple[int, int] | None  # depth, high water


# kind, pair_id, state, the states exported for it, figures (None while a federation pair's puller is not running)
PairRow = tuple[str, str, str, tuple[str, ...], "PairFigures | None"]


class PairFigures(NamedTuple):
    """A pair's puller figures as ``GET /v1/sync/pairs/{id}`` shows them, and its latency histogram since start."""

    lag_records: int
    lag_seconds: float
    pulled: int
    duplicate: int
    refused: tuple[tuple[str, int], ...]
    errors: int
    pulls: int
    latency: tuple[tuple[int, ...], float, int] | None  # counts per EXPORT_BUCKETS_S bucket (+Inf last), sum ms, count


def _pair_rows(federation: Any) -> list[PairRow]:
    """Both kinds of pair, copied (sync pairs from the manager, federation pairs from their own actor)."""
    rows: list[PairRow] = []
    if federation is None:
        return rows
    now = time.time()
    for pair_id, view in federation.pairs.items():
        rows.append(("sync", pair_id, view.status.state, SYNC_STATES, _figures(view.status, view.stats, now)))
    fed = federation.fed
    if fed is not None:
        # The pullers' latency windows (``FederationManager.puller_stats``), where the manager keeps them.
        puller_stats = getattr(federation, "puller_stats", None) or {}
        for pair_id, view in fed.pairs.items():
            current, _ = fed.state_of(view)
            status = view.status
            figures = _figures(status, puller_stats.get(pair_id), now) if status is not None else None
            rows.append(("federation", pair_id, current, FED_ALL_STATES, figures))
    return rows


def _figures(status: Any, stats: PairStats | None, now: float) -> PairFigures:
    refused = status.records_refused
    return PairFigures(
        status.lag_records,
        round(status.lag_seconds(now), 3) if status.lag_records else 0.0,
        status.records_pulled,
        status.records_duplicate,
        tuple(refused.items()) if refused else (),
        status.errors_total,
        status.pulls,
        (tuple(stats.export_counts), stats.export_sum_ms, stats.export_count) if stats is not None else None,
    )


def _holds_child(tree: Mapping[str, Any], child_id: str) -> bool:
    return any(child.get("id") == child_id for child in tree.get("children") or ())


# -- the text format ----------------------------------------------------------------------------------------------


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float | int) -> str:
    """A sample value as the text format reads it (ints as they are; floats as Go prints them)."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return _float(value)


def _float(value: float) -> str:
    """A float as Prometheus writes it: ``repr`` (``1.0``, ``0.005``, ``1e-06``), ``+Inf``, ``-Inf``, ``NaN``."""
    if value != value:
        return "NaN"
    if value in (math.inf, -math.inf):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


class _Family:
    """One metric family's lines: ``# HELP``, ``# TYPE``, then its samples (label text pre-escaped by the caller)."""

    __slots__ = ("head", "lines", "name")

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        self.name = name
        self.head = f"# HELP {name} {_escape_help(help_text)}\n# TYPE {name} {kind}\n"
        self.lines: list[str] = []

    def add(self, labels: str, value: float | int, suffix: str = "") -> None:
        """``labels``: the inside of ``{…}``, already escaped (empty for none)."""
        self.lines.append(
            f"{self.name}{suffix}{{{labels}}} {_number(value)}\n"
            if labels
            else f"{self.name}{suffix} {_number(value)}\n"
        )

    def chunks(self) -> list[str]:
        return [self.head, *self.lines]


def render_state(state: StateSnapshot, cache: PairTextCache | None = None) -> list[str]:
    """The text format (0.0.4) of one snapshot: any thread; O(series), no per-sample objects.

    With a ``cache`` (the :class:`Metrics` object keeps one), a pair whose figures are those of the last scrape
    reuses its text: at 1,000 pairs most are idle between two scrapes, and their lines are most of the body.
    Answers the text in pieces: the caller joins them once (at 1,000 pairs the body is megabytes, and each
    copy of it costs milliseconds).
    """
    families: list[_Family] = []

    def family(name: str, kind: str, help_text: str) -> _Family:
        made = _Family(name, kind, help_text)
        families.append(made)
        return made

    family("spl_head_sequence", "gauge", "Sequence number of the newest committed record").add("", state.head_sequence)
    family("spl_sse_streams_open", "gauge", "SSE watch streams open now").add("", state.streams_open)
    family(
        "spl_sse_lagged_total",
        "counter",
        "SSE subscribers dropped because they fell behind (their buffer filled; the client reconnects)",
    ).add("", state.streams_lagged)
    fleet = family("spl_fleet_frozen", "gauge", "The kill switch: 1 for the level in force (none when not frozen)")
    for known in ("none", *LEVELS):
        fleet.add(f'level="{known}"', 1 if state.fleet_level == known else 0)

    if state.committed:  # absent, or empty where the daemon does not count commits
        committed = family(
            "spl_records_committed_total",
            "counter",
            "Records committed since start, by origin (local emits, pulled, pushed by peers, imported, parked then "
            "applied)",
        )
        for origin, count in sorted(state.committed.items()):
            committed.add(f'origin="{_escape_label(origin if ORIGIN.fullmatch(origin) else "other")}"', count)
    figures = state.joiner
    if figures:
        family(
            "spl_joiner_synthesised_total", "counter", "Child closes written as their parent's synthesising record"
        ).add("", figures["synthesised"])
        family("spl_joiner_parents_closed_total", "counter", "Parents closed (or failed) by their join").add(
            "", figures["closed"]
        )
        family(
            "spl_joiner_failing",
            "gauge",
            "1 while the joiner's last write was refused (it retries; see the daemon log)",
        ).add("", 1 if figures["failing"] else 0)
    if state.outbox_depth is not None:
        family(
            "spl_joiner_outbox_depth",
            "gauge",
            f"Child closes waiting for their parent's synthesising record (counted up to {OUTBOX_COUNT_CAP})",
        ).add("", state.outbox_depth)

    _render_supervision(state, family)
    _render_pairs(state, family, cache if cache is not None else PairTextCache())
    if state.reconcile is not None:
        depth, high = state.reconcile
        family("spl_reconcile_queue_depth", "gauge", "Records from peers accepted but not yet committed").add("", depth)
        family(
            "spl_reconcile_queue_high_water", "gauge", "The most records the reconcile queue has held since start"
        ).add("", high)
    return [chunk for f in families for chunk in f.chunks()]


def _render_supervision(state: StateSnapshot, family: Any) -> None:
    """The root supervisor's children, nested ones (the pair supervisor's: one child per pair) included."""
    restarts = family(
        "spl_supervisor_child_restarts_total",
        "counter",
        "Times the supervisor restarted a child, by its path in the tree (root/federation/pairs/pair_…)",
    )
    running = family("spl_supervisor_child_running", "gauge", "1 while a supervised child runs, 0 otherwise")
    root = str(state.tree.get("id", "root"))
    children = dict(_children(state.tree, root))
    if state.pairs_tree is not None:
        for path, child in _children(msgspec.to_builtins(state.pairs_tree), f"{root}/federation/pairs"):
            children.setdefault(path, child)
    for path, child in children.items():
        label = _escape_label(path)
        restarts.lines.append(
            f'spl_supervisor_child_restarts_total{{child="{label}"}} {int(child.get("restarts", 0))}\n'
        )
        running.lines.append(
            f'spl_supervisor_child_running{{child="{label}"}} {int(child.get("state") == "running")}\n'
        )


PAIR_FAMILIES = (
    ("spl_pair_state", "gauge", "1 for the pair's current state, 0 for the others"),
    ("spl_pair_lag_records", "gauge", "Records the peer holds that we have not pulled"),
    ("spl_pair_lag_seconds", "gauge", "How long the pair has been behind its peer (0 when caught up)"),
    ("spl_pair_records_pulled_total", "counter", "Records pulled and stored"),
    ("spl_pair_records_duplicate_total", "counter", "Records pulled that we already held"),
    ("spl_pair_records_refused_total", "counter", "Records pulled and refused, by refusal code"),
    ("spl_pair_errors_total", "counter", "Failed pulls (connection, HTTP, commit)"),
    ("spl_pair_pulls_total", "counter", "Pulls (and stream batches) committed"),
    (
        "spl_pair_delivery_latency_seconds",
        "histogram",
        "Time from a record's creation at its source to its commit here, per record pulled (since start)",
    ),
)
_BUCKET_LABELS = tuple(f',le="{_float(bound)}"' for bound in EXPORT_BUCKETS_S) + (',le="+Inf"',)


class PairTextCache:
    """Each pair's lines as last rendered, keyed by the figures they were made from (a memo, never stale).

    Replaced whole at each render, so it holds the pairs of the last scrape only. Two scrapes rendering at once
    (two worker threads) each build their own and the last one kept wins: at worst a miss, never a wrong line.
    """

    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], tuple[PairRow, tuple[str, ...]]] = {}

    def lines(self, row: PairRow, fresh: dict[tuple[str, str], tuple[PairRow, tuple[str, ...]]]) -> tuple[str, ...]:
        ident = (row[0], row[1])
        cached = self.entries.get(ident)
        chunks = cached[1] if cached is not None and cached[0] == row else _pair_lines(row)
        fresh[ident] = (row, chunks)
        return chunks


def _render_pairs(state: StateSnapshot, family: Any, cache: PairTextCache) -> None:
    """Both kinds of pair under shared names, told apart by the ``kind`` label (``sync`` or ``federation``).

    The figures are those ``GET /v1/sync/pairs/{id}`` and ``GET /v1/federation/pairs/{id}`` answer: the
    puller's :class:`~spl.core.pairs.PairStatus`; the latency histogram is the pair's
    :class:`~spl.core.syncstats.PairStats` since start (the JSON answers show the last hour of the same buckets).
    """
    families = [family(name, kind, help_text) for name, kind, help_text in PAIR_FAMILIES]
    fresh: dict[tuple[str, str], tuple[PairRow, tuple[str, ...]]] = {}
    for row in sorted(state.pairs, key=_by_kind_and_id):
        for target, chunk in zip(families, cache.lines(row, fresh), strict=True):
            if chunk:
                target.lines.append(chunk)
    cache.entries = fresh


def _by_kind_and_id(row: PairRow) -> tuple[str, str]:
    return row[0], row[1]


def _pair_lines(row: PairRow) -> tuple[str, ...]:
    """One pair's lines in each of :data:`PAIR_FAMILIES` (an empty string where it has none)."""
    kind, pair_id, current, known, figures = row
    ids = f'kind="{kind}",pair_id="{_escape_label(pair_id)}"'
    states = "".join(
        f'spl_pair_state{{{ids},state="{_escape_label(name)}"}} {1 if name == current else 0}\n'
        for name in (known if current in known else (*known, current))
    )
    if figures is None:  # a federation pair whose puller is not running: no figures yet
        return (states, "", "", "", "", "", "", "", "")
    reasons: dict[str, int] = {}  # codes that do not look like ours are summed under "other", never repeated
    for code, count in figures.refused:
        reason = code if REFUSAL_CODE.fullmatch(code) else "other"
        reasons[reason] = reasons.get(reason, 0) + count
    refused = "".join(
        f'spl_pair_records_refused_total{{{ids},reason="{reason}"}} {count}\n'
        for reason, count in sorted(reasons.items())
    )
    latency = ""
    if figures.latency is not None:
        counts, sum_ms, count = figures.latency
        cumulative, parts = 0, []
        for bucket, bucket_count in zip(_BUCKET_LABELS, counts, strict=True):
            cumulative += bucket_count
            parts.append(f"spl_pair_delivery_latency_seconds_bucket{{{ids}{bucket}}} {cumulative}\n")
        parts.append(f"spl_pair_delivery_latency_seconds_count{{{ids}}} {count}\n")
        parts.append(f"spl_pair_delivery_latency_seconds_sum{{{ids}}} {_float(sum_ms / 1000)}\n")
        latency = "".join(parts)
    return (
        states,
        f"spl_pair_lag_records{{{ids}}} {figures.lag_records}\n",
        f"spl_pair_lag_seconds{{{ids}}} {_number(figures.lag_seconds)}\n",
        f"spl_pair_records_pulled_total{{{ids}}} {figures.pulled}\n",
        f"spl_pair_records_duplicate_total{{{ids}}} {figures.duplicate}\n",
        refused,
        f"spl_pair_errors_total{{{ids}}} {figures.errors}\n",
        f"spl_pair_pulls_total{{{ids}}} {figures.pulls}\n",
        latency,
    )


class Metrics:
    """One daemon's metrics: its state collector, and a registry with the process collector and request metrics.

    A scrape (:meth:`scrape`) is three steps, and only the second runs on the trio thread: the joiner's outbox is
    counted on a pooled read connection, the actors' state is copied as plain numbers (:meth:`collect_state`:
    about 2 µs per pair), and the text is built in a worker thread (:meth:`render`), which reads only that copy.
    The main app's ``GET /metrics`` and the token-free listener (``metrics_server.py``) share this object.
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.state = StateCollector(services)
        self.registry = CollectorRegistry()
        # CPU, memory, open files (from Linux /proc; nothing elsewhere) under the standard ``process_`` names
        # every exporter uses, so the usual dashboards and alerts apply unchanged.
        ProcessCollector(registry=self.registry)
        self.requests = RequestMetrics(self.registry)
        self.pair_text = PairTextCache()  # each pair's lines from the last scrape (render_state)
        self.listener_urls: list[str] = []  # where the token-free listener serves, once bound (``[metrics] port``)

    def collect_state(self, *, outbox_depth: int | None = None) -> StateSnapshot:
        """The daemon's state as plain values, now. Call it on the trio thread."""
        return self.state.snapshot(outbox_depth=outbox_depth)

    def render(self, state: StateSnapshot) -> bytes:
        """The text format of ``state`` and of the registry (process, requests: both safe from any thread)."""
        chunks = render_state(state, self.pair_text)
        chunks.append(generate_latest(self.registry).decode())
        return "".join(chunks).encode()

    async def scrape(self) -> bytes:
        """One whole scrape, as both listeners answer it."""
        outbox_depth: int | None = None
        try:
            outbox_depth = await self.services.read(join_outbox_depth)
        except Exception as exc:  # a store that cannot be read must not take the other figures with it
            log.warning("metrics: the joiner's outbox could not be counted (%s)", type(exc).__name__)
        state = self.collect_state(outbox_depth=outbox_depth)  # here, on the trio thread
        return await trio.to_thread.run_sync(self.render, state)


def join_outbox_depth(connection: apsw.Connection) -> int:
    """Rows in the joiner's outbox, counted up to :data:`OUTBOX_COUNT_CAP` (so a scrape's cost stays bounded).

    The outbox is empty but for child closes in flight; it grows only while the joiner cannot write.
    """
    row = next(
        iter(connection.execute("SELECT count(*) FROM (SELECT 1 FROM join_outbox LIMIT ?)", (OUTBOX_COUNT_CAP,)))
    )
    return int(row[0])


def _children(snapshot: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """Every child of a supervision snapshot, nested ones included, with its path from the root."""
    for child in snapshot.get("children") or ():
        path = f"{prefix}/{child.get('id', '?')}"
        yield path, child
        nested = child.get("children")  # a nested supervisor's snapshot: its children sit under its own id
        if nested:
            yield from _children(nested, f"{path}/{nested.get('id', '?')}")
