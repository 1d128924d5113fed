"""Issue 12 acceptance: the six reserved threads exist from ``spl init``, and the actor registry (``/v1/actors``).

One real daemon with authentication on, for the whole module (the last test restarts it on its own home).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from e2e_support import assert_error, envelope, make_daemon, mint_token

from spl.core.genesis import GENESIS_KIND, GENESIS_THREADS, PURPOSES
from spl.core.identity import verify_record_signature
from spl.daemon.launcher import DaemonProcess

AGENT = "did:sync:agent:builder"
PARTICIPANT = "did:test:reserved-e2e"


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = make_daemon(tmp_path_factory.mktemp("reserved") / "home", insecure=False)
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture(scope="module")
def headers(daemon: DaemonProcess) -> dict[str, dict[str, str]]:
    """Who calls: the admin, a reader (records:read), a writer (records:write), a configurer (config:write)."""
    made = {"admin": {"x-api-key": daemon.admin_token}}
    for name, scopes in (("reader", ["records:read"]), ("writer", ["records:write"]), ("config", ["config:write"])):
        made[name] = {"x-api-key": mint_token(daemon, scopes, f"reserved-e2e {name}")}
    return made


def get(daemon: DaemonProcess, path: str, who: dict[str, str], **params: Any) -> httpx.Response:
    return httpx.get(f"{daemon.url}{path}", headers=who, params=params, timeout=10.0)


def post(daemon: DaemonProcess, path: str, who: dict[str, str], body: Any) -> httpx.Response:
    return httpx.post(f"{daemon.url}{path}", headers=who, json=body, timeout=10.0)


def test_genesis_records_exist_from_init_signed_by_the_instance(daemon: DaemonProcess, headers: Any) -> None:
    did = get(daemon, "/v1/identity", headers["admin"]).json()["did"]
    for thread in GENESIS_THREADS:
        reply = get(daemon, f"/v1/threads/{thread}/records", headers["admin"])
        assert reply.status_code == 200, reply.text
        (record,) = reply.json()["data"]
        assert record["act"] == "INTEND" and record["actor"] == record["signer"] == did
        assert verify_record_signature(record["id"], did, record["sig"])
        assert record["body"]["kind"] == GENESIS_KIND
        assert (record["body"]["goal"], record["body"]["read_by"]) == PURPOSES[thread]
        fold = get(daemon, f"/v1/threads/{thread}", headers["admin"]).json()
        assert fold["participants"] == [{"actor": did, "record_count": 1, "role": "opener"}], fold


def test_each_reserved_thread_refuses_a_plain_record(daemon: DaemonProcess, headers: Any) -> None:
    for thread in GENESIS_THREADS:
        for who in ("writer", "admin"):
            reply = post(daemon, "/v1/records", headers[who], envelope(thread, 7, act="INTEND"))
            assert_error(reply, 403, "RESERVED_THREAD")


def test_a_non_admin_cannot_read_the_reserved_threads(daemon: DaemonProcess, headers: Any) -> None:
    for thread in GENESIS_THREADS:
        assert_error(get(daemon, f"/v1/threads/{thread}", headers["reader"]), 403, "SCOPE_FORBIDDEN")
        assert_error(get(daemon, f"/v1/threads/{thread}/records", headers["reader"]), 403, "SCOPE_FORBIDDEN")
    listed = {item["id"] for item in get(daemon, "/v1/threads", headers["reader"]).json()["data"]}
    assert not listed & set(GENESIS_THREADS)
    records = get(daemon, "/v1/records", headers["reader"], limit=1000).json()["data"]
    assert not {record["thread"] for record in records} & set(GENESIS_THREADS)
    admin_listed = {item["id"] for item in get(daemon, "/v1/threads", headers["admin"]).json()["data"]}
    assert set(GENESIS_THREADS) <= admin_listed


def test_register_show_and_list_actors(daemon: DaemonProcess, headers: Any) -> None:
    did = get(daemon, "/v1/identity", headers["admin"]).json()["did"]
    emitted = post(daemon, "/v1/records", headers["writer"], envelope("th_reserved_e2e", 1, actor=PARTICIPANT))
    assert emitted.status_code == 201, emitted.text
    registration = {"did": AGENT, "display_name": "Build agent", "category": "agent"}

    assert_error(post(daemon, "/v1/actors", headers["reader"], registration), 403, "SCOPE_FORBIDDEN")
    assert_error(post(daemon, "/v1/actors", headers["config"], {**registration, "category": "robot"}), 400)
    assert_error(post(daemon, "/v1/actors", headers["config"], {**registration, "did": "builder"}), 400, "INVALID_DID")

    created = post(daemon, "/v1/actors", headers["config"], registration)
    assert created.status_code == 201, created.text
    assert created.json()["status"] == "active" and created.json()["registered"] is True
    updated = post(daemon, "/v1/actors", headers["config"], {**registration, "status": "suspended"})
    assert updated.status_code == 200 and updated.json()["status"] == "suspended", updated.text

    shown = get(daemon, f"/v1/actors/{AGENT}", headers["reader"]).json()
    assert (shown["display_name"], shown["category"], shown["status"]) == ("Build agent", "agent", "suspended")
    assert shown["registration"]["record_id"] == updated.json()["registration"]["record_id"]
    participant = get(daemon, f"/v1/actors/{PARTICIPANT}", headers["reader"]).json()
    assert (participant["status"], participant["record_count"], participant["role"]) == ("unregistered", 1, "observer")
    assert_error(get(daemon, "/v1/actors/did:sync:agent:nobody", headers["reader"]), 404, "NOT_FOUND")

    listing = get(daemon, "/v1/actors", headers["reader"]).json()["data"]
    assert listing[0]["did"] == did and listing[0]["kind"] == "instance"
    by_did = {actor["did"]: actor for actor in listing}
    assert by_did[AGENT]["status"] == "suspended" and by_did[AGENT]["kind"] == "registered"
    assert by_did[PARTICIPANT]["status"] == "unregistered" and by_did[PARTICIPANT]["thread_count"] == 1
    # The registration is a LEARN on th_actor_registry signed by the instance, after the genesis INTEND.
    records = get(daemon, "/v1/threads/th_actor_registry/records", headers["admin"]).json()["data"]
    assert [record["act"] for record in records] == ["INTEND", "LEARN", "LEARN"]
    assert {record["signer"] for record in records} == {did}


def test_the_registry_survives_a_restart(daemon: DaemonProcess, headers: Any) -> None:
    before = get(daemon, "/v1/actors", headers["reader"]).json()["data"]
    assert any(actor["did"] == AGENT for actor in before)
    assert daemon.stop() == 0
    daemon.start()
    assert get(daemon, "/v1/actors", headers["reader"]).json()["data"] == before
    # Still six genesis records: a start writes none for an identity that has its own.
    for thread in GENESIS_THREADS:
        records = get(daemon, f"/v1/threads/{thread}/records", headers["admin"]).json()["data"]
        assert sum(record["act"] == "INTEND" for record in records) == 1
