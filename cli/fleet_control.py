"""``spl kill`` / ``spl unkill``: the kill switch (``th_fleet_control``, docs/kill-switch.md).

``spl kill --soft`` stops new work (INTENDs from clients and peers), ``--hard`` every write but the daemon's own
configuration, ``--emergency`` every request but health, identity, discovery and admin callers. ``spl unkill``
lifts it; pairs that held records back pull them at once. Both talk to the local daemon with the home's admin
credential, like every command; the state shows in ``spl status`` and ``GET /health``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from spl.cli.common import OUTPUT, URL, call, client_for, wants_json
from spl.cli.output import emit_json, safe

__all__ = ["COMMANDS", "kill", "unkill"]

REASON_HELP = "Why (at most 500 printable characters): shown in every refusal, in `spl status` and in the log."


def _state_line(payload: dict[str, Any]) -> str:
    level = payload.get("level")
    if level == "none":
        return "not frozen: every write is accepted"
    reason = payload.get("reason")
    why = f" — {safe(reason, 500)}" if isinstance(reason, str) and reason else ""
    return f"frozen ({safe(level, 16)}) since {safe(payload.get('since'), 32)}{why}"


def kill(
    soft: bool = typer.Option(False, "--soft", help="Refuse new INTENDs from clients and peers (no new work starts)."),
    hard: bool = typer.Option(False, "--hard", help="Refuse every write but the daemon's own configuration."),
    emergency: bool = typer.Option(
        False, "--emergency", help="As --hard, and refuse every request but health, identity and admin callers."
    ),
    reason: str = typer.Option("", "--reason", help=REASON_HELP),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Freeze this instance (the kill switch): refused writes answer 503 FLEET_FROZEN_<LEVEL> until `spl unkill`.

    Exactly one level. Pairs and pushers retry by themselves; nothing they hold back is lost. Running it again with
    another level moves the freeze there.

    Example: spl kill --hard --reason "incident 42: runaway agent"
    """
    levels = [name for name, chosen in (("soft", soft), ("hard", hard), ("emergency", emergency)) if chosen]
    if len(levels) != 1:
        raise typer.BadParameter(
            "give exactly one of --soft, --hard, --emergency", param_hint="--soft / --hard / --emergency"
        )
    reply = call(client_for(url), "POST", "/v1/fleet/kill", json_body={"level": levels[0], "reason": reason})
    if wants_json(output):
        emit_json(reply.payload)
        return
    typer.echo(_state_line(reply.payload))
    typer.echo("lift it with: spl unkill")


def unkill(
    reason: str = typer.Option("", "--reason", help=REASON_HELP),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Lift the freeze: writes are accepted again, and pairs pull what they held back at once.

    Example: spl unkill --reason "incident 42 resolved"
    """
    reply = call(client_for(url), "POST", "/v1/fleet/unkill", json_body={"reason": reason})
    if wants_json(output):
        emit_json(reply.payload)
        return
    typer.echo(_state_line(reply.payload))
    kicked = reply.payload.get("pairs_kicked")
    if isinstance(kicked, int) and kicked:
        typer.echo(f"{kicked} pair(s) told to pull now")


COMMANDS: tuple[Callable[..., Any], ...] = (kill, unkill)
