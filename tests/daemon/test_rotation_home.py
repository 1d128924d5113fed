"""``spl identity rotate`` in the home and in the running daemon (issue 14).

The home keeps the chain in keys/ and survives a crash at any step of a rotation; a rotated daemon keeps its
identifier, signs with the new key, and still treats what its older key signed as its own configuration (a
namespace created before the rotation keeps admitting records, before and after a restart).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import apsw
import httpx
import pytest
import trio

from spl.core.genesis import INSTANCE_REGISTRY
from spl.core.identity import Identity, InstanceIdentity, verify_record_signature
from spl.core.rotation import MAX_ROTATIONS, ROTATION_KIND, RotationInvalid, verify_chain
from spl.daemon.assembly import Daemon, ServeOptions
from spl.daemon.bootstrap import initialise, plan_rotation, rotate_offline, write_missing_rotations
from spl.daemon.doctor import home_checks
from spl.daemon.home import Home, HomeError
from spl.store.database import connect_writer

DEADLINE = 30.0


def new_home(tmp_path: Path) -> Home:
    home = Home.resolve(tmp_path / "home")
    initialise(home)
    return home


def rotation_records(home: Home) -> list[dict[str, Any]]:
    connection = apsw.Connection(str(home.db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        rows = connection.execute("SELECT json FROM records WHERE thread = ? ORDER BY seq", (INSTANCE_REGISTRY,))
        records = [json.loads(text) for (text,) in rows]
    finally:
        connection.close()
    return [record for record in records if record["body"].get("kind") == ROTATION_KIND]


def test_offline_rotation_keeps_the_identifier_and_records_each_step(tmp_path: Path) -> None:
    home = new_home(tmp_path)
    did = home.load_config().did
    first = rotate_offline(home)
    second = rotate_offline(home)
    identity, problem = home.load_instance_identity(did)
    assert problem is None
    assert identity.did == did and identity.key_did == second["key"] == home.load_identity().did
    assert verify_chain(did, home.load_rotations()) == (did, first["key"], second["key"])
    assert home.load_config().did == did  # config instance.did is the identifier: unchanged
    records = rotation_records(home)
    assert [record["signer"] for record in records] == [did, first["key"]]  # each signed by the key it retires
    for record in records:
        assert verify_record_signature(str(record["id"]), str(record["signer"]), str(record["sig"]))


def test_a_rotation_cut_by_a_crash_is_finished_or_undone_at_the_next_start(tmp_path: Path) -> None:
    home = new_home(tmp_path)
    did = home.load_config().did
    identity, _ = home.load_instance_identity(did)
    plan = plan_rotation(identity)
    # Cut after the chain was written, before the key was renamed: the next load finishes the rotation.
    home.next_key_path.write_bytes(plan.new.seed)
    home.rotations_path.write_text(json.dumps([plan.statement]))
    identity, problem = home.load_instance_identity(did)
    assert problem is None and identity.key_did == plan.new.did and not home.next_key_path.exists()
    # The statement's record was never written: the next start writes it, once.
    connection = connect_writer(home.db_path, own_did=did)
    try:
        assert write_missing_rotations(connection, identity) == 1
        assert write_missing_rotations(connection, identity) == 0
    finally:
        connection.close()
    assert [record["body"]["statement"] for record in rotation_records(home)] == [plan.statement]
    # Cut before the chain was written: the unrecorded key is dropped, the current one stays.
    stray = Identity.generate()
    home.next_key_path.write_bytes(stray.seed)
    identity, problem = home.load_instance_identity(did)
    assert problem is None and identity.key_did == plan.new.did and not home.next_key_path.exists()


def test_a_key_replaced_by_hand_is_a_problem_and_cannot_be_rotated(tmp_path: Path) -> None:
    home = new_home(tmp_path)
    did = home.load_config().did
    home.key_path.write_bytes(Identity.generate().seed)  # not save_identity: the config still names the old DID
    identity, problem = home.load_instance_identity(did)
    assert identity.did == did and problem is not None and "is not the current key" in problem
    with pytest.raises(HomeError, match="cannot rotate"):
        rotate_offline(home)
    home.save_identity(identity)  # a new identity (spl identity generate) starts a new identifier: no chain
    assert not home.rotations_path.exists()


async def test_a_rotated_daemon_keeps_its_own_configuration(tmp_path: Path) -> None:
    home = new_home(tmp_path)
    did = home.load_config().did

    async def emit_into(url: str, namespace: str, clock: int) -> httpx.Response:
        record = {
            "act": "PUT",
            "actor": "did:test:rot",
            "thread": "th_rot",
            "clock": clock,
            "body": {"namespace": namespace},
        }
        return await trio.to_thread.run_sync(lambda: httpx.post(f"{url}/v1/records", json=record, timeout=10))

    with trio.fail_after(DEADLINE):
        daemon = Daemon(home, ServeOptions(port=0, insecure_localhost=True, handle_signals=False))
        async with trio.open_nursery() as nursery:
            (url, *_) = await nursery.start(daemon.run)
            created = await trio.to_thread.run_sync(lambda: httpx.post(f"{url}/v1/namespaces", json={"id": "before"}))
            assert created.status_code == 201, created.text
            rotated = await trio.to_thread.run_sync(
                lambda: httpx.post(f"{url}/v1/identity/rotate", json={}, timeout=10)
            )
            assert rotated.status_code == 200, rotated.text
            new_key = rotated.json()["key"]
            answer = await emit_into(url, "before", 1)
            assert answer.status_code == 201, answer.text  # the old key's namespace still admits records
            assert answer.json()["signer"] == new_key
            created = await trio.to_thread.run_sync(lambda: httpx.post(f"{url}/v1/namespaces", json={"id": "after"}))
            assert created.status_code == 201, created.text
            assert (await emit_into(url, "after", 2)).status_code == 201  # and the new key's does
            agent = {"did": "did:sync:agent:rotated", "display_name": "After", "category": "agent"}
            registered = await trio.to_thread.run_sync(lambda: httpx.post(f"{url}/v1/actors", json=agent, timeout=10))
            assert registered.status_code in (200, 201), registered.text
            shown = await trio.to_thread.run_sync(lambda: httpx.get(f"{url}/v1/actors/{agent['did']}", timeout=10))
            assert shown.json()["status"] == "active", shown.text  # a registration the new key signed applies
            daemon.request_stop()

        daemon = Daemon(home, ServeOptions(port=0, insecure_localhost=True, handle_signals=False))
        assert daemon.identity.did == did and daemon.identity.key_did == new_key
        async with trio.open_nursery() as nursery:
            (url, *_) = await nursery.start(daemon.run)
            for clock, namespace in ((3, "before"), (4, "after")):
                answer = await emit_into(url, namespace, clock)
                assert answer.status_code == 201, answer.text
            identity = await trio.to_thread.run_sync(lambda: httpx.get(f"{url}/v1/identity", timeout=10))
            assert identity.json()["did"] == did
            # After the restart the registries are folded from the store: what the new key signed still counts.
            listed = await trio.to_thread.run_sync(lambda: httpx.get(f"{url}/v1/namespaces", timeout=10))
            assert {"before", "after"} <= {entry["id"] for entry in listed.json()["data"]}, listed.text
            shown = await trio.to_thread.run_sync(lambda: httpx.get(f"{url}/v1/actors/{agent['did']}", timeout=10))
            assert shown.json()["status"] == "active", shown.text
            daemon.request_stop()


def test_a_chain_at_its_limit_refuses_one_more_rotation(tmp_path: Path) -> None:
    full = InstanceIdentity(Identity.generate().seed, statements=[{}] * MAX_ROTATIONS)
    with pytest.raises(RotationInvalid, match="the most a chain may hold") as refused:
        plan_rotation(full)
    assert refused.value.code == "ROTATION_LIMIT"


def test_doctor_passes_a_rotated_home_and_fails_a_swapped_key(tmp_path: Path) -> None:
    """`spl doctor` follows the chain: a rotated home's key is fine, and a key no chain leads to is named."""
    home = new_home(tmp_path)
    rotate_offline(home)
    checks, _ = home_checks(home)
    key = next(check for check in checks if check.name == "identity key")
    assert key.status == "ok", key

    home.save_identity(Identity.generate())  # a key replaced by hand (and the chain gone): nothing leads to it
    checks, _ = home_checks(home)
    key = next(check for check in checks if check.name == "identity key")
    assert key.status == "fail" and "rotation chain" in key.message, key
