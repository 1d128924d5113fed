"""``spl pair``: pair a second device with this instance (docs/pairing.md).

On the instance (or any CLI holding an admin token for it)::

    spl pair --device laptop --scopes records:read,records:write   # a one-time code, a deep link, a QR code
    spl pair list
    spl pair revoke laptop                                          # that device's token stops; no other does

On the device, which needs no daemon of its own, only a home for its token::

    spl pair redeem ABCD-EFGH-JKMN-PQRS --url https://spl.example:9100   # or the syncropel://pair?… link
    spl pair redeem - --url https://spl.example:9100                     # the code from stdin, out of `ps`

The redeem sends no credential at all (the route is open) and saves the device's token in the home as
``spl token save`` does, so every later command from that home (with ``--url`` or ``$SPL_SERVE_URL``)
speaks as the device.
"""

from __future__ import annotations

import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

import typer

from spl.cli.client import CliError, DaemonClient, checked_url
from spl.cli.common import OUTPUT, URL, call, client_for, home, wants_json
from spl.cli.output import emit_json, emit_list, machine_format, safe, table
from spl.core.pairing import DEFAULT_TTL, MAX_CODE_TEXT
from spl.core.units import DurationError, parse_duration

__all__ = ["pair_app"]

pair_app = typer.Typer(
    help="Pair a second device with this instance: a one-time code, then its own token.\n\n"
    "Example: spl pair --device laptop --scopes records:read,records:write",
)

DEEP_LINK_PREFIX = "syncropel://pair?"
MAX_LINK = 2048  # a link spl makes: the prefix, a URL of up to 512 characters percent-encoded (3x), the code


@pair_app.callback(invoke_without_command=True)
def pair(
    ctx: typer.Context,
    device: str | None = typer.Option(None, "--device", "-d", help="A name for the device, such as laptop."),
    scopes: str = typer.Option(
        "records:read,records:write", "--scopes", help="Comma-separated scopes of the device's token."
    ),
    ttl: str = typer.Option("10m", "--ttl", help="How long the code can be redeemed: 30s, 10m, 1h (at most 24h)."),
    link_url: str | None = typer.Option(
        None, "--link-url", help="The URL the device should use, when it differs from --url (a public name)."
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Record a pairing for a device and print its one-time code, a deep link and a QR code.

    The code works once and expires (10 minutes by default); the device redeems it with
    `spl pair redeem CODE --url URL` and gets a token of its own.

    Example: spl pair --device laptop --scopes records:read,records:write --url https://spl.example:9100
    """
    if ctx.invoked_subcommand is not None:
        return
    if device is None:
        typer.echo(ctx.get_help())
        raise typer.Exit(0)
    as_json = wants_json(output)
    try:
        seconds = parse_duration(ttl, "--ttl", positive=True) if ttl else DEFAULT_TTL
    except DurationError as exc:
        raise CliError(str(exc)) from None
    body: dict[str, Any] = {
        "device": device,
        "scopes": [scope.strip() for scope in scopes.split(",") if scope.strip()],
        "ttl_secs": seconds,
    }
    shown_url = link_url or url
    if shown_url is not None:
        body["url"] = checked_url(shown_url, "--link-url" if link_url else "--url")
    payload = call(client_for(url), "POST", "/v1/pairings", json_body=body).payload
    if as_json:
        with machine_format(output):  # a group's own options are not wrapped by spl.cli.app: -o yaml is set here
            emit_json(payload)
        return
    code, link = str(payload.get("code", "")), str(payload.get("link", ""))
    typer.echo(f"pairing code for {safe(payload.get('device'))}: {safe(code, 64)}")
    typer.echo(f"link: {safe(link, MAX_LINK)}")
    # Drawn only for a link the daemon could have made: a longer one (or one with escapes) is not spl's, and segno
    # would fail on more than a QR code holds.
    if link.startswith(DEEP_LINK_PREFIX) and len(link) <= MAX_LINK and link.isascii() and link.isprintable():
        import segno  # only here: no other command draws a QR code

        segno.make(link).terminal(out=sys.stdout, compact=True)
    minutes = max(1, round(seconds / 60))
    typer.echo(
        f"on the device: spl pair redeem - --url {safe(payload.get('url'), 512)} (then type the code; "
        "a code in the command line shows in `ps` to other users of that machine)\n"
        f"the code works once and expires in {minutes} minute(s) "
        f"(scopes: {', '.join(safe(scope, 64) for scope in payload.get('scopes') or [])})",
        err=True,
    )


def _code_and_url(text: str, url: str | None) -> tuple[str, str]:
    """The code and the instance URL from ``CODE`` or a ``syncropel://pair?url=…&code=…`` link, and ``--url``."""
    text = text.strip()
    if text.startswith(DEEP_LINK_PREFIX):
        not_a_link = "that link is not a pairing link (syncropel://pair?url=…&code=…); paste it whole"
        try:
            query = parse_qs(urlsplit(text).query, max_num_fields=4)
        except ValueError:  # more fields than a pairing link has (or a malformed one): a clean refusal, no traceback
            raise CliError(not_a_link) from None
        codes, urls = query.get("code") or [], query.get("url") or []
        if len(codes) != 1 or len(urls) > 1:
            raise CliError(not_a_link)
        code = codes[0]
        url = url or (urls[0] if urls else None)
    else:
        code = text
    if len(code) > MAX_CODE_TEXT:
        raise CliError("that is not a pairing code (16 characters such as ABCD-EFGH-JKMN-PQRS)")
    import os

    chosen = url or os.environ.get("SPL_SERVE_URL") or None
    if chosen is None:
        raise CliError("say where the instance is: --url https://host:port (or $SPL_SERVE_URL, or pass the whole link)")
    return code, checked_url(chosen, "--url")


@pair_app.command("redeem")
def redeem(
    code: str = typer.Argument(
        ...,
        help="The code `spl pair` printed, or its whole syncropel://pair?… link; - reads it from stdin, which keeps "
        "it out of `ps` (another user of this machine could redeem a code seen there first).",
    ),
    label: str = typer.Option("", "--label", help="A few words about this device for the instance's token list."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Redeem a pairing code on this device: get its own token and save it in this home ($SYNCROPEL_HOME/token).

    No credential is sent. Afterwards every command from this home speaks as the device
    (pass --url or set $SPL_SERVE_URL).

    Example: spl pair redeem ABCD-EFGH-JKMN-PQRS --url https://spl.example:9100
    """
    as_json = wants_json(output)
    if code == "-":  # one line (a terminal's Enter ends it), bounded: a link is at most a few hundred characters
        if sys.stdin.isatty():
            typer.echo("pairing code (or link): ", err=True, nl=False)
        code = sys.stdin.readline(4096).strip()
        if not code:
            raise CliError("no code on stdin; paste the code `spl pair` printed, or its syncropel://pair?… link")
    text, target = _code_and_url(code, url)
    body: dict[str, Any] = {"code": text}
    if label:
        body["label"] = label
    payload = call(DaemonClient(target, None), "POST", "/v1/pairing/redeem", json_body=body).payload
    from spl.core.tokens import parse

    token = payload.get("token")
    if not isinstance(token, str) or parse(token) is None:
        raise CliError(f"the instance at {target} answered without a usable token; is it an spl daemon?")
    where = home()
    where.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    replaced = where.read_secret(where.saved_token_path) is not None
    where.save_secret(where.saved_token_path, token)
    saved = {key: value for key, value in payload.items() if key != "token"}  # the secret stays in the file
    saved["saved_to"] = str(where.saved_token_path)
    if as_json:
        emit_json(saved)
        return
    typer.echo(
        f"paired as {safe(payload.get('device'))} (token {safe(payload.get('token_id'), 80)}, scopes: "
        f"{', '.join(safe(scope, 64) for scope in payload.get('scopes') or [])})"
    )
    note = "; it replaced the one saved before" if replaced else ""
    typer.echo(
        f"saved the token to {where.saved_token_path} (mode 0600){note}"
        f"; use it with --url {safe(target, 512)} or export SPL_SERVE_URL={safe(target, 512)}",
        err=True,
    )


@pair_app.command("list")
def pair_list(output: str = OUTPUT, url: str | None = URL) -> None:
    """List paired devices and pending codes (GET /v1/pairings): name, status, scopes, token.

    Example: spl pair list -o json
    """
    as_json = wants_json(output)
    payload = call(client_for(url), "GET", "/v1/pairings").payload
    listed = payload.get("data")
    data: list[Any] = listed if isinstance(listed, list) else []
    if as_json:
        emit_list(data)
        return
    table(
        [
            (
                entry.get("device"),
                entry.get("status"),
                ",".join(str(scope) for scope in entry.get("scopes") or []),
                entry.get("token_id") or "-",
                entry.get("url"),
            )
            for entry in data
            if isinstance(entry, dict)
        ],
        ["DEVICE", "STATUS", "SCOPES", "TOKEN_ID", "URL"],
    )


@pair_app.command("revoke")
def pair_revoke(
    device: str = typer.Argument(..., help="The device's name, as `spl pair list` shows it."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Revoke one device: its token is refused from now on (401); every other token keeps working.

    Example: spl pair revoke laptop
    """
    from urllib.parse import quote

    as_json = wants_json(output)
    payload = call(client_for(url), "DELETE", f"/v1/pairings/{quote(device, safe='')}").payload
    if as_json:
        emit_json(payload)
        return
    cut = "; its token is revoked" if payload.get("token_revoked") else ""
    typer.echo(f"revoked the pairing of {safe(payload.get('device'))}{cut}")
