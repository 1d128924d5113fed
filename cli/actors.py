"""``spl actor list|show|register``: the actors of this instance (seed 004 steps 1 and 6, seed 003's registry).

``list`` shows every registered actor (``th_actor_registry``: display name, category, status) and every DID seen
as a participant of a thread that is not registered (status ``unregistered``), the instance first. ``register``
writes a registration (or updates one: the latest wins); ``show`` gives one actor's registration and participation.
"""

from __future__ import annotations

from urllib.parse import quote

import typer

from spl.cli.answers import ActorAnswer, ActorList
from spl.cli.common import OUTPUT, URL, call, client_for, wants_json
from spl.cli.output import emit_json, emit_list, is_wide, safe, table

__all__ = ["actor_app"]

actor_app = typer.Typer(help="Actors: the DIDs registered on, or taking part in, this instance.", no_args_is_help=True)


@actor_app.command("list")
def list_actors(output: str = OUTPUT, url: str | None = URL) -> None:
    """List registered actors and those seen in this instance's threads, the instance itself first.

    Example: spl actor list -o json
    """
    reply = call(client_for(url), "GET", "/v1/actors")
    actors = reply.into(ActorList)
    if wants_json(output):
        emit_list(reply.payload["data"], has_more=reply.payload.get("truncated") is True)
        return
    headers = ["DID", "NAME", "CATEGORY", "STATUS", "ROLE", "RECORDS", "THREADS"]
    rows: list[list[object]] = [
        [
            actor.did,
            actor.display_name or "-",
            actor.category or "-",
            actor.status,
            actor.role or "-",
            actor.record_count,
            actor.thread_count,
        ]
        for actor in actors.data
    ]
    if is_wide(output):  # -o wide: the actor's kind and whether it is registered here
        headers += ["KIND", "REGISTERED"]
        for row, actor in zip(rows, actors.data, strict=True):
            row += [actor.kind or "-", "yes" if actor.registered else "no"]
    table(rows, headers)
    if actors.truncated:
        typer.echo("(list truncated: more actors than one answer holds)")


def _show(actor: ActorAnswer) -> None:
    rows = [
        ("did", actor.did),
        ("name", actor.display_name or "-"),
        ("category", actor.category or "-"),
        ("status", actor.status or "-"),
        ("registered", "yes" if actor.registered else "no"),
        ("role", actor.role or "-"),
        ("records", actor.record_count),
        ("threads", actor.thread_count),
    ]
    if actor.registration is not None and actor.registration.record_id:
        rows.append(("record", actor.registration.record_id))
    width = max(len(label) for label, _ in rows) + 1
    for label, value in rows:
        typer.echo(f"  {label + ':':<{width}} {safe(value)}")


@actor_app.command("show")
def show_actor(
    did: str = typer.Argument(..., help="The actor's DID, as `spl actor list` shows it."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Show one actor: its registration (if any) and what it took part in.

    Example: spl actor show did:sync:agent:builder -o json
    """
    reply = call(client_for(url), "GET", f"/v1/actors/{quote(did, safe=':')}")
    actor = reply.into(ActorAnswer)
    if wants_json(output):
        emit_json(reply.payload)
        return
    _show(actor)


@actor_app.command("register")
def register_actor(
    did: str = typer.Argument(..., help="The actor's DID (did:<method>:<id>)."),
    name: str = typer.Option(..., "--name", help="Display name: 1 to 128 printable characters."),
    category: str = typer.Option(..., "--category", help="One of human, agent, service, instance, adapter."),
    status: str = typer.Option("active", "--status", help="One of active, suspended, retired."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Register an actor on th_actor_registry, or update its registration (the latest one wins).

    Example: spl actor register did:sync:agent:builder --name "Build agent" --category agent
    """
    body = {"did": did, "display_name": name, "category": category, "status": status}
    reply = call(client_for(url), "POST", "/v1/actors", json_body=body)
    actor = reply.into(ActorAnswer)
    if wants_json(output):
        emit_json(reply.payload)
        return
    typer.echo(f"{'registered' if reply.status == 201 else 'updated'} {actor.did}")
    _show(actor)
