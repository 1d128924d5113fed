"""The discovery child's bookkeeping, fed with zeroconf's own objects, and its start and stop on the trio side.

The real LAN (two daemons announcing and hearing each other) is ``tests/e2e/test_discovery_e2e.py``; here the
announcements are built with zeroconf's ``ServiceInfo``, so the TXT bytes are exactly what the listener gets.
"""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import trio
from zeroconf import ServiceInfo

from spl.actors.discovery import Discovery
from spl.core.config import Config
from spl.core.discovery import SERVICE_TYPE, encode_txt
from spl.runtime.child import ChildContext

OWN = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
PEER = "did:key:z6MkkaGNmeDcBNvrfqptZsrVhv6VAKcjKM32fReHLykiCCak"


def discovery(*, listen: bool = False, broadcast: bool = False, now: float = 1_800_000_000.0) -> Discovery:
    config = Config.fresh(OWN, "")
    config.sync.discovery.mdns_listen = listen
    config.sync.discovery.mdns_broadcast = broadcast
    services = SimpleNamespace(
        config=config,
        identity=SimpleNamespace(did=OWN, fingerprint="ab" * 16),
        endpoint="http://127.0.0.1:9",
        manifest={"advertises": {"namespaces": ["default"]}},
    )
    return Discovery(services, clock=lambda: now)


def announcement(name: str, properties: dict[str, Any]) -> dict[bytes, bytes | None]:
    info = ServiceInfo(SERVICE_TYPE, f"{name}.{SERVICE_TYPE}", port=9100, properties=properties)
    return dict(info.properties)


def test_an_announcement_is_listed_and_a_goodbye_removes_it() -> None:
    child = discovery()
    name = f"peer.{SERVICE_TYPE}"
    child.heard(name, announcement("peer", encode_txt(PEER, "http://10.0.0.2:9100", ["default"])))
    (listed,) = child.peers()
    assert listed["did"] == PEER and listed["endpoint"] == "http://10.0.0.2:9100" and listed["method"] == "mdns"
    assert listed["last_seen"] == "2027-01-15T08:00:00Z"
    child.lost(name)
    assert child.peers() == []


def test_malformed_announcements_and_our_own_are_not_listed() -> None:
    child = discovery()
    child._own_did = OWN
    child.heard("own", announcement("own", encode_txt(OWN, "http://127.0.0.1:9", ["default"])))
    child.heard("bad", announcement("bad", {"did": "did:key:z6Mk", "ep": "file:///etc/passwd"}))
    child.heard("empty", announcement("empty", {}))
    assert child.peers() == [] and child.status()["rejected_announcements"] == 2


def test_a_flooding_lan_fills_the_table_to_its_cap_only() -> None:
    child = discovery()
    for index in range(300):
        child.heard(
            f"s{index}", announcement(f"s{index}", encode_txt(PEER, f"http://10.0.{index // 250}.{index % 250}:1", []))
        )
    listed = child.peers()
    assert len(listed) == 256 and listed[0]["endpoint"] == "http://10.0.1.49:1"  # the newest first


def test_the_child_is_ready_at_once_and_stops_within_its_budget() -> None:
    """zeroconf starts and stops in a thread of its own: neither the start nor the stop waits for it."""
    child = discovery(listen=True, broadcast=True)
    timings: dict[str, float] = {}

    async def main() -> None:
        ready = trio.Event()
        context = ChildContext("discovery", 0, None, ready.set)  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            begun = trio.current_time()
            nursery.start_soon(child.run, context)
            await ready.wait()
            timings["start"] = trio.current_time() - begun
            stopping = trio.current_time()
            context.request_stop()
        timings["stop"] = trio.current_time() - stopping

    trio.run(main)
    assert timings["start"] < 0.05 and timings["stop"] < 0.2, timings
    for thread in threading.enumerate():  # the zeroconf thread ends by itself (goodbyes sent) soon after
        if thread.name == "spl-mdns":
            thread.join(10)
            assert not thread.is_alive()


def test_a_peer_still_in_zeroconfs_cache_is_seen_again_and_one_gone_is_not() -> None:
    """The periodic refresh reads zeroconf's cache: a live peer's last_seen moves, an absent one's does not."""
    now = [1_800_000_000.0]
    child = discovery()
    child._clock = lambda: now[0]
    name = f"peer.{SERVICE_TYPE}"
    child.heard(name, announcement("peer", encode_txt(PEER, "http://10.0.0.2:9100", ["default"])))
    child.heard(f"gone.{SERVICE_TYPE}", announcement("gone", encode_txt(PEER, "http://10.0.0.3:9100", [])))
    cached = {name: announcement("peer", encode_txt(PEER, "http://10.0.0.2:9100", ["default"]))}
    now[0] += 60
    child._refresh(cached.get)
    seen = {peer["endpoint"]: peer["last_seen"] for peer in child.peers()}
    assert seen == {"http://10.0.0.2:9100": "2027-01-15T08:01:00Z", "http://10.0.0.3:9100": "2027-01-15T08:00:00Z"}
