"""The hand-written text format of ``/metrics`` (``transport/metrics.py``) and the token-free listener's app.

The text is read back with ``prometheus_client.parser``, as Prometheus would: every figure parses to the value
the daemon holds, hostile label values round-trip escaped, the per-pair text reused from the last scrape is
the text a fresh render makes. The listener's ASGI app is called directly (no socket): only ``GET /metrics``.
"""

from __future__ import annotations

import json
from typing import Any, cast

import trio
from prometheus_client.parser import text_string_to_metric_families

from spl.core.pairs import PairStatus
from spl.core.syncstats import EXPORT_BUCKETS_S, PairStats
from spl.soak.metrics_bench import fake_services
from spl.transport.metrics import Metrics, PairTextCache, render_state
from spl.transport.metrics_server import MetricsApp
from spl.transport.services import Services

HOSTILE = 'pair_"quoted"\\back\nline'


def families_of(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def samples(families: dict[str, Any], family: str, name: str, **labels: str) -> list[Any]:
    return [s for s in families[family].samples if s.name == name and labels.items() <= s.labels.items()]


def metrics_with_pairs(count: int = 3) -> tuple[Metrics, Any]:
    services, manager = fake_services(count, samples=50)
    return Metrics(cast(Services, services)), manager


def test_every_figure_parses_to_what_the_daemon_holds() -> None:
    metrics, manager = metrics_with_pairs()
    pair_id, view = next(iter(manager.pairs.items()))
    view.status.records_refused = {"SIGNATURE_INVALID": 2, "not ours": 3, "also not": 4}
    families = families_of(metrics.render(metrics.collect_state(outbox_depth=7)).decode())
    ours = {"kind": "sync", "pair_id": pair_id}

    (pulled,) = samples(families, "spl_pair_records_pulled", "spl_pair_records_pulled_total", **ours)
    assert pulled.value == view.status.records_pulled
    refused = samples(families, "spl_pair_records_refused", "spl_pair_records_refused_total", **ours)
    assert {s.labels["reason"]: s.value for s in refused} == {"SIGNATURE_INVALID": 2, "other": 7}
    states = samples(families, "spl_pair_state", "spl_pair_state", **ours)
    assert sum(s.value for s in states) == 1 and len(states) > 1
    assert samples(families, "spl_joiner_outbox_depth", "spl_joiner_outbox_depth")[0].value == 7
    committed = samples(families, "spl_records_committed", "spl_records_committed_total", origin="pulled")
    assert committed[0].value == 20
    assert samples(families, "spl_reconcile_queue_high_water", "spl_reconcile_queue_high_water")[0].value == 250
    # Every pair of both kinds, once, under its kind.
    kinds = {(s.labels["kind"], s.labels["pair_id"]) for s in families["spl_pair_lag_records"].samples}
    assert kinds == {("sync", p) for p in manager.pairs} | {("federation", p) for p in manager.fed.pairs}
    # The supervision tree: each pair's child once, under the pair supervisor's own name.
    children = [s.labels["child"] for s in families["spl_supervisor_child_running"].samples]
    assert f"root/federation/pairs/{pair_id}" in children and len(children) == len(set(children))
    assert families["process_resident_memory_bytes"].samples[0].value > 0


def test_the_latency_histogram_is_cumulative_and_matches_the_pairs_stats() -> None:
    metrics, manager = metrics_with_pairs(1)
    pair_id, view = next(iter(manager.pairs.items()))
    stats: PairStats = view.stats
    families = families_of(metrics.render(metrics.collect_state()).decode())
    family, ours = "spl_pair_delivery_latency_seconds", {"kind": "sync", "pair_id": pair_id}
    buckets = samples(families, family, f"{family}_bucket", **ours)
    assert [s.labels["le"] for s in buckets] == [*(repr(b) for b in EXPORT_BUCKETS_S), "+Inf"]
    assert [s.value for s in buckets] == sorted(s.value for s in buckets)
    assert buckets[-1].value == stats.export_count == 50
    (count,) = samples(families, family, f"{family}_count", **ours)
    (total,) = samples(families, family, f"{family}_sum", **ours)
    assert count.value == 50 and abs(total.value - stats.export_sum_ms / 1000) < 1e-9


def test_hostile_label_values_round_trip_and_unknown_states_are_exported() -> None:
    metrics, manager = metrics_with_pairs(1)
    status = PairStatus(HOSTILE, state='weird"state')
    manager.pairs[HOSTILE] = type(next(iter(manager.pairs.values())))(cast(Any, None), status, PairStats())
    families = families_of(metrics.render(metrics.collect_state()).decode())
    (lag,) = samples(families, "spl_pair_lag_records", "spl_pair_lag_records", pair_id=HOSTILE)
    assert lag.value == 0
    states = samples(families, "spl_pair_state", "spl_pair_state", pair_id=HOSTILE)
    assert {s.labels["state"] for s in states if s.value == 1} == {'weird"state'}


def test_a_pair_whose_figures_did_not_change_reuses_its_text_and_a_change_shows() -> None:
    metrics, manager = metrics_with_pairs(5)
    for view in [*manager.pairs.values(), *manager.fed.pairs.values()]:
        view.status.lag_records = 0  # a lagging pair's lag_seconds grows between two scrapes
    cache = PairTextCache()
    first = "".join(render_state(metrics.collect_state(), cache))
    assert "".join(render_state(metrics.collect_state(), cache)) == first
    assert "".join(render_state(metrics.collect_state(), PairTextCache())) == first  # the memo is the fresh text
    pair_id, view = next(iter(manager.pairs.items()))
    view.status.records_pulled += 5
    view.stats.note_pulled(5, [0.002] * 5, now=view.stats.export_count)  # any time: only the counts export
    changed = families_of("".join(render_state(metrics.collect_state(), cache)))
    (pulled,) = samples(changed, "spl_pair_records_pulled", "spl_pair_records_pulled_total", pair_id=pair_id)
    assert pulled.value == view.status.records_pulled
    (count,) = samples(
        changed, "spl_pair_delivery_latency_seconds", "spl_pair_delivery_latency_seconds_count", pair_id=pair_id
    )
    assert count.value == 55
    assert set(cache.entries) == {("sync", p) for p in manager.pairs} | {("federation", p) for p in manager.fed.pairs}


def test_without_federation_the_daemon_figures_still_render() -> None:
    services, _ = fake_services(0)
    services.federation = None
    metrics = Metrics(cast(Services, services))
    families = families_of(metrics.render(metrics.collect_state()).decode())
    assert families["spl_head_sequence"].samples[0].value == 1_234_567
    assert "spl_reconcile_queue_depth" not in families and not families["spl_pair_state"].samples


# -- the listener's app -----------------------------------------------------------------------------------------


def call(app: MetricsApp, method: str, path: str, body: bytes = b"") -> tuple[int, dict[bytes, bytes], bytes]:
    """One request through the ASGI app, its body sent in two parts; answers (status, headers, body)."""
    sent: list[dict[str, Any]] = []
    parts = [body[: len(body) // 2], body[len(body) // 2 :]] if body else [b""]
    incoming = [{"type": "http.request", "body": part, "more_body": n < len(parts) - 1} for n, part in enumerate(parts)]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    trio.run(app, {"type": "http", "method": method, "path": path, "headers": []}, receive, send)
    start, end = sent
    return start["status"], dict(start["headers"]), end["body"]


def test_the_listener_answers_get_metrics_and_refuses_everything_else() -> None:
    metrics, manager = metrics_with_pairs(2)
    app = MetricsApp(metrics)
    status, headers, body = call(app, "GET", "/metrics")
    assert status == 200 and headers[b"content-type"].startswith(b"text/plain; version=0.0.4")
    assert "spl_pair_lag_records" in families_of(body.decode())
    status, _, body = call(app, "HEAD", "/metrics")
    assert status == 200 and body == b""
    for method, path, code, expected in (
        ("POST", "/metrics", 405, "METHOD_NOT_ALLOWED"),
        ("DELETE", "/metrics", 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/", 404, "ROUTE_NOT_FOUND"),
        ("GET", "/v1/status", 404, "ROUTE_NOT_FOUND"),
        ("POST", "/v1/records", 404, "ROUTE_NOT_FOUND"),
    ):
        status, headers, body = call(app, method, path, b"x" * 1000)
        error = json.loads(body)
        assert (status, error["code"], error["object"]) == (code, expected, "error"), (method, path)
        assert headers[b"content-type"] == b"application/json"
        assert len(path) < 2 or path == "/metrics" or path not in error["message"]  # a path is never echoed


def test_the_listener_answers_lifespan() -> None:
    app = MetricsApp(metrics_with_pairs(0)[0])
    sent: list[str] = []
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message["type"])

    trio.run(app, {"type": "lifespan"}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


def test_the_benchmark_prints_every_figure(capsys: Any) -> None:
    from spl.soak.metrics_bench import main

    main(["--pairs", "2,3", "--scrapes", "2", "--samples", "20"])
    printed = capsys.readouterr().out
    assert "scrape p50/p95 ms" in printed and "health read" in printed and "3 + 3" in printed
