"""``spl identity rotate`` (issue 14): a new signing key that keeps every pair.

The instance keeps its identifier (the DID peers paired with); the new key is linked to the old one by a statement
the old key signs, which peers verify from the DID they pinned (docs/identity.md). With a daemon running, the daemon
rotates (``POST /v1/identity/rotate``) and signs with the new key from its next record on; without one, the home is
rotated here (``spl.daemon.bootstrap.rotate_offline``) and the next ``spl serve`` uses the new key.
"""

from __future__ import annotations

from typing import Any

import typer

from spl.cli.client import CliError, DaemonClient, NoDaemon
from spl.cli.common import OUTPUT, URL, DaemonUnreachable, call, wants_json
from spl.cli.common import home as _home
from spl.cli.output import emit_json, safe
from spl.core.errors import SplError
from spl.daemon.home import HomeError

__all__ = ["rotate"]


def _show(result: dict[str, Any]) -> None:
    typer.echo(f"did:          {safe(str(result.get('did')))}  (unchanged: every pair is kept)")
    typer.echo(f"signing key:  {safe(str(result.get('key')))}")
    typer.echo(f"retired key:  {safe(str(result.get('previous_key')))}  (still verifies its records; never signs)")
    typer.echo(f"rotation:     #{safe(str(result.get('seq')))} at {safe(str(result.get('rotated_at')))}")


def rotate(output: str = OUTPUT, url: str | None = URL) -> None:
    """Rotate this instance's signing key; its DID, pairs and records stay valid.

    The old key signs a statement naming the new one; peers verify it from the DID they paired with and keep
    syncing without re-pairing. Records signed before keep verifying everywhere. Keep a backup of keys/: the old
    private key is gone once replaced.

    Example: spl identity rotate -o json | jq .key
    """
    as_json = wants_json(output)
    home = _home()
    result: dict[str, Any] | None = None
    try:
        client = DaemonClient.for_home(home, url)
    except NoDaemon:
        client = None
    if client is not None:
        try:
            result = call(client, "POST", "/v1/identity/rotate", json_body={}).payload
        except DaemonUnreachable:
            if url is not None or home.running() is not None:
                raise
    if result is None:
        if not home.exists():
            raise CliError(f"{home.root} is not initialised; run `spl init` first")
        from spl.daemon.bootstrap import rotate_offline

        try:
            result = rotate_offline(home)
        except HomeError as exc:
            raise CliError(str(exc)) from None
        except SplError as exc:
            raise CliError(exc.message) from None
        if not as_json:
            typer.echo(
                f"note: no daemon runs for {home.root}: rotated the home; the next `spl serve` signs with it", err=True
            )
    if as_json:
        emit_json(result)
    else:
        _show(result)
