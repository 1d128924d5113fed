"""The federation manager: the pair supervisor, pair persistence, and the figures of every pair.

Runs as one child of the root supervisor. It owns a nested supervisor with one child per pair,
and the pairs' status and statistics. It reaches peers through the peer-client factory and keeps
peers' bearer tokens in the token store it is handed (``daemon/wiring.py`` builds both): nothing
here imports an HTTP library, the transport layer or the home. Pair configuration is written as
records on ``th_federation_pairs`` (so it survives restarts and exports); a token is kept outside
the record log.

Only pairs this instance wrote and signed are loaded (``fold_pair_records``), and a token
is only ever stored under a well-formed pair id: the pair list decides which URL gets
which token, so nothing a client or a peer sends may shape it.

Pausing a pair closes its gate in the pair supervisor (``Supervisor.pause``): the tree shows it
``paused``, and the pair, which receives everything through its inbox, does nothing until resumed.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import trio

from spl.actors.local import LocalRecords
from spl.actors.loop import next_message
from spl.actors.messages import Kick, Reply, Resume
from spl.actors.pair import PairActor, PairDeps, PeerLink
from spl.actors.reconciler import Reconciler, ReconcilerClient
from spl.actors.writer import WriterClient
from spl.core.errors import Conflict, InvalidRequest, NotFound, Unavailable
from spl.core.feed import PeerError
from spl.core.identity import Identity
from spl.core.pair_machine import ConfigChanged
from spl.core.pairs import (
    PAIRS_THREAD,
    PairConfig,
    PairStatus,
    fold_pair_records,
    is_loopback_host,
    is_pair_id,
    new_pair_id,
    peer_address,
    validate_peer_token,
)
from spl.core.rotation import own_keys
from spl.core.stored import StoredRecord
from spl.core.syncstats import LatencyWindow, PairStats, summarise
from spl.runtime.supervisor import ChildContext, ChildSpec, Supervisor
from spl.store.database import ReadPool
from spl.store.queries import pair_cursors, thread_objects

__all__ = ["FederationManager", "FederationPeer", "PeerFactory", "TokenStore", "is_loopback_host"]

log = logging.getLogger("spl.federation")

PAIR_INBOX = 64  # control messages plus the outcomes of the pair's own I/O (a few ops, ≤ 16 stream batches)
SETTABLE = frozenset({"mode", "poll_interval"})
PROBE_DEADLINE = 5.0  # seconds a new pair waits for the peer's manifest (self-pair and duplicate checks)


class FederationPeer(PeerLink, Protocol):
    """A peer as the manager needs it: what a pair needs, and who the peer proves it is."""

    async def peer_did(self) -> str: ...


PeerFactory = Callable[[str], FederationPeer]  # peer_url → client (sharing one connection pool)


class TokenStore(Protocol):
    """Where the bearer tokens peers minted for our pairs live (outside the record log, never logged)."""

    def read(self, pair_id: str) -> str | None: ...

    def save(self, pair_id: str, token: str) -> None: ...

    def delete(self, pair_id: str) -> None: ...

    def forget_cached(self) -> None:
        """Drop what was read so far: the next read goes to the store again (after an import replaced it)."""


# Pairs stop one after another inside the daemon's 2.5 s "stop pairs" phase. A pair has nothing to flush (its
# cursor commits with its records) and normally ends at once when cancelled; the cap only bounds how long one
# stuck pair can hold up the ones stopped after it.
PAIR_SHUTDOWN_BUDGET = 0.25


@dataclass
class PairView:
    config: PairConfig
    status: PairStatus
    stats: PairStats
    actor: PairActor | None = None


class FederationManager:
    def __init__(
        self,
        identity: Identity,
        writer: WriterClient,
        reconciler: Reconciler,
        reconciler_client: ReconcilerClient,
        pool: ReadPool,
        *,
        bind_host: str,
        tokens: TokenStore,
        open_peers: Callable[[], AbstractAsyncContextManager[PeerFactory]],
        local: LocalRecords,
        rng: random.Random | None = None,
    ) -> None:
        self.identity = identity
        self.writer = writer
        self.reconciler = reconciler
        self.reconciler_client = reconciler_client
        self.pool = pool
        self.bind_host = bind_host
        self.tokens = tokens
        self.open_peers = open_peers
        self.local = local  # pair configuration records are signed and committed like any local record
        self.rng = rng or random.Random()
        self.pairs: dict[str, PairView] = {}
        self.supervisor = Supervisor("pairs", max_restarts=1000, period=60.0)
        self._peers: PeerFactory | None = None
        # Changes to existing pairs (remove, pause, resume, update) run one at a time: each awaits a commit
        # between reading the pair and acting on it, and a change racing a remove would otherwise commit after
        # the removal record and bring the pair back at the next start.
        self._changing = trio.Lock()
        self._pullers: dict[str, PairActor] = {}  # federation pairs' pullers (actors/federation_pairs.py)
        # Their rolling figures (delivery latency for /metrics), kept across a puller's restarts like a sync pair's.
        self.puller_stats: dict[str, PairStats] = {}
        self.fed: Any = None  # the FederationPairs this manager runs pullers for (set by daemon/wiring.py)

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, ctx: ChildContext) -> None:
        async with self.open_peers() as peers:
            self._peers = peers
            try:
                configs, cursors = await trio.to_thread.run_sync(self._load)
                federation_pairs = await trio.to_thread.run_sync(self.fed.load) if self.fed is not None else None
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.supervisor.run)
                    for config in configs.values():
                        status = PairStatus(config.pair_id, cursor=cursors.get(config.pair_id, ""))
                        await self._start_pair(config, status)
                    announcing = trio.CancelScope()
                    if federation_pairs is not None:
                        await self.fed.start(*federation_pairs)
                        nursery.start_soon(self._announce, announcing)
                    ctx.started()
                    while await next_message(ctx) is not None:
                        pass
                    announcing.cancel()
                    self.supervisor.shutdown()
            finally:
                self._peers = None

    async def _announce(self, scope: trio.CancelScope) -> None:
        """The federation pairs' announcer (a new endpoint told to peers), until the manager stops."""
        with scope:
            await self.fed.announcer()

    def endpoint_known(self) -> None:
        """The daemon calls this once its HTTP server is bound (and whenever its advertised URL changes): pairs
        whose peer knows another URL of ours are announced at once, with the right one."""
        if self.fed is not None:
            self.fed.endpoint_known()

    async def reload_after_import(self) -> None:
        """After ``spl import`` committed (the identity already swapped in place): stop every puller, fold sync
        pairs, federation pairs and consent again from the store under ``self.identity.did``, and restart the
        pullers from their stored cursors. Announces nothing itself: a federation pair whose peer knows another
        URL than ours is then announced by the federation pairs' announcer, as at any start."""
        self._peers_or_unavailable()
        async with self._changing:
            for pair_id in list(self.pairs):
                await self.supervisor.remove_child(pair_id)
            self.pairs.clear()
            await trio.to_thread.run_sync(self.tokens.forget_cached)
            configs, cursors = await trio.to_thread.run_sync(self._load)
            for config in configs.values():
                await self._start_pair(config, PairStatus(config.pair_id, cursor=cursors.get(config.pair_id, "")))
        if self.fed is not None:
            await self.fed.reload(*await trio.to_thread.run_sync(self.fed.load))
        federation_pairs = len(self.fed.pairs) if self.fed is not None else 0
        log.info("pairs reloaded after an import: %d sync, %d federation", len(self.pairs), federation_pairs)

    def _load(self) -> tuple[dict[str, PairConfig], dict[str, str]]:
        with self.pool.connection() as connection:
            records = thread_objects(connection, PAIRS_THREAD)
            cursors = pair_cursors(connection)
        return fold_pair_records(records, own_keys(self.identity)), cursors

    async def _start_pair(self, config: PairConfig, status: PairStatus) -> None:
        peers = self._peers_or_unavailable()
        pair_id = config.pair_id
        deps = PairDeps(
            reconciler=self.reconciler_client,
            peer=peers(config.peer_url),
            token=self.tokens.read,
            inbox=lambda: self.supervisor.inbox(pair_id),
            on_committed=self._on_committed,
            on_error=self._on_error,
            rng=self.rng,
        )
        actor = PairActor(config, status, deps)
        old = self.pairs.get(pair_id)
        self.pairs[pair_id] = PairView(config, status, old.stats if old else PairStats(), actor)
        await self.supervisor.add_child(
            ChildSpec(pair_id, actor.run, inbox_size=PAIR_INBOX, shutdown_budget=PAIR_SHUTDOWN_BUDGET)
        )
        if config.paused:
            self.supervisor.pause(pair_id)

    # -- federation pairs' pullers (their lifecycle is actors/federation_pairs.py's) -----------------

    def peer_client(self, peer_url: str) -> Any:
        """A client for one peer, sharing the manager's connection pool (handshakes, notices, refreshes)."""
        return self._peers_or_unavailable()(peer_url)

    async def start_puller(
        self, config: PairConfig, status: PairStatus, *, on_committed: Callable[[str, int], None]
    ) -> None:
        """Run a federation pair's puller: a :class:`PairActor` on the peer's namespace feed, in the pair supervisor."""
        pair_id = config.pair_id

        stats = self.puller_stats.setdefault(pair_id, PairStats())

        def committed(pair_id: str, stored: list[StoredRecord], source_times: dict[str, float]) -> None:
            now = time.time()
            stats.note_pulled(len(stored), [now - source_times[r.id] for r in stored if r.id in source_times], now)
            on_committed(pair_id, len(stored))

        deps = PairDeps(
            reconciler=self.reconciler_client,
            peer=self._peers_or_unavailable()(config.peer_url),
            token=self.tokens.read,
            inbox=lambda: self.supervisor.inbox(pair_id),
            on_committed=committed,
            rng=self.rng,
        )
        actor = PairActor(config, status, deps)
        self._pullers[pair_id] = actor
        await self.supervisor.add_child(
            ChildSpec(pair_id, actor.run, inbox_size=PAIR_INBOX, shutdown_budget=PAIR_SHUTDOWN_BUDGET)
        )
        if config.paused:
            self.supervisor.pause(pair_id)

    async def stop_puller(self, pair_id: str) -> None:
        if self._pullers.pop(pair_id, None) is not None:
            await self.supervisor.remove_child(pair_id)

    def set_puller_config(self, pair_id: str, config: PairConfig) -> None:
        """What the puller's next incarnation starts from (the running one is told by message)."""
        actor = self._pullers.get(pair_id)
        if actor is not None:
            actor.config = config

    def _peers_or_unavailable(self) -> PeerFactory:
        if self._peers is None:
            raise Unavailable("federation is starting or stopping; retry in a moment")
        return self._peers

    def _on_committed(self, pair_id: str, stored: list[StoredRecord], source_times: dict[str, float]) -> None:
        view = self.pairs.get(pair_id)
        if view is None:
            return
        now = time.time()
        latencies = [now - source_times[r.id] for r in stored if r.id in source_times]
        view.stats.note_pulled(len(stored), latencies, now)

    def _on_error(self, pair_id: str) -> None:
        view = self.pairs.get(pair_id)
        if view is not None:
            view.stats.note_error(time.time())

    # -- persistence -------------------------------------------------------------------

    async def _persist(self, config: PairConfig, status: str) -> None:
        """Record the pair's settings on ``th_federation_pairs``, signed by this instance, acked after commit."""
        await self.local.record_system(PAIRS_THREAD, config.to_body(status))

    # -- commands (called by the HTTP routes) -------------------------------------------

    async def create(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Validate everything first (a refused request leaves nothing behind), then persist and start.

        Refused: a pair with ourselves (``SELF_PAIR``: the DID given, or the DID the daemon at the URL
        proves it holds, is this instance's) and a second pair for the same peer and thread
        (``PAIR_EXISTS``: the same address under another spelling, or the DID the peer's manifest proves).
        """
        pair_id = new_pair_id(self.identity.did, str(payload.get("peer_did")), str(payload.get("thread_id")))
        config = PairConfig.validated(
            pair_id=pair_id,
            peer_did=payload.get("peer_did"),
            peer_url=payload.get("peer_url"),
            thread_id=payload.get("thread_id"),
            mode=payload.get("mode"),
            poll_interval=payload.get("poll_interval"),
            created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        if config.peer_did == self.identity.did:
            raise InvalidRequest(
                "peer_did is this instance's own DID: a pair pulls from another steward", code="SELF_PAIR"
            )
        token = payload.get("token")
        token_text = None if token is None else validate_peer_token(token)
        self._refuse_duplicate(config, None)
        proven = await self._proven_did(config.peer_url)
        if proven == self.identity.did:
            raise InvalidRequest(
                f"{config.peer_url} is this daemon (its manifest is signed with this instance's DID): a pair "
                "pulls from another steward; give the other daemon's URL",
                code="SELF_PAIR",
            )
        async with self._changing:  # checked again here: a concurrent add may have won while we fetched
            self._refuse_duplicate(config, proven)
            if token_text is not None:
                await trio.to_thread.run_sync(self.tokens.save, pair_id, token_text)
            await self._persist(config, "active")
            await self._start_pair(config, PairStatus(pair_id))
            answer = self.describe(pair_id)
        warning = self.bind_warning(config)
        if warning:
            answer["warning"] = warning
        return answer

    def _refuse_duplicate(self, config: PairConfig, proven_did: str | None) -> None:
        """Same thread, and the same address however spelled, or the DID the peer proved is an existing pair's.

        The DID in the request is not compared: it is only a claim until the peer's manifest proves it.
        """
        address = peer_address(config.peer_url)
        for view in self.pairs.values():
            if view.config.thread_id != config.thread_id:
                continue
            same_did = proven_did is not None and view.config.peer_did == proven_did
            if same_did or peer_address(view.config.peer_url) == address:
                raise Conflict(
                    f"pair {view.config.pair_id} already pulls {config.thread_id} from this peer "
                    f"({view.config.peer_url}); change it with `spl fleet sync set {view.config.pair_id}` or "
                    f"remove it first (spl fleet sync remove {view.config.pair_id})",
                    code="PAIR_EXISTS",
                )

    async def _proven_did(self, peer_url: str) -> str | None:
        """The DID the daemon at ``peer_url`` proves it holds; None when it cannot tell now (the pair retries)."""
        peer = self._peers_or_unavailable()(peer_url)
        try:
            with trio.move_on_after(PROBE_DEADLINE):
                return await peer.peer_did()
        except PeerError:
            return None
        return None

    def bind_warning(self, config: PairConfig) -> str | None:
        """A loopback-bound daemon pairing with a peer elsewhere: the peer cannot pair back."""
        peer_host = urlsplit(config.peer_url).hostname or ""
        if is_loopback_host(self.bind_host) and not is_loopback_host(peer_host):
            return (
                f"this daemon is bound to {self.bind_host} while the peer {config.peer_url} is not on loopback: "
                "the peer cannot reach this instance for the reverse pair. Restart with "
                "`spl serve --host 0.0.0.0 --daemon`."
            )
        return None

    def _view(self, pair_id: str) -> PairView:
        view = self.pairs.get(pair_id) if is_pair_id(pair_id) else None
        if view is None:
            shown = pair_id if is_pair_id(pair_id) else "with that id (pair ids are pair_ + 16 hex)"
            raise NotFound(f"no pair {shown}; list pairs with `spl fleet sync list`")
        return view

    async def remove(self, pair_id: str) -> dict[str, Any]:
        """Stop the pair, record its removal, forget its token: it leaves every listing at once."""
        async with self._changing:
            view = self._view(pair_id)
            await self._persist(view.config, "removed")
            await self.supervisor.remove_child(pair_id)
            await trio.to_thread.run_sync(self.tokens.delete, pair_id)
            view.status.stopped(time.time())
            answer = self.describe(pair_id)
            del self.pairs[pair_id]
            return answer

    async def pause(self, pair_id: str) -> dict[str, Any]:
        async with self._changing:
            view = self._view(pair_id)
            if not view.config.paused:
                view.config = view.config.with_paused(True)
                await self._persist(view.config, "active")
            self._set_actor_config(view)
            self.supervisor.pause(pair_id)
            if view.status.state != "paused":
                view.status.paused(time.time())
            return self.describe(pair_id)

    async def resume(self, pair_id: str) -> dict[str, Any]:
        async with self._changing:
            view = self._view(pair_id)
            if view.config.paused:
                view.config = view.config.with_paused(False)
                await self._persist(view.config, "active")
            self._set_actor_config(view)
            self.supervisor.resume(pair_id)
            with contextlib.suppress(trio.WouldBlock):
                self.supervisor.inbox(pair_id).send_nowait(Resume())  # a full inbox has work queued already
            if view.status.state == "paused":
                view.status.resumed(time.time())  # answer with the new state, not the old one
            return self.describe(pair_id)

    async def update(self, pair_id: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Change a pair's mode and/or poll interval; recorded like ``add``, so it survives a restart."""
        async with self._changing:
            view = self._view(pair_id)
            unknown = sorted(set(payload) - SETTABLE)
            if unknown or not payload:
                raise InvalidRequest(
                    f"send any of {sorted(SETTABLE)}"
                    + (f"; {', '.join(unknown)} cannot be changed" if unknown else "")
                    + " (to move a pair to another peer or thread, remove it and add a new one)",
                    code="INVALID_PAIR_UPDATE",
                )
            config = view.config.with_settings(mode=payload.get("mode"), poll_interval=payload.get("poll_interval"))
            if config != view.config:
                await self._persist(config, "active")
                view.config = config
                self._set_actor_config(view)
                try:
                    self.supervisor.inbox(pair_id).send_nowait(ConfigChanged(config.mode, config.poll_interval))
                except trio.WouldBlock:  # inbox full: a restart applies the new settings (the actor holds them)
                    await self.supervisor.stop_child(pair_id)
                    await self.supervisor.start_child(pair_id)
            return self.describe(pair_id)

    def _set_actor_config(self, view: PairView) -> None:
        """What the pair's next incarnation starts from (the running one is told by message)."""
        if view.actor is not None:
            view.actor.config = view.config

    async def kick(self, pair_id: str, *, wait: bool = False, wait_limit: float = 60.0) -> dict[str, Any]:
        view = self._view(pair_id)
        inbox = self.supervisor.inbox(pair_id)
        if not wait or view.config.paused:
            if not view.config.paused:
                with contextlib.suppress(trio.WouldBlock):
                    inbox.send_nowait(Kick())  # a full inbox already holds work: this one adds nothing
            answer = self.describe(pair_id)
            if wait:
                answer["pulled_now"], answer["refused_now"] = 0, {}
            return answer
        reply: Reply[Any] = Reply()
        pulled, refused = view.status.records_pulled, dict(view.status.records_refused)
        try:
            inbox.send_nowait(Kick(reply))
        except trio.WouldBlock:  # busy with queued work: never hold the HTTP request on it
            answer = self.describe(pair_id)
            answer["pulled_now"], answer["refused_now"] = 0, {}
            return answer
        with trio.move_on_after(wait_limit):
            await reply.get()
        answer = self.describe(pair_id)
        answer["pulled_now"] = view.status.records_pulled - pulled
        answer["refused_now"] = {
            code: count - refused.get(code, 0)
            for code, count in view.status.records_refused.items()
            if count > refused.get(code, 0)
        }
        return answer

    # -- views ---------------------------------------------------------------------------

    def describe(self, pair_id: str) -> dict[str, Any]:
        view = self._view(pair_id)
        now = time.time()
        config = view.config
        return {
            "object": "sync_pair",
            "pair_id": config.pair_id,
            "direction": "pull",
            "peer_did": config.peer_did,
            "peer_url": config.peer_url,
            "thread_id": config.thread_id,
            "mode": config.mode,
            "poll_interval": config.poll_interval,
            "created_at": config.created_at,
            "has_token": self.tokens.read(pair_id) is not None,
            **view.status.to_wire(now),
            "records_per_minute": view.stats.to_wire(now)["records_last_minute"],
        }

    def listing(self) -> list[dict[str, Any]]:
        return [self.describe(pair_id) for pair_id in sorted(self.pairs)]

    def stats(self, pair_id: str) -> dict[str, Any]:
        view = self._view(pair_id)
        now = time.time()
        return {
            "object": "sync_pair_stats",
            "pair_id": pair_id,
            **view.stats.to_wire(now),
            "poll": {
                "mode": view.config.mode,
                "poll_interval": view.config.poll_interval,
                "consecutive_failures": view.status.consecutive_failures,
                "next_retry_at": view.status.next_retry_at,
            },
            "totals": {
                "records_pulled": view.status.records_pulled,
                "records_duplicate": view.status.records_duplicate,
                "records_refused": dict(view.status.records_refused),
                "errors": view.status.errors_total,
                "pulls": view.status.pulls,
            },
        }

    def health(self) -> dict[str, Any]:
        now = time.time()
        by_state: dict[str, int] = {state: 0 for state in ("starting", "running", "paused", "failing", "stopped")}
        latency = LatencyWindow()  # every pair's last hour, merged: O(buckets) per pair, no samples
        per_pair: list[tuple[str, dict[str, Any]]] = []
        alerts: list[dict[str, Any]] = []
        for pair_id, view in self.pairs.items():
            by_state[view.status.state] = by_state.get(view.status.state, 0) + 1
            latency.merge(view.stats.latency_since(now - 3600))
            per_pair.append((pair_id, view.stats.to_wire(now)))
            if view.status.stalled:
                alerts.append({"pair_id": pair_id, "kind": "stalled", "lag_records": view.status.lag_records})
            elif view.status.state == "failing" and view.status.consecutive_failures >= 3:
                alerts.append({"pair_id": pair_id, "kind": "failing", "last_error": view.status.reason})
        slowest = sorted(
            (p for p in per_pair if p[1]["latency_ms"]["p95"] is not None),
            key=lambda p: p[1]["latency_ms"]["p95"],
            reverse=True,
        )[:5]
        errored = sorted((p for p in per_pair if p[1]["errors_last_hour"]), key=lambda p: -p[1]["errors_last_hour"])[:5]
        summary = summarise(latency)
        return {
            "object": "sync_health",
            "pairs_total": len(self.pairs),
            "pairs_by_state": by_state,
            "records_pulled_last_minute": sum(p[1]["records_last_minute"] for p in per_pair),
            "records_pulled_last_hour": sum(p[1]["records_last_hour"] for p in per_pair),
            "mean_delivery_latency_ms": summary["mean"],
            "p50_delivery_latency_ms": summary["p50"],
            "p95_delivery_latency_ms": summary["p95"],
            "slowest_pairs": [{"pair_id": p, "p95_ms": s["latency_ms"]["p95"]} for p, s in slowest],
            "most_errored_pairs": [{"pair_id": p, "errors_last_hour": s["errors_last_hour"]} for p, s in errored],
            "drift_alerts": alerts,
            "reconcile_queue": {"depth": self.reconciler.queue_depth, "high_water": self.reconciler.queue_high_water},
        }
