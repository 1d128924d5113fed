"""``spl doctor``: check this instance's home, its daemon and its federation setup.

One line per check: ``✓`` fine, ``!`` a warning, ``✗`` a failure; each problem names its
fix. Exit status 0 when everything is fine, 1 with warnings, 2 with failures (also with
``-o json``). Checks that need the daemon are skipped when none answers; the daemon is
the one ``--url`` / ``$SPL_SERVE_URL`` names, else this home's running one, never a guess.

The home checks include file modes (the home and its directories 0700, its files 0600)
and config keys spl no longer reads, such as ``[federation] trust_loopback``: loopback is
not an identity (spec §15.19), so the key is ignored.

Messages quote what the daemon and its peers report (health problems, a pair's thread,
``peer_url`` and error code, a daemon's error message): :func:`render` escapes each message
(:func:`spl.cli.output.safe`) before wrapping it, so none can drive the terminal or forge a line.
"""

from __future__ import annotations

import sys
import textwrap
import time
from urllib.parse import urlsplit

import typer

from spl.cli.answers import Discovery, Health, Identity, Pair, Status
from spl.cli.client import CliError, DaemonClient, NoDaemon
from spl.cli.common import OUTPUT, URL, DaemonError, DaemonUnreachable, call, wants_json
from spl.cli.common import home as _home
from spl.cli.output import emit_json, safe
from spl.core.config import Config
from spl.core.manifest import verify_manifest
from spl.core.pairs import is_loopback_host
from spl.daemon.doctor import Check, home_checks

__all__ = ["Check", "doctor", "render", "run_checks"]

MARKS = {"ok": "✓", "warn": "!", "fail": "✗"}
EXIT_CODES = {"ok": 0, "warn": 1, "fail": 2}
NAME_WIDTH = 20
TEXT_WIDTH = 45
MESSAGE_LIMIT = 4000  # characters of one check's message (after escaping) before it is cut with "…"


def _wrap(text: str, width: int) -> list[str]:
    """Wrap at spaces, never inside a `command` (so it can be copied whole)."""
    parts = text.split("`")
    protected = "`".join(part.replace(" ", "\xa0") if index % 2 else part for index, part in enumerate(parts))
    lines = textwrap.wrap(protected, width, break_long_words=False, break_on_hyphens=False) or [""]
    return [line.replace("\xa0", " ") for line in lines]


def render(check: Check) -> list[str]:
    """``! federation bind host 1 sync pair(s) …`` with continuation lines under the message."""
    prefix = f"{MARKS[check.status]} {check.name:<{NAME_WIDTH}} "
    lines = _wrap(safe(check.message, MESSAGE_LIMIT), TEXT_WIDTH)
    return [prefix + lines[0]] + [" " * len(prefix) + line for line in lines[1:]]


def _daemon_checks(client: DaemonClient, config: Config | None) -> list[Check]:
    checks: list[Check] = []
    try:
        reply = call(client, "GET", "/health", accept=(503,))
        health = reply.into(Health)
    except DaemonUnreachable:
        return [Check("daemon", "fail", f"no daemon answers at {client.url}: start one with `spl serve --daemon`")]
    except CliError as exc:
        return [Check("daemon", "fail", f"{client.url}/health failed: {exc}")]
    if reply.status == 503:
        problems = health.problems or [health.status or "degraded"]
        checks.append(
            Check(
                "daemon",
                "warn",
                f"answers at {client.url} but is degraded: {'; '.join(str(p) for p in problems)}; "
                "see `spl status` and the daemon's log",
            )
        )
    else:
        checks.append(Check("daemon", "ok", f"answers at {client.url} (spl {health.version})"))
    checks.append(_manifest_check(client, config))

    sequence = health.sequence
    if sequence is None:
        checks.append(Check("store", "fail", "the daemon did not report its head sequence; see its log"))
    elif health.status != "ok":
        checks.append(Check("store", "warn", f"{sequence} records; the daemon is {health.status}"))
    else:
        checks.append(Check("store", "ok", f"readable: {sequence} records (head sequence)"))

    status: Status | None = None
    status_error = ""
    try:
        status = call(client, "GET", "/v1/status").into(Status)
    except DaemonError as exc:
        status_error = str(exc)
    if status is not None:
        bind_host = status.bind_host or urlsplit(status.endpoint_url or client.url).hostname or "?"
    else:
        identity = call(client, "GET", "/v1/identity").into(Identity)
        bind_host = urlsplit(identity.endpoint_url or client.url).hostname or "?"
    exposed_on = (
        None if is_loopback_host(bind_host) else ("every interface" if bind_host in ("0.0.0.0", "::") else bind_host)
    )

    auth_required = health.auth_required
    if auth_required:
        checks.append(Check("auth", "ok", "on: requests need a bearer token"))
    elif exposed_on is not None:
        checks.append(
            Check(
                "auth",
                "warn",
                f"off while the daemon is reachable on {exposed_on}: anyone who can reach it can read and write. "
                "Set `[auth] required = true` and restart without --insecure-localhost.",
            )
        )
    else:
        checks.append(Check("auth", "ok", f"off; the daemon is bound to {bind_host} only"))

    checks.extend(_federation_checks(status, status_error, health, bind_host, exposed_on))
    return checks


def _manifest_check(client: DaemonClient, config: Config | None) -> Check:
    try:
        discovery = call(client, "GET", "/.well-known/syncropel").into(Discovery)
    except CliError as exc:
        return Check("manifest", "fail", f"GET /.well-known/syncropel failed: {exc}")
    manifest = discovery.federation_manifest
    if manifest is None:
        return Check("manifest", "fail", "/.well-known/syncropel carries no federation_manifest")
    if not verify_manifest(manifest):
        return Check("manifest", "fail", "the federation manifest's signature does not verify; restart the daemon")
    daemon = manifest.get("daemon") or {}
    did = daemon.get("did") if isinstance(daemon, dict) else None
    if config is None:
        return Check("manifest", "warn", f"signature verifies ({did}); no home config to compare its DID with")
    if did != config.did:
        return Check(
            "manifest",
            "fail",
            f"the daemon at {client.url} is {did}, not this home's {config.did}: "
            "it serves another home (check --url / SPL_SERVE_URL)",
        )
    if discovery.did not in (None, did):
        return Check("manifest", "fail", f"/.well-known/syncropel names {discovery.did} but is signed by {did}")
    expires = (manifest.get("signature") or {}).get("expires_at")
    if isinstance(expires, str) and expires < time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()):
        return Check("manifest", "warn", f"signature expired at {expires}; restart the daemon to re-sign it")
    return Check("manifest", "ok", f"signature verifies; DID matches the home ({did})")


def _federation_checks(
    status: Status | None,
    status_error: str,
    health: Health,
    bind_host: str,
    exposed_on: str | None,
) -> list[Check]:
    checks: list[Check] = []
    pairs: list[Pair] = []
    if status is not None:
        pairs = [pair for pair in status.federation.pairs if pair.state != "stopped"]
        count = len(pairs)
    else:
        by_state = health.federation.pairs_by_state
        count = sum(n for state, n in by_state.items() if state != "stopped")
        checks.append(
            Check(
                "federation pairs",
                "warn",
                f"cannot read /v1/status ({status_error}); use a token with config:read to see each pair",
            )
        )
    if count == 0:
        if status is not None:
            checks.append(Check("federation pairs", "ok", "none configured"))
        return checks
    local_peers = bool(pairs) and all(is_loopback_host(urlsplit(str(p.peer_url)).hostname or "") for p in pairs)
    if exposed_on is None and local_peers:
        checks.append(
            Check(
                "federation bind host",
                "ok",
                f"{count} sync pair(s), every peer on this machine: a loopback bind ({bind_host}) reaches them all",
            )
        )
    elif exposed_on is None:
        checks.append(
            Check(
                "federation bind host",
                "warn",
                f"{count} sync pair(s) configured but daemon is bound to {bind_host}. "
                "Remote peers cannot reach this instance. Restart with `spl serve --host 0.0.0.0 --daemon`.",
            )
        )
    else:
        checks.append(
            Check("federation bind host", "ok", f"{count} sync pair(s); peers can reach this daemon on {exposed_on}")
        )
    troubled = 0
    for pair in pairs:
        pair_id = pair.pair_id
        source = f"pulling {pair.thread_id} from {pair.peer_url}"
        details = f"details: `spl fleet sync status {pair_id}`"
        error = pair.last_error
        if pair.state == "failing":
            troubled += 1
            code = error.code if error is not None else "unknown error"
            checks.append(Check("federation pair", "warn", f"{pair_id} FAILING: {code} {source}; {details}"))
        elif pair.stalled:
            troubled += 1
            lag = pair.lag_records
            checks.append(
                Check("federation pair", "warn", f"{pair_id} STALLED (lag {lag} records) {source}; {details}")
            )
    if status is not None and not troubled:
        states = ", ".join(sorted({str(pair.state) for pair in pairs}))
        checks.append(Check("federation pairs", "ok", f"{count} pair(s), none failing or stalled ({states})"))
    return checks


def run_checks(url: str | None = None) -> list[Check]:
    home = _home()
    checks, config = home_checks(home)
    try:
        client = DaemonClient.for_home(home, url)
    except NoDaemon as exc:
        return [*checks, Check("daemon", "fail", str(exc).replace(" or pass --url", ""))]
    except CliError as exc:
        return [*checks, Check("daemon", "fail", str(exc))]
    checks.extend(_daemon_checks(client, config))
    return checks


def doctor(output: str = OUTPUT, url: str | None = URL) -> None:
    """Check the home, identity, credentials, daemon, manifest, store, auth and federation pairs.

    Prints one line per check (✓ fine, ! warning, ✗ failure) with the fix for each problem.
    Exit status: 0 all fine, 1 warnings, 2 failures.

    Example: spl doctor --fix
    """
    as_json = wants_json(output)
    checks = run_checks(url)
    worst = max((check.status for check in checks), key=lambda status: EXIT_CODES[status], default="ok")
    code = EXIT_CODES[worst]
    if as_json:
        emit_json({"object": "doctor", "status": worst, "exit_code": code, "checks": [c.to_wire() for c in checks]})
    else:
        for check in checks:
            for line in render(check):
                typer.echo(line)
    if code:
        sys.stdout.flush()
        raise SystemExit(code)  # typer.Exit would be swallowed under standalone_mode=False
