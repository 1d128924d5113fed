"""How the daemon hands the federation actors what they need from layers above them.

The pair actors sit below the HTTP layer and the home: they reach peers through a client factory
and keep peers' tokens through a store they are given here, never by importing ``transport`` or
``daemon``. This is the only module that builds either.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx

from spl.actors.federation import FederationManager, PeerFactory
from spl.actors.federation_pairs import FederationPairs
from spl.actors.local import LocalRecords
from spl.actors.reconciler import Reconciler, ReconcilerClient
from spl.actors.writer import WriterClient
from spl.core.config import Config
from spl.core.identity import Identity
from spl.core.pairs import is_pair_id
from spl.daemon.home import Home
from spl.store.database import ReadPool
from spl.transport.auth import TokenBook
from spl.transport.peer import PeerPool

__all__ = ["HomeTokenStore", "build_federation", "open_peer_pool"]


class HomeTokenStore:
    """Pair tokens as ``secrets/pairs/<pair_id>.token`` (mode 0600) in the home, cached in memory.

    Only a well-formed pair id (``pair_`` + 16 hex) ever names a file, so nothing a client or a
    peer sends can shape a path. Reads come from the cache after the first (a pair asks per request).
    """

    def __init__(self, home: Home) -> None:
        self.home = home
        self._cache: dict[str, str | None] = {}
        self._lock = threading.Lock()  # save/delete run in worker threads

    def _path(self, pair_id: str) -> Path:
        if not is_pair_id(pair_id):
            raise ValueError("not a pair id")
        return self.home.root / "secrets" / "pairs" / f"{pair_id}.token"

    def read(self, pair_id: str) -> str | None:
        with self._lock:
            if pair_id not in self._cache:
                self._cache[pair_id] = self.home.read_secret(self._path(pair_id))
            return self._cache[pair_id]

    def save(self, pair_id: str, token: str) -> None:
        with self._lock:
            self.home.save_secret(self._path(pair_id), token)
            self._cache[pair_id] = token

    def delete(self, pair_id: str) -> None:
        with self._lock:
            self._path(pair_id).unlink(missing_ok=True)
            self._cache[pair_id] = None

    def forget_cached(self) -> None:
        """Read every token from its file again: an import may have replaced the home's pairs under us."""
        with self._lock:
            self._cache.clear()


def open_peer_pool(
    transport: httpx.AsyncBaseTransport | None = None, *, ca_file: str | None = None
) -> Callable[[], AbstractAsyncContextManager[PeerFactory]]:
    """The peer-client factory the federation opens while it runs (one connection pool for all pairs)."""

    @asynccontextmanager
    async def opened() -> AsyncIterator[PeerFactory]:
        async with PeerPool(transport, ca_file=ca_file) as pool:
            yield pool.client

    return opened


def build_federation(
    home: Home,
    identity: Identity,
    writer: WriterClient,
    reconciler: Reconciler,
    reconciler_client: ReconcilerClient,
    pool: ReadPool,
    *,
    bind_host: str,
    peer_transport: httpx.AsyncBaseTransport | None = None,
    local: LocalRecords | None = None,
    config: Config | None = None,
    tokens: TokenBook | None = None,
    endpoint: Callable[[], str] | None = None,
) -> FederationManager:
    """The federation manager of one daemon, wired to its home, store and peers, with its federation pairs."""
    config = config or Config.fresh(identity.did, "")
    local = local if local is not None else LocalRecords(identity, writer)
    manager = FederationManager(
        identity,
        writer,
        reconciler,
        reconciler_client,
        pool,
        bind_host=bind_host,
        tokens=HomeTokenStore(home),
        open_peers=open_peer_pool(peer_transport, ca_file=config.federation.ca_file),
        local=local,
    )
    book = tokens or TokenBook()
    manager.fed = FederationPairs(
        manager,
        identity=identity,
        local=local,
        writer=writer,
        pool=pool,
        remember_token=book.remember,
        forget_token=book.mark_revoked,
        approval=lambda: config.federation.pair_approval,
        degraded_after=config.federation.degraded_after,
        auto_namespaces=config.federation.auto_namespaces,
        min_peer_poll=config.federation.min_peer_poll_interval,
        endpoint=endpoint or (lambda: f"http://{bind_host}"),
    )
    return manager
