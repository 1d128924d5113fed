"""Export and import of an instance that rotated its key (issues 11 and 14): the same instance on the other side.

The bundle of a rotated instance keeps ``source_did`` = its identifier, is signed by the current key, and carries
``identity/rotations.json`` linking the two (docs/portability.md). After the import the new home answers with the
same identifier, the same current key and chain, a manifest its peers' pins accept, and records that verify.
Before this, the import adopted the signing key as a new identifier: every peer's pin broke.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from cli_support import cli_for

from spl.core.identity import verify_record_signature
from spl.core.manifest import check_peer_manifest
from spl.daemon.launcher import DaemonProcess


def _admin(node: DaemonProcess) -> dict[str, str]:
    return {"authorization": f"Bearer {node.admin_token}"}


def test_a_rotated_instance_moves_whole(tmp_path: Path) -> None:
    source, target = DaemonProcess(tmp_path / "a", insecure=False), DaemonProcess(tmp_path / "b", insecure=False)
    try:
        source.start(port=0)
        target.start(port=0)
        on_a, on_b = cli_for(source), cli_for(target)
        on_a("intend", "before the rotation", "--thread", "th_moved").ok()
        rotated = httpx.post(f"{source.url}/v1/identity/rotate", json={}, headers=_admin(source), timeout=10)
        assert rotated.status_code == 200, rotated.text
        on_a("intend", "after the rotation", "--thread", "th_moved").ok()
        keys = httpx.get(f"{source.url}/v1/identity/keys", headers=_admin(source), timeout=10).json()

        bundle = tmp_path / "a.tar.zst"
        exported = on_a("export", "--out", str(bundle)).ok().out
        assert f"identity: included ({keys['did']})" in " ".join(exported.split())
        on_b("import", str(bundle)).ok()

        assert httpx.get(f"{target.url}/v1/identity/keys", headers=_admin(target), timeout=10).json() == keys
        manifest = httpx.get(f"{target.url}/.well-known/syncropel", timeout=10).content
        check_peer_manifest(manifest, where=target.url, expected_did=keys["did"], now=time.time())  # a peer's pin holds
        records = httpx.get(f"{target.url}/v1/threads/th_moved/records", headers=_admin(target), timeout=10).json()[
            "data"
        ]
        assert len(records) == 2
        assert all(verify_record_signature(r["id"], r["signer"], r["sig"]) for r in records)
        assert {r["signer"] for r in records} == {keys["did"], rotated.json()["key"]}
        # The moved instance signs with the current key, as the same instance.
        on_b("intend", "on the new home", "--thread", "th_moved").ok()
        newest = httpx.get(f"{target.url}/v1/threads/th_moved/records", headers=_admin(target), timeout=10)
        assert newest.json()["data"][-1]["signer"] == rotated.json()["key"]
    finally:
        source.stop()
        target.stop()
