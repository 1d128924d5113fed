"""Concurrent changes to one pair are applied one at a time: a delete stays deleted, an add happens once.

An attacker's pass found that a PATCH racing a DELETE committed its 'active' record after the 'removed' one, so the
deleted pair came back (without its token) at the next start; two identical adds could both pass the duplicate
check. Each change now reads the pair and commits under one lock.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from spl.daemon.launcher import DaemonProcess

PEER = {"peer_did": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "peer_url": "http://127.0.0.1:1"}


def test_a_delete_racing_changes_stays_deleted_after_a_restart(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "home")
    daemon.start(port=0)
    try:
        with httpx.Client(base_url=daemon.url, timeout=30) as http:
            created = http.post("/v1/sync/pairs", json={**PEER, "thread_id": "th_race"})
            assert created.status_code == 201, created.text
            pair = f"/v1/sync/pairs/{created.json()['pair_id']}"

            def change(index: int) -> int:
                if index == 4:
                    return http.request("DELETE", pair, headers={"content-type": "application/json"}).status_code
                return http.patch(pair, json={"poll_interval": 1 + index}).status_code

            with ThreadPoolExecutor(9) as pool:
                codes = list(pool.map(change, range(9)))
        assert codes[4] == 200 and set(codes) <= {200, 404}, codes  # a change after the delete is a 404, never 500
        daemon.stop()
        daemon.start()
        listed = httpx.get(f"{daemon.url}/v1/sync/pairs", timeout=10).json()["data"]
        assert listed == []
    finally:
        daemon.kill()


def test_the_same_pair_added_at_once_is_added_once(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path / "home")
    daemon.start(port=0)
    try:
        with httpx.Client(base_url=daemon.url, timeout=30) as http, ThreadPoolExecutor(6) as pool:
            codes = sorted(
                pool.map(
                    lambda _: http.post("/v1/sync/pairs", json={**PEER, "thread_id": "th_twice"}).status_code, range(6)
                )
            )
            listed = http.get("/v1/sync/pairs").json()["data"]
        assert codes == [201, 409, 409, 409, 409, 409]
        assert len(listed) == 1
    finally:
        daemon.kill()
