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

import apsw

from spl.core import tokens
from spl.core.identity import Identity
from spl.daemon.home import PRIVATE_DIR, Home, HomeError
from spl.store.database import connect_writer
from spl.store.genesis import ensure_genesis
from spl.store.tokens import LOCAL_ADMIN_SA, install_local_admin

__all__ = ["InitResult", "initialise", "rotate_identity", "write_missing_genesis"]

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
