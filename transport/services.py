"""What the HTTP front door needs from the daemon, gathered in one object.

Routes never touch actor state directly: they send messages through the clients held
here (writer, hub) or run read-only queries on the read pool in a worker thread.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio

from spl.actors.hub import HubClient
from spl.actors.local import LocalRecords
from spl.actors.reconciler import ReconcilerClient
from spl.actors.writer import WriterClient
from spl.core.actor_registry import ActorRegistry
from spl.core.config import Config
from spl.core.errors import Unavailable
from spl.core.fleet_control import FleetState
from spl.core.identity import Identity
from spl.store.database import ReadPool
from spl.transport.auth import TokenBook

__all__ = ["Services"]

T = TypeVar("T")


async def _cannot_adopt(identity: Identity | None) -> tuple[str, str]:
    raise Unavailable("this steward was started without import support; restart it with `spl serve`")


@dataclass
class Services:
    home_root: Path  # the instance home, shown by /v1/status (routes open no file by this path)
    config: Config
    identity: Identity
    pool: ReadPool
    writer: WriterClient
    hub: HubClient
    tokens: TokenBook
    auth_required: bool
    stopping: trio.Event = field(default_factory=trio.Event)
    started_at: float = field(default_factory=time.time)
    endpoint: str = "http://127.0.0.1:9100"
    bind_host: str = "127.0.0.1"  # what the HTTP server listens on (0.0.0.0 = every interface)
    snapshot: Callable[[], dict[str, Any]] = field(default=lambda: {})
    head_sequence: Callable[[], int] = field(default=lambda: 0)
    manifest: dict[str, Any] = field(default_factory=dict)
    federation: Any = None  # actors.federation.FederationManager once started
    # What is degraded right now (a child down, the store full…); /health answers 503 while non-empty.
    problems: Callable[[], list[str]] = field(default=lambda: [])
    # Records this instance signs (emits, namespaces); built from identity and writer when not given.
    local_records: LocalRecords | None = None
    # Records from peers (push); the reconciler's client.
    reconciler: ReconcilerClient | None = None
    # One import at a time (``/v1/portability/import``), and what the daemon does once one committed: adopt
    # the bundle's identity (or keep ours) and rebuild what was folded from the old one. Answers
    # (identity status, a note for the operator). Set by the daemon; the default refuses.
    import_lock: trio.Lock = field(default_factory=trio.Lock)
    # The files the portability routes touch, given by the daemon (which owns the home's layout): the store an
    # export reads in a connection of its own, and the private folder an import's upload is spooled to.
    store_path: Path | None = None
    spool_dir: Path | None = None
    # The joiner's figures (``spl.actors.joiner``): syntheses written, parents closed, whether it is failing now.
    joiner: Callable[[], dict[str, Any]] = field(default=lambda: {})
    # Records committed since start by origin (local, pulled, pushed, import, parked): the store writer's counters.
    records_committed: Callable[[], dict[str, int]] = field(default=lambda: {})
    # The kill switch as the store writer holds it (``spl.core.fleet_control``): the HTTP gate reads it.
    fleet: Callable[[], FleetState] = field(default=FleetState)
    adopt_import: Callable[[Identity | None], Awaitable[tuple[str, str]]] = field(default=_cannot_adopt)
    # The actor registry folded from th_actor_registry (own records only), kept current by the actor routes:
    # loaded when the app starts (or on first use), each committed registration applied, reloaded after an
    # import (``spl.transport.routes_actors.reload_actor_registry``). None until loaded.
    actor_registry: ActorRegistry | None = None
    discovery: Any = None  # actors.discovery.Discovery once started (GET /v1/discovery/mdns)
    # spl identity rotate (issue 14): set by the daemon; None where rotation is not wired (tests' bare apps).
    rotate_identity: Callable[..., Awaitable[Any]] | None = None

    def __post_init__(self) -> None:
        if self.local_records is None:
            self.local_records = LocalRecords(self.identity, self.writer)

    @property
    def local(self) -> LocalRecords:
        """The one path for a record this instance vouches for: sign, commit, answer after COMMIT."""
        assert self.local_records is not None  # set by __post_init__
        return self.local_records

    def remote_ingest(self) -> ReconcilerClient:
        """The one path for records from peers: the reconciler (pulled pages and pushes alike)."""
        if self.reconciler is None:
            raise Unavailable("the reconciler is starting; retry in a moment", code="STORE_UNAVAILABLE")
        return self.reconciler

    async def read(self, query: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``query(connection, *args, **kwargs)`` on a pooled read connection, off the trio thread."""

        def run() -> T:
            with self.pool.connection() as connection:
                return query(connection, *args, **kwargs)

        return await trio.to_thread.run_sync(run)
