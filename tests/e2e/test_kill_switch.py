"""Issue 12 acceptance: the kill switch (``spl kill --soft|--hard|--emergency``, ``spl unkill``), shown end to end.

One daemon with authentication on (``target``) is frozen at each level in turn and checked against every write
path: a client's emit, a peer's push, a pull by its pair from a second daemon (``source``, auth off), an import,
plus health and the admin routes. The freeze survives a restart; ``unkill`` lets the held pull resume by itself
with nothing lost. Both daemons live for the whole module (the tests run in order, each on the last one's state).

The first two tests drive the writer's commit path in-process, for what no daemon shows from outside: a refused
page keeps its cursor, and records parked for a namespace stay parked while frozen.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
from e2e_support import assert_error, envelope, make_daemon, mint_token
from fed_support import signed
from prometheus_client.parser import text_string_to_metric_families

from spl.core.fleet_control import FLEET_THREAD, FleetFrozen, freeze_body, unfreeze_body
from spl.core.genesis import GENESIS_KIND
from spl.core.identity import Identity
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD
from spl.core.record import validate_envelope
from spl.core.stored import Accepted, Candidate
from spl.daemon.launcher import DaemonProcess
from spl.store.database import connect_writer
from spl.store.ingest import IngestRequest, commit_batch, load_writer_state, reapply_parked
from spl.store.queries import list_records, pair_cursors, parked_count

THREAD = "th_kill_switch_pulled"
PEER = Identity.generate()  # signs what is pushed to the target
WAIT = 20.0

# -- the commit path, in-process ---------------------------------------------------------------------------------


def candidate(identity: Identity, thread: str, clock: int, act: str = "PUT", **body: Any) -> Candidate:
    checked = validate_envelope({"act": act, "actor": identity.did, "thread": thread, "clock": clock, "body": body})
    return Candidate(checked, identity.did, identity.sign_record_id(checked.id))


def system(own: Identity, thread: str, clock: int, body: dict[str, Any]) -> Candidate:
    checked = validate_envelope({"act": "LEARN", "actor": own.did, "thread": thread, "clock": clock, "body": body})
    return Candidate(checked, own.did, own.sign_record_id(checked.id))


@pytest.fixture
def store(tmp_path: Path) -> Iterator[apsw.Connection]:
    connection = connect_writer(tmp_path / "hub.db")
    yield connection
    connection.close()


def test_a_refused_page_stores_nothing_and_keeps_its_cursor(store: apsw.Connection) -> None:
    own = Identity.generate()
    state = load_writer_state(store, own.did)
    commit_batch(store, [IngestRequest([], cursor=("pair_a", "s1.0"))], state)
    commit_batch(store, [[system(own, FLEET_THREAD, 1, freeze_body("soft", "drill"))]], state)
    page = [candidate(PEER, "th_page", 1), candidate(PEER, "th_page", 2, act="INTEND")]
    ((first, second),) = commit_batch(
        store, [IngestRequest(page, cursor=("pair_a", "s1.2"), park_origin="pair_a")], state
    )
    assert isinstance(first, FleetFrozen) and isinstance(second, FleetFrozen) and first.code == "FLEET_FROZEN_SOFT"
    assert list_records(store, thread="th_page") == [] and pair_cursors(store) == {"pair_a": "s1.0"}
    # A page without an INTEND passes a soft freeze; a client's own INTEND is refused alone.
    ((put,),) = commit_batch(store, [IngestRequest(page[:1], cursor=("pair_a", "s1.1"), park_origin="pair_a")], state)
    assert isinstance(put, Accepted) and pair_cursors(store) == {"pair_a": "s1.1"}
    ((intend, ok),) = commit_batch(
        store, [[candidate(own, "th_mine", 1, act="INTEND"), candidate(own, "th_mine", 2)]], state
    )
    assert isinstance(intend, FleetFrozen) and isinstance(ok, Accepted)
    # The freeze is folded again from the store: a restart keeps it.
    assert load_writer_state(store, own.did).fleet.level == "soft"


def test_parked_records_wait_out_a_freeze(store: apsw.Connection) -> None:
    own = Identity.generate()
    state = load_writer_state(store, own.did)
    parked = candidate(PEER, "th_lab", 1, namespace="lab")
    commit_batch(store, [IngestRequest([parked], park_origin="push")], state)
    assert parked_count(store) == 1
    commit_batch(store, [[system(own, FLEET_THREAD, 1, freeze_body("hard", "drill"))]], state)
    changes = state.registry_changes
    registration = {"kind": NAMESPACE_KIND, "namespace_id": "lab", "status": "active"}
    ((registered,),) = commit_batch(store, [[system(own, REGISTRY_THREAD, 1, registration)]], state)
    assert isinstance(registered, Accepted) and state.registry_changes > changes  # configuration passes a hard freeze
    result = reapply_parked(store, state)
    assert (result.created, result.refused, parked_count(store)) == ([], 0, 1)  # held, not dropped
    changes = state.registry_changes
    commit_batch(store, [[system(own, FLEET_THREAD, 2, unfreeze_body("over"))]], state)
    assert state.registry_changes > changes  # the writer is told to re-apply
    assert [record.id for record in reapply_parked(store, state).created] == [parked.envelope.id]
    assert parked_count(store) == 0


# -- two daemons --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("kill-source") / "home", insecure=True)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("kill-target") / "home", insecure=False)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def who(target: DaemonProcess) -> dict[str, dict[str, str]]:
    made = {"admin": {"x-api-key": target.admin_token}}
    for name, scopes in (
        ("reader", ["records:read"]),
        ("writer", ["records:write"]),
        ("config", ["config:read"]),
        ("metrics", ["metrics:read"]),
    ):
        made[name] = {"x-api-key": mint_token(target, scopes, f"kill-e2e {name}")}
    return made


def call(
    daemon: DaemonProcess, method: str, path: str, headers: dict[str, str] | None = None, body: Any = None
) -> httpx.Response:
    sent = {**(headers or {}), "content-type": "application/json"}
    return httpx.request(method, f"{daemon.url}{path}", headers=sent, json=body, timeout=10.0)


def frozen(response: httpx.Response, level: str) -> None:
    """A freeze's refusal: 503, the JSON error envelope, the code naming the level, the fix named."""
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["object"] == "error" and body["code"] == f"FLEET_FROZEN_{level.upper()}", body
    assert f"({level})" in body["message"] and "spl unkill" in body["message"], body
    assert "retry-after" not in response.headers


def wait_for(check: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + WAIT
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)  # polling interval; the deadline bounds the wait
    return value


def ids_on(daemon: DaemonProcess, headers: dict[str, str]) -> list[str]:
    reply = call(daemon, "GET", f"/v1/threads/{THREAD}/records?limit=1000", headers)
    return [record["id"] for record in reply.json()["data"]] if reply.status_code == 200 else []


def emit_on_source(source: DaemonProcess, clock: int, act: str = "PUT") -> str:
    reply = call(source, "POST", "/v1/records", body=envelope(THREAD, clock, act=act))
    assert reply.status_code == 201, reply.text
    return str(reply.json()["id"])


def pair_state(target: DaemonProcess, pair_id: str) -> dict[str, Any]:
    reply = call(target, "GET", f"/v1/sync/pairs/{pair_id}", {"x-api-key": target.admin_token})
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def failing_with(target: DaemonProcess, pair_id: str, code: str) -> bool:
    status = pair_state(target, pair_id)
    return status["state"] == "failing" and (status["last_error"] or {}).get("code") == code


@pytest.fixture(scope="module")
def pair(source: DaemonProcess, target: DaemonProcess, who: Any) -> dict[str, Any]:
    """The target pulls THREAD from the source every 0.2 s; one record is synced before any freeze."""
    source_did = call(source, "GET", "/v1/identity").json()["did"]
    first = emit_on_source(source, 1)
    payload = {"peer_did": source_did, "peer_url": source.url, "thread_id": THREAD, "poll_interval": 0.2}
    created = call(target, "POST", "/v1/sync/pairs", who["admin"], payload)
    assert created.status_code == 201, created.text
    wait_for(lambda: ids_on(target, who["admin"]) == [first], "the first pull")
    return {"pair_id": created.json()["pair_id"], "expected": [first]}


def push(target: DaemonProcess, headers: dict[str, str], clock: int, act: str = "PUT") -> httpx.Response:
    return call(target, "POST", "/v1/sync/records", headers, {"records": [signed(PEER, "th_pushed", clock, act=act)]})


def test_soft_refuses_new_intends_on_every_path(
    source: DaemonProcess, target: DaemonProcess, who: Any, pair: Any
) -> None:
    assert_error(call(target, "POST", "/v1/fleet/kill", who["writer"], {"level": "soft"}), 403, "SCOPE_FORBIDDEN")
    assert_error(call(target, "POST", "/v1/fleet/kill", who["admin"], {"level": "total"}), 400, "INVALID_LEVEL")
    assert_error(call(target, "POST", "/v1/fleet/kill", who["admin"], {"level": "soft", "x": 1}), 400)
    assert_error(call(target, "POST", "/v1/fleet/unkill", who["admin"], {}), 409, "NOT_FROZEN")
    killed = call(target, "POST", "/v1/fleet/kill", who["admin"], {"level": "soft", "reason": "drill"})
    assert killed.status_code == 200 and killed.json()["level"] == "soft", killed.text
    assert_error(call(target, "POST", "/v1/fleet/kill", who["admin"], {"level": "soft"}), 409, "ALREADY_FROZEN")
    assert call(target, "GET", "/v1/fleet/control", who["config"]).json()["reason"] == "drill"
    assert_error(call(target, "GET", "/v1/fleet/control", who["reader"]), 403, "SCOPE_FORBIDDEN")

    frozen(call(target, "POST", "/v1/records", who["writer"], envelope("th_emitted", 1, act="INTEND")), "soft")
    assert call(target, "POST", "/v1/records", who["writer"], envelope("th_emitted", 2)).status_code == 201
    frozen(push(target, who["writer"], 1, act="INTEND"), "soft")
    assert push(target, who["writer"], 2).status_code == 200
    # The source opens new work: the pair's page holding it is refused whole and retried later.
    pair["expected"].append(emit_on_source(source, 2, act="INTEND"))
    wait_for(lambda: failing_with(target, pair["pair_id"], "FLEET_FROZEN_SOFT"), "the pair to hold the INTEND")
    assert pair["expected"][-1] not in ids_on(target, who["admin"])

    health = call(target, "GET", "/health")
    assert health.status_code == 200 and health.json()["fleet"] == {"level": "soft"}, health.text


def test_hard_refuses_every_write_but_configuration(
    source: DaemonProcess, target: DaemonProcess, who: Any, pair: Any
) -> None:
    moved = call(target, "POST", "/v1/fleet/kill", who["admin"], {"level": "hard", "reason": "incident"})
    assert moved.status_code == 200 and moved.json()["level"] == "hard", moved.text
    frozen(call(target, "POST", "/v1/records", who["writer"], envelope("th_emitted", 3)), "hard")
    frozen(call(target, "POST", "/v1/records", who["admin"], envelope("th_emitted", 4)), "hard")  # whatever the token
    frozen(push(target, who["writer"], 3), "hard")
    frozen(call(target, "POST", "/v1/portability/import", who["admin"], {}), "hard")  # before any upload
    # The daemon's own configuration still works: a namespace, a token.
    assert call(target, "POST", "/v1/namespaces", who["admin"], {"id": "kill-e2e"}).status_code == 201
    mint_token(target, ["records:read"], "minted while frozen")
    pair["expected"].append(emit_on_source(source, 3))
    wait_for(lambda: failing_with(target, pair["pair_id"], "FLEET_FROZEN_HARD"), "the pair to hold the page")
    assert ids_on(target, who["admin"]) == pair["expected"][:1]
    assert call(target, "GET", "/v1/threads/th_emitted/records", who["reader"]).status_code == 200  # reads go on


def test_emergency_leaves_health_identity_discovery_and_admin(target: DaemonProcess, who: Any, pair: Any) -> None:
    moved = call(target, "POST", "/v1/fleet/kill", who["admin"], {"level": "emergency", "reason": "breach"})
    assert moved.status_code == 200, moved.text
    frozen(call(target, "GET", "/v1/threads", who["reader"]), "emergency")
    frozen(call(target, "GET", "/v1/fleet/control", who["config"]), "emergency")
    frozen(push(target, who["writer"], 4), "emergency")
    for path in ("/health", "/v1/identity", "/.well-known/syncropel"):
        assert call(target, "GET", path, who["reader"]).status_code == 200, path
    scraped = call(target, "GET", "/metrics", who["metrics"])  # monitoring goes on through an emergency
    assert scraped.status_code == 200, scraped.text
    levels = {
        sample.labels["level"]: sample.value
        for family in text_string_to_metric_families(scraped.text)
        for sample in family.samples
        if sample.name == "spl_fleet_frozen"
    }
    assert levels["emergency"] == 1, scraped.text
    assert call(target, "GET", "/metrics", who["reader"]).status_code == 403  # ... with its own scope still
    assert call(target, "GET", "/health").json()["fleet"] == {"level": "emergency"}
    status = call(target, "GET", "/v1/status", who["admin"])
    assert status.status_code == 200 and status.json()["fleet"]["reason"] == "breach", status.text
    frozen(call(target, "POST", "/v1/records", who["admin"], envelope("th_emitted", 5)), "emergency")


def test_the_freeze_survives_a_restart(target: DaemonProcess, who: Any) -> None:
    assert target.stop() == 0
    target.start()
    assert call(target, "GET", "/health").json()["fleet"] == {"level": "emergency"}
    frozen(call(target, "POST", "/v1/records", who["writer"], envelope("th_emitted", 6)), "emergency")


def test_unkill_resumes_the_held_pull_with_nothing_lost(
    source: DaemonProcess, target: DaemonProcess, who: Any, pair: Any
) -> None:
    thawed = call(target, "POST", "/v1/fleet/unkill", who["admin"], {"reason": "all clear"})
    assert thawed.status_code == 200 and thawed.json()["level"] == "none", thawed.text
    assert thawed.json()["pairs_kicked"] >= 1
    expected = sorted(pair["expected"])
    wait_for(lambda: sorted(ids_on(target, who["admin"])) == expected, "every held record")
    wait_for(lambda: pair_state(target, pair["pair_id"])["state"] == "running", "the pair to run again")
    assert (
        call(target, "POST", "/v1/records", who["writer"], envelope("th_emitted", 7, act="INTEND")).status_code == 201
    )
    assert push(target, who["writer"], 5, act="INTEND").status_code == 200
    assert call(target, "GET", "/health").json()["fleet"] == {"level": "none"}
    # The whole history is on th_fleet_control, signed by the instance, after its genesis record.
    records = call(target, "GET", f"/v1/threads/{FLEET_THREAD}/records", who["admin"]).json()["data"]
    kinds = [record["body"].get("kind") for record in records]
    assert kinds == [
        GENESIS_KIND,
        "core.fleet.freeze.v1",
        "core.fleet.freeze.v1",
        "core.fleet.freeze.v1",
        "core.fleet.unfreeze.v1",
    ]
