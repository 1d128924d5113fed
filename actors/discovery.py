"""Peer discovery (issue 14): the mDNS listener and, opt-in, broadcaster for ``_syncropel._tcp.local``.

The daemon's ``discovery`` child (``daemon/assembly.py``). It keeps what the LAN announced in a bounded,
expiring table (:class:`spl.core.discovery.MdnsTable`) for ``GET /v1/discovery/mdns``, and holds the did:sync
directory when ``[sync.discovery] serve_directory`` is on (:attr:`Discovery.directory`, used by the routes).

Why a thread: zeroconf runs its own asyncio loop in threads of its own, and its slow parts block (registering
a service probes the name for ~1.5 s; closing one sends goodbyes for ~0.25 s). One plain thread owns the whole
zeroconf lifetime (open, browse, announce, wait, close), so the trio side only starts it and sets an event: the
daemon's start is not delayed by it and a stop returns at once (the child's shutdown budget is 0.2 s), the
thread finishing its goodbyes on its own. The table is shared under a lock held for microseconds on each side.

What the LAN sends is hostile: each announcement is decoded and validated (:func:`spl.core.discovery.decode_txt`)
before it is kept, the table is capped, and the daemon never fetches anything an announcement names (the CLI
verifies a found peer's manifest when an operator asks: ``spl fleet sync peers discover``).
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address, ip_address
from typing import Any
from urllib.parse import urlsplit

from spl.core.discovery import SERVICE_TYPE, Directory, FoundPeer, MdnsTable, decode_txt, encode_txt
from spl.core.text import printable
from spl.runtime.supervisor import ChildContext

__all__ = ["Discovery"]

log = logging.getLogger("spl.discovery")

RESOLVE_TIMEOUT_MS = 1000  # how long the listener waits for an announced service's TXT and address records
# How often the entries are re-read from zeroconf's cache, which zeroconf keeps fresh by re-querying before the
# records expire (RFC 6762 §5.2): a peer still there gets a new last_seen, one gone without a goodbye leaves the
# cache and is removed by zeroconf's own Removed event (the table's TTL is the backstop).
REFRESH_SECONDS = 60.0


class Discovery:
    """The daemon's discovery child: keeps what mDNS has seen (bounded, expiring) for ``GET /v1/discovery/mdns``.

    Attributes:
        directory: The did:sync directory this instance serves, or None (``serve_directory`` off).
        listening: Whether the mDNS listener runs (``mdns_listen``).
        broadcasting: Whether this instance announces itself (``mdns_broadcast``).
        error: Why zeroconf could not run (no multicast interface…), or None.
    """

    def __init__(self, services: Any, *, clock: Callable[[], float] = time.time) -> None:
        self.services = services
        settings = services.config.sync.discovery
        self.listening: bool = settings.mdns_listen
        self.broadcasting: bool = settings.mdns_broadcast
        self.directory: Directory | None = Directory() if settings.serve_directory else None
        self.error: str | None = None
        self.rejected = 0  # announcements refused as malformed (a count: their text is not worth keeping)
        self._clock = clock
        self._lock = threading.Lock()
        self._table = MdnsTable()
        self._stop = threading.Event()
        self._own_did: str | None = None

    # -- what the routes read (trio thread) -------------------------------------------------------------

    def peers(self) -> list[dict[str, Any]]:
        """The peers mDNS announced, most recently seen first (unverified: the CLI checks their manifests)."""
        with self._lock:
            found = self._table.peers(self._clock())
        return [peer.to_wire() for peer in found]

    def status(self) -> dict[str, Any]:
        return {
            "listening": self.listening and self.error is None,
            "broadcasting": self.broadcasting and self.error is None,
            "error": self.error,
            "rejected_announcements": self.rejected,
        }

    # -- what the listener calls (zeroconf's thread) ------------------------------------------------------

    def heard(self, name: str, properties: dict[Any, Any]) -> FoundPeer | None:
        """Record one announcement (its TXT properties); a malformed one is counted and dropped."""
        try:
            peer = decode_txt(properties, name=name, now=self._clock())
        except ValueError as exc:
            with self._lock:
                self.rejected += 1
            log.debug("mDNS: %s", exc)
            return None
        if peer.did == self._own_did:
            return None
        with self._lock:
            self._table.seen(name, peer)
        return peer

    def lost(self, name: str) -> None:
        """A goodbye (or zeroconf's cache expiry): the service is gone."""
        with self._lock:
            self._table.gone(name)

    # -- the child ---------------------------------------------------------------------------------------

    async def run(self, ctx: ChildContext) -> None:
        ctx.started()
        if self.listening or self.broadcasting:
            self._own_did = self.services.identity.did
            announce = self._announcement() if self.broadcasting else None
            thread = threading.Thread(target=self._serve_mdns, args=(announce,), name="spl-mdns", daemon=True)
            thread.start()
        try:
            await ctx.stop_requested.wait()
        finally:
            self._stop.set()  # the thread closes zeroconf (goodbyes included) without holding up the stop

    def _announcement(self) -> tuple[str, dict[str, str], int, list[bytes]]:
        """What this instance announces: its service name, TXT, port and IPv4 address (from its endpoint)."""
        services = self.services
        advertises = services.manifest.get("advertises") if isinstance(services.manifest, dict) else None
        namespaces = advertises.get("namespaces", []) if isinstance(advertises, dict) else []
        txt = encode_txt(services.identity.did, services.endpoint, namespaces or ["default"])
        parts = urlsplit(services.endpoint)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        addresses: list[bytes] = []
        try:
            address = ip_address(parts.hostname or "")
            if isinstance(address, IPv4Address) and not address.is_unspecified:
                addresses.append(address.packed)
        except ValueError:
            pass  # a name: peers use the endpoint in the TXT record, which is what they dial
        label = f"spl-{services.identity.fingerprint[:16]}"
        return label, txt, port, addresses

    def _refresh(self, cached: Callable[[str], dict[Any, Any] | None]) -> None:
        """Re-read each listed service through ``cached`` (its TXT properties in zeroconf's cache, or None):
        one still there is seen now; one absent keeps its last_seen (zeroconf's Removed or the TTL drops it)."""
        with self._lock:
            names = self._table.names()
        for name in names:
            properties = cached(name)
            if properties is not None:
                self.heard(name, properties)

    def _serve_mdns(self, announce: tuple[str, dict[str, str], int, list[bytes]] | None) -> None:
        """The zeroconf thread: open, browse and/or announce, wait for the stop, close."""
        from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

        try:
            zc = Zeroconf(ip_version=IPVersion.V4Only)
        except Exception as exc:  # no multicast-capable interface, port 5353 refused…
            self.error = f"mDNS is unavailable on this host ({printable(exc, 160)}); discovery by mDNS is off"
            log.warning("%s", self.error)
            return
        try:
            if self.listening and not self._stop.is_set():

                def on_change(
                    zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
                ) -> None:
                    if state_change is ServiceStateChange.Removed:
                        self.lost(name)
                        return
                    info = zeroconf.get_service_info(service_type, name, timeout=RESOLVE_TIMEOUT_MS)
                    if info is not None:
                        self.heard(name, dict(info.properties))

                ServiceBrowser(zc, SERVICE_TYPE, handlers=[on_change])
            if announce is not None and not self._stop.is_set():
                label, txt, port, addresses = announce
                info = ServiceInfo(
                    SERVICE_TYPE,
                    f"{label}.{SERVICE_TYPE}",
                    addresses=addresses or [socket.inet_aton("127.0.0.1")],
                    port=port,
                    properties=txt,
                    server=f"{label}.local.",
                )
                zc.register_service(info, allow_name_change=True)

            def cached(name: str) -> dict[Any, Any] | None:
                info = ServiceInfo(SERVICE_TYPE, name)
                return dict(info.properties) if info.load_from_cache(zc) else None  # the cache: no network

            while not self._stop.wait(REFRESH_SECONDS):
                self._refresh(cached)
        except Exception as exc:
            self.error = f"mDNS stopped: {printable(exc, 160)}"
            log.warning("%s", self.error)
        finally:
            zc.close()
