"""Decisions waiting for this operator: ``spl aitl list|approve|reject`` (AITL: an operator in the loop).

With ``federation.pair_approval = "manual"`` (the default), a peer's ``spl federation pair`` request
waits here instead of being answered at once: the daemon records it as pending and answers the
requester 202. ``spl aitl approve`` mints the requester's token and makes the pair active (the
requester picks it up on its next poll, or with ``spl federation refresh``); ``spl aitl reject``
refuses it for good. These call ``/v1/aitl``.

A pending request is whatever a stranger sent (its DID, URL and proposed maps are the
requester's words, checked only for shape and signature), so text output escapes every field.
"""

from __future__ import annotations

from typing import Any

import typer

from spl.cli.answers import AitlDecision, AitlList
from spl.cli.client import CliError, DaemonClient
from spl.cli.common import OUTPUT, URL, call, client_for, wants_json
from spl.cli.consent import text
from spl.cli.federation import FULL_ID_LENGTH, match_id
from spl.cli.output import emit_json, emit_list, safe, table
from spl.core.pairs import is_pair_id

__all__ = ["aitl_app"]

aitl_app = typer.Typer(
    help="Decisions waiting for this operator: pair requests from peers (list, approve, reject).",
    no_args_is_help=True,
)

PAIR_ARG = typer.Argument(
    ..., metavar="PAIR", help="The pair id of the request (pair_…) or a unique prefix, as `spl aitl list` shows."
)


def _decisions(client: DaemonClient) -> list[tuple[AitlDecision, dict[str, Any]]]:
    reply = call(client, "GET", "/v1/aitl")
    decisions = reply.into(AitlList).data
    return [(item, raw) for item, raw in zip(decisions, reply.payload["data"], strict=True) if is_pair_id(item.pair_id)]


def _resolve(client: DaemonClient, given: str) -> str:
    """A pending request's full pair id from an id or a unique prefix of one waiting here."""
    given = given.strip()
    if is_pair_id(given):
        return given
    if len(given) >= FULL_ID_LENGTH:
        raise CliError(f"{safe(given, 64)!r} is not a pair id (pair_ + 16 hex); see `spl aitl list`")
    ids = [item.pair_id for item, _ in _decisions(client)]
    return match_id(given, ids, prefix="pair_", what="pending pair request", listing="spl aitl list")


def _map_text(item: Any) -> str:
    """One proposed map, however the requester spelt it: ``a ↔ b``."""
    if isinstance(item, dict):
        local = item.get("local", item.get("initiator"))
        peer = item.get("peer", item.get("responder"))
        return f"{text(local)} ↔ {text(peer)}"
    return safe(item, 256)


@aitl_app.command("list")
def list_decisions(output: str = OUTPUT, url: str | None = URL) -> None:
    """List pair requests waiting for approval: who asks, from where, for which namespaces.

    Example: spl aitl list
    """
    as_json = wants_json(output)
    listed = _decisions(client_for(url))
    if as_json:
        emit_list([raw for _, raw in listed])
        return
    if not listed:
        typer.echo("no decisions waiting")
        return
    table(
        [
            (
                item.pair_id,
                item.initiator_did,
                item.initiator_url,
                ", ".join(_map_text(entry) for entry in item.maps[:16]) or "default ↔ default",
                item.mode,
                item.requested_at,
            )
            for item, _ in listed
        ],
        ["PAIR", "FROM", "URL", "MAPS", "MODE", "REQUESTED"],
    )
    typer.echo("approve with `spl aitl approve PAIR`, refuse with `spl aitl reject PAIR --reason TEXT`", err=True)


def _decide(action: str, pair_id: str, reason: str | None, output: str, url: str | None) -> dict[str, Any] | None:
    client = client_for(url)
    resolved = _resolve(client, pair_id)
    body = {"reason": reason} if reason is not None else None
    reply = call(client, "POST", f"/v1/aitl/{resolved}/{action}", json_body=body)
    if wants_json(output):
        emit_json(reply.payload)
        return None
    return {"pair_id": resolved, **reply.payload}


@aitl_app.command("approve")
def approve(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Accept a pair request: this daemon mints the requester's token and the pair becomes active.

    The requester completes on its next poll, or with `spl federation refresh PAIR` on its side.

    Example: spl aitl approve pair_a1b2c3d4e5f60718
    """
    answer = _decide("approve", pair_id, None, output, url)
    if answer is not None:
        shown = safe(answer["pair_id"])
        state = answer.get("state")
        typer.echo(f"approved {shown}" + (f" (state {safe(state, 64)})" if state is not None else ""))
        typer.echo(f"  the peer completes on its next poll, or with `spl federation refresh {shown}` there")


@aitl_app.command("reject")
def reject(
    pair_id: str = PAIR_ARG,
    reason: str | None = typer.Option(None, "--reason", help="Why: recorded here and given to the requester."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Refuse a pair request for good (the requester gets PAIR_REJECTED; a new request needs a new pair).

    Example: spl aitl reject pair_a1b2c3d4e5f60718 --reason "unknown instance"
    """
    answer = _decide("reject", pair_id, reason, output, url)
    if answer is not None:
        typer.echo(f"rejected {safe(answer['pair_id'])}")
