"""``spl init``: create an instance home — identity, config, store and the admin credential.

The home is private when ``initialise`` returns (directories 0700, files 0600: ``Home.tighten``), whatever the
caller's umask; ``spl init`` also sets umask 0077 for the whole command. The store is created here, not by the
first ``spl serve``: a daemon treats a home with an identity but no ``hub.db`` as one that lost its store.

The store starts with the six genesis records of the reserved threads (``spl.core.genesis``), signed by the new
identity; ``--force`` writes the new identity's too. A home made by an older spl gets them when a daemon starts
on it (:func:`write_missing_genesis`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import apsw

from spl.core import tokens
from spl.core.genesis import INSTANCE_REGISTRY
from spl.core.identity import Identity, InstanceIdentity
from spl.core.manifest import rfc3339
from spl.core.record import validate_envelope
from spl.core.rotation import MAX_ROTATIONS, ROTATION_KIND, RotationInvalid, key_windows, rotation_statement
from spl.core.stored import Candidate
from spl.daemon.home import PRIVATE_DIR, Home, HomeError
from spl.store.database import connect_writer
from spl.store.genesis import ensure_genesis
from spl.store.ingest import commit_batch, load_writer_state
from spl.store.tokens import LOCAL_ADMIN_SA, install_local_admin

__all__ = [
    "InitResult",
    "RotationPlan",
    "initialise",
    "plan_rotation",
    "rotate_identity",
    "rotate_offline",
    "rotation_envelope_body",
    "write_missing_genesis",
    "write_missing_rotations",
]

log = logging.getLogger("spl.daemon")


@dataclass(frozen=True)
class InitResult:
    did: str
    home: str
    created: bool  # False: the home existed and was left alone


def _mint_admin(home: Home) -> None:
    """The local CLI's credential: an admin token whose plaintext only lives in a 0600 file."""
    minted = tokens.mint("local", LOCAL_ADMIN_SA)
    info = tokens.TokenInfo.of_minted(minted, "local admin (spl init)", ["admin"], time.time())
    install_local_admin(home.db_path, info)  # earlier local-admin tokens are revoked in the same transaction
    home.save_secret(home.admin_token_path, minted.plaintext)


def initialise(home: Home, *, force: bool = False, if_missing: bool = False) -> InitResult:
    """Create the home. An existing home is an error unless ``force`` (new identity) or ``if_missing``.

    ``force`` rotates the identity (new keypair, so a new DID) and the local admin token, and keeps the
    records and ``config.toml``: only ``instance.did`` changes in it, so a custom port or CORS list survives.
    A ``config.toml`` that does not decode is refused (naming the key), never replaced: the typo is the
    user's to fix, and replacing the file would lose every other setting with it.
    """
    if home.exists():
        if if_missing:
            return InitResult(home.load_config().did, str(home.root), created=False)
        if not force:
            raise HomeError(
                f"{home.root} is already initialised; pass --force to replace its identity and admin token "
                "(records and config.toml are kept), or set SYNCROPEL_HOME to use another home"
            )
    kept = home.load_config() if home.config_path.exists() else None
    home.root.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    for sub in ("keys", "secrets", "run", "logs"):
        (home.root / sub).mkdir(mode=PRIVATE_DIR, exist_ok=True)
    if not home.db_path.exists():
        # A WAL left beside a deleted store would be replayed into the new, empty one.
        for leftover in ("hub.db-wal", "hub.db-shm"):
            (home.root / leftover).unlink(missing_ok=True)
    identity = Identity.generate()
    home.save_identity(identity)
    if kept is None:
        home.save_config(home.new_config(identity))
    else:
        kept.did = identity.did
        home.save_config(kept)
    _mint_admin(home)  # creates hub.db with its schema
    if home.running() is None:
        # A running daemon's store writer is the only one that may append records (it numbers them): it keeps
        # the old identity until restarted, and the restart writes the new one's genesis (write_missing_genesis).
        connection = connect_writer(home.db_path)
        try:
            ensure_genesis(connection, identity)
        finally:
            connection.close()
    home.tighten()
    return InitResult(identity.did, str(home.root), created=True)


def rotate_identity(home: Home) -> str:
    """A new keypair for an existing home (``spl identity generate``); records keep their old signer."""
    config = home.load_config()
    identity = Identity.generate()
    home.save_identity(identity)
    config.did = identity.did
    home.save_config(config)
    return identity.did


def write_missing_genesis(connection: apsw.Connection, identity: Identity) -> int:
    """At a daemon's start, before its store writer runs: the genesis records ``identity`` has not signed yet.

    A home initialised by an older spl has none, and one whose identity was replaced by ``spl identity generate``
    has none of the new DID's; each then gets its six here, once (six indexed look-ups when nothing is missing).
    ``connection`` is the daemon's write connection of ``_open_store``; returns how many were written.
    """
    written = ensure_genesis(connection, identity)
    if written:
        log.info("wrote %d genesis record(s) on the reserved threads for %s", written, identity.did)
    return written


# -- spl identity rotate -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RotationPlan:
    """One rotation, decided but not yet applied: the new key, the statement (signed by the retiring key) naming
    it, and the retiring key itself (it signs the statement's record, then is dropped)."""

    retiring: Identity
    new: Identity
    statement: dict[str, Any]

    def summary(self, identity: InstanceIdentity) -> dict[str, Any]:
        """What ``spl identity rotate`` shows, once ``identity`` signs with the new key."""
        return {
            "object": "identity_rotation_result",
            "did": identity.did,
            "key": identity.key_did,
            "previous_key": self.retiring.did,
            "seq": self.statement["seq"],
            "rotated_at": self.statement["rotated_at"],
            "keys": key_windows(identity.keys, identity.statements),
        }


def plan_rotation(identity: InstanceIdentity, *, now: float | None = None) -> RotationPlan:
    """A new key for ``identity``'s instance, and the statement by its current key that links the two.

    Raises:
        RotationInvalid: the chain already holds ``MAX_ROTATIONS`` steps: peers would refuse a longer one.
    """
    if len(identity.statements) >= MAX_ROTATIONS:
        raise RotationInvalid(
            f"{identity.did} has rotated its key {len(identity.statements)} times, the most a chain may hold "
            "(peers refuse a longer one); make a new identity with `spl init --force` and pair again",
            code="ROTATION_LIMIT",
        )
    retiring = Identity(identity.seed)
    new = Identity.generate()
    statement = rotation_statement(
        retiring,
        did=identity.did,
        seq=len(identity.statements) + 1,
        next_key=new.did,
        rotated_at=rfc3339(time.time() if now is None else now),
    )
    return RotationPlan(retiring, new, statement)


def rotation_envelope_body(statement: dict[str, Any]) -> dict[str, Any]:
    """The body of the record on ``th_instance_registry`` that carries a rotation statement (exports carry it)."""
    return {"kind": ROTATION_KIND, "_v": 1, "statement": statement}


def rotate_offline(home: Home) -> dict[str, Any]:
    """``spl identity rotate`` while no daemon runs: the same steps the daemon takes (``Daemon.rotate_identity``),
    with this process as the store's only writer.

    Raises:
        HomeError: the home's key is not its chain's current one (a rotation would extend a broken chain).
    """
    config = home.load_config()
    identity, problem = home.load_instance_identity(config.did)
    if problem is not None:
        raise HomeError(f"cannot rotate: {problem}")
    plan = plan_rotation(identity)
    home.save_rotation(plan.new, [*identity.statements, plan.statement])  # keys/ first: see write_missing_rotations
    identity.rotate(plan.new, plan.statement)
    connection = connect_writer(home.db_path, own_did=identity.did)
    try:
        write_missing_rotations(connection, identity, signer=plan.retiring)
    finally:
        connection.close()
    return plan.summary(identity)


def write_missing_rotations(
    connection: apsw.Connection, identity: InstanceIdentity, *, signer: Identity | None = None
) -> int:
    """The statements of ``identity``'s chain that no record on ``th_instance_registry`` carries yet, written now
    (signed by ``signer``, default the current key: each statement is signed by its own retiring key anyway).

    A rotation writes keys/ first and its record after, so a crash (or a failed commit) in between loses no key
    and forks nothing: the record is written here, at the next rotation or the next daemon start. ``connection``
    is a write connection no other writer uses (``spl identity rotate`` offline, or a daemon before its writer
    starts). Returns how many were written; one indexed scan of the thread when none is missing.
    """
    if not identity.statements:
        return 0
    recorded = {
        signature
        for (signature,) in connection.execute(
            "SELECT json_extract(json, '$.body.statement.signature') FROM records "
            "WHERE thread = ? AND json_extract(json, '$.body.kind') = ?",
            (INSTANCE_REGISTRY, ROTATION_KIND),
        )
    }
    missing = [statement for statement in identity.statements if statement["signature"] not in recorded]
    if not missing:
        return 0
    clock = time.time_ns() // 1000
    for (highest,) in connection.execute(
        "SELECT MAX(clock) FROM records WHERE thread = ? AND actor = ?", (INSTANCE_REGISTRY, identity.did)
    ):
        clock = max(clock, int(highest) + 1) if highest is not None else clock
    candidates = []
    for offset, statement in enumerate(missing):
        envelope = validate_envelope(
            {
                "act": "LEARN",
                "actor": identity.did,
                "thread": INSTANCE_REGISTRY,
                "clock": clock + offset,
                "body": rotation_envelope_body(statement),
            }
        )
        candidates.append(Candidate(envelope, *(signer or identity).signed_id(envelope.id)))
    commit_batch(connection, [candidates], load_writer_state(connection, identity.did, identity.own_keys))
    log.info("recorded %d rotation statement(s) of %s on %s", len(candidates), identity.did, INSTANCE_REGISTRY)
    return len(candidates)
