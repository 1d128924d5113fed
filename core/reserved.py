"""Reserved threads: configuration, not data (spec §15.18, seed 003 "Reserved threads").

A handful of well-known threads configure the instance itself: which namespaces ingest
accepts, which sync pairs run (and so which URL receives which token), consent grants,
the kill switch. If anyone who can write a record, or any peer being pulled, could put a
record there, they could re-configure the steward — a planted ``th_federation_pairs``
record used to make the daemon send its admin token to an attacker's URL. So:

* records on these threads are written only by the daemon's own routes, each behind its
  own scope, signed with the instance key;
* ``POST /v1/records``, ``POST /v1/sync/records`` and pulls refuse them (403
  ``RESERVED_THREAD``), and no change feed serves them;
* local state is folded from them only when a record is signed by this instance's key
  (:func:`signed_by`), so even a record that got in some other way changes nothing.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from spl.core.errors import SplError

__all__ = ["RESERVED_THREADS", "ReservedThread", "is_reserved", "own_records", "refuse_reserved", "signed_by"]

RESERVED_THREADS = frozenset(
    {
        # the six of seed 003's table
        "th_engine_config",
        "th_actor_registry",
        "th_namespace_registry",
        "th_instance_registry",
        "th_fleet_control",
        "th_consent",
        # well-known configuration threads of the federation and portability docs (spec §13)
        "th_federation_pairs",
        "th_audit_federation_pairs",
        "th_audit_portability",
        "th_invites",
        "th_audit_invites",
        "th_invite_templates",
    }
)


class ReservedThread(SplError):
    status = 403
    type = "permission_error"
    code = "RESERVED_THREAD"

    def __init__(self, thread: str) -> None:
        super().__init__(
            f"{thread} is a reserved thread: it holds this instance's configuration and is written only "
            "through the daemon's own commands (e.g. `spl namespace create`, `spl fleet sync add`), "
            "never as a plain record. Emit on another thread."
        )


def is_reserved(thread: object) -> bool:
    return isinstance(thread, str) and thread in RESERVED_THREADS


def refuse_reserved(thread: str) -> None:
    """Raise 403 ``RESERVED_THREAD`` for a reserved thread; used by every route that ingests foreign records."""
    if thread in RESERVED_THREADS:
        raise ReservedThread(thread)


def signed_by(record: Mapping[str, Any], did: str) -> bool:
    """True when the stored record was accepted (and signed) by the instance ``did``."""
    return record.get("signer") == did


def own_records(records: Iterable[Mapping[str, Any]], did: str) -> Iterator[Mapping[str, Any]]:
    """Only the records this instance signed: what a configuration fold may read."""
    return (record for record in records if signed_by(record, did))
