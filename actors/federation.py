"""The federation manager: the pair supervisor, pair persistence, and the figures of every pair.

Runs as one child of the root supervisor. It owns the HTTP clients pairs use (one pool
for pages, one for long-lived streams), a nested supervisor with one child per pair,
and the pairs' status and statistics. Pair configuration is written as records on
``th_federation_pairs`` (so it survives restarts and exports); a peer's bearer token is
kept outside the record log in ``secrets/pairs/<pair_id>.token`` (mode 0600).

Only pairs this instance wrote and signed are loaded (``fold_pair_records``), and a token
path is only ever built from a well-formed pair id: the pair list decides which URL gets
which token, so nothing a client or a peer sends may shape it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import trio

from spl.actors.loop import next_message
from spl.actors.messages import Kick, Pause, Reply, Resume
from spl.actors.pair import PairActor, PairDeps
from spl.actors.reconciler import Reconciler, ReconcilerClient
from spl.actors.writer import WriterClient
from spl.core.errors import Conflict, InvalidRequest, NotFound, SplError
from spl.core.identity import Identity
from spl.core.pairs import (
    PAIRS_THREAD,
    PairConfig,
    PairStatus,
    fold_pair_records,
    is_pair_id,
    new_pair_id,
    validate_peer_token,
)
from spl.core.record import validate_envelope
from spl.core.stored import Candidate, StoredRecord
from spl.core.syncstats import PairStats, parse_rfc3339, summarise
from spl.daemon.home import Home
from spl.runtime.supervisor import ChildContext, ChildSpec, Supervisor
from spl.store.database import ReadPool
from spl.store.queries import pair_cursors, records_after
from spl.transport.peer import fetch_manifest

__all__ = ["FederationManager", "is_loopback_host"]

log = logging.getLogger("spl.federation")

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def is_loopback_host(host: str) -> bool:
    return host in LOOPBACK_HOSTS or host.startswith("127.")


@dataclass
class PairView:
    config: PairConfig
    status: PairStatus
    stats: PairStats
    removed: bool = False


class FederationManager:
    def __init__(
        self,
        home: Home,
        identity: Identity,
        writer: WriterClient,
        reconciler: Reconciler,
        reconciler_client: ReconcilerClient,
        pool: ReadPool,
        *,
        bind_host: str,
        rng: random.Random | None = None,
    ) -> None:
        self.home = home
        self.identity = identity
        self.writer = writer
        self.reconciler = reconciler
        self.reconciler_client = reconciler_client
        self.pool = pool
        self.bind_host = bind_host
        self.rng = rng or random.Random()
        self.pairs: dict[str, PairView] = {}
        self.supervisor = Supervisor("pairs", max_restarts=1000, period=60.0)
        self._deps: PairDeps | None = None
        self._last_clock = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def run(self, ctx: ChildContext) -> None:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        timeout = httpx.Timeout(30.0, connect=5.0)
        stream_timeout = httpx.Timeout(connect=5.0, read=60.0, write=10.0, pool=None)
        async with (
            httpx.AsyncClient(limits=limits, timeout=timeout) as http,
            httpx.AsyncClient(limits=limits, timeout=stream_timeout) as streams,
        ):
            self._deps = PairDeps(
                reconciler=self.reconciler_client,
                http=http,
                streams=streams,
                token=self.read_token,
                on_committed=self._on_committed,
                on_error=self._on_error,
                rng=self.rng,
                verify_peer=self._verify_peer,
            )
            configs, cursors = await trio.to_thread.run_sync(self._load)
            async with trio.open_nursery() as nursery:
                await nursery.start(self.supervisor.run)
                for config in configs.values():
                    status = PairStatus(config.pair_id, cursor=cursors.get(config.pair_id, ""))
                    await self._start_pair(config, status)
                ctx.started()
                while await next_message(ctx) is not None:
                    pass
                self.supervisor.shutdown()

    def _load(self) -> tuple[dict[str, PairConfig], dict[str, str]]:
        records: list[dict[str, Any]] = []
        with self.pool.connection() as connection:
            after = 0
            while True:
                page = records_after(connection, PAIRS_THREAD, after, 1000)
                records.extend(json.loads(record.json) for record in page)
                if len(page) < 1000:
                    break
                after = page[-1].seq
            cursors = pair_cursors(connection)
        return fold_pair_records(records, self.identity.did), cursors

    async def _start_pair(self, config: PairConfig, status: PairStatus) -> None:
        assert self._deps is not None
        actor = PairActor(config, status, self._deps)
        self.pairs[config.pair_id] = PairView(
            config, status, self.pairs.get(config.pair_id, PairView(config, status, PairStats())).stats
        )
        await self.supervisor.add_child(ChildSpec(config.pair_id, actor.run, inbox_size=16, shutdown_budget=2.0))

    async def _verify_peer(self, config: PairConfig) -> None:
        """The peer's signed manifest must name the pair's peer DID (raises PeerError)."""
        assert self._deps is not None
        await fetch_manifest(self._deps.http, config.peer_url, expected_did=config.peer_did)

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

    def _next_clock(self) -> int:
        self._last_clock = max(self._last_clock + 1, time.time_ns() // 1000)
        return self._last_clock

    async def _persist(self, config: PairConfig, status: str) -> None:
        envelope = validate_envelope(
            {
                "act": "LEARN",
                "actor": self.identity.did,
                "thread": PAIRS_THREAD,
                "clock": self._next_clock(),
                "body": config.to_body(status),
            }
        )
        (outcome,) = await self.writer.ingest(
            [Candidate(envelope, self.identity.did, self.identity.sign_record_id(envelope.id))]
        )
        if isinstance(outcome, SplError):
            raise outcome

    def token_path(self, pair_id: str) -> Any:
        if not is_pair_id(pair_id):  # never a path from anything but pair_ + 16 hex
            raise ValueError("not a pair id")
        return self.home.root / "secrets" / "pairs" / f"{pair_id}.token"

    def read_token(self, pair_id: str) -> str | None:
        return self.home.read_secret(self.token_path(pair_id))

    # -- commands (called by the HTTP routes) -------------------------------------------

    async def create(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Validate everything first (a refused request leaves nothing behind), then persist and start."""
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
        for view in self.pairs.values():
            same = (view.config.peer_url, view.config.thread_id) == (config.peer_url, config.thread_id)
            if same and not view.removed:
                raise Conflict(
                    f"pair {view.config.pair_id} already pulls {config.thread_id} from {config.peer_url}; "
                    f"remove it first (spl fleet sync remove {view.config.pair_id})",
                    code="PAIR_EXISTS",
                )
        if token_text is not None:
            self.home.save_secret(self.token_path(pair_id), token_text)
        await self._persist(config, "active")
        await self._start_pair(config, PairStatus(pair_id))
        answer = self.describe(pair_id)
        warning = self.bind_warning(config)
        if warning:
            answer["warning"] = warning
        return answer

    def bind_warning(self, config: PairConfig) -> str | None:
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
        view = self._view(pair_id)
        if not view.removed:
            await self._persist(view.config, "removed")
            await self.supervisor.remove_child(pair_id)
            self.token_path(pair_id).unlink(missing_ok=True)
            view.removed = True
            view.status.stopped(time.time())
        return self.describe(pair_id)

    async def pause(self, pair_id: str) -> dict[str, Any]:
        view = self._live(pair_id)
        if not view.config.paused:
            view.config = PairConfig(**{**view.config.__dict__, "paused": True})
            await self._persist(view.config, "active")
        await self.supervisor.send(pair_id, Pause())
        view.status.paused(time.time())
        return self.describe(pair_id)

    async def resume(self, pair_id: str) -> dict[str, Any]:
        view = self._live(pair_id)
        if view.config.paused:
            view.config = PairConfig(**{**view.config.__dict__, "paused": False})
            await self._persist(view.config, "active")
        await self.supervisor.send(pair_id, Resume())
        if view.status.state == "paused":
            view.status.resumed(time.time())  # answer with the new state, not the old one
        return self.describe(pair_id)

    async def kick(self, pair_id: str, *, wait: bool = False, wait_limit: float = 60.0) -> dict[str, Any]:
        view = self._live(pair_id)
        inbox = self.supervisor.inbox(pair_id)
        if not wait:
            with contextlib.suppress(trio.WouldBlock):
                inbox.send_nowait(Kick())  # a full inbox already holds kicks: this one adds nothing
            return self.describe(pair_id)
        reply: Reply[Any] = Reply()
        before = view.status.records_pulled
        try:
            inbox.send_nowait(Kick(reply))
        except trio.WouldBlock:  # busy with queued commands: never hold the HTTP request on it
            answer = self.describe(pair_id)
            answer["pulled_now"] = 0
            return answer
        with trio.move_on_after(wait_limit):
            await reply.get()
        answer = self.describe(pair_id)
        answer["pulled_now"] = view.status.records_pulled - before
        return answer

    def _live(self, pair_id: str) -> PairView:
        view = self._view(pair_id)
        if view.removed:
            raise NotFound(f"pair {pair_id} was removed")
        return view

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
            "has_token": self.token_path(pair_id).exists(),
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
        latencies: list[float] = []
        per_pair: list[tuple[str, dict[str, Any]]] = []
        alerts: list[dict[str, Any]] = []
        for pair_id, view in self.pairs.items():
            by_state[view.status.state] = by_state.get(view.status.state, 0) + 1
            latencies.extend(value * 1000 for value in view.stats.latencies_since(now - 3600))
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
        latency = summarise(latencies)
        return {
            "object": "sync_health",
            "pairs_total": len(self.pairs),
            "pairs_by_state": by_state,
            "records_pulled_last_minute": sum(p[1]["records_last_minute"] for p in per_pair),
            "records_pulled_last_hour": sum(p[1]["records_last_hour"] for p in per_pair),
            "mean_delivery_latency_ms": latency["mean"],
            "p50_delivery_latency_ms": latency["p50"],
            "p95_delivery_latency_ms": latency["p95"],
            "slowest_pairs": [{"pair_id": p, "p95_ms": s["latency_ms"]["p95"]} for p, s in slowest],
            "most_errored_pairs": [{"pair_id": p, "errors_last_hour": s["errors_last_hour"]} for p, s in errored],
            "drift_alerts": alerts,
            "reconcile_queue": {"depth": self.reconciler.queue_depth, "high_water": self.reconciler.queue_high_water},
        }


def source_times(records: list[dict[str, Any]]) -> dict[str, float]:
    """id → when the source committed it (its ``created_at``), for delivery latency."""
    times: dict[str, float] = {}
    for record in records:
        created = parse_rfc3339(record.get("created_at"))
        if created is not None and isinstance(record.get("id"), str):
            times[record["id"]] = created
    return times
