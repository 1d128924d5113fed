"""The cost of a ``/metrics`` scrape and of a sync-stats read as pairs grow (issue 13, "Metrics").

Run: ``python -m spl.soak.metrics_bench [--pairs 10,100,1000] [--scrapes 40] [--samples 1000] [--json]``.
About 30 s on a 2-core machine at the defaults. ``--module FILE`` times another ``transport/metrics.py`` (the
one before a change, say: ``git show HEAD~1:transport/metrics.py > /tmp/old_metrics.py``) and ``--syncstats FILE``
another ``core/syncstats.py``, through the same calls.

What it measures, at each pair count N (N sync pairs and N federation pairs, so 2N pairs in all):

1. **Scrape.** The daemon's own ``Metrics`` object over a stand-in for the daemon's state: real ``PairStatus``
   and ``PairStats`` objects (refusal counters, an hour of delivery latencies), a supervision tree with one
   child per pair built and converted afresh at each scrape as ``Services.snapshot`` does, forty request
   routes counted. Each scrape runs as the route does (``Metrics.scrape``: the outbox count in a worker thread,
   the copy on the trio thread, the text in a worker thread). Printed: the whole scrape's p50/p95 ms, the
   trio thread's share (p50/p95 ms: what every other request waits for), the body's size and series count.
2. **Sync stats read.** What ``GET /v1/sync/health`` does with the rolling figures: each pair's ``to_wire`` and
   one latency summary over all pairs, with ``--samples`` delivery latencies per pair in the last hour. This is
   on the trio thread in the daemon, all of it.

No daemon, socket or store is involved: the figures are the metrics code's own, not the network's. The
machine's load average is printed; other work on the two cores shows up in the p95s.
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, cast

import msgspec
import trio

from spl.core.fleet_control import FleetState
from spl.core.pairs import PairStatus
from spl.core.units import percentile
from spl.runtime.snapshot import ChildSnapshot, SupervisorSnapshot

__all__ = ["FakeManager", "fake_services", "main"]

REFUSALS = ("SIGNATURE_INVALID", "NAMESPACE_REJECTED", "RESERVED_THREAD")
ROUTES = 40  # route/method/status combinations the request counters hold


class FakeFederationPairs:
    """The federation pairs' actor as the metrics read it: ``pairs`` (views with a ``status``) and ``state_of``."""

    def __init__(self, views: dict[str, Any]) -> None:
        self.pairs = views

    def state_of(self, view: Any) -> tuple[str, str]:
        return view.state, ""


@dataclass
class FakeManager:
    """The federation manager as the metrics read it (sync pairs, the pullers' stats, reconciler, supervisor)."""

    pairs: dict[str, Any]
    fed: FakeFederationPairs
    puller_stats: dict[str, Any]
    reconciler: Any
    supervisor: Any


def _status(pair_id: str, rng: random.Random, now: float) -> PairStatus:
    status = PairStatus(pair_id, state=rng.choice(("running", "running", "running", "failing", "paused")))
    status.lag_records = rng.randrange(1, 50) if rng.random() < 0.1 else 0  # most pairs are caught up
    status.behind_since = now - rng.uniform(0, 30) if status.lag_records else None
    status.records_pulled = rng.randrange(0, 10**6)
    status.records_duplicate = rng.randrange(0, 100)
    status.records_refused = {code: rng.randrange(1, 9) for code in rng.sample(REFUSALS, rng.randrange(0, 3))}
    status.errors_total = rng.randrange(0, 20)
    status.pulls = rng.randrange(0, 10**5)
    return status


def _stats(stats_type: Any, samples: int, rng: random.Random, now: float) -> Any:
    """A pair's stats with ``samples`` delivery latencies spread over the last hour (pulls of 10)."""
    stats = stats_type()
    for start in range(0, samples, 10):
        at = now - 3600 + 3600 * start / max(samples, 1)
        stats.note_pulled(10, [rng.lognormvariate(-4.0, 1.0) for _ in range(min(10, samples - start))], at)
    return stats


def fake_services(
    pairs: int, *, samples: int = 200, stats_type: Any = None, seed: int = 1
) -> tuple[SimpleNamespace, FakeManager]:
    """A stand-in for ``Services`` with ``pairs`` sync pairs and ``pairs`` federation pairs (module doc)."""
    from spl.actors.federation import PairView
    from spl.core.syncstats import PairStats

    stats_type = stats_type or PairStats
    rng = random.Random(seed)
    now = time.time()
    sync_views: dict[str, Any] = {}
    fed_views: dict[str, Any] = {}
    puller_stats: dict[str, Any] = {}
    for n in range(pairs):
        pair_id = f"pair_{n:016x}"
        sync_views[pair_id] = PairView(
            cast(Any, None), _status(pair_id, rng, now), _stats(stats_type, samples, rng, now)
        )
        fed_id = f"fp_{n:016x}"
        fed_views[fed_id] = SimpleNamespace(status=_status(fed_id, rng, now), state="active")
        puller_stats[fed_id] = _stats(stats_type, samples, rng, now)
    children = sorted([*sync_views, *fed_views])

    def pairs_tree() -> SupervisorSnapshot:
        return SupervisorSnapshot(
            "pairs",
            "one_for_one",
            "running",
            [ChildSnapshot(c, "running", 0, None, None, "permanent", False, None) for c in children],
        )

    def root_tree() -> dict[str, Any]:
        """As ``Supervisor.snapshot`` builds it (fresh structs) and ``Services.snapshot`` converts it."""
        top = [
            ChildSnapshot(name, "running", 0, None, None, "permanent", False, None)
            for name in ("sse-hub", "store-writer", "reconciler", "joiner", "http-server", "discovery")
        ]
        top.insert(4, ChildSnapshot("federation", "running", 0, None, None, "permanent", False, pairs_tree()))
        return cast(dict[str, Any], msgspec.to_builtins(SupervisorSnapshot("root", "one_for_one", "running", top)))

    manager = FakeManager(
        sync_views,
        FakeFederationPairs(fed_views),
        puller_stats,
        SimpleNamespace(queue_depth=3, queue_high_water=250),
        SimpleNamespace(snapshot=pairs_tree),
    )

    async def read(query: Callable[..., Any], *args: Any) -> int:
        return cast(int, await trio.to_thread.run_sync(lambda: 0))  # the outbox count's thread hop, no store

    services = SimpleNamespace(
        head_sequence=lambda: 1_234_567,
        hub=SimpleNamespace(stats=lambda: {"open": 12, "lagged_total": 3}),
        fleet=FleetState,
        joiner=lambda: {"synthesised": 10, "closed": 4, "failing": False},
        records_committed=lambda: {"local": 10, "pulled": 20, "pushed": 0, "import": 0, "parked": 0},
        snapshot=root_tree,
        federation=manager,
        read=read,
    )
    return services, manager


def _load(path: str | None, default: str) -> ModuleType:
    if path is None:
        return importlib.import_module(default)
    spec = importlib.util.spec_from_file_location(f"bench_{Path(path).stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _ms(values: list[float]) -> dict[str, float]:
    return {"p50": round(percentile(values, 50) * 1000, 2), "p95": round(percentile(values, 95) * 1000, 2)}


async def _scrapes(metrics: Any, services: Any, count: int) -> dict[str, Any]:
    """``count`` scrapes as the route runs them; the copy on the trio thread timed on its own."""
    takes_depth = "outbox_depth" in inspect.signature(metrics.collect_state).parameters
    whole: list[float] = []
    trio_share: list[float] = []
    cpu: list[float] = []
    body = b""

    def render(state: Any) -> tuple[bytes, float]:
        started = time.thread_time()
        return metrics.render(state), time.thread_time() - started

    for _ in range(count + 3):  # three warm-ups
        started = time.perf_counter()
        depth = await services.read(None)
        copied, copied_cpu = time.perf_counter(), time.thread_time()
        state = metrics.collect_state(outbox_depth=depth) if takes_depth else metrics.collect_state()
        trio_share.append(time.perf_counter() - copied)
        trio_cpu = time.thread_time() - copied_cpu
        body, render_cpu = await trio.to_thread.run_sync(render, state)
        whole.append(time.perf_counter() - started)
        cpu.append(trio_cpu + render_cpu)
    whole, trio_share, cpu = whole[3:], trio_share[3:], cpu[3:]
    series = sum(1 for line in body.splitlines() if line and not line.startswith(b"#"))
    return {
        "scrape_ms": _ms(whole),
        "cpu_ms": _ms(cpu),
        "trio_ms": _ms(trio_share),
        "bytes": len(body),
        "series": series,
    }


def _health_read(manager: FakeManager, summarise: Callable[[Any], dict[str, Any]]) -> None:
    """What ``FederationManager.health`` does with the stats: each pair's figures, one summary over all."""
    now = time.time()
    window: Any = None
    values: list[float] = []
    for view in manager.pairs.values():
        view.stats.to_wire(now)
        if hasattr(view.stats, "latency_since"):
            part = view.stats.latency_since(now - 3600)
            if window is None:
                window = part
            else:
                window.merge(part)
        else:
            values.extend(value * 1000 for value in view.stats.latencies_since(now - 3600))
    summarise(window if window is not None else values)


def run(pairs: Sequence[int], scrapes: int, samples: int, module: str | None, syncstats: str | None) -> dict[str, Any]:
    metrics_module = _load(module, "spl.transport.metrics")
    stats_module = _load(syncstats, "spl.core.syncstats")
    results: dict[str, Any] = {"load": os.getloadavg(), "samples_per_pair": samples, "rows": []}
    for count in pairs:
        services, manager = fake_services(count, samples=samples, stats_type=stats_module.PairStats)
        metrics = metrics_module.Metrics(services)
        for n in range(ROUTES):
            metrics.requests.observe(f"/v1/route/{n}", "GET", 200, 0.002)
        row: dict[str, Any] = {"pairs": count}
        row.update(trio.run(_scrapes, metrics, services, scrapes))
        reads: list[float] = []
        for _ in range(max(3, scrapes // 4)):
            started = time.perf_counter()
            _health_read(manager, stats_module.summarise)
            reads.append(time.perf_counter() - started)
        row["health_read_ms"] = _ms(reads)
        results["rows"].append(row)
    return results


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m spl.soak.metrics_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", default="10,100,1000", help="pair counts (each: N sync + N federation pairs)")
    parser.add_argument("--scrapes", type=int, default=40, help="scrapes timed at each pair count")
    parser.add_argument("--samples", type=int, default=1000, help="delivery latencies per pair in the last hour")
    parser.add_argument("--module", help="time this transport/metrics.py instead of the installed one")
    parser.add_argument("--syncstats", help="time this core/syncstats.py instead of the installed one")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    pairs = [int(part) for part in args.pairs.split(",") if part.strip()]
    results = run(pairs, args.scrapes, args.samples, args.module, args.syncstats)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    load = ", ".join(f"{value:.2f}" for value in results["load"])
    print(f"load average {load}; {args.samples} latencies per pair in the hour; {args.scrapes} scrapes each")
    print(
        "pairs (sync+fed)  scrape p50/p95 ms  CPU p50/p95 ms  trio thread p50/p95 ms  body KiB  series"
        "  health read p50/p95 ms"
    )
    for row in results["rows"]:
        print(
            f"{row['pairs']:>6} + {row['pairs']:<6}   {row['scrape_ms']['p50']:>7} / {row['scrape_ms']['p95']:<7}"
            f"  {row['cpu_ms']['p50']:>6} / {row['cpu_ms']['p95']:<6}"
            f"  {row['trio_ms']['p50']:>9} / {row['trio_ms']['p95']:<9}   {row['bytes'] / 1024:>7.0f}"
            f"  {row['series']:>6}  {row['health_read_ms']['p50']:>9} / {row['health_read_ms']['p95']}"
        )
    if len(results["rows"]) > 1:
        first, last = results["rows"][0], results["rows"][-1]
        ratio = last["pairs"] / first["pairs"]
        per_pair = statistics.fmean(
            [
                row["trio_ms"]["p50"] * 1000 / (2 * row["pairs"])
                for row in results["rows"]
                if row["pairs"] >= 100 or len(results["rows"]) == 1
            ]
            or [0.0]
        )
        print(
            f"{ratio:.0f}x the pairs: scrape x{last['scrape_ms']['p50'] / max(first['scrape_ms']['p50'], 1e-3):.1f}, "
            f"trio thread ~{per_pair:.1f} µs per pair"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
