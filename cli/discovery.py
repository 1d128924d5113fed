"""Peer discovery commands (issue 14): ``spl discover``, ``spl fleet sync peers …``, ``spl identity publish-did-web``.

Placeholder, registered in cli/main.py.
"""

from __future__ import annotations

import typer

__all__ = ["discover", "peers_app", "publish_did_web"]

peers_app = typer.Typer(help="Peers found by discovery (mDNS, did:web, a did:sync directory, static config).")


def discover() -> None:
    """Fetch and verify a peer's manifest.

    Example: spl discover --peer-url https://peer.example:9100
    """
    raise typer.Exit(1)


def publish_did_web() -> None:
    """Write this instance's did:web DID document.

    Example: spl identity publish-did-web --domain alice.dev
    """
    raise typer.Exit(1)
