"""The server commands: ``spl version``, ``spl init``, ``spl serve`` and ``spl status``.

``spl init`` and ``spl serve`` run with umask 0077: nothing they create is readable by other
local users. One daemon runs per home (the run lock, ``daemon/home.py``): a second ``spl
serve`` on the same home refuses with one line and leaves the first one's files alone, and
``spl serve --daemon`` reports success only once its child serves (else the child's own error line).

trio and the daemon assembly are imported inside ``serve``: the other commands never run a daemon.
"""

from __future__ import annotations

import enum
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import typer

from spl.cli.answers import FederationPairList, Status, SupervisionTree
from spl.cli.app import OUTPUT, URL
from spl.cli.client import CliError, DaemonClient, DaemonError, Reply, call
from spl.cli.common import home, wants_json
from spl.cli.output import emit_json, safe
from spl.core.version import VERSION
from spl.daemon.home import Home, pid_alive

PRIVATE_UMASK = 0o077
DETACH_TIMEOUT = 30.0
HIGHEST_PORT = 65535


class LogLevel(enum.StrEnum):
    """``--log-level``: a closed set, so a typo (``loud``) is a usage error naming the choices."""

    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LogFormat(enum.StrEnum):
    """``--log-format``: text lines, or one JSON object per line for log shippers."""

    TEXT = "text"
    JSON = "json"


__all__ = ["init", "serve", "status", "version"]


def version(output: str = OUTPUT) -> None:
    """Print the spl version.

    Example: spl version
    """
    if wants_json(output):
        emit_json({"version": VERSION, "python": sys.version.split()[0]})
    else:
        typer.echo(f"spl {VERSION}")


def init(
    force: bool = typer.Option(
        False, "--force", help="Rotate the identity and admin token (records and config.toml are kept)."
    ),
    if_missing: bool = typer.Option(False, "--if-missing", help="Do nothing when the home already exists."),
    output: str = OUTPUT,
) -> None:
    """Create $SYNCROPEL_HOME (default ~/.syncro): identity, config, store, admin credential.

    Example: spl init   (a second home: SYNCROPEL_HOME=~/.syncro-b spl init)
    """
    from spl.daemon.bootstrap import initialise

    os.umask(PRIVATE_UMASK)
    result = initialise(home(), force=force, if_missing=if_missing)
    if wants_json(output):
        emit_json({"did": result.did, "home": result.home, "created": result.created})
    elif result.created:
        typer.echo(f"initialised {result.home}\n  did: {result.did}")
    else:
        typer.echo(f"using existing home {result.home} ({result.did})")


def _check_port(port: int | None) -> None:
    """Refuse a port no socket can have, before anything starts (``--daemon`` included)."""
    if port is not None and not 0 <= port <= HIGHEST_PORT:
        raise CliError(f"--port {port} is out of range: use 0 to {HIGHEST_PORT} (0 picks a free port)")


def _stop_daemon(h: Home, timeout: float = 20.0) -> None:
    running = h.running()
    if running is None:
        typer.echo("no spl daemon is running for this home")
        return
    if running.pid is None:
        raise CliError(f"the spl daemon for {h.root} is just starting; run `spl serve --stop` again in a moment")
    pid = running.pid
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            typer.echo(f"stopped spl daemon (pid {pid})")
            return
        time.sleep(0.1)
    raise CliError(f"daemon pid {pid} did not stop within {timeout:.0f}s; send SIGTERM again to exit at once")


def _last_error(log_path: Path, offset: int) -> str:
    """The child's reason for exiting: its last ``error:`` line written after ``offset``, else its last line."""
    try:
        with open(log_path, "rb") as log:
            log.seek(offset)
            lines = [line.strip() for line in log.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return (errors or lines or [""])[-1]


def _detach(h: Home, argv: list[str]) -> None:
    """Start the daemon in the background, logging to logs/spl.log; return once it serves.

    Ready means: the home's run lock names the child's pid and the child wrote its URL, which it does only
    once the HTTP server is bound and serving. The parent waits for that or for the child's exit, whichever
    comes first: a child that exits (another daemon holds the home, the port is taken, the store is damaged)
    is reported with its own one-line reason and exit status 1, never as started.
    """
    running = h.running()
    if running is not None:
        raise CliError(f"{running.describe(h)}; stop it with `spl serve --stop`")
    h.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    offset = h.log_path.stat().st_size if h.log_path.exists() else 0
    with open(h.log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "spl.cli", *argv, "--log-file", str(h.log_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    deadline = time.monotonic() + DETACH_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = _last_error(h.log_path, offset)
            raise CliError(f"the daemon exited at start (status {process.returncode}): {reason}; log: {h.log_path}")
        running = h.running()
        if running is not None and running.pid == process.pid and running.url:
            typer.echo(f"spl daemon started (pid {process.pid}) at {running.url}; log: {h.log_path}")
            return
        time.sleep(0.05)  # polling a child process: there is nothing to wait on
    raise CliError(
        f"the daemon (pid {process.pid}) is not listening after {DETACH_TIMEOUT:.0f}s; see {h.log_path} "
        "or stop it with `spl serve --stop`"
    )


def serve(
    port: int = typer.Option(
        None, "--port", "-p", help="TCP port 0-65535, 0 for any free one (default: config, 9100)."
    ),
    host: str = typer.Option(None, "--host", help="Bind address (default 127.0.0.1; 0.0.0.0 for other machines)."),
    daemon: bool = typer.Option(False, "--daemon", help="Detach; pid in run/spl.pid, log in logs/spl.log."),
    stop: bool = typer.Option(False, "--stop", help="Stop the detached daemon of this home."),
    insecure_localhost: bool = typer.Option(
        False, "--insecure-localhost", help="Bind 127.0.0.1 only and turn authentication off (local development)."
    ),
    log_level: LogLevel = typer.Option(
        LogLevel.INFO, "--log-level", case_sensitive=False, help="Least severe level logged."
    ),
    log_format: LogFormat = typer.Option(
        LogFormat.TEXT, "--log-format", case_sensitive=False, help="text, or json: one object per line."
    ),
    log_file: Path = typer.Option(None, "--log-file", hidden=True),
) -> None:
    """Run the daemon (foreground by default); one daemon per home.

    Logs go to stderr (with journald priorities under systemd), or to logs/spl.log with --daemon; SIGHUP
    reopens that file after logrotate moved it. SIGTERM stops gracefully within 10 s; a second one exits at once.

    Example: spl serve --daemon --port 9100
    """
    h = home()
    if stop:
        _stop_daemon(h)
        return
    _check_port(port)
    os.umask(PRIVATE_UMASK)  # before the log file is opened: everything the daemon creates is private
    config = h.load_config()
    if daemon:
        argv = ["serve", "--log-level", log_level.value, "--log-format", log_format.value]
        if port is not None:
            argv += ["--port", str(port)]
        if host is not None:
            argv += ["--host", host]
        if insecure_localhost:
            argv.append("--insecure-localhost")
        _detach(h, argv)
        return
    import trio

    from spl.daemon import logs
    from spl.daemon.assembly import Daemon, ServeError, ServeOptions

    logs.configure(log_level.value, log_format.value, log_file)
    options = ServeOptions(
        host=host or config.host,
        port=config.port if port is None else port,
        insecure_localhost=insecure_localhost,
    )
    if insecure_localhost and host not in (None, "127.0.0.1", "localhost"):
        typer.echo("warning: --insecure-localhost binds 127.0.0.1 only; ignoring --host", err=True)
    # Until the daemon listens for it, a SIGHUP (logrotate's) must not kill a daemon that is starting.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        trio.run(Daemon(h, options).run)
    except ServeError as exc:
        raise CliError(str(exc)) from None


def status(
    output: str = OUTPUT,
    url: str | None = URL,
    json_flag: bool = typer.Option(False, "--json", help="Same as -o json: the whole status payload."),
) -> None:
    """Show the daemon's health, identity, supervision tree, sync pairs and federation pairs (one line each).

    -o json is the daemon's status with the federation pairs added as "federation_pairs" (when it lists them).

    Example: spl status -o json | jq .fleet
    """
    as_json = wants_json(output) or json_flag
    client = DaemonClient.for_home(home(), url)
    reply = call(client, "GET", "/v1/status")
    answer = reply.into(Status) if not as_json else None
    paired = _federation_pairs(client)
    if answer is None:
        extra = {"federation_pairs": paired.payload.get("data")} if paired is not None else {}
        emit_json({**reply.payload, **extra})
        return
    typer.echo(f"spl daemon at {answer.endpoint_url}  ({'auth on' if answer.auth_required else 'auth off'})")
    typer.echo(f"  did:       {answer.instance_did}")
    typer.echo(f"  home:      {answer.home}")
    typer.echo(f"  records:   {answer.sequence} (head sequence)")
    typer.echo(f"  uptime:    {answer.uptime_secs:.0f}s")
    fleet = fleet_line(reply.payload.get("fleet"))
    if fleet is not None:
        typer.echo(f"  fleet:     {fleet}")
    typer.echo("Supervision")
    _print_tree(answer.supervision, "  ")
    from spl.cli.federation import federation_pair_lines  # only `spl status` needs the pair tables
    from spl.cli.fleet import federation_lines

    for line in federation_lines(answer.federation.pairs):
        typer.echo(line)
    if paired is not None:
        for line in federation_pair_lines(paired.into(FederationPairList).data):
            typer.echo(line)


def fleet_line(fleet: object) -> str | None:
    """The kill switch as ``spl status`` shows it, or None when the daemon does not report it (an older one)."""
    if not isinstance(fleet, dict) or not isinstance(fleet.get("level"), str):
        return None
    level = fleet["level"]
    if level == "none":
        return "not frozen"
    reason = fleet.get("reason")
    why = f": {safe(reason, 200)}" if isinstance(reason, str) and reason else ""
    return f"FROZEN ({safe(level, 16)}) since {safe(fleet.get('since'), 32)}{why}; lift with `spl unkill`"


def _federation_pairs(client: DaemonClient) -> Reply | None:
    """``GET /v1/federation/pairs``, or None when this daemon (or this credential) does not list them.

    ``spl status`` must keep working against a daemon without federation pairs (an older one answers
    404), with a token that may read the status but not manage federation (403), and while federation
    is still starting (503): it then leaves the federation pairs out rather than fail.
    """
    try:
        reply = call(client, "GET", "/v1/federation/pairs")
    except DaemonError as exc:
        if exc.status in (401, 403, 404, 405, 503):
            return None
        raise
    return reply


def _print_tree(tree: SupervisionTree, indent: str) -> None:
    for child in tree.children:
        extra = f", restarts {child.restarts}" if child.restarts else ""
        error = f", last error: {child.last_error}" if child.last_error else ""
        typer.echo(f"{indent}{child.id:<16} {child.state}{extra}{error}")
        if child.children is not None:
            _print_tree(child.children, indent + "  ")
