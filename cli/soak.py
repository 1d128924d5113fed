"""``spl federation soak``: options in, the engine (:mod:`spl.soak`) run, figures out.

The command lives in the ``spl federation`` group beside the pair commands: the group is
:data:`spl.cli.federation.federation_app`, and :mod:`spl.cli.main` registers :func:`soak` on it.

Only :mod:`spl.soak.plan` (pure arithmetic, for the ``--rate`` default) is imported with the module;
the engine is imported when a soak runs.

Exit status: 0 when every window passed, 1 when a window has errors or records that never
arrived (or the run could not start), 128 + the signal when SIGINT, SIGTERM or SIGHUP stopped it
(130, 143, 129): the daemons it started are stopped and their homes removed first, and the figures
so far go to stderr as a table and, with ``--out``, into its files, marked partial. stdout stays
empty then: a pipeline reading the CSV never takes a stopped run for a finished one.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from spl.cli.client import CliError
from spl.cli.common import secret_argument
from spl.core.units import parse_duration
from spl.soak.plan import SEED_STEADY_RATE, plan_windows

__all__ = ["soak"]


def _token(value: str | None) -> str | None:
    """``--peer-token``: the token, ``@file`` or ``-`` (stdin)."""
    if value is None:
        return None
    return secret_argument(value, "--peer-token", "pass a token of the peer with records:write and federation:sync")


def soak(
    csv: bool = typer.Option(False, "--csv", help="Print only the CSV on stdout (progress stays on stderr)."),
    scale: float | None = typer.Option(
        None, "--scale", help="Multiply the seed's 100 minutes: 0.1 = a 10-minute run, 0.01 = 1 minute (default 1)."
    ),
    duration: str | None = typer.Option(
        None, "--duration", help="Total length instead of --scale: 600, 90s, 10m, 1h (split 5/15/60/5/15 %)."
    ),
    rate: float = typer.Option(
        SEED_STEADY_RATE,
        "--rate",
        help="Steady emit rate per pair, records/s. Warmup 0.5×, ramp 0.5×→1×, steady 1×, spike 4×, recovery 1×.",
        show_default=f"{SEED_STEADY_RATE:.2f}: the seed's 33,180 records an hour",
    ),
    pairs: int = typer.Option(1, "--pairs", min=1, help="Pairs at once, one thread each, each at --rate."),
    mode: str = typer.Option("continuous", "--mode", help="continuous (SSE follow) or polling."),
    emit: str = typer.Option(
        "records",
        "--emit",
        help="How records reach the source: records (POST /v1/records, one request each, like an SDK client) "
        "or push (signed batches on POST /v1/sync/records: cheap enough for rates the per-record path cannot reach).",
    ),
    poll_interval: float = typer.Option(0.2, "--poll-interval", help="Seconds between pulls in polling mode."),
    faults: bool = typer.Option(
        False, "--faults", help="Also restart the receiving daemon: gracefully in ramp, with kill -9 in steady."
    ),
    peer_url: str | None = typer.Option(
        None, "--peer-url", help="Use this existing daemon as the source; only the receiver is started here."
    ),
    peer_token: str | None = typer.Option(
        None, "--peer-token", help="Token for --peer-url (records:write + federation:sync); @file or - for stdin."
    ),
    out: Path | None = typer.Option(None, "--out", help="Also write soak.csv, soak.json and soak-lag.svg here."),
    drain_timeout: float = typer.Option(60.0, "--drain-timeout", help="Seconds to wait for stragglers at the end."),
    connections: int | None = typer.Option(
        None, "--connections", min=1, help="Emit connections to the source (default: by peak rate, 2..16)."
    ),
    log_level: str = typer.Option("warning", "--log-level", help="Log level of the daemons started here."),
    keep: bool = typer.Option(False, "--keep", help="Keep the started daemons' homes and logs (path on stderr)."),
) -> None:
    """Drive a sync pair under a mixed workload and report per-window lag, like the seed's CSV.

    By default it starts two throw-away daemons on 127.0.0.1, pairs them (the receiver
    pulls one thread from the source), emits at the window rates while pausing and
    resuming the pair (and, with --faults, restarting the receiver), drains, and prints:

    window,duration_min,records_emitted,records_synced,sync_lag_p50_ms,sync_lag_p99_ms,reconcile_queue_max,errors

    Lag per record = committed on the receiver minus committed on the source (same
    clock). A window no record reached has empty lag fields (unknown, not 0 ms), and
    one without a queue sample an empty queue field. Exits 1 when any window has
    errors or records that never arrived. Ctrl-C, SIGTERM or SIGHUP stops the daemons
    it started and removes their homes, prints the figures so far on stderr (and
    writes them, marked partial, to --out), and exits 128 + the signal (130/143/129).

    Examples: spl federation soak --csv --scale 0.01 --faults;
    spl federation soak --scale 0.1 --rate 921 --out soak-100x
    """
    # The engine (trio, httpx, the daemon launcher) is imported here, not at module level: every other
    # command imports this module for `spl --help` and must not pay for it.
    from spl.soak.config import SoakConfig, SoakError
    from spl.soak.interrupts import SoakInterrupted
    from spl.soak.outputs import write_outputs
    from spl.soak.progress import Progress
    from spl.soak.report import format_csv, format_table
    from spl.soak.run import run_soak

    try:
        total = parse_duration(duration, "--duration", positive=True) if duration is not None else None
        windows = plan_windows(scale=scale, duration=total)
        config = SoakConfig(
            windows=windows,
            rate=rate,
            pairs=pairs,
            mode=mode,
            emit=emit,
            poll_interval=poll_interval,
            faults=faults,
            peer_url=peer_url,
            peer_token=_token(peer_token) if peer_url is not None else peer_token,
            connections=connections,
            drain_timeout=drain_timeout,
            log_level=log_level,
        )
        result = run_soak(config, Progress(), keep=keep)
    except (SoakError, ValueError) as exc:  # a DurationError is a ValueError
        raise CliError(f"soak: {exc}") from None
    except SoakInterrupted as stop:
        if stop.partial is not None:
            typer.echo(format_table(stop.partial.rows), err=True)
            for note in stop.partial.notes:
                typer.echo(f"note: {note}", err=True)
            if out is not None:
                for path in write_outputs(stop.partial, out):
                    typer.echo(f"wrote {path} (partial)", err=True)
        typer.echo(f"soak: stopped by {stop}; the daemons it started are stopped and their homes removed", err=True)
        raise SystemExit(stop.exit_status) from None
    if csv:
        sys.stdout.write(format_csv(result.rows))
    else:
        typer.echo(format_table(result.rows))
        if result.events:
            typer.echo("events: " + ", ".join(f"{label} at {t:.1f}s" for t, label in result.events))
    sys.stdout.flush()
    if out is not None:
        for path in write_outputs(result, out):
            typer.echo(f"wrote {path}", err=True)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if result.problems:
        for problem in result.problems:
            typer.echo(f"soak failed: {problem}", err=True)
        raise SystemExit(1)
    typer.echo("soak passed: every window has errors 0 and records_synced == records_emitted", err=True)
