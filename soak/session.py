"""One soak run's shared context: its config, its daemons, what it saw so far, its clock and HTTP clients.

Every task of the run (:mod:`~spl.soak.pairing`, :mod:`~spl.soak.emitter`, :mod:`~spl.soak.readback`,
:mod:`~spl.soak.samplers`, :mod:`~spl.soak.workload`) takes the :class:`Session`. Run time is
trio's clock minus ``t0``, so every timer in the run follows ``trio.testing.MockClock`` in tests.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
import trio

from spl.core.identity import Identity
from spl.soak.cluster import Cluster
from spl.soak.config import SoakConfig, SoakError
from spl.soak.ledger import Ledger
from spl.soak.progress import Progress, Status

__all__ = ["EMITTER_ACTOR", "Session"]

EMITTER_ACTOR = "did:soak:emitter"


class Session:
    """See the module docstring. ``http`` carries control calls and emits; ``samples_http`` the samplers."""

    def __init__(self, config: SoakConfig, cluster: Cluster, progress: Progress) -> None:
        self.config = config
        self.cluster = cluster
        self.progress = progress
        self.windows = config.windows
        self.ledger = Ledger(len(config.windows), config.pairs)
        self.status = Status()
        self.run_id = secrets.token_hex(4)
        self.threads = [f"th_soak_{self.run_id}_{n:04d}" for n in range(config.pairs)]
        self.thread_set = set(self.threads)
        self.clocks = [1] * config.pairs  # clock 1 is the priming record
        self.pair_ids: list[str] = []
        self.t0 = 0.0
        self.started_at: float | None = None  # wall time of run time 0, once the first window began
        self.epoch = 0  # receiver (re)starts so far
        self.receiver_down = False  # a fault is restarting it: samplers skip, read-backs wait
        self.receiver_after = 0  # the receiver's records read back so far (a sequence number)
        self.source_after = 0  # --emit push: the source's, from its head when the run started
        self.signer = Identity.generate() if config.emit == "push" else None
        self.source_headers: dict[str, str] = (
            {"authorization": f"Bearer {config.peer_token}"} if config.peer_token else {}
        )
        self.http: httpx.AsyncClient | None = None
        self.samples_http: httpx.AsyncClient | None = None

    def now(self) -> float:
        """Run time: seconds since the first window started (negative during setup)."""
        return trio.current_time() - self.t0

    @property
    def receiver_url(self) -> str:
        return self.cluster.receiver.url

    def client(self) -> httpx.AsyncClient:
        assert self.http is not None, "the session's clients are opened by spl.soak.run"
        return self.http

    def sampler(self) -> httpx.AsyncClient:
        assert self.samples_http is not None, "the session's clients are opened by spl.soak.run"
        return self.samples_http

    async def request(
        self, method: str, url: str, *, attempts: int = 4, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        """A control request, retried on transport errors (a restarted receiver breaks pooled connections).

        Raises:
            SoakError: every attempt failed to connect.
        """
        for attempt in range(attempts):
            try:
                response = await self.client().request(method, url, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                if attempt == attempts - 1:
                    raise SoakError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from None
                await trio.sleep(0.2 * (attempt + 1))
                continue
            if response.status_code >= 500 and attempt < attempts - 1:
                await trio.sleep(0.2 * (attempt + 1))
                continue
            return response
        raise AssertionError("unreachable")

    def emit_body(self, index: int, clock: int) -> bytes:
        """The record the soak writes as the ``clock``-th of pair ``index``'s thread, as JSON bytes."""
        return json.dumps(
            {
                "act": "PUT",
                "actor": EMITTER_ACTOR,
                "thread": self.threads[index],
                "clock": clock,
                "body": {"kind": "soak.record", "n": clock, "run": self.run_id},
            },
            separators=(",", ":"),
        ).encode()
