"""Federation sync pairs from the command line: ``spl fleet sync add|list|status|pause|resume|kick|remove|pull``.

A pair on this instance pulls one thread from one peer (records flow peer → here); going
bidirectional means a second pair on the peer. Every command talks to the local daemon's
``/v1/sync/pairs`` routes. A pair may be named by its full id (``pair_`` + 16 hex) or by
any unique prefix of it, such as the 8 characters ``spl status`` shows.

A peer with auth on (the default) answers a pull only with a token it minted: loopback is
not an identity (spec §15.19), so this holds for two daemons on one machine too. Mint it on
the peer (``spl token mint --scopes federation:sync``) and pass it to ``spl fleet sync add
--token``; it is sent once, stored by the daemon (mode 0600) and never printed by any command.
Like every command, these authenticate to the local daemon with the home's admin credential.

A pair's ``peer_url``, ``last_error`` (a peer's own error message), thread and history come
from the daemon and, through it, from the peer: text output escapes every such field
(:func:`spl.cli.output.safe`), so a peer cannot drive the operator's terminal or forge lines.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

import msgspec
import typer

from spl.cli.answers import Pair, PairList, PairStats
from spl.cli.client import CliError, DaemonClient
from spl.cli.common import OUTPUT, URL, DaemonError, call, client_for, secret_argument, wants_json
from spl.cli.output import (
    Progress,
    as_time,
    emit_item,
    emit_json,
    emit_list,
    is_wide,
    list_envelope,
    rfc3339,
    safe,
    table_lines,
)
from spl.core import units
from spl.core.pairs import MODES, is_pair_id

__all__ = ["federation_lines", "fleet_app", "parse_duration", "peer_handle", "sync_app"]

STATE_ORDER = ("running", "starting", "failing", "paused", "stopped")
ARROWS = {"pull": "←", "push": "→"}
KICK_TIMEOUT = 90.0  # the daemon waits up to 60 s for a kicked pull to finish

fleet_app = typer.Typer(help="Fleet operations across instances (federation sync pairs).", no_args_is_help=True)
sync_app = typer.Typer(
    help="Sync pairs: each pulls one thread from one peer daemon (records flow peer → here).",
    no_args_is_help=True,
)
fleet_app.add_typer(sync_app, name="sync")

PAIR_ARG = typer.Argument(..., help="The pair id (pair_…) or a unique prefix of it, e.g. the 8 shown by `spl status`.")


# -- formatting helpers (also used by `spl status`) ---------------------------------------


def parse_duration(text: str, option: str = "--poll-interval") -> float:
    """``1.5`` / ``30s`` / ``500ms`` / ``5m`` / ``1h`` → seconds (``spl.core.units``), or a CliError."""
    try:
        return units.parse_duration(text, option)
    except units.DurationError as exc:
        raise CliError(str(exc)) from None


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "?"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _when(value: Any, now: float | None = None) -> str:
    """``2026-01-02T03:04:05Z (12s ago)`` for a time (Unix seconds or RFC 3339); ``-`` for none."""
    timestamp = as_time(value)
    if timestamp is None:
        return "-"
    now = time.time() if now is None else now
    delta = timestamp - now
    relative = "now" if abs(delta) < 0.5 else f"in {delta:.0f}s" if delta > 0 else f"{-delta:.0f}s ago"
    return f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(timestamp))} ({relative})"


def peer_handle(pair: Pair) -> str:
    """A short name for the peer: ``host:port`` of its URL, else the tail of its DID."""
    url = pair.peer_url
    if url:
        parts = urlsplit(url)
        if parts.hostname:
            host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
            return safe(f"{host}:{parts.port}" if parts.port else host)
    did = pair.peer_did or "?"
    return safe("…" + did[-8:] if len(did) > 8 else did)


def _short_id(pair_id: str) -> str:
    return safe(pair_id.removeprefix("pair_")[:8])


def _error_code(pair: Pair) -> str:
    error = pair.last_error
    return safe(error.code, 64) if error is not None and error.code else "-"


def _condition(pair: Pair) -> str:
    """What `spl status` says about a pair: its rate and lag, or what is wrong with it."""
    state = pair.state
    if state == "failing":
        return f"FAILING: {_error_code(pair) if pair.last_error is not None else 'unknown error'}"
    if state == "paused":
        return "PAUSED"
    if state == "stopped":
        return "STOPPED"
    if pair.stalled:
        return f"STALLED (lag {safe(pair.lag_records)} records)"
    if state == "starting":
        return "STARTING"
    rate = pair.records_per_minute or 0
    lag = pair.lag_seconds or 0
    return f"{rate:g} rec/min, lag {round(lag)}s"


def _state_counts(pairs: Iterable[Pair]) -> str:
    counts = Counter(safe(pair.state, 64) for pair in pairs)
    ordered = [state for state in STATE_ORDER if counts.get(state)]
    ordered += sorted(state for state in counts if state not in STATE_ORDER)
    return ", ".join(f"{counts[state]} {state}" for state in ordered)


def federation_lines(pairs: list[Pair], indent: str = "  ") -> list[str]:
    """The sync-pair block of ``spl status`` (federation pairs follow it): a header, then one line per pair."""
    if not pairs:
        return ["Sync pairs (none)"]
    lines = [f"Sync pairs ({len(pairs)} pair{'s' if len(pairs) != 1 else ''}: {_state_counts(pairs)})"]
    rows = [
        (
            _short_id(pair.pair_id),
            ARROWS.get(str(pair.direction), "?"),
            peer_handle(pair),
            f"thread:{safe(pair.thread_id)}",
            _condition(pair),
        )
        for pair in pairs
    ]
    handle_width = max(len(row[2]) for row in rows)
    thread_width = max(len(row[3]) for row in rows)
    for short, arrow, handle, thread, condition in rows:
        lines.append(f"{indent}{short} {arrow} {handle:<{handle_width}} {thread:<{thread_width}} {condition}")
    return lines


# -- talking to the daemon -----------------------------------------------------------------


def _pairs(client: DaemonClient) -> list[tuple[Pair, dict[str, Any]]]:
    """Every pair, typed, with its JSON as the daemon sent it (what ``-o json`` prints)."""
    reply = call(client, "GET", "/v1/sync/pairs")
    return list(zip(reply.into(PairList).data, reply.payload["data"], strict=True))


def _resolve(client: DaemonClient, text: str) -> str:
    """A full pair id from an id or a unique prefix (with or without ``pair_``)."""
    text = text.strip()
    if is_pair_id(text):
        return text
    if not text:
        raise CliError("pass a pair id (see `spl fleet sync list`)")
    wanted = text.removeprefix("pair_")
    matches = [pair.pair_id for pair, _ in _pairs(client) if pair.pair_id[5:].startswith(wanted)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise CliError(f"no pair matches {text!r}; list pairs with `spl fleet sync list`")
    shown = ", ".join(safe(match) for match in matches)
    raise CliError(f"{text!r} matches {len(matches)} pairs ({shown}); give more of the id")


def _read_token(value: str) -> str:
    return secret_argument(value, "--token", "pass the bearer token the peer minted for this pair (or @file, or -)")


def _pick(positional: str | None, flag: str | None, what: str, flag_name: str) -> str:
    if positional is not None and flag is not None and positional != flag:
        raise CliError(f"{what} given twice ({positional!r} and {flag_name} {flag!r}); pass it once")
    value = flag if flag is not None else positional
    if not value:
        raise CliError(f"missing the {what}: pass it as an argument or with {flag_name}")
    return value


# -- commands -------------------------------------------------------------------------------


@sync_app.command("add")
def sync_add(
    peer_did_arg: str | None = typer.Argument(None, metavar="[PEER_DID]", help="The peer's DID (or --peer-did)."),
    thread_arg: str | None = typer.Argument(None, metavar="[THREAD]", help="The thread to pull (or --thread)."),
    peer_url: str = typer.Option(..., "--peer-url", help="The peer daemon's base URL, e.g. http://localhost:9200."),
    peer_did: str | None = typer.Option(None, "--peer-did", help="The peer's DID (GET <peer>/v1/identity → did)."),
    thread: str | None = typer.Option(None, "--thread", "-t", help="The thread to pull from the peer."),
    token: str | None = typer.Option(
        None,
        "--token",
        help="Bearer token the peer minted for this pair (`spl token mint --scopes federation:sync` on the peer); "
        "needed unless the peer runs with --insecure-localhost on this machine. "
        "The token itself, @file, or - for stdin; never shown.",
    ),
    mode: str | None = typer.Option(None, "--mode", help="polling (default), continuous or on-demand."),
    poll_interval: str | None = typer.Option(
        None, "--poll-interval", help="Seconds between pulls in polling mode: 1.5, 30s, 5m (default 5s)."
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Create a pair on this instance that pulls THREAD from the peer (records flow peer → here).

    The peer answers pulls only with a token it minted (unless its auth is off). Mint one on the peer:

    TOKEN=$(spl token mint --scopes federation:sync --label "pull by B")

    Then, here (both spellings work):

    spl fleet sync add --peer-url http://localhost:9200 "$DID_A" th_federation_demo --token "$TOKEN"

    spl fleet sync add --peer-did "$DID_A" --peer-url URL --thread THREAD --token @token-file

    The peer's DID is in GET <peer>/v1/identity. Prints the new pair_id on stdout
    (details and any warning on stderr), so PAIR=$(spl fleet sync add …) works.
    For records to flow both ways, add a pair on the peer too (with a token minted here).

    Example: spl fleet sync add did:key:z6Mk… th_orders --peer-url http://peer:9100 --token @peer.token
    """
    as_json = wants_json(output)
    if peer_did is not None and peer_did_arg is not None and thread_arg is None:
        peer_did_arg, thread_arg = None, peer_did_arg  # `--peer-did DID THREAD`
    if peer_did_arg is not None and not peer_did_arg.startswith("did:"):
        raise CliError(
            f"{peer_did_arg!r} is not a DID; usage: spl fleet sync add --peer-url URL PEER_DID THREAD "
            "(or --peer-did DID --thread THREAD)"
        )
    body: dict[str, Any] = {
        "peer_did": _pick(peer_did_arg, peer_did, "peer DID", "--peer-did"),
        "peer_url": peer_url,
        "thread_id": _pick(thread_arg, thread, "thread", "--thread"),
    }
    if mode is not None:
        if mode not in MODES:
            raise CliError(f"--mode {mode!r} is not a mode; use one of {', '.join(MODES)}")
        body["mode"] = mode
    if poll_interval is not None:
        body["poll_interval"] = parse_duration(poll_interval)
    if token is not None:
        body["token"] = _read_token(token)
    reply = call(client_for(url), "POST", "/v1/sync/pairs", json_body=body)
    reply.payload.pop("token", None)
    pair = reply.into(Pair)
    if as_json:
        emit_json(reply.payload)
    else:
        pair_id = safe(pair.pair_id)
        typer.echo(pair_id)
        every = f" every {_duration(pair.poll_interval)}" if pair.mode == "polling" else ""
        typer.echo(
            f"added pair {pair_id}: pulls {safe(pair.thread_id)} from {safe(pair.peer_url)} "
            f"({safe(pair.mode)}{every}{', with token' if pair.has_token else ''}); "
            f"see `spl fleet sync status {pair_id}`",
            err=True,
        )
    if pair.warning:
        typer.echo(f"warning: {safe(pair.warning)}", err=True)


def _list(thread: str | None, output: str, url: str | None) -> None:
    as_json = wants_json(output)
    listed = _pairs(client_for(url))
    if thread is not None:
        listed = [(pair, raw) for pair, raw in listed if pair.thread_id == thread]
    if as_json:
        emit_list([raw for _, raw in listed])
        return
    for line in _list_lines(listed, thread, output):
        typer.echo(line)


def _pair_table(pairs: list[Pair], *, wide: bool) -> list[str]:
    """The table of `spl fleet sync list`; ``-o wide`` adds the poll interval, token, counters and times."""
    headers = ["PAIR_ID", "DIRECTION", "PEER", "THREAD", "MODE", "STATE", "LAG", "REC/MIN", "LAST_ERROR"]
    rows: list[list[object]] = [
        [
            pair.pair_id,
            pair.direction,
            peer_handle(pair),
            pair.thread_id,
            pair.mode,
            str(pair.state) + (" (stalled)" if pair.stalled else ""),
            f"{pair.lag_records} rec, {round(pair.lag_seconds or 0)}s",
            f"{pair.records_per_minute or 0:g}",
            _error_code(pair),
        ]
        for pair in pairs
    ]
    if wide:
        headers += ["POLL", "TOKEN", "PULLED", "DUPLICATE", "FAILURES", "LAST_SUCCESS", "NEXT_RETRY", "PEER_DID"]
        for row, pair in zip(rows, pairs, strict=True):
            row += [
                _duration(pair.poll_interval) if pair.mode == "polling" else "-",
                "yes" if pair.has_token else "no",
                pair.records_pulled,
                pair.records_duplicate,
                pair.consecutive_failures,
                rfc3339(pair.last_success_at) or "-",
                rfc3339(pair.next_retry_at) or "-",
                pair.peer_did or "-",
            ]
    return table_lines(rows, headers)


THREAD_FILTER = typer.Option(None, "--thread", "-t", help="Only pairs on this thread.")


WATCH_INTERVAL = "2s"
WATCH_BOUNDS = (0.2, 3600.0)  # seconds: often enough to see a catch-up, rarely enough to be no load


@sync_app.command("list")
def sync_list(
    thread: str | None = THREAD_FILTER,
    watch: bool = typer.Option(False, "--watch", "-w", help="Keep listing: redraw whenever a pair changes."),
    interval: str = typer.Option(
        WATCH_INTERVAL, "--interval", help="With --watch, how often to ask the daemon: 0.2s to 1h (default 2s)."
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """List this instance's sync pairs: peer, thread, mode, state, lag, rate, last error.

    --watch asks the daemon every --interval and shows the list again when it changed (text: the table,
    redrawn in place on a terminal; -o json: one list envelope per line, NDJSON). Ctrl-C stops it (exit 130).

    Example: spl fleet sync list --thread th_orders

    Example: spl fleet sync list --watch --interval 1s
    """
    if not watch:
        _list(thread, output, url)
        return
    seconds = parse_duration(interval, "--interval")
    low, high = WATCH_BOUNDS
    if not low <= seconds <= high:
        raise CliError(f"--interval {interval!r} is out of range; pass 0.2s to 1h")
    _watch(thread, output, url, seconds)


def _watch(thread: str | None, output: str, url: str | None, interval: float) -> None:
    """Poll the pairs every ``interval`` seconds and print the list each time it differs from the last one shown.

    What is compared is the list as it would be printed, so a change that shows nowhere (a counter the table does
    not have) redraws nothing in text, and every change of the answer is a new line under -o json.
    """
    as_json = wants_json(output)
    client = client_for(url)
    clear = sys.stdout.isatty() and not as_json  # a terminal is redrawn in place; a pipe gets each new table
    last: Any = None
    try:
        while True:
            listed = [(pair, raw) for pair, raw in _pairs(client) if thread is None or pair.thread_id == thread]
            shown: Any = [raw for _, raw in listed] if as_json else _list_lines(listed, thread, output)
            if shown != last:
                last = shown
                if as_json:
                    emit_item(list_envelope(shown))
                else:
                    stamp = time.strftime("%H:%M:%S")
                    head = f"every {interval:g}s, {stamp} (Ctrl-C to stop)"
                    typer.echo(("\x1b[H\x1b[2J" if clear else "") + "\n".join([head, *shown]) + ("" if clear else "\n"))
            time.sleep(interval)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def _list_lines(listed: list[tuple[Pair, dict[str, Any]]], thread: str | None, output: str) -> list[str]:
    """The text `spl fleet sync list` prints, as lines (what --watch compares and redraws)."""
    pairs = [pair for pair, _ in listed]
    if not pairs:
        return ["no sync pairs" + (f" on {safe(thread)}" if thread else "") + "; add one with `spl fleet sync add`"]
    return _pair_table(pairs, wide=is_wide(output))


@sync_app.command("pairs")
def sync_pairs(thread: str | None = THREAD_FILTER, output: str = OUTPUT, url: str | None = URL) -> None:
    """Same as `spl fleet sync list`.

    Example: spl fleet sync pairs -o json
    """
    _list(thread, output, url)


def _print_status(pair: Pair, stats: PairStats) -> None:
    now = time.time()
    arrow = ARROWS.get(str(pair.direction), "?")
    typer.echo(f"pair {safe(pair.pair_id)}  ({safe(pair.direction)} {arrow} {safe(pair.peer_url)})")
    typer.echo(f"  peer:          {safe(pair.peer_did)}")
    typer.echo(f"  thread:        {safe(pair.thread_id)}")
    every = f" every {_duration(pair.poll_interval)}" if pair.mode == "polling" else ""
    typer.echo(f"  mode:          {safe(pair.mode)}{every}")
    typer.echo(f"  token:         {'yes (stored by the daemon)' if pair.has_token else 'none'}")
    stalled = "  STALLED" if pair.stalled else ""
    typer.echo(f"  state:         {safe(pair.state)} ({safe(pair.state_reason)}){stalled}")
    typer.echo(f"  cursor:        {safe(pair.cursor or '- (nothing pulled yet)')}")
    typer.echo(f"  lag:           {safe(pair.lag_records)} record(s), {pair.lag_seconds or 0:g}s")
    typer.echo(f"  last success:  {_when(pair.last_success_at, now)}")
    typer.echo(f"  failures:      {safe(pair.consecutive_failures)} consecutive")
    typer.echo(f"  next retry:    {_when(pair.next_retry_at, now)}")
    error = pair.last_error
    if error is not None:
        typer.echo(f"  last error:    {safe(error.code, 64)}: {safe(error.message)}  at {_when(error.at, now)}")
    else:
        typer.echo("  last error:    -")
    pulls = stats.totals.pulls
    typer.echo(
        f"  pulled:        {safe(pair.records_pulled)} record(s), "
        f"{safe(pair.records_duplicate)} duplicate(s)" + (f", {safe(pulls)} pull(s)" if pulls is not None else "")
    )
    refused = pair.records_refused
    typer.echo(
        "  refused:       "
        + (", ".join(f"{safe(code, 64)} {safe(count)}" for code, count in sorted(refused.items())) or "none")
    )
    errors = f"{safe(pair.errors_total)} total, {safe(stats.errors_last_hour)} in the last hour"
    typer.echo(f"  errors:        {errors}")
    typer.echo(
        f"  rate:          {safe(stats.records_last_minute)} record(s) in the last minute, "
        f"{safe(stats.records_last_hour)} in the last hour"
    )
    latency = stats.latency_ms
    if latency.count:
        typer.echo(
            f"  latency:       p50 {latency.p50 or 0:g} ms, p95 {latency.p95 or 0:g} ms "
            f"({safe(latency.count)} record(s), last hour)"
        )
    else:
        typer.echo("  latency:       p50 -, p95 - (no records delivered in the last hour)")
    typer.echo(f"History ({len(pair.history)})")
    for entry in pair.history:
        when = _when(entry.at, now)
        typer.echo(f"  {when}  {safe(entry.from_)} → {safe(entry.to)}  {safe(entry.reason)}")


@sync_app.command("status")
def sync_status(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Everything about one pair: state and reason, cursor, lag, failures, refusals, latency, history.

    Example: spl fleet sync status pair_0123456789abcdef
    """
    as_json = wants_json(output)
    client = client_for(url)
    pair_id = _resolve(client, pair_id)
    pair = call(client, "GET", f"/v1/sync/pairs/{pair_id}")
    stats = call(client, "GET", f"/v1/sync/pairs/{pair_id}/stats")
    if as_json:
        emit_json({**pair.payload, "stats": stats.payload})
        return
    _print_status(pair.into(Pair), stats.into(PairStats))


def _control(action: str, pair_id: str, output: str, url: str | None) -> Pair:
    as_json = wants_json(output)
    client = client_for(url)
    pair_id = _resolve(client, pair_id)
    method = "DELETE" if action == "remove" else "POST"
    path = f"/v1/sync/pairs/{pair_id}" + ("" if action == "remove" else f"/{action}")
    reply = call(client, method, path)
    pair = reply.into(Pair)
    if as_json:
        emit_json(reply.payload)
    return pair


@sync_app.command("pause")
def sync_pause(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Stop pulling (the cursor is kept); `spl fleet sync resume` goes on from it.

    Example: spl fleet sync pause pair_0123456789abcdef
    """
    payload = _control("pause", pair_id, output, url)
    if not wants_json(output):
        typer.echo(f"paused {safe(payload.pair_id)} (state {safe(payload.state)})")


@sync_app.command("resume")
def sync_resume(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Resume a paused pair; it pulls at once from where it stopped.

    Example: spl fleet sync resume pair_0123456789abcdef
    """
    payload = _control("resume", pair_id, output, url)
    if not wants_json(output):
        # The answer is written before the pair acts on the resume, so do not echo its state.
        cursor = payload.cursor or "the start"
        typer.echo(f"resumed {safe(payload.pair_id)}: pulling from {safe(cursor)}")


@sync_app.command("kick")
def sync_kick(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Pull now instead of at the next poll (also cuts a failing pair's backoff short).

    Returns at once; `spl fleet sync pull` waits for the pull and shows what came in.

    Example: spl fleet sync kick pair_0123456789abcdef
    """
    payload = _control("kick", pair_id, output, url)
    if not wants_json(output):
        typer.echo(f"kicked {safe(payload.pair_id)}: pulling now (state {safe(payload.state)})")


@sync_app.command("remove")
def sync_remove(pair_id: str = PAIR_ARG, output: str = OUTPUT, url: str | None = URL) -> None:
    """Remove a pair: it stops pulling and its stored token is deleted (records already pulled stay).

    Example: spl fleet sync remove pair_0123456789abcdef
    """
    payload = _control("remove", pair_id, output, url)
    if not wants_json(output):
        typer.echo(f"removed {safe(payload.pair_id)} (state {safe(payload.state)})")


@sync_app.command("set")
def sync_set(
    pair_id: str = PAIR_ARG,
    mode: str | None = typer.Option(None, "--mode", help="polling, continuous or on-demand."),
    poll_interval: str | None = typer.Option(
        None, "--poll-interval", help="Seconds between pulls in polling mode: 1.5, 30s, 5m."
    ),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Change a pair's mode and/or poll interval; it applies at once and survives restarts.

    Example: spl fleet sync set pair_3f2a --mode polling --poll-interval 30s
    """
    body: dict[str, Any] = {}
    if mode is not None:
        if mode not in MODES:
            raise CliError(f"--mode {mode!r} is not a mode; use one of {', '.join(MODES)}")
        body["mode"] = mode
    if poll_interval is not None:
        body["poll_interval"] = parse_duration(poll_interval)
    if not body:
        raise CliError("nothing to change; give --mode and/or --poll-interval")
    client = client_for(url)
    resolved = _resolve(client, pair_id)
    reply = call(client, "PATCH", f"/v1/sync/pairs/{resolved}", json_body=body)
    pair = reply.into(Pair)
    if wants_json(output):
        emit_json(reply.payload)
        return
    every = f" every {_duration(pair.poll_interval)}" if pair.mode == "polling" else ""
    typer.echo(f"{safe(pair.pair_id)}: {safe(pair.mode)}{every}")


def _kick_and_wait(client: DaemonClient, listed: tuple[Pair, dict[str, Any]]) -> tuple[Pair, dict[str, Any]]:
    pair, raw = listed
    try:
        reply = call(client, "POST", f"/v1/sync/pairs/{pair.pair_id}/kick", params={"wait": 1})
    except DaemonError as exc:
        if exc.code != "NOT_FOUND":  # removed between the listing and the kick
            raise
        return msgspec.structs.replace(pair, pulled_now=0), {**raw, "pulled_now": 0}
    return reply.into(Pair), reply.payload


def _pull_line(pair: Pair) -> str:
    state = safe(pair.state, 64)
    head = (
        f"{safe(pair.pair_id)} {ARROWS.get(str(pair.direction), '?')} {peer_handle(pair)} thread:{safe(pair.thread_id)}"
    )
    pulled = f"pulled {safe(pair.pulled_now)} now ({safe(pair.records_pulled)} in total)"
    refused = pair.refused_now
    if refused:
        why = ", ".join(f"{safe(code, 64)} {safe(count)}" for code, count in sorted(refused.items()))
        pulled += f", refused {sum(refused.values())} ({why}; see `spl fleet sync status {safe(pair.pair_id)}`)"
    lag = f"lag {safe(pair.lag_records)} record(s), {round(pair.lag_seconds or 0)}s"
    error = pair.last_error
    if state == "failing" and error is not None:
        return f"{head}  FAILING: {safe(error.code, 64)}: {safe(error.message)}; {pulled}"
    note = f"; last error {safe(error.code, 64)}" if error is not None and state != "running" else ""
    stalled = " STALLED" if pair.stalled else ""
    return f"{head}  {state}{stalled}: {pulled}, {lag}{note}"


PROGRESS_EVERY = 0.5  # seconds between two looks at the pairs' counters while pulls run


def _show_progress(
    client: DaemonClient, pairs: list[tuple[Pair, dict[str, Any]]], pending: list[Future[Any]], progress: Progress
) -> None:
    """Redraw ``progress`` until every pull in ``pending`` has ended: records pulled since the start / the lag then.

    The daemon counts what each pair has pulled (``records_pulled``); the listing is read again every half
    second while the kicks wait. A listing that fails only skips a redraw: the pulls decide the outcome.
    """
    start = {pair.pair_id: pair.records_pulled for pair, _ in pairs}
    done = 0
    progress.update(done)
    while wait(pending, timeout=PROGRESS_EVERY).not_done:
        try:
            now = {pair.pair_id: pair.records_pulled for pair, _ in _pairs(client) if pair.pair_id in start}
        except CliError:
            continue
        done = sum(max(0, now.get(pair_id, count) - count) for pair_id, count in start.items())
        progress.update(done)
    progress.finish()


@sync_app.command("pull")
def sync_pull(
    thread: str | None = typer.Option(None, "--thread", "-t", help="Only pairs on this thread (default: all)."),
    output: str = OUTPUT,
    url: str | None = URL,
) -> None:
    """Pull now on every pair (or those on --thread), wait for the pulls, and show what came in.

    On a terminal, stderr shows the catch-up while the pulls run: records pulled / the pairs' lag when it
    started, the rate and an ETA (never under -o json or when stderr is not a terminal).

    Exits 1 when any pair ends in the failing state.
    Example: spl fleet sync pull --thread th_federation_demo
    """
    as_json = wants_json(output)
    client = client_for(url)
    client.timeout = max(client.timeout, KICK_TIMEOUT)
    pairs = [(pair, raw) for pair, raw in _pairs(client) if pair.state != "stopped"]
    if thread is not None:
        pairs = [(pair, raw) for pair, raw in pairs if pair.thread_id == thread]
    if not pairs:
        where = f" on thread {thread}" if thread else ""
        raise CliError(f"no sync pairs{where}; add one with `spl fleet sync add --peer-url URL PEER_DID THREAD`")
    progress = None if as_json else Progress(sum(pair.lag_records for pair, _ in pairs))
    with ThreadPoolExecutor(max_workers=min(8, len(pairs))) as pool:
        pending = [pool.submit(_kick_and_wait, client, listed) for listed in pairs]
        if progress is not None and progress.enabled:
            _show_progress(client, pairs, pending, progress)
        answers = [future.result() for future in pending]
    if as_json:
        emit_list([raw for _, raw in answers])
    else:
        for answer, _ in answers:
            typer.echo(_pull_line(answer))
    failing = [answer for answer, _ in answers if answer.state == "failing"]
    if failing:
        if not as_json:
            typer.echo(
                f"error: {len(failing)} pair(s) failing; see `spl fleet sync status <pair_id>`",
                err=True,
            )
        sys.stdout.flush()
        raise SystemExit(1)  # typer.Exit is swallowed under standalone_mode=False
