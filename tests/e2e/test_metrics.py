"""``GET /metrics`` on a real daemon (auth on) that pulls a thread from a second one through a sync pair.

One daemon pair for the whole module (started once, killed in teardown): A holds the records, B pulls them. B
also opens the token-free listener (``[metrics] port = 0``: a free port, which B logs at start).
Every wait is a request that answers when the thing happened (``kick?wait=1``); nothing sleeps.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import assert_error, envelope, make_daemon, mint_token
from prometheus_client.parser import text_string_to_metric_families

from spl.daemon.launcher import DaemonProcess

THREAD = "th_metrics_e2e"
RECORDS = 3


@dataclass
class Mesh:
    a: DaemonProcess
    b: DaemonProcess
    pair_id: str
    metrics_token: str  # metrics:read on B
    listener: str  # B's token-free listener: http://127.0.0.1:<port>/metrics

    def admin(self, node: DaemonProcess) -> dict[str, str]:
        return {"authorization": f"Bearer {node.admin_token}", "content-type": "application/json"}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    root: Path = tmp_path_factory.mktemp("metrics")
    started: list[DaemonProcess] = []
    try:
        a = make_daemon(root / "a", insecure=False)
        started.append(a)
        b = DaemonProcess(root / "b", insecure=False, log_level="info")  # info: the listener's address is logged
        config = b.home.load_config()
        config.metrics.port = 0
        b.home.save_config(config)
        started.append(b)
        b.start(port=0)
        bound = re.search(r"metrics listener on (http://\S+/metrics)", b.log_path.read_text())
        assert bound is not None, b.log_path.read_text()[-2000:]
        with httpx.Client(timeout=30) as http:
            admin_a = {"authorization": f"Bearer {a.admin_token}"}
            for clock in range(1, RECORDS + 1):
                emitted = http.post(f"{a.url}/v1/records", json=envelope(THREAD, clock), headers=admin_a)
                assert emitted.status_code == 201, emitted.text
            a_did = http.get(f"{a.url}/v1/identity", headers=admin_a).json()["did"]
            pull_token = mint_token(a, ["federation:sync"], "b pulls")
            created = http.post(
                f"{b.url}/v1/sync/pairs",
                json={"peer_did": a_did, "peer_url": a.url, "thread_id": THREAD, "token": pull_token},
                headers={"authorization": f"Bearer {b.admin_token}"},
            )
            assert created.status_code == 201, created.text
            pair_id = created.json()["pair_id"]
            kicked = http.post(
                f"{b.url}/v1/sync/pairs/{pair_id}/kick?wait=1",
                headers={"authorization": f"Bearer {b.admin_token}", "content-type": "application/json"},
            )
            assert kicked.status_code == 200 and kicked.json()["records_pulled"] == RECORDS, kicked.text
        yield Mesh(a, b, pair_id, mint_token(b, ["metrics:read"], "prometheus"), bound.group(1).rstrip(","))
    finally:
        for process in started:
            process.kill()


def scrape(mesh: Mesh, url: str | None = None) -> dict[str, Any]:
    """B's metrics parsed as Prometheus does: family name → family (counter names without ``_total``).

    From the main port with the metrics:read token, or from ``url`` (the token-free listener) with none.
    """
    headers = {} if url else {"authorization": f"Bearer {mesh.metrics_token}"}
    answer = httpx.get(url or f"{mesh.b.url}/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: family for family in text_string_to_metric_families(answer.text)}


def sample(families: dict[str, Any], name: str, **labels: str) -> float:
    """The one sample of ``name`` (a sample name, ``_total`` included) whose labels include ``labels``."""
    family = families.get(name.removesuffix("_total")) or families[re.sub(r"_(count|sum|bucket)$", "", name)]
    found = [s.value for s in family.samples if s.name == name and labels.items() <= s.labels.items()]
    assert len(found) == 1, (name, labels, family.samples)
    return float(found[0])


def test_scrape_parses_and_the_pair_figures_match_the_pair_route(mesh: Mesh) -> None:
    pair = httpx.get(f"{mesh.b.url}/v1/sync/pairs/{mesh.pair_id}", headers=mesh.admin(mesh.b), timeout=30).json()
    status = httpx.get(f"{mesh.b.url}/v1/status", headers=mesh.admin(mesh.b), timeout=30).json()
    families = scrape(mesh)
    ours = {"kind": "sync", "pair_id": mesh.pair_id}

    assert sample(families, "spl_pair_lag_records", **ours) == pair["lag_records"]
    assert sample(families, "spl_pair_lag_seconds", **ours) == pair["lag_seconds"]
    assert sample(families, "spl_pair_records_pulled_total", **ours) == pair["records_pulled"] == RECORDS
    assert sample(families, "spl_pair_records_duplicate_total", **ours) == pair["records_duplicate"]
    assert sample(families, "spl_pair_errors_total", **ours) == pair["errors_total"]
    assert sample(families, "spl_pair_state", state=pair["state"], **ours) == 1
    assert sum(s.value for s in families["spl_pair_state"].samples if s.labels["pair_id"] == mesh.pair_id) == 1
    assert sample(families, "spl_head_sequence") == status["sequence"]
    assert sample(families, "spl_sse_streams_open") == status["streams"]["open"]
    assert sample(families, "spl_reconcile_queue_depth") == 0
    pair_child = f"root/federation/pairs/{mesh.pair_id}"
    assert sample(families, "spl_supervisor_child_restarts_total", child=pair_child) == 0
    assert sample(families, "spl_supervisor_child_running", child=pair_child) == 1
    assert sample(families, "process_resident_memory_bytes") > 0  # the process collector, on our registry


def test_metrics_needs_the_metrics_read_scope(mesh: Mesh) -> None:
    url = f"{mesh.b.url}/metrics"
    assert_error(httpx.get(url, timeout=30), 401, "AUTH_REQUIRED")
    reader = mint_token(mesh.b, ["records:read"], "reader")
    refused = assert_error(httpx.get(url, headers={"x-api-key": reader}, timeout=30), 403, "SCOPE_FORBIDDEN")
    assert "metrics:read" in refused["message"]
    assert httpx.get(url, headers=mesh.admin(mesh.b), timeout=30).status_code == 200  # admin implies metrics:read


def test_requests_are_counted_by_route_template_never_by_path(mesh: Mesh) -> None:
    before = scrape(mesh)
    route = "/v1/sync/pairs/<pair_id>"

    def count(families: dict[str, Any], **labels: str) -> float:
        family = families["spl_http_requests"]
        return sum(s.value for s in family.samples if s.name.endswith("_total") and labels.items() <= s.labels.items())

    shown = httpx.get(f"{mesh.b.url}/v1/sync/pairs/{mesh.pair_id}", headers=mesh.admin(mesh.b), timeout=30)
    assert shown.status_code == 200
    missing = httpx.get(f"{mesh.b.url}/v1/no/such/th_private_name", headers=mesh.admin(mesh.b), timeout=30)
    assert missing.status_code == 404
    after = scrape(mesh)

    assert count(after, route=route, method="GET", status="200") == count(before, route=route, method="GET") + 1
    assert count(after, route="unmatched", status="404") == count(before, route="unmatched", status="404") + 1
    latency = after["spl_http_request_duration_seconds"]
    assert any(s.name.endswith("_count") and s.labels["route"] == route and s.value >= 1 for s in latency.samples)
    labels = {value for family in after.values() for s in family.samples for value in s.labels.values()}
    assert "th_private_name" not in str(labels) and f"/v1/sync/pairs/{mesh.pair_id}" not in labels


def test_the_joiners_figures_count_a_synthesis_and_a_closed_parent(mesh: Mesh) -> None:
    node, headers = mesh.b, mesh.admin(mesh.b)
    before = scrape(mesh)
    synthesised = sample(before, "spl_joiner_synthesised_total")
    closed = sample(before, "spl_joiner_parents_closed_total")

    def emit(thread: str, clock: int, act: str, body: dict[str, Any]) -> str:
        record = envelope(thread, clock, act=act, body=body)
        response = httpx.post(f"{node.url}/v1/records", json=record, headers=headers, timeout=30)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    emit("m.parent", 1, "INTEND", {"goal": "p", "join": "all"})
    emit("m.parent", 2, "INTEND", {"sub_thread": "m.child"})
    opener = emit("m.child", 1, "INTEND", {"goal": "c"})
    emit("m.child", 2, "KNOW", {"fulfills": opener, "summary": "ok"})
    deadline = time.monotonic() + 20.0
    while True:  # poll until the joiner's commit closed the parent, then read the figures
        shown = httpx.get(f"{node.url}/v1/threads/m.parent", headers=headers, timeout=30).json()
        if shown["state"] == "done" or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert shown["state"] == "done"
    after = scrape(mesh)
    assert sample(after, "spl_joiner_synthesised_total") == synthesised + 1
    assert sample(after, "spl_joiner_parents_closed_total") == closed + 1
    assert sample(after, "spl_joiner_failing") == 0


def test_the_delivery_latency_histogram_counts_what_the_pair_pulled(mesh: Mesh) -> None:
    families = scrape(mesh)
    ours = {"kind": "sync", "pair_id": mesh.pair_id}
    stats = httpx.get(f"{mesh.b.url}/v1/sync/pairs/{mesh.pair_id}/stats", headers=mesh.admin(mesh.b), timeout=30)
    window = stats.json()["latency_ms"]
    assert sample(families, "spl_pair_delivery_latency_seconds_count", **ours) == window["count"] == RECORDS
    buckets = [s for s in families["spl_pair_delivery_latency_seconds"].samples if s.name.endswith("_bucket")]
    ours_buckets = [s for s in buckets if s.labels["pair_id"] == mesh.pair_id]
    assert ours_buckets[-1].labels["le"] == "+Inf" and ours_buckets[-1].value == RECORDS
    assert [s.value for s in ours_buckets] == sorted(s.value for s in ours_buckets)  # cumulative
    total = sample(families, "spl_pair_delivery_latency_seconds_sum", **ours)
    assert total == pytest.approx(window["mean"] * RECORDS / 1000, abs=0.001)  # the window and the export agree
    assert sample(families, "spl_joiner_outbox_depth") == 0
    if "spl_records_committed" in families:  # where the daemon hands the writer's counters to Services
        assert sample(families, "spl_records_committed_total", origin="pulled") == RECORDS
        assert sample(families, "spl_records_committed_total", origin="local") > 0  # pair config, joiner


def test_the_token_free_listener_serves_only_get_metrics(mesh: Mesh) -> None:
    families = scrape(mesh, mesh.listener)  # no token at all
    assert sample(families, "spl_pair_records_pulled_total", kind="sync", pair_id=mesh.pair_id) == RECORDS
    base = mesh.listener.removesuffix("/metrics")
    refused = assert_error(httpx.post(mesh.listener, content=b"x" * 1000, timeout=30), 405, "METHOD_NOT_ALLOWED")
    assert "GET" in refused["message"]
    for path in ("/", "/v1/status", "/metrics/", "/health"):
        assert_error(httpx.get(base + path, timeout=30), 404, "ROUTE_NOT_FOUND")
    # The main port still wants the token, and a token-free request there is refused as before.
    assert_error(httpx.get(f"{mesh.b.url}/metrics", timeout=30), 401, "AUTH_REQUIRED")
    status = httpx.get(f"{mesh.b.url}/v1/status", headers=mesh.admin(mesh.b), timeout=30).json()
    assert status.get("metrics_listener", [mesh.listener]) == [mesh.listener]  # where /v1/status names it
