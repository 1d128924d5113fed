"""``spl actor list``: who takes part in this instance's threads (seed 004, steps 1 and 6).

Lists every DID seen as a participant (records, threads, strongest role), the instance first. The actor
registry — display names, categories, ``spl actor show|register`` — is issue 12's; until then participants are
shown as ``unregistered``.
"""

from __future__ import annotations

import typer

from spl.cli.answers import ActorList
from spl.cli.common import OUTPUT, URL, call, client_for, wants_json
from spl.cli.output import emit_json, table

__all__ = ["actor_app"]

actor_app = typer.Typer(help="Actors: the DIDs that take part in this instance's threads.", no_args_is_help=True)


@actor_app.command("list")
def list_actors(output: str = OUTPUT, url: str | None = URL) -> None:
    """List the actors seen in this instance's threads, the instance itself first.

    Example: spl actor list -o json
    """
    reply = call(client_for(url), "GET", "/v1/actors")
    actors = reply.into(ActorList)
    if wants_json(output):
        emit_json(reply.payload["data"])
        return
    table(
        [(actor.did, actor.status, actor.role or "-", actor.record_count, actor.thread_count) for actor in actors.data],
        ["DID", "STATUS", "ROLE", "RECORDS", "THREADS"],
    )
    if actors.truncated:
        typer.echo("(list truncated: more actors than one answer holds)")
