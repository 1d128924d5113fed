"""Instance administration commands: ``spl identity``, ``spl token`` and ``spl namespace``.

Every command reaches the daemon through :mod:`spl.cli.client` (URL and credential
resolution); ``spl.cli.main`` registers the three groups. Text output escapes every
value the daemon sent (:func:`spl.cli.output.safe`; tables do it per cell): a token label or
a namespace description is whatever a client wrote.
"""

from __future__ import annotations

from typing import Any

import typer

from spl.cli.answers import Identity, Namespace, NamespaceList, TokenList, TokenMinted
from spl.cli.client import CliError, DaemonClient, NoDaemon, decode_answer
from spl.cli.common import OUTPUT, URL, DaemonUnreachable, call, running_pid, wants_json
from spl.cli.common import home as _home
from spl.cli.output import emit_json, emit_list, is_wide, rfc3339, safe, table
from spl.core.config import advertised_endpoint
from spl.core.tokens import SCOPES
from spl.daemon.home import Home, HomeError

__all__ = ["identity_app", "namespace_app", "token_app"]

identity_app = typer.Typer(help="This instance's identity (its did:key DID and Ed25519 keypair).", no_args_is_help=True)
token_app = typer.Typer(help="Bearer tokens: mint, list, revoke, and save one for this CLI.", no_args_is_help=True)
namespace_app = typer.Typer(help="Namespaces records may be emitted into (body.namespace).", no_args_is_help=True)

# -- identity ----------------------------------------------------------------------------


def _local_identity(home: Home) -> dict[str, Any]:
    """The identity a daemon on this home would serve, read from the home itself."""
    config = home.load_config()
    # The key that signs is the rotation chain's current one (docs/identity.md); a problem means no chain leads to it.
    identity, key_problem = home.load_instance_identity(config.did)
    host = "127.0.0.1" if config.host in ("0.0.0.0", "localhost", "") else config.host
    host = f"[{host}]" if ":" in host else host
    return {
        "object": "identity",
        "did": config.did,
        "actor": config.did,
        "method": "did:key",
        "key_fingerprint": identity.fingerprint,
        "endpoint_url": advertised_endpoint(config.public_url, f"http://{host}:{config.port}"),
        "source": "home",
        "home": str(home.root),
        "key_matches_config": key_problem is None,
        "signing_key": identity.key_did,
    }


@identity_app.command("show")
def identity_show(output: str = OUTPUT, url: str | None = URL) -> None:
    """Show the instance DID, endpoint URL and key fingerprint.

    Asks the daemon (GET /v1/identity); when no daemon answers, shows this home's
    identity instead and says so on stderr. Example: spl identity show -o json | jq .did
    """
    as_json = wants_json(output)
    home = _home()
    try:
        client = DaemonClient.for_home(home, url)
    except NoDaemon:
        if not home.exists():
            raise
        client, reason = None, "no spl daemon is running for this home"
    payload: dict[str, Any] | None = None
    if client is not None:
        try:
            reply = call(client, "GET", "/v1/identity")
            identity = reply.into(Identity)
            payload = reply.payload
        except DaemonUnreachable:
            if not home.exists():
                raise
            reason = f"no daemon answers at {client.url}"
    if payload is None:
        payload = _local_identity(home)
        identity = decode_answer(payload, Identity, str(home.root))
        typer.echo(f"note: {reason}; showing the identity of the home {home.root} (endpoint from its config)", err=True)
    if as_json:
        emit_json(payload)
        return
    typer.echo(f"did:          {safe(identity.did)}")
    typer.echo(f"endpoint_url: {safe(identity.endpoint_url)}")
    typer.echo(f"fingerprint:  {safe(identity.key_fingerprint)}")
    typer.echo(f"method:       {safe(identity.method)}")
    if identity.source == "home":
        typer.echo(f"source:       home {safe(identity.home)} (daemon not running)")
    else:
        scopes = ", ".join(safe(scope, 64) for scope in identity.scopes) or "-"
        who = "authenticated" if identity.is_authenticated else "anonymous"
        typer.echo(f"caller:       {who} (scopes: {scopes})")


@identity_app.command("generate")
def identity_generate(
    force: bool = typer.Option(False, "--force", help="Replace the existing keypair (changes the instance DID)."),
    output: str = OUTPUT,
) -> None:
    """Generate a new Ed25519 keypair (a new did:key DID) for this home.

    Refuses to replace an existing identity without --force. Records keep their old
    signer; peers that paired with the old DID must pair again. A running daemon keeps
    the old identity until it is restarted (spl serve --stop, then spl serve).

    Example: spl identity generate --force
    """
    from spl.daemon.bootstrap import rotate_identity

    as_json = wants_json(output)
    home = _home()
    if not home.config_path.exists():
        raise HomeError(f"no spl home at {home.root}: run `spl init` first (it creates an identity)")
    if home.key_path.exists() and not force:
        raise CliError(
            f"{home.root} already has an identity ({home.load_config().did}); pass --force to replace it "
            "(this changes the instance DID)"
        )
    old = home.load_config().did
    did = rotate_identity(home)
    pid = running_pid(home)
    if as_json:
        emit_json({"did": did, "previous_did": old, "home": str(home.root), "restart_required": pid is not None})
    else:
        typer.echo(f"new identity for {home.root}\n  did: {did}\n  was: {old}")
    if pid is not None:
        typer.echo(
            f"warning: the daemon (pid {pid}) still serves the old DID; restart it: spl serve --stop && spl serve",
            err=True,
        )
    else:
        typer.echo("note: a daemon started from this home elsewhere must be restarted to use the new DID", err=True)


# -- tokens ------------------------------------------------------------------------------


def _scopes(text: str) -> list[str]:
    scopes = [scope.strip() for scope in text.split(",") if scope.strip()]
    if not scopes:
        raise CliError(f"--scopes is empty; pass a comma-separated list drawn from: {', '.join(SCOPES)}")
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown:
        raise CliError(f"unknown scope(s) {', '.join(unknown)}; choose from: {', '.join(SCOPES)}")
    return list(dict.fromkeys(scopes))


@token_app.command("mint")
def token_mint(
    scopes: str = typer.Option(
        ..., "--scopes", help=f"Comma-separated scopes ({', '.join(SCOPES)}); admin implies all."
    ),
    label: str = typer.Option("", "--label", help="A note to recognise the token by in `spl token list`."),
    env: str = typer.Option("local", "--env", help="Environment tag in the token (lowercase letters/digits)."),
    target_namespace: str | None = typer.Option(
        None,
        "--target-namespace",
        help="Bind the token to the consent filter: every pull with it lands in this namespace (a teammate's), so "
        "records of other namespaces reach it only under a grant (spl consent grant).",
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Mint a bearer token (POST /v1/tokens); the plaintext is shown once, now.

    Text output prints only the token on stdout (details and the warning go to stderr),
    so TOKEN=$(spl token mint --scopes records:read) works.

    For a teammate in another namespace pulling a thread with `spl fleet sync add`:

    spl token mint --scopes federation:sync --target-namespace their-ns --label "pull by bob"

    Example: spl token mint --scopes records:read,records:write --label ci
    """
    as_json = wants_json(output)
    wanted = _scopes(scopes)
    client = DaemonClient.for_home(_home(), url)
    body: dict[str, Any] = {"scopes": wanted, "label": label, "env": env}
    if target_namespace is not None:
        body["target_namespace"] = target_namespace
    reply = call(client, "POST", "/v1/tokens", json_body=body)
    minted = reply.into(TokenMinted)
    if as_json:
        emit_json(reply.payload)
    else:
        typer.echo(safe(minted.token))
        granted = ", ".join(safe(scope, 64) for scope in minted.scopes or wanted)
        labelled = f", label: {safe(label)}" if label else ""
        typer.echo(
            f"minted token {safe(minted.token_id)} (scopes: {granted}{labelled})",
            err=True,
        )
    typer.echo(
        "warning: this token is shown only once; store it now (e.g. `spl token save <token>` where it is used)",
        err=True,
    )


@token_app.command("list")
def token_list(
    all_tokens: bool = typer.Option(False, "--all", help="Include revoked tokens in the text output."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """List tokens (GET /v1/tokens): ids, scopes, status. Plaintexts are never stored or shown.

    Example: spl token list -o json
    """
    as_json = wants_json(output)
    client = DaemonClient.for_home(_home(), url)
    reply = call(client, "GET", "/v1/tokens")
    data = reply.into(TokenList).data
    if as_json:
        emit_list(reply.payload["data"])
        return
    shown = [info for info in data if all_tokens or info.status != "revoked"]
    headers = ["TOKEN_ID", "SERVICE_ACCOUNT", "SCOPES", "STATUS", "LABEL"]
    rows: list[list[object]] = [
        [info.token_id, info.service_account_id, ",".join(info.scopes), info.status, info.label] for info in shown
    ]
    if is_wide(output):  # -o wide: when each token was minted and lapses, and the pair it serves
        headers += ["CREATED", "EXPIRES", "PAIR"]
        for row, info in zip(rows, shown, strict=True):
            row += [rfc3339(info.created_at) or "-", rfc3339(info.expires_at) or "never", info.pair_id or "-"]
    table(rows, headers)
    hidden = len(data) - len(shown)
    if hidden:
        typer.echo(f"({hidden} revoked token(s) hidden; pass --all to show them)", err=True)


@token_app.command("revoke")
def token_revoke(
    token_id: str = typer.Argument(..., help="The token_id from `spl token list` (not the token itself)."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Revoke a token (DELETE /v1/tokens/{token_id}); it is refused at once with 401.

    Example: spl token revoke "$(spl token list -o json | jq -r '.data[0].token_id')"
    """
    as_json = wants_json(output)
    if token_id.startswith("spl_"):
        raise CliError("pass the token_id shown by `spl token list`, not the token plaintext")
    client = DaemonClient.for_home(_home(), url)
    payload = call(client, "DELETE", f"/v1/tokens/{token_id}").payload
    if as_json:
        emit_json(payload)
    else:
        typer.echo(f"revoked token {safe(token_id)}")


@token_app.command("save")
def token_save(
    token: str = typer.Argument(..., help="The token plaintext (spl_<env>_<account>_<secret>)."),
) -> None:
    """Save a token for this CLI in $SYNCROPEL_HOME/token (mode 0600).

    The saved token is used when $SPL_TOKEN is unset, before the home's admin credential.

    Example: spl token save "$(cat ./ci.token)"
    """
    from spl.core.tokens import parse

    token = token.strip()
    if parse(token) is None:
        raise CliError("that is not an spl token (expected spl_<env>_<account>_<64 hex>); check for a copy error")
    home = _home()
    home.root.mkdir(parents=True, exist_ok=True)
    home.save_secret(home.saved_token_path, token)
    typer.echo(f"saved the token to {home.saved_token_path} (mode 0600); $SPL_TOKEN still takes precedence")


# -- namespaces --------------------------------------------------------------------------


@namespace_app.command("create")
def namespace_create(
    namespace: str = typer.Argument(..., help="Namespace id: 1-4 '/'-separated segments, e.g. acme or acme/ops."),
    description: str = typer.Option("", "--description", "-d", help="What the namespace is for."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Register a namespace (POST /v1/namespaces); parents must exist first (acme before acme/ops).

    Example: spl namespace create acme/ops --description "operations"
    """
    as_json = wants_json(output)
    client = DaemonClient.for_home(_home(), url)
    reply = call(client, "POST", "/v1/namespaces", json_body={"id": namespace, "description": description})
    created = reply.into(Namespace)
    if as_json:
        emit_json(reply.payload)
    else:
        typer.echo(f"created namespace {safe(created.id)} (record {safe(created.record_id)})")


@namespace_app.command("list")
def namespace_list(output: str = OUTPUT, url: str | None = URL) -> None:
    """List registered namespaces (GET /v1/namespaces), including the implicit default.

    Example: spl namespace list -o json
    """
    as_json = wants_json(output)
    client = DaemonClient.for_home(_home(), url)
    reply = call(client, "GET", "/v1/namespaces")
    data = reply.into(NamespaceList).data
    if as_json:
        emit_list(reply.payload["data"])
        return
    table(
        [(entry.id, entry.level, entry.status, entry.description) for entry in data],
        ["NAMESPACE", "LEVEL", "STATUS", "DESCRIPTION"],
    )
