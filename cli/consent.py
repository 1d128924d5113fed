"""Consent grants from the command line: ``spl consent grant|list|revoke``.

Records never cross namespaces on their own: a peer whose target namespace differs from the
record's gets nothing, unless a grant (a signed LEARN record on ``th_consent``, written by this
daemon) says which of our namespaces may reach which of theirs, at which hash levels. With L0
the peer gets the records themselves; with only L1-L3 it gets signed redacted projections
(hashes, never content). Revocation is forward-only: what was served stays served.
``docs/federation-pairs.md`` ("Consent") is the contract; these commands call
``/v1/consent/grants``.

``spl federation grant`` builds on :func:`create_grant` to grant one peer and add the map to its pairs.
A grant's purpose and peer DID are whatever an operator (or, through a compromised daemon,
anyone) wrote, so text output escapes every field (:func:`spl.cli.output.safe`).
"""

from __future__ import annotations

import re
from typing import Any

import typer

from spl.cli.answers import ConsentGrant, ConsentGrantList
from spl.cli.client import CliError, DaemonClient
from spl.cli.common import OUTPUT, URL, call, client_for, wants_json
from spl.cli.output import emit_json, emit_list, safe, table

__all__ = [
    "HASH_LEVELS",
    "consent_app",
    "create_grant",
    "expires_value",
    "grant_line",
    "hash_levels",
    "revoke_grant",
    "text",
]

HASH_LEVELS = ("L0", "L1", "L2", "L3")
DEFAULT_LEVELS = ("L1",)  # structure, not content: raise to L0 only to share the records themselves
GRANT_ID = re.compile(r"cg_[0-9a-f]{16}")

consent_app = typer.Typer(
    help="Consent grants: which of this instance's namespaces may reach which namespace of a peer, "
    "and at which hash levels (L0 = the records, L1-L3 = redacted projections).",
    no_args_is_help=True,
)


def hash_levels(values: list[str] | None, option: str) -> list[str]:
    """``L0,L1`` (or the option repeated) → ``["L0", "L1"]``, checked here so a typo costs no request."""
    levels: list[str] = []
    for value in values or []:
        for part in value.split(","):
            level = part.strip().upper()
            if level not in HASH_LEVELS:
                raise CliError(
                    f"{option} {part.strip()!r} is not a hash level; use L0, L1, L2 or L3 (e.g. {option} L1)"
                )
            if level not in levels:
                levels.append(level)
    return levels or list(DEFAULT_LEVELS)


def _threads(values: list[str] | None) -> list[str] | None:
    """``--threads th_a,th_b`` (or repeated) → a list; None leaves the daemon's default, every thread."""
    if not values:
        return None
    threads = [part.strip() for value in values for part in value.split(",") if part.strip()]
    if not threads:
        raise CliError("--threads is empty; pass thread ids or prefixes ending in *, e.g. --threads 'th_music*'")
    return threads


def expires_value(value: str | None) -> str | float | None:
    """``--expires``: ``30d``, ``12h``, seconds, or an RFC 3339 time; the daemon checks it is in the future."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        raise CliError("--expires is empty; pass 30d, 12h, a number of seconds or an RFC 3339 time")
    try:
        return float(value)  # a bare number is seconds: sent as a number, as the route takes it
    except ValueError:
        return value


def text(value: object) -> str:
    """A daemon-reported field for a line of text: escaped, ``-`` when absent."""
    return "-" if value is None else safe(value)


def check_grant_id(text: str) -> str:
    """A grant id as the daemon mints them (``cg_`` + 16 hex): it goes into a URL path, so nothing else does."""
    grant_id = text.strip()
    if not GRANT_ID.fullmatch(grant_id):
        raise CliError(f"{safe(text, 64)!r} is not a grant id (cg_ + 16 hex); list grants with `spl consent list`")
    return grant_id


def grant_line(grant: ConsentGrant) -> str:
    """One grant on one line: ``cg_… default → music L1 threads * (active, expires …)``."""
    levels = ",".join(safe(level, 8) for level in grant.hash_levels) or "-"
    threads = ",".join(safe(thread, 260) for thread in grant.threads) or "*"
    peer = f" peer {safe(grant.peer_did)}" if grant.peer_did else ""
    expires = f", expires {safe(grant.expires_at)}" if grant.expires_at is not None else ""
    purpose = f" purpose {safe(grant.purpose)}" if grant.purpose else ""
    return (
        f"{safe(grant.grant_id)} {text(grant.source_namespace)} → {text(grant.target_namespace)} {levels} "
        f"threads {threads}{peer}{purpose} ({text(grant.status)}{expires})"
    )


def create_grant(
    client: DaemonClient,
    *,
    source: str,
    target: str,
    levels: list[str],
    threads: list[str] | None = None,
    purpose: str | None = None,
    expires: str | float | None = None,
    peer_did: str | None = None,
) -> tuple[ConsentGrant, dict[str, Any]]:
    """``POST /v1/consent/grants``: the grant, typed, and its JSON as the daemon sent it."""
    body: dict[str, Any] = {"source_namespace": source, "target_namespace": target, "hash_levels": levels}
    if threads is not None:
        body["threads"] = threads
    if purpose is not None:
        body["purpose"] = purpose
    if expires is not None:
        body["expires"] = expires
    if peer_did is not None:
        body["peer_did"] = peer_did
    reply = call(client, "POST", "/v1/consent/grants", json_body=body)
    return reply.into(ConsentGrant), reply.payload


def revoke_grant(grant_id: str, output: str, url: str | None) -> None:
    """``DELETE /v1/consent/grants/{id}`` and say what holds from now on (shared by ``spl federation revoke-grant``)."""
    as_json = wants_json(output)
    reply = call(client_for(url), "DELETE", f"/v1/consent/grants/{check_grant_id(grant_id)}")
    if as_json:
        emit_json(reply.payload)
        return
    grant = reply.into(ConsentGrant)
    typer.echo(f"revoked {grant_line(grant)}")
    typer.echo("  from now on no pull gets records through it; what was served before stays served", err=True)


LEVELS_OPTION_HELP = "Hash levels granted, comma-separated: L0 (the records themselves), L1-L3 (hashes only)."


@consent_app.command("grant")
def grant(
    to_namespace: str = typer.Option(..., "--to-namespace", help="The namespace the records may reach (target)."),
    namespace: str = typer.Option("default", "--namespace", "-n", help="This instance's namespace (source)."),
    levels: list[str] | None = typer.Option(
        None, "--hash-levels", help=LEVELS_OPTION_HELP + " Default L1.", metavar="L0,L1,L2,L3"
    ),
    threads: list[str] | None = typer.Option(
        None, "--threads", help="Only these threads: ids or prefixes ending in *, comma-separated (default: all)."
    ),
    purpose: str | None = typer.Option(None, "--purpose", help="Why: kept on the grant for audit."),
    expires: str | None = typer.Option(None, "--expires", help="When it lapses: 30d, 12h, seconds or RFC 3339."),
    peer_did: str | None = typer.Option(None, "--peer-did", help="Only pulls by this peer (default: any requester)."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Let records of --namespace reach --to-namespace (at L1 by default: redacted projections).

    Example: spl consent grant --namespace music --to-namespace projects/music --hash-levels L1,L2 --expires 30d

    Share the records themselves only with L0: spl consent grant --to-namespace team --hash-levels L0
    """
    as_json = wants_json(output)
    if peer_did is not None and not peer_did.startswith("did:"):
        raise CliError(f"--peer-did {safe(peer_did, 64)!r} is not a DID; pass one like did:key:z6Mk…")
    created, payload = create_grant(
        client_for(url),
        source=namespace,
        target=to_namespace,
        levels=hash_levels(levels, "--hash-levels"),
        threads=_threads(threads),
        purpose=purpose,
        expires=expires_value(expires),
        peer_did=peer_did,
    )
    if as_json:
        emit_json(payload)
    else:
        typer.echo(f"granted {grant_line(created)}")


@consent_app.command("list")
def list_grants(output: str = OUTPUT, url: str | None = URL) -> None:
    """List consent grants, revoked and expired ones included (they stay for audit).

    Example: spl consent list -o json
    """
    as_json = wants_json(output)
    reply = call(client_for(url), "GET", "/v1/consent/grants")
    grants = reply.into(ConsentGrantList).data
    if as_json:
        emit_list(reply.payload["data"])
        return
    if not grants:
        typer.echo("no consent grants; add one with `spl consent grant --to-namespace NAMESPACE`")
        return
    table(
        [
            (
                item.grant_id,
                item.source_namespace,
                item.target_namespace,
                ",".join(item.hash_levels),
                ",".join(item.threads) or "*",
                item.peer_did or "any",
                item.status,
                item.expires_at if item.expires_at is not None else "never",
                item.purpose or "",
            )
            for item in grants
        ],
        ["GRANT", "FROM", "TO", "LEVELS", "THREADS", "PEER", "STATUS", "EXPIRES", "PURPOSE"],
    )


@consent_app.command("revoke")
def revoke(
    grant_id: str = typer.Argument(..., help="The grant's id (cg_…), as `spl consent list` shows it."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Revoke a grant: no later pull gets records through it (forward-only: nothing served is recalled).

    Example: spl consent revoke cg_0123456789abcdef
    """
    revoke_grant(grant_id, output, url)
