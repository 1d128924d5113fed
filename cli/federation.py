"""Federation pairs from the command line: ``spl federation pair|list|show|…`` and ``spl sync``.

A federation pair joins this instance and a peer in one command (``spl federation pair URL``):
both sides pull each other's records in the namespaces they agreed, each under a token the other
minted for exactly that pair. The daemon does the handshake; these commands call its
``/v1/federation/pairs`` routes and print what it answers. ``docs/federation-pairs.md`` is the
contract (wire format, states, routes); ``spl fleet sync`` is the older one-thread sync pair.

A pair is named by its full id (``pair_`` + 16 hex) or by a unique prefix of it, with or without
``pair_``, such as the 8 characters ``spl status`` shows.

Everything a pair shows comes, through the daemon, from the peer: its URL and DID, its
manifest, a ``state_reason`` quoting its error. Text output escapes every such field
(:func:`spl.cli.output.safe`), so a peer cannot drive the operator's terminal or forge lines;
``-o json`` prints the daemon's answer exactly. No command shows a token, only token ids.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import typer

from spl.cli.answers import (
    FederationPair,
    FederationPairList,
    FederationPull,
    FederationSync,
    NamespaceMapping,
    PairCreated,
)
from spl.cli.client import CliError, DaemonClient, DaemonError
from spl.cli.common import OUTPUT, URL, call, client_for, wants_json
from spl.cli.consent import create_grant, expires_value, grant_line, hash_levels, revoke_grant, text
from spl.cli.fleet import parse_duration
from spl.cli.output import emit_json, emit_list, is_wide, rfc3339, safe, table
from spl.core.pairs import MODES, is_pair_id

__all__ = [
    "federation_app",
    "federation_pair_lines",
    "match_id",
    "peer_label",
    "sync",
]

# The daemon polls a responder that holds the request for approval for up to 60 s (``--wait``), after the
# manifest fetch and the POST: 30 s more leaves room for both before the CLI gives up on an answer that is coming.
APPROVAL_WAIT_MAX = 60.0  # the daemon's bound on ``wait`` (docs/federation-pairs.md, "The handshake")
PAIR_TIMEOUT = APPROVAL_WAIT_MAX + 30.0
SYNC_TIMEOUT = 90.0  # a sync pulls now and waits for the pull; a refresh may re-fetch the manifest and poll
STEP_MARKS = {True: "✓", False: "✗"}
WAITING_MARK = "…"  # the step a pair held for approval has not finished: not a failure
LIVE_STATES = ("active", "paused", "degraded", "peer_manifest_changed")  # the pairs a map can be added to
STATE_ORDER = ("active", "establishing", "paused", "degraded", "peer_manifest_changed", "revoked")
FULL_ID_LENGTH = len("pair_") + 16

federation_app = typer.Typer(
    help="Federation pairs with other instances (pair, list, show, lifecycle, modes, grants) and soak runs.",
    no_args_is_help=True,
)

PAIR_ARG = typer.Argument(
    ..., metavar="PAIR", help="The pair id (pair_…) or a unique prefix of it, e.g. the 8 shown by `spl status`."
)


# -- formatting (also used by `spl status`) ----------------------------------------------------------------


def peer_label(url: str | None, did: str | None) -> str:
    """A short, escaped name for a peer: ``host:port`` of its URL, else the tail of its DID."""
    if url:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:  # a port out of range, a malformed IPv6 host: fall back on the DID
            parts, port = None, None
        if parts is not None and parts.hostname:
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            return safe(f"{host}:{port}" if port else host, 256)
    did = did or "?"
    return safe("…" + did[-8:] if len(did) > 8 else did)


def _short_id(pair_id: str) -> str:
    return safe(pair_id.removeprefix("pair_")[:8])


def _interval(seconds: Any) -> str:
    """``300`` → ``5m``; ``30`` → ``30s``; ``5400`` → ``90m``."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool):
        return "?"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _word(value: str | None) -> str:
    """A state or a mode: one of a few short words, so a longer one (a hostile daemon's) is cut at 64."""
    return "-" if value is None else safe(value, 64)


def _mode(pair: FederationPair) -> str:
    """``polling every 5m`` / ``continuous`` / ``on-demand``."""
    every = f" every {_interval(pair.poll_interval)}" if pair.mode == "polling" else ""
    return f"{_word(pair.mode)}{every}"


def _ago(seconds: float) -> str:
    if abs(seconds) < 1:
        return "now"
    span, suffix = (seconds, "ago") if seconds > 0 else (-seconds, "from now")
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if span >= size:
            return f"{span // size:.0f}{unit} {suffix}"
    return f"{span:.0f}s {suffix}"


def _when(value: Any, now: float | None = None) -> str:
    """An RFC 3339 time (or POSIX seconds) as ``2026-11-30T14:00:00Z (3m ago)``; ``-`` for none.

    A value that does not parse is shown escaped as it came: the daemon's text, not a guess.
    """
    if value is None:
        return "-"
    if isinstance(value, int | float) and not isinstance(value, bool):
        at: float | None = float(value)
        shown = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))
    else:
        shown = safe(value, 64)
        try:
            at = datetime.fromisoformat(str(value)[:64]).timestamp()
        except ValueError:
            at = None
    if at is None:
        return shown
    now = time.time() if now is None else now
    return f"{shown} ({_ago(now - at)})"


def _maps(maps: list[NamespaceMapping]) -> str:
    return ", ".join(f"{safe(item.local)} ↔ {safe(item.peer)}" for item in maps) or "-"


def _records(count: int | None) -> str:
    if count is None:
        return "? records"
    return f"{count} record{'' if count == 1 else 's'}"


def _lag(pair: FederationPair) -> str:
    """``in 12 rec (5s), out 3 rec``: what we have not pulled yet, and (when known) what the peer has not."""
    lag = pair.lag
    seconds = f" ({lag.in_seconds:.0f}s)" if isinstance(lag.in_seconds, int | float) else ""
    inbound = "?" if lag.in_records is None else str(lag.in_records)
    outbound = "" if lag.out_records is None else f", out {lag.out_records} rec"
    return f"in {inbound} rec{seconds}{outbound}"


def _state(pair: FederationPair) -> str:
    reason = f" ({safe(pair.state_reason)})" if pair.state_reason else ""
    return f"{_word(pair.state)}{reason}"


def federation_pair_lines(pairs: list[FederationPair], indent: str = "  ") -> list[str]:
    """The federation-pairs block of ``spl status``: a header, then one line per pair (none: no block)."""
    if not pairs:
        return []
    counts = Counter(_word(pair.state) for pair in pairs)
    order = [state for state in STATE_ORDER if counts.get(state)]
    order += sorted(state for state in counts if state not in STATE_ORDER)
    summary = ", ".join(f"{counts[state]} {state}" for state in order)
    lines = [f"Federation pairs ({len(pairs)}: {summary})"]
    rows = [(_short_id(pair.pair_id), peer_label(pair.peer_url, pair.peer_did), pair) for pair in pairs]
    width = max(len(handle) for _, handle, _ in rows)
    state_width = max(len(_word(pair.state)) for pair in pairs)
    for short, handle, pair in rows:
        # An active pair's reason is history ("handshake complete"); any other state's says what to do.
        reason = f"  {safe(pair.state_reason)}" if pair.state_reason and pair.state != "active" else ""
        lines.append(
            f"{indent}{short} ⇄ {handle:<{width}} {_word(pair.state):<{state_width}} {_mode(pair)}, "
            f"lag {_lag(pair)}{reason}"
        )
    return lines


# -- talking to the daemon -----------------------------------------------------------------------------------


def match_id(text_given: str, ids: list[str], *, prefix: str, what: str, listing: str) -> str:
    """The one id in ``ids`` that ``text_given`` is a prefix of (with or without ``prefix``).

    Raises:
        CliError: None matches, or several do (the message lists them and says to give more of the id).
    """
    wanted = text_given.strip().removeprefix(prefix)
    if not wanted:
        raise CliError(f"pass a {what} id (see `{listing}`)")
    matches = [item for item in ids if item.removeprefix(prefix).startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    shown = safe(text_given, 64)
    if not matches:
        raise CliError(f"no {what} matches {shown!r}; list them with `{listing}`")
    names = ", ".join(safe(match) for match in matches[:8]) + (", …" if len(matches) > 8 else "")
    raise CliError(f"{shown!r} matches {len(matches)} {what}s ({names}); give more of the id")


def _pairs(client: DaemonClient) -> list[tuple[FederationPair, dict[str, Any]]]:
    """Every federation pair, typed, with its JSON as the daemon sent it (what ``-o json`` prints)."""
    reply = call(client, "GET", "/v1/federation/pairs")
    pairs = reply.into(FederationPairList).data
    # An id that is not pair_ + 16 hex would end up in a URL path: such a listing entry is not a pair.
    return [(pair, raw) for pair, raw in zip(pairs, reply.payload["data"], strict=True) if is_pair_id(pair.pair_id)]


def _resolve(client: DaemonClient, given: str) -> str:
    """A full pair id from an id or a unique prefix; a full id costs no request."""
    given = given.strip()
    if is_pair_id(given):
        return given
    if len(given) >= FULL_ID_LENGTH:
        raise CliError(f"{safe(given, 64)!r} is not a pair id (pair_ + 16 hex); list pairs with `spl federation list`")
    ids = [pair.pair_id for pair, _ in _pairs(client)]
    return match_id(given, ids, prefix="pair_", what="federation pair", listing="spl federation list")


def _find(client: DaemonClient, given: str) -> tuple[FederationPair, dict[str, Any]]:
    """The pair an id or a unique prefix names, with its JSON."""
    reply = call(client, "GET", f"/v1/federation/pairs/{_resolve(client, given)}")
    return reply.into(FederationPair), reply.payload


def _patch(client: DaemonClient, pair_id: str, body: dict[str, Any]) -> tuple[FederationPair, dict[str, Any]]:
    reply = call(client, "PATCH", f"/v1/federation/pairs/{pair_id}", json_body=body)
    return reply.into(FederationPair), reply.payload


def _map_strings(maps: list[str] | None) -> list[str]:
    """``--map local:peer`` entries, checked for shape (the daemon checks the namespace ids)."""
    checked: list[str] = []
    for item in maps or []:
        local, colon, peer = item.strip().partition(":")
        if not colon or not local.strip() or not peer.strip() or ":" in peer:
            raise CliError(
                f"--map {safe(item, 64)!r} is not local_ns:peer_ns; pass e.g. --map music:projects/music "
                "(our namespace first, the peer's second)"
            )
        checked.append(f"{local.strip()}:{peer.strip()}")
    return checked


def _approval_wait(text: str) -> float:
    """``--wait``: ``0``, ``30s``, ``1m``…, within the daemon's 0 to 60 s, checked here so a typo costs no handshake."""
    seconds = parse_duration(text, "--wait")
    if not 0 <= seconds <= APPROVAL_WAIT_MAX:
        raise CliError(
            f"--wait {safe(text, 32)!r} is out of range; pass 0 to {APPROVAL_WAIT_MAX:g}s "
            "(past that, finish with `spl federation refresh PAIR` once the peer approves)"
        )
    return seconds


def _check_mode(mode: str, option: str) -> str:
    if mode not in MODES:
        raise CliError(f"{option} {safe(mode, 32)!r} is not a mode; use one of {', '.join(MODES)}")
    return mode


# -- spl federation pair ----------------------------------------------------------------------------------------


@federation_app.command("pair")
def pair(
    peer_url: str = typer.Argument(..., metavar="URL", help="The peer daemon's public URL, e.g. https://bob.example/."),
    maps: list[str] | None = typer.Option(
        None,
        "--map",
        help="Propose a cross-namespace map, our namespace first: --map music:projects/music (repeatable). "
        "Default: default ↔ default only.",
    ),
    no_strict: bool = typer.Option(
        False,
        "--no-strict",
        help="Accept an expired peer manifest (its signature is still checked); for a peer whose clock is off.",
    ),
    auto_generate_identity: bool = typer.Option(
        False,
        "--auto-generate-identity",
        help="Accepted for compatibility: this daemon always has an identity (`spl init` creates it).",
    ),
    mode: str | None = typer.Option(None, "--mode", help="polling (default), continuous or on-demand."),
    poll_interval: str | None = typer.Option(
        None, "--poll-interval", help="Between pulls in polling mode: 30s, 5m, 1h (default 5m)."
    ),
    wait: str | None = typer.Option(
        None,
        "--wait",
        help="How long to wait for the peer's operator to approve: 0 to 60s (default 60s); "
        "0 returns at once with the pair establishing.",
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Pair with the daemon at URL: fetch and verify its manifest, handshake, store its token, first sync.

    Example: spl federation pair https://bob.example/

    Example: spl federation pair http://bob.example:9100/ --map music:projects/music --mode continuous

    When the peer holds requests for its operator (the default), this waits up to --wait (60s) for
    `spl aitl approve <pair_id>` there; past that the pair stays establishing and
    `spl federation refresh <pair_id>` completes it once approved.

    Example: spl federation pair https://bob.example/ --wait 0
    """
    del auto_generate_identity  # the daemon's identity exists from `spl init` on; nothing to generate
    as_json = wants_json(output)
    body: dict[str, Any] = {"url": peer_url, "strict": not no_strict}
    if wait is not None:  # absent: the daemon's default, the longest wait
        body["wait"] = _approval_wait(wait)
    if maps:
        body["maps"] = _map_strings(maps)
    if mode is not None:
        body["mode"] = _check_mode(mode, "--mode")
    if poll_interval is not None:
        if body.get("mode", "polling") != "polling":
            raise CliError("--poll-interval applies to polling mode only; drop it or use --mode polling")
        body["poll_interval"] = parse_duration(poll_interval)
    client = client_for(url)
    client.timeout = max(client.timeout, PAIR_TIMEOUT)
    reply = call(client, "POST", "/v1/federation/pairs", json_body=body)
    reply.payload.pop("token", None)  # never printed, even if a daemon sent one
    created = reply.into(FederationPair)
    progress = reply.into(PairCreated)
    if as_json:
        emit_json(reply.payload)
        return
    did = f"{safe(created.peer_did)} " if created.peer_did else ""
    typer.echo(f"Pairing with {did}({safe(created.peer_url or peer_url)}) ...")
    waiting = reply.status == 202 or created.state == "establishing"
    for step in progress.steps:
        mark = WAITING_MARK if waiting and not step.ok else STEP_MARKS[step.ok]
        typer.echo(f"  {mark} {safe(step.line)}")
    typer.echo("")
    pair_id = safe(created.pair_id)
    if waiting:
        typer.echo(
            f"Pair establishing: waiting for the peer's operator to approve (spl aitl approve {pair_id} on the "
            f"peer); finish with: spl federation refresh {pair_id}"
        )
    elif created.state == "active":
        typer.echo("Pair active.")
    else:
        typer.echo(f"Pair {_state(created)}; see `spl federation show {pair_id}`")


# -- listing and showing ----------------------------------------------------------------------------------------


@federation_app.command("list")
def list_pairs(output: str = OUTPUT, url: str | None = URL) -> None:
    """List federation pairs: id, peer, state, mode, last sync.

    Example: spl federation list -o json
    """
    as_json = wants_json(output)
    listed = _pairs(client_for(url))
    if as_json:
        emit_list([raw for _, raw in listed])
        return
    if not listed:
        typer.echo("no federation pairs; pair with `spl federation pair URL`")
        return
    now = time.time()
    headers = ["PAIR", "PEER", "STATE", "MODE", "LAST SYNC"]
    rows: list[list[object]] = [
        [
            pair.pair_id,
            peer_label(pair.peer_url, pair.peer_did),
            _word(pair.state),
            _mode(pair),
            _when(pair.last_sync_at, now),
        ]
        for pair, _ in listed
    ]
    if is_wide(output):  # -o wide: our role, the namespace maps, the lag both ways and when the pair was made
        headers += ["ROLE", "MAPS", "LAG", "CREATED"]
        for row, (pair, _) in zip(rows, listed, strict=True):
            row += [_word(pair.role), _maps(pair.maps), _lag(pair), rfc3339(pair.created_at) or "-"]
    table(rows, headers)


def _manifest_summary(manifest: dict[str, Any] | None) -> str:
    """The peer's verified manifest in one line: its DID, endpoint, pair endpoint, posture, validity."""
    if not manifest:
        return "-"

    def field(*path: str) -> Any:
        value: Any = manifest
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, str | int | float) and not isinstance(value, bool) else None

    parts = [
        ("did", field("daemon", "did")),
        ("endpoint", field("federation", "endpoint")),
        ("pair_endpoint", field("federation", "pair_endpoint")),
        ("posture", field("consent_policy", "default_posture")),
        ("signed", field("signed_at")),
        ("expires", field("expires_at")),
    ]
    return ", ".join(f"{name} {safe(value, 512)}" for name, value in parts if value is not None) or "-"


def _pull_summary(pull: FederationPull | None, now: float) -> list[tuple[str, str]]:
    """The pull loop's rows: its state and counts, and its last error when it has one."""
    if pull is None:
        return [("pull", "- (not pulling)")]
    refused = ", ".join(f"{safe(code, 64)} {count}" for code, count in sorted(pull.records_refused.items()))
    stalled = ", STALLED" if pull.stalled else ""
    reason = f" ({safe(pull.state_reason)})" if pull.state_reason else ""
    rows = [
        (
            "pull",
            f"{_word(pull.state)}{reason}{stalled}: {pull.records_pulled} pulled, "
            f"{pull.records_duplicate} duplicate(s), refused {refused or 'none'}, {pull.errors_total} error(s)",
        )
    ]
    error = pull.last_error
    if error is not None:
        retry = f", retry {_when(pull.next_retry_at, now)}" if pull.next_retry_at is not None else ""
        rows.append(
            (
                "pull_error",
                f"{text(error.code)}: {text(error.message)} at {_when(error.at, now)} "
                f"({pull.consecutive_failures} in a row{retry})",
            )
        )
    return rows


def _print_pair(pair: FederationPair) -> None:
    now = time.time()
    tokens = pair.tokens
    ours, theirs = tokens.ours, tokens.theirs
    if ours is not None and ours.token_id:
        scopes = ", ".join(safe(scope, 64) for scope in ours.scopes)
        # Revoking a pair invalidates the tokens minted for it, whatever their expiry said.
        validity = "revoked with the pair" if pair.state == "revoked" else f"expires {_when(ours.expires_at, now)}"
        our_token = f"{safe(ours.token_id)} ({scopes}; {validity})"
    else:
        our_token = "-"
    if theirs is not None and theirs.present:
        scopes = ", ".join(safe(scope, 64) for scope in theirs.scopes)
        expiry = "" if theirs.expires_at is None else f"; expires {_when(theirs.expires_at, now)}"
        their_token = f"stored, never shown ({scopes}{expiry})"
    else:
        their_token = "none"
    lag = pair.lag
    in_seconds = f" ({lag.in_seconds:.0f}s behind)" if isinstance(lag.in_seconds, int | float) else ""
    cursor = "- (nothing pulled yet)" if pair.cursors.pull in (None, "") else safe(pair.cursors.pull)
    served = "-" if pair.cursors.serve in (None, "") else safe(pair.cursors.serve)
    if lag.out_records is not None:
        served += f", peer lagging by {_records(lag.out_records)}"
    if lag.served_at is not None:
        served += f", last pull by the peer {_when(lag.served_at, now)}"
    rows = [
        ("peer_did", text(pair.peer_did)),
        ("peer_url", text(pair.peer_url)),
        ("role", text(pair.role)),
        ("state", _state(pair)),
        ("mode", _mode(pair)),
        ("maps", _maps(pair.maps)),
        ("thread_allow", ", ".join(safe(item, 260) for item in pair.thread_allow) or "*"),
        ("created_at", _when(pair.created_at, now)),
        ("last_refresh_at", _when(pair.last_refresh_at, now)),
        ("last_sync_at", _when(pair.last_sync_at, now)),
        ("last_sync_cursor", f"{cursor}, lagging by {_records(lag.in_records)}{in_seconds}"),
        ("serve_cursor", served),
        ("peer_manifest", _manifest_summary(pair.peer_manifest)),
        ("token_ours", our_token),
        ("token_theirs", their_token),
        # A revoked pair pulls no more; the daemon may still report its pull loop's last status.
        *([("pull", "- (revoked: nothing is pulled)")] if pair.state == "revoked" else _pull_summary(pair.pull, now)),
    ]
    typer.echo(f"pair {safe(pair.pair_id)}")
    width = max(len(name) for name, _ in rows) + 1
    for name, value in rows:
        typer.echo(f"  {name + ':':<{width}} {value}")
    typer.echo(f"Grants ({len(pair.grants)})")
    for item in pair.grants:
        typer.echo(f"  {grant_line(item)}")


@federation_app.command("show")
def show(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Everything about one pair: peer manifest, state, cursors and lag each way, grants, token ids (never tokens).

    Example: spl federation show a1b2c3d4
    """
    as_json = wants_json(output)
    found, raw = _find(client_for(url), pair_id)
    if as_json:
        emit_json(raw)
    else:
        _print_pair(found)


# -- lifecycle ----------------------------------------------------------------------------------------------------


def _action(
    action: str, pair_id: str, output: str, url: str | None, body: dict[str, Any] | None = None
) -> FederationPair | None:
    """``POST /v1/federation/pairs/{id}/{action}``; prints the JSON for ``-o json`` (then returns None)."""
    client = client_for(url)
    if action == "refresh":
        client.timeout = max(client.timeout, SYNC_TIMEOUT)
    resolved = _resolve(client, pair_id)
    reply = call(client, "POST", f"/v1/federation/pairs/{resolved}/{action}", json_body=body)
    answer = reply.into(FederationPair)
    if wants_json(output):
        emit_json(reply.payload)
        return None
    return answer


@federation_app.command("pause")
def pause(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Stop pulling; tokens stay valid and cursors are kept, so `spl federation resume` loses nothing.

    Example: spl federation pause a1b2c3d4
    """
    answer = _action("pause", pair_id, output, url)
    if answer is not None:
        typer.echo(f"paused {safe(answer.pair_id)} (state {_state(answer)})")


@federation_app.command("resume")
def resume(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Resume a paused pair from its saved cursor.

    Example: spl federation resume a1b2c3d4
    """
    answer = _action("resume", pair_id, output, url)
    if answer is not None:
        cursor = "the start" if answer.cursors.pull in (None, "") else safe(answer.cursors.pull)
        typer.echo(f"resumed {safe(answer.pair_id)} (state {_state(answer)}): pulling from {cursor}")


@federation_app.command("refresh")
def refresh(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Re-fetch and verify the peer's manifest now; completes a pair the peer's operator approved since.

    Example: spl federation refresh a1b2c3d4
    """
    answer = _action("refresh", pair_id, output, url)
    if answer is None:
        return
    shown = safe(answer.pair_id)
    typer.echo(f"refreshed {shown}: {_state(answer)}")
    for step in answer.transitions[:16]:
        typer.echo(f"  {safe(step)}")
    if answer.state == "establishing":
        typer.echo(
            f"  still waiting for the peer's operator: `spl aitl approve {shown}` on the peer, then refresh again"
        )
    elif answer.state == "degraded":
        typer.echo(f"  see `spl federation show {shown}`; a peer with a new identity needs a new pair")


@federation_app.command("revoke")
def revoke(
    pair_id: str = PAIR_ARG,
    reason: str | None = typer.Option(None, "--reason", help="Why, recorded here and sent to the peer."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """End a pair for good: our tokens for it are invalid at once, and the peer is told (best effort).

    The pair is kept, revoked, for audit. To pair again: spl federation pair URL.

    Example: spl federation revoke a1b2c3d4 --reason "laptop retired"
    """
    answer = _action("revoke", pair_id, output, url, {"reason": reason} if reason is not None else None)
    if answer is not None:
        typer.echo(
            f"revoked {safe(answer.pair_id)} (state {_state(answer)}): its tokens no longer work here; "
            "the peer was notified (best effort)"
        )


@federation_app.command("set-mode")
def set_mode(
    pair_id: str = PAIR_ARG,
    mode: str = typer.Argument(..., metavar="MODE", help="polling, continuous (SSE) or on-demand (`spl sync`)."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Change how a pair syncs: polling (every 5m by default), continuous (SSE) or on-demand.

    Example: spl federation set-mode a1b2c3d4 continuous
    """
    body = {"mode": _check_mode(mode, "MODE")}
    client = client_for(url)
    answer, raw = _patch(client, _resolve(client, pair_id), body)
    if wants_json(output):
        emit_json(raw)
    else:
        typer.echo(f"{safe(answer.pair_id)}: {_mode(answer)}")


@federation_app.command("set-poll-interval")
def set_poll_interval(
    pair_id: str = PAIR_ARG,
    interval: str = typer.Argument(..., metavar="INTERVAL", help="Between pulls: 30s, 5m, 1h."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Change a polling pair's interval; refused here for a pair in another mode (set-mode polling first).

    Example: spl federation set-poll-interval a1b2c3d4 30s
    """
    seconds = parse_duration(interval, "INTERVAL")
    client = client_for(url)
    found, _ = _find(client, pair_id)
    if found.mode != "polling":
        shown = safe(found.pair_id)
        raise CliError(
            f"{shown} is in {text(found.mode)} mode and a poll interval applies to polling only; "
            f"run `spl federation set-mode {shown} polling` first"
        )
    answer, raw = _patch(client, found.pair_id, {"poll_interval": seconds})
    if wants_json(output):
        emit_json(raw)
    else:
        typer.echo(f"{safe(answer.pair_id)}: {_mode(answer)}")


@federation_app.command("thread-allow")
def thread_allow(
    pair_id: str = PAIR_ARG,
    patterns: list[str] | None = typer.Argument(
        None, metavar="[PATTERN]...", help="Thread ids or prefixes ending in *: only these threads flow."
    ),
    reset: bool = typer.Option(False, "--reset", help="Allow every thread again (*)."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Narrow a pair to some threads (both ways); the list replaces the previous one.

    Example: spl federation thread-allow a1b2c3d4 th_tasks 'th_dispatch_*'

    Example: spl federation thread-allow a1b2c3d4 --reset
    """
    if reset and patterns:
        raise CliError("give thread patterns or --reset, not both")
    if not reset and not patterns:
        raise CliError("give thread patterns (ids or prefixes ending in *), or --reset to allow every thread")
    allowed = ["*"] if reset else [pattern.strip() for pattern in patterns or []]
    if any(not pattern for pattern in allowed):
        raise CliError("an empty thread pattern allows nothing; pass thread ids or prefixes ending in *")
    client = client_for(url)
    answer, raw = _patch(client, _resolve(client, pair_id), {"thread_allow": allowed})
    if wants_json(output):
        emit_json(raw)
    else:
        shown = ", ".join(safe(item, 260) for item in answer.thread_allow) or "*"
        typer.echo(f"{safe(answer.pair_id)}: threads {shown}")


# -- consent attached to pairs ----------------------------------------------------------------------------------


def _grant_map(namespace: str | None, maps: str) -> tuple[str, str]:
    """``--maps music,projects/music`` (``:`` works too) against ``--namespace``: (ours, the peer's)."""
    separator = "," if "," in maps else ":"
    local, found, peer = maps.partition(separator)
    local, peer = local.strip(), peer.strip()
    if not found or not local or not peer or separator in peer:
        raise CliError(
            f"--maps {safe(maps, 64)!r} is not ours,theirs; pass e.g. --maps music,projects/music "
            "(our namespace first, the peer's second)"
        )
    if namespace is not None and namespace != local:
        raise CliError(
            f"--namespace {safe(namespace, 64)!r} and --maps {safe(maps, 64)!r} name different namespaces of ours; "
            f"the first namespace in --maps is ours (e.g. --namespace {safe(local, 64)} --maps {safe(maps, 64)})"
        )
    return local, peer


@federation_app.command("grant")
def grant(
    peer_did: str = typer.Argument(..., metavar="PEER_DID", help="The peer's DID, as `spl federation list` shows."),
    namespace: str | None = typer.Option(
        None, "--namespace", "-n", help="Our namespace (default: the first in --maps)."
    ),
    maps: str = typer.Option(..., "--maps", help="Ours,theirs: --maps music,projects/music."),
    levels: list[str] | None = typer.Option(
        None, "--hash-level", help="L0 (the records) or L1-L3 (hashes only); repeatable. Default L1.", metavar="LEVEL"
    ),
    expires: str | None = typer.Option(None, "--expires", help="When it lapses: 30d, 12h, seconds or RFC 3339."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Let one peer's pulls reach our namespace, mapped to theirs, and add the map to our pairs with it.

    Records a consent grant (source = our namespace, target = the peer's, for this peer only), then
    adds the map to every live pair with that peer. L1 (the default) sends redacted projections;
    only L0 sends the records themselves.

    Example: spl federation grant did:key:z6Mk… --namespace music --maps music,projects/music --hash-level L1
    """
    as_json = wants_json(output)
    if not peer_did.startswith("did:"):
        raise CliError(f"{safe(peer_did, 64)!r} is not a DID; pass the peer's DID (see `spl federation show PAIR`)")
    local, peer_ns = _grant_map(namespace, maps)
    wanted = hash_levels(levels, "--hash-level")
    client = client_for(url)
    pairs = [pair for pair, _ in _pairs(client) if pair.peer_did == peer_did and pair.state in LIVE_STATES]
    created, grant_json = create_grant(
        client, source=local, target=peer_ns, levels=wanted, peer_did=peer_did, expires=expires_value(expires)
    )
    patched: list[dict[str, Any]] = []
    lines = [f"granted {grant_line(created)}"]
    failures: list[str] = []
    for item in pairs:
        current = [f"{entry.local}:{entry.peer}" for entry in item.maps]
        addition = f"{local}:{peer_ns}"
        if addition in current:
            lines.append(f"{safe(item.pair_id)}: maps {_maps(item.maps)} (already mapped)")
            continue
        try:
            answer, raw = _patch(client, item.pair_id, {"maps": [*current, addition]})
        except DaemonError as exc:
            failures.append(f"{safe(item.pair_id)} ({safe(exc, 256)})")
            continue
        patched.append(raw)
        lines.append(f"{safe(answer.pair_id)}: maps {_maps(answer.maps)}")
    if not pairs:
        lines.append(
            f"no live pair with {safe(peer_did)}: the grant applies once you pair "
            f"(spl federation pair URL --map {safe(local)}:{safe(peer_ns)})"
        )
    if as_json:
        emit_json({"grant": grant_json, "pairs": patched})
    else:
        for line in lines:
            typer.echo(line)
    if failures:
        raise CliError(
            f"the grant {safe(created.grant_id)} is recorded but these pairs' maps were not changed: "
            f"{'; '.join(failures)}; run the same command again to retry"
        )


@federation_app.command("revoke-grant")
def revoke_grant_command(
    grant_id: str = typer.Argument(..., metavar="GRANT_ID", help="The grant's id (cg_…), as `spl consent list` shows."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Revoke a consent grant (same as `spl consent revoke`): forward-only, nothing served is recalled.

    Example: spl federation revoke-grant cg_0123456789abcdef
    """
    revoke_grant(grant_id, output, url)


# -- spl sync -------------------------------------------------------------------------------------------------------


def _peer_line(result: FederationSync) -> str:
    peer = result.peer
    error = peer.error
    if isinstance(error, dict):
        reason = f"{text(error.get('code'))}: {text(error.get('message'))}"
    else:
        reason = text(error)
    if not peer.asked:
        return "→ peer not asked" + (f" ({reason})" if error is not None else "")
    if error is not None:
        return f"→ peer did not pull: {reason}"
    return f"→ peer pulled {'?' if peer.pulled is None else peer.pulled} record(s)"


def sync(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Sync a federation pair now, both ways, and print what moved: pull here, and ask the peer to pull.

    Example: spl sync a1b2c3d4
    """
    as_json = wants_json(output)
    client = client_for(url)
    client.timeout = max(client.timeout, SYNC_TIMEOUT)
    found, _ = _find(client, pair_id)
    reply = call(client, "POST", f"/v1/federation/pairs/{found.pair_id}/sync")
    result = reply.into(FederationSync)
    if as_json:
        emit_json(reply.payload)
        return
    typer.echo(f"← pulled {result.pulled} record(s) from {peer_label(found.peer_url, found.peer_did)}")
    if result.refused:
        why = ", ".join(f"{safe(code, 64)} {count}" for code, count in sorted(result.refused.items()))
        typer.echo(f"  refused {sum(result.refused.values())} ({why}); see `spl federation show {safe(found.pair_id)}`")
    typer.echo(_peer_line(result))
