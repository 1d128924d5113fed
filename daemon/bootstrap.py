"""``spl init``: create an instance home — identity, config, store and the admin credential.

The home is private when ``initialise`` returns (directories 0700, files 0600: ``Home.tighten``), whatever the
caller's umask; ``spl init`` also sets umask 0077 for the whole command. The store is created here, not by the
first ``spl serve``: a daemon treats a home with an identity but no ``hub.db`` as one that lost its store.
"""

from __future__ import annotations

from dataclasses import dataclass

from spl.core import tokens
from spl.core.identity import Identity
from spl.daemon.home import PRIVATE_DIR, Home, HomeError
from spl.store.database import connect_writer, write_transaction
from spl.transport.auth import insert_token, new_token_info

__all__ = ["InitResult", "initialise", "rotate_identity"]


@dataclass(frozen=True)
class InitResult:
    did: str
    home: str
    created: bool  # False: the home existed and was left alone


def _mint_admin(home: Home) -> None:
    """The local CLI's credential: an admin token whose plaintext only lives in a 0600 file."""
    minted = tokens.mint("local", "sa_local_admin")
    connection = connect_writer(home.db_path)
    try:
        with write_transaction(connection):
            connection.execute("UPDATE tokens SET revoked_at = strftime('%s','now') WHERE sa_id = 'sa_local_admin'")
            insert_token(connection, new_token_info(minted, "local admin (spl init)", ["admin"]))
    finally:
        connection.close()
    home.save_secret(home.admin_token_path, minted.plaintext)


def initialise(home: Home, *, force: bool = False, if_missing: bool = False) -> InitResult:
    """Create the home. An existing home is an error unless ``force`` (new identity) or ``if_missing``."""
    if home.exists():
        if if_missing:
            return InitResult(home.load_config().did, str(home.root), created=False)
        if not force:
            raise HomeError(
                f"{home.root} is already initialised; pass --force to replace its identity "
                "(records are kept), or set SYNCROPEL_HOME to use another home"
            )
    home.root.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    for sub in ("keys", "secrets", "run", "logs"):
        (home.root / sub).mkdir(mode=PRIVATE_DIR, exist_ok=True)
    if not home.db_path.exists():
        # A WAL left beside a deleted store would be replayed into the new, empty one.
        for leftover in ("hub.db-wal", "hub.db-shm"):
            (home.root / leftover).unlink(missing_ok=True)
    identity = Identity.generate()
    home.save_identity(identity)
    home.save_config(home.new_config(identity))
    _mint_admin(home)  # creates hub.db with its schema
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
