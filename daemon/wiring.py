"""How the daemon hands the federation actors what they need from layers above them.

The pair actors sit below the HTTP layer and the home: they reach peers through a client and keep
peers' tokens through a store they are given here, never by importing ``transport`` or ``daemon``.
"""

from __future__ import annotations

from spl.actors.federation import FederationManager
from spl.actors.reconciler import Reconciler, ReconcilerClient
from spl.actors.writer import WriterClient
from spl.core.identity import Identity
from spl.daemon.home import Home
from spl.store.database import ReadPool

__all__ = ["build_federation"]


def build_federation(
    home: Home,
    identity: Identity,
    writer: WriterClient,
    reconciler: Reconciler,
    reconciler_client: ReconcilerClient,
    pool: ReadPool,
    *,
    bind_host: str,
) -> FederationManager:
    """The federation manager of one daemon, wired to its home, store and peers."""
    return FederationManager(home, identity, writer, reconciler, reconciler_client, pool, bind_host=bind_host)
