"""Messages exchanged between the daemon's actors (msgspec Structs, one module).

Each actor's inbox carries one tagged union; a reply travels back through a
:class:`Reply`, a one-shot slot the sender awaits (the actor never blocks on it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Generic, TypeVar

import msgspec
import trio

from spl.core.errors import Unavailable
from spl.core.stored import Candidate, Outcome, StoredRecord
from spl.core.tokens import TokenInfo

__all__ = [
    "AdoptDid",
    "CloseAll",
    "Committed",
    "CreateNamespace",
    "ImportBundle",
    "Ingest",
    "Kick",
    "MintToken",
    "Push",
    "Reconcile",
    "Reply",
    "Resume",
    "RevokeToken",
    "Subscribe",
    "Unsubscribe",
    "WriterMessage",
]

T = TypeVar("T")


class Reply(Generic[T]):
    """A one-shot answer: the actor calls ``set``/``fail`` once, the requester awaits ``get``."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: T | None = None
        self._error: BaseException | None = None

    def set(self, value: T) -> None:
        if not self._event.is_set():
            self._value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        if not self._event.is_set():
            self._error = error
            self._event.set()

    @property
    def done(self) -> bool:
        return self._event.is_set()

    async def get(self) -> T:
        await self._event.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]


def unavailable(what: str) -> Unavailable:
    return Unavailable(f"{what} is restarting or shutting down; retry in a moment", code="STORE_UNAVAILABLE")


class Ingest(msgspec.Struct, frozen=True, tag=True):
    """Commit these candidates (one request's worth) and answer with one outcome each.

    ``cursor`` is ``(pair_id, the peer's cursor string as given)`` (spec §15.20), committed
    with the records. ``park_rejected``: a record refused with ``NAMESPACE_REJECTED`` is
    parked and applied once its namespace is registered (pulls and pushes set it; a local
    emit is answered 403 and the client decides).
    """

    candidates: Sequence[Candidate]
    reply: Reply[list[Outcome]]
    cursor: tuple[str, str] | None = None
    park_rejected: bool = False


class CreateNamespace(msgspec.Struct, frozen=True, tag=True):
    """Commit this signed registration record if its namespace may be created now (else 409/400).

    The writer decides, because it holds the registry and commits one message at a time: a
    check made anywhere else could be stale by the time the record commits.
    """

    registration: Candidate
    reply: Reply[list[Outcome]]


class MintToken(msgspec.Struct, frozen=True, tag=True):
    """Store a new token's metadata (its plaintext never leaves the route that minted it)."""

    info: TokenInfo
    reply: Reply[None]


class RevokeToken(msgspec.Struct, frozen=True, tag=True):
    """Mark a token revoked as of ``revoked_at``; answers whether an active token changed."""

    token_id: str
    revoked_at: float
    reply: Reply[bool]


class ImportBundle(msgspec.Struct, frozen=True, tag=True):
    """Verify and commit an import bundle in ONE transaction (``spl.store.portability.import_bundle``).

    ``spool`` is the private file the upload was written to; ``limits`` an ``ImportLimits``. Answers
    ``(ImportSummary, VerifiedBundle)``. The writer reloads its state afterwards, committed or not.
    """

    spool: str
    passphrase: bytes | None
    force: bool
    limits: Any
    reply: Reply[Any]


class AdoptDid(msgspec.Struct, frozen=True, tag=True):
    """From now on only records signed by ``did`` change the writer's registries (an import adopted it)."""

    did: str
    reply: Reply[None]


WriterMessage = Ingest | CreateNamespace | MintToken | RevokeToken | ImportBundle | AdoptDid
"""What the store writer's inbox carries."""


class Committed(msgspec.Struct, frozen=True, tag=True):
    """Records that just committed, in sequence order: fan-out to watchers."""

    records: Sequence[StoredRecord]


class JoinsDue(msgspec.Struct, frozen=True, tag=True):
    """To the joiner: a commit may have closed or forked a thread; sweep the outbox (``spl.actors.joiner``)."""


class Subscribe(msgspec.Struct, frozen=True, tag=True):
    subscription: Any  # actors.hub.Subscription
    reply: Reply[bool]


class Unsubscribe(msgspec.Struct, frozen=True, tag=True):
    subscription: Any


class CloseAll(msgspec.Struct, frozen=True, tag=True):
    """The daemon is stopping: end every live stream with ``server_shutdown``."""

    reason: str = "server_shutdown"


class Reconcile(msgspec.Struct, frozen=True, tag=True):
    """Records pulled by a pair: verify, ingest, and move the pair's cursor to ``cursor`` with them."""

    pair_id: str
    records: Sequence[Any]
    cursor: str  # the peer's opaque cursor (spec §15.20)
    reply: Reply[Any]  # actors.reconciler.ReconcileResult


class Push(msgspec.Struct, frozen=True, tag=True):
    """Records a peer pushed (``POST /v1/sync/records``): screened, verified and ingested like a pulled page,
    without a cursor; refused reserved-thread records are answered, not ingested."""

    records: Sequence[Any]
    reply: Reply[Any]  # actors.reconciler.ReconcileResult


class Kick(msgspec.Struct, frozen=True, tag=True):
    """Check the peer now instead of at the next interval (and reset the backoff)."""

    reply: Reply[Any] | None = None  # set: answer after the pull finished (spl fleet sync pull)


class Resume(msgspec.Struct, frozen=True, tag=True):
    pass
