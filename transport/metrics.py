"""What ``GET /metrics`` exports: the daemon's state read at scrape time, plus HTTP request counts.

Two sources, one :class:`prometheus_client.CollectorRegistry` of the daemon's own (never the library's global
registry: two daemons in one process, as the in-process tests run them, must not share figures):

- :class:`StateCollector` reads what the daemon already keeps (pairs, reconcile queue, head sequence, SSE
  streams, supervision tree, kill switch) through :class:`Services` when Prometheus scrapes. Nothing is updated
  on the hot path for these figures; a scrape costs one walk over the pairs, on the trio thread (the actors'
  state is only ever read there, so no lock is needed and no figure is torn).
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

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from spl.core.federation_pairs import FED_STATES
from spl.core.fleet_control import LEVELS
from spl.core.pairs import STATES as SYNC_STATES
from spl.transport.services import Services

__all__ = ["METHODS", "METRICS_KEY", "Metrics", "RequestMetrics", "StateCollector"]

METRICS_KEY = "SPL_METRICS"  # where the app keeps its :class:`Metrics` (``app.config``)

# Methods counted by name; anything else a client invents is ``other``.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED_ROUTE = "unmatched"  # 404 and 405: no route template to name (the raw path is never a label)

# Latency buckets in seconds: an emit answers in about a millisecond, an import may take minutes.
REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)

# What a federation pair's state may read besides its recorded one (``FederationPairs.state_of``).
FED_OVERLAY_STATES = ("degraded", "peer_manifest_changed", "endpoint_moving")
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
    """The daemon's state as metric families, read from :class:`Services` at each scrape."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def collect(self) -> Iterator[Metric]:
        services = self.services
        head = GaugeMetricFamily("spl_head_sequence", "Sequence number of the newest committed record")
        head.add_metric([], services.head_sequence())
        yield head

        streams = services.hub.stats()
        open_streams = GaugeMetricFamily("spl_sse_streams_open", "SSE watch streams open now")
        open_streams.add_metric([], streams["open"])
        yield open_streams
        lagged = CounterMetricFamily(
            "spl_sse_lagged_total",
            "SSE subscribers dropped because they fell behind (their buffer filled; the client reconnects)",
        )
        lagged.add_metric([], streams["lagged_total"])
        yield lagged

        fleet = GaugeMetricFamily(
            "spl_fleet_frozen", "The kill switch: 1 for the level in force (none when not frozen)", labels=["level"]
        )
        level = services.fleet().level
        for known in ("none", *LEVELS):
            fleet.add_metric([known], 1.0 if level == known else 0.0)
        yield fleet

        figures = services.joiner()
        if figures:
            synthesised = CounterMetricFamily(
                "spl_joiner_synthesised_total", "Child closes written as their parent's synthesising record"
            )
            synthesised.add_metric([], figures["synthesised"])
            yield synthesised
            closed = CounterMetricFamily("spl_joiner_parents_closed_total", "Parents closed (or failed) by their join")
            closed.add_metric([], figures["closed"])
            yield closed
            failing = GaugeMetricFamily(
                "spl_joiner_failing", "1 while the joiner's last write was refused (it retries; see the daemon log)"
            )
            failing.add_metric([], 1.0 if figures["failing"] else 0.0)
            yield failing

        yield from self._supervision(services.snapshot(), services.federation)
        yield from self._pairs()

    # -- supervision ------------------------------------------------------------------------------------------

    @staticmethod
    def _supervision(snapshot: Mapping[str, Any], federation: Any) -> Iterator[Metric]:
        """The root supervisor's children, and the pair supervisor's (one child per pair), which the federation
        manager runs inside its own task rather than as a nested child, so the root's snapshot does not hold it."""
        restarts = CounterMetricFamily(
            "spl_supervisor_child_restarts_total",
            "Times the supervisor restarted a child, by its path in the tree (root/federation/pairs/pair_…)",
            labels=["child"],
        )
        running = GaugeMetricFamily(
            "spl_supervisor_child_running", "1 while a supervised child runs, 0 otherwise", labels=["child"]
        )
        root = str(snapshot.get("id", "root"))
        children = dict(_children(snapshot, root))
        pairs = getattr(federation, "supervisor", None)
        if pairs is not None:
            for path, child in _children(msgspec.to_builtins(pairs.snapshot()), f"{root}/federation/pairs"):
                children.setdefault(path, child)
        for path, child in children.items():
            restarts.add_metric([path], child.get("restarts", 0))
            running.add_metric([path], 1.0 if child.get("state") == "running" else 0.0)
        yield restarts
        yield running

    # -- pairs ----------------------------------------------------------------------------------------------------

    def _pairs(self) -> Iterator[Metric]:
        """Both kinds of pair under shared names, told apart by the ``kind`` label (``sync`` or ``federation``).

        The figures are those ``GET /v1/sync/pairs/{id}`` and ``GET /v1/federation/pairs/{id}`` answer: the
        puller's :class:`~spl.core.pairs.PairStatus`.
        """
        labels = ["kind", "pair_id"]
        state = GaugeMetricFamily(
            "spl_pair_state", "1 for the pair's current state, 0 for the others", labels=[*labels, "state"]
        )
        lag_records = GaugeMetricFamily(
            "spl_pair_lag_records", "Records the peer holds that we have not pulled", labels=labels
        )
        lag_seconds = GaugeMetricFamily(
            "spl_pair_lag_seconds", "How long the pair has been behind its peer (0 when caught up)", labels=labels
        )
        pulled = CounterMetricFamily("spl_pair_records_pulled_total", "Records pulled and stored", labels=labels)
        duplicate = CounterMetricFamily(
            "spl_pair_records_duplicate_total", "Records pulled that we already held", labels=labels
        )
        refused = CounterMetricFamily(
            "spl_pair_records_refused_total", "Records pulled and refused, by refusal code", labels=[*labels, "reason"]
        )
        errors = CounterMetricFamily("spl_pair_errors_total", "Failed pulls (connection, HTTP, commit)", labels=labels)
        pulls = CounterMetricFamily("spl_pair_pulls_total", "Pulls (and stream batches) committed", labels=labels)

        federation = self.services.federation
        now = time.time()
        rows: list[tuple[str, str, str, tuple[str, ...], Any]] = []
        if federation is not None:
            for pair_id, view in sorted(federation.pairs.items()):
                rows.append(("sync", pair_id, view.status.state, SYNC_STATES, view.status))
            fed = federation.fed
            if fed is not None:
                for pair_id, view in sorted(fed.pairs.items()):
                    current, _ = fed.state_of(view)
                    rows.append(("federation", pair_id, current, FED_STATES + FED_OVERLAY_STATES, view.status))
        for kind, pair_id, current, known, status in rows:
            for name in known if current in known else (*known, current):
                state.add_metric([kind, pair_id, name], 1.0 if name == current else 0.0)
            if status is None:  # a federation pair whose puller is not running: no figures yet
                continue
            lag_records.add_metric([kind, pair_id], status.lag_records)
            lag_seconds.add_metric([kind, pair_id], round(status.lag_seconds(now), 3))
            pulled.add_metric([kind, pair_id], status.records_pulled)
            duplicate.add_metric([kind, pair_id], status.records_duplicate)
            reasons: dict[str, int] = {}  # codes that do not look like ours are summed under "other", never repeated
            for code, count in status.records_refused.items():
                reason = code if REFUSAL_CODE.fullmatch(code) else "other"
                reasons[reason] = reasons.get(reason, 0) + count
            for reason, count in sorted(reasons.items()):
                refused.add_metric([kind, pair_id, reason], count)
            errors.add_metric([kind, pair_id], status.errors_total)
            pulls.add_metric([kind, pair_id], status.pulls)
        yield from (state, lag_records, lag_seconds, pulled, duplicate, refused, errors, pulls)

        if federation is not None:
            depth = GaugeMetricFamily("spl_reconcile_queue_depth", "Records from peers accepted but not yet committed")
            depth.add_metric([], federation.reconciler.queue_depth)
            high = GaugeMetricFamily(
                "spl_reconcile_queue_high_water", "The most records the reconcile queue has held since start"
            )
            high.add_metric([], federation.reconciler.queue_high_water)
            yield depth
            yield high


class Metrics:
    """One daemon's metrics: its state collector, and a registry with the process collector and request metrics.

    A scrape is two steps (:meth:`collect_state`, then :meth:`render`) so that only the first runs on the trio
    thread: it reads the actors' state, which lives there. Formatting the text costs about twice as much (at
    1,000 pairs: ~35 ms to collect, ~75 ms to format) and reads nothing the actors change, so it runs in a
    worker thread instead of stalling every other request.
    """

    def __init__(self, services: Services) -> None:
        self.state = StateCollector(services)
        self.registry = CollectorRegistry()
        # CPU, memory, open files (from Linux /proc; nothing elsewhere) under the standard ``process_`` names
        # every exporter uses, so the usual dashboards and alerts apply unchanged.
        ProcessCollector(registry=self.registry)
        self.requests = RequestMetrics(self.registry)

    def collect_state(self) -> list[Metric]:
        """The daemon's state as metric families, now. Call it on the trio thread."""
        return list(self.state.collect())

    def render(self, state: list[Metric]) -> bytes:
        """The text format of ``state`` and of the registry (process, requests: both safe from any thread)."""
        return generate_latest(_Scrape(state, self.registry))


class _Scrape:
    """One scrape's families: the state collected beforehand, then the registry's own (read as they are now)."""

    def __init__(self, state: list[Metric], registry: CollectorRegistry) -> None:
        self.state = state
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        yield from self.state
        yield from self.registry.collect()


def _children(snapshot: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, Mapping[str, Any]]]:
    """Every child of a supervision snapshot, nested ones included, with its path from the root."""
    for child in snapshot.get("children") or ():
        path = f"{prefix}/{child.get('id', '?')}"
        yield path, child
        nested = child.get("children")
        if nested:
            yield from _children(nested, path)
