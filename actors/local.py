"""Accepting a record written on this instance: the one path from a validated envelope to an ack.

Every record this instance vouches for — a client's ``POST /v1/records``, a namespace
registration, a pair's configuration — is signed here with the instance key and handed to
the store writer; the caller is answered only after the COMMIT (the writer acknowledges after
it). Records from peers never come this way: they keep their own signature and pass the
reconciler.

System records (the daemon's own configuration threads) get their clock from
:class:`SystemClock`, one strategy for all of them: wall-clock microseconds, but never equal
to or below the previous one, so two writes in the same microsecond (or after the wall clock
stepped back) can never collide on ``(thread, actor, clock)``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from spl.actors.writer import WriterClient, accepted
from spl.core import joins
from spl.core.errors import SplError
from spl.core.identity import Identity
from spl.core.namespaces import NAMESPACE_KIND, REGISTRY_THREAD
from spl.core.record import Envelope, validate_envelope
from spl.core.reserved import is_reserved, refuse_reserved
from spl.core.stored import Accepted, Candidate

__all__ = ["LocalRecords", "SystemClock"]


def wall_clock_micros() -> int:
    return time.time_ns() // 1000


class SystemClock:
    """Clocks for system records: ``max(previous + 1, now)`` in microseconds since the epoch.

    A record clock is a timestamp carried in the record, not a timer, so it reads the wall
    clock (``now`` is injectable for tests), never trio's.
    """

    def __init__(self, now: Callable[[], int] = wall_clock_micros) -> None:
        self._now = now
        self._last = 0

    def next(self) -> int:
        self._last = max(self._last + 1, self._now())
        return self._last


JOINER_KINDS = frozenset({joins.SYNTHESIS_KIND, joins.CLOSED_KIND, joins.FAILED_KIND})


class JoinerKind(SplError):
    status = 403
    type = "permission_error"
    code = "RESERVED_KIND"


def refuse_joiner_kind(body: Any) -> None:
    """403 for a client's record of a kind only the joiner writes (``spl.actors.joiner``).

    The commit counts a parent's synthesis by its kind and its signer, and this instance signs every record
    it accepts: a client's forged ``core.join.child_closed.v1`` would settle a real close and feed a false
    outcome into the parent's join. The joiner does not come through here.
    """
    kind = body.get("kind") if isinstance(body, dict) else None
    if kind in JOINER_KINDS:
        raise JoinerKind(
            f"records of kind {kind} are written only by this steward's joiner (a parent's record of a child's "
            "close); emit another kind"
        )


class LocalRecords:
    """Sign and commit records on behalf of this instance.

    Args:
        identity: The instance key: every record accepted here carries its ``signer`` (the key that signs now,
            ``key_did``) and ``sig``; its ``actor``, when the instance authors it, is the instance's identifier.
        writer: The store writer; answers come after COMMIT.
        clock: The clock of system records (share one per daemon: see :class:`SystemClock`).
    """

    def __init__(self, identity: Identity, writer: WriterClient, clock: SystemClock | None = None) -> None:
        self._identity = identity
        self._writer = writer
        self._clock = clock or SystemClock()

    @property
    def did(self) -> str:
        """The instance's DID as it is now (an import may have swapped the key)."""
        return self._identity.did

    def next_clock(self) -> int:
        """The next clock of a record this instance authors (one strictly increasing clock per daemon)."""
        return self._clock.next()

    def sign(self, envelope: Envelope) -> Candidate:
        """The record signed by the current key; signer and signature come from one read of it (a rotation may
        swap the key between two records, never inside one)."""
        return Candidate(envelope, *self._identity.signed_id(envelope.id))

    async def accept(self, envelope: Envelope) -> Accepted:
        """A client's record (``POST /v1/records``): signed, committed, returned as stored.

        ``Accepted.created`` is False for an exact re-submission (idempotent ingest).

        Raises:
            ReservedThread: 403: configuration threads are written only by the daemon's own routes.
            NamespaceRejected, DuplicateClock: the record was refused (nothing stored).
            StorageFull, StoreCorrupt, Unavailable, SplError: the commit failed.
        """
        refuse_reserved(envelope.thread)
        refuse_joiner_kind(envelope.body)
        (outcome,) = await self._writer.ingest([self.sign(envelope)])
        return accepted(outcome)

    def system_envelope(self, thread: str, body: dict[str, Any], *, act: str = "LEARN") -> Envelope:
        """A configuration record of this instance on a reserved ``thread``, clocked by :class:`SystemClock`."""
        if not is_reserved(thread):
            raise ValueError(f"{thread} is not a reserved thread: system records live on configuration threads")
        return validate_envelope(
            {"act": act, "actor": self._identity.did, "thread": thread, "clock": self._clock.next(), "body": body}
        )

    async def record_system(self, thread: str, body: dict[str, Any], *, act: str = "LEARN") -> Accepted:
        """Commit a configuration record (a pair's settings on ``th_federation_pairs``, …)."""
        (outcome,) = await self._writer.ingest([self.sign(self.system_envelope(thread, body, act=act))])
        return accepted(outcome)

    async def record_system_signed_by(self, signer: Identity, thread: str, body: dict[str, Any]) -> Accepted:
        """Commit a configuration record signed by ``signer`` rather than the current key: a rotation statement
        is signed by the key it retires, so a reader holding only that key can verify the step."""
        envelope = self.system_envelope(thread, body)
        (outcome,) = await self._writer.ingest([Candidate(envelope, *signer.signed_id(envelope.id))])
        return accepted(outcome)

    def instance_envelope(self, thread: str, act: str, body: dict[str, Any], actor: str | None = None) -> Envelope:
        """A record of this instance (or of ``actor``, vouched for by it) on an ordinary thread.

        Used by the task routes: the daemon writes the record a ``spl task`` command names, clocked by the
        one :class:`SystemClock` of the daemon so two records written in the same microsecond never share
        ``(thread, actor, clock)``.

        Raises:
            ReservedThread: 403: configuration threads are written only by the daemon's own routes.
            InvalidRecord: the envelope is not valid (a body too large, a bad actor).
        """
        refuse_reserved(thread)
        return validate_envelope(
            {
                "act": act,
                "actor": actor or self._identity.did,
                "thread": thread,
                "clock": self._clock.next(),
                "body": body,
            }
        )

    async def accept_many(self, envelopes: list[Envelope]) -> list[Accepted]:
        """Commit ``envelopes`` in one writer request (one transaction): a fan-out's records land together.

        Two kinds of refusal, two outcomes. A refusal the writer answers per record (``NAMESPACE_REJECTED``,
        ``DUPLICATE_CLOCK``) leaves the other records committed: this raises the first one *after* the commit,
        so a caller that sees it must assume the rest are stored (re-submitting them is idempotent). A refusal
        raised inside the transaction (``TASK_ALIAS_TAKEN``: a task opening whose alias another thread holds)
        rolls the whole request back: nothing is stored, and the caller may retry with other aliases.

        Raises:
            ReservedThread: 403, before anything is sent, when any envelope names a configuration thread.
            SplError: the first per-record refusal (the rest committed), or the request rolled back.
        """
        for envelope in envelopes:
            refuse_reserved(envelope.thread)
            refuse_joiner_kind(envelope.body)
        outcomes = await self._writer.ingest([self.sign(envelope) for envelope in envelopes])
        return [accepted(outcome) for outcome in outcomes]

    async def create_namespace(self, namespace: str, description: str) -> Accepted:
        """Register ``namespace`` as active; the writer decides against the registry it holds.

        The caller validates the id (``validate_namespace_id``) first.

        Raises:
            Conflict: 409 ``ALREADY_EXISTS``.
            InvalidRequest: 400 ``PARENT_NAMESPACE_MISSING``.
        """
        body = {
            "kind": NAMESPACE_KIND,
            "_v": 1,
            "namespace_id": namespace,
            "status": "active",
            "description": description,
        }
        return await self._writer.create_namespace(self.sign(self.system_envelope(REGISTRY_THREAD, body)))
