"""Capacity per pair: N pairs on one receiving daemon, pulling N threads from one source.

Run: ``python -m spl.soak.capacity`` (a few minutes) or, for the full ladder,
``python -m spl.soak.capacity --continuous 50,100,200,300 --polling 250,500,1000 --seconds 60``.

Every step is a short ``spl federation soak`` (:func:`spl.soak.run.run_soak`): two
throw-away daemons on 127.0.0.1, N pairs on the receiver (one thread each), the
seed's five windows squeezed into ``--seconds``, and a total steady emit rate of
``--total-rate`` records/s shared by the N threads (4× in the spike). While it runs it
measures, per pair:

- **resident memory** on the source (responder: serves the change feeds) and on the
  receiver (initiator: runs the pair actors): VmRSS from /proc — the median over the
  steady window and the maximum over the spike, minus the daemon's RSS before any pair
  existed, divided by N. One-off costs (first use of the federation code paths) are
  included, so the figure errs high;
- **open file descriptors** (and how many are sockets) per pair, from /proc/<pid>/fd,
  same arithmetic;
- **bandwidth**: the pairs reach the source through a byte-counting TCP relay (its own
  process), so the bytes are exactly what the pairs put on the wire — requests out,
  change feeds back, HTTP and SSE framing included, emits and samplers excluded;
  bytes/s per pair over the steady window, and bytes per synced record;
- **pass**: the soak passes (errors 0, every record synced) *and* p99 lag is under
  1 s in every window. The largest N that passes is the capacity figure.

Polling pairs pull every ``--poll-interval`` seconds (default 0.5 s; a p99 lag under
1 s is impossible with a longer interval); continuous pairs follow the SSE feed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

from spl.soak.config import SoakConfig, SoakError
from spl.soak.plan import plan_windows
from spl.soak.procfs import ResourceSample
from spl.soak.progress import Progress
from spl.soak.result import SoakResult
from spl.soak.run import run_soak

LAG_LIMIT_MS = 1000.0

SEED_TABLE = """\
Seed (001, "Capacity planning"), per pair:
  continuous   memory responder ~12 MB (~24 MB at 4x spike), initiator ~8 MB (~16 MB),
               bandwidth 2-4 KB/s (8-16 KB/s), 1 TCP connection (SSE), 4-6 fds (6-10)
  polling 5min memory ~3 MB, bandwidth < 100 B/s, 0 TCP connections between polls
  practical    50+ polling pairs on a 1 vCPU machine; ~10-20 continuous pairs
"""


@dataclass
class Step:
    mode: str
    pairs: int
    poll_interval: float
    result: SoakResult | None = None
    error: str | None = None
    seconds: float = 0.0

    def lag_limit_ms(self) -> float:
        """1 s; for a polling pair, 1 s on top of its interval (it cannot see a record before its next poll)."""
        return LAG_LIMIT_MS + (self.poll_interval * 1000 if self.mode == "polling" else 0)

    def figures(self) -> dict[str, Any]:
        figures: dict[str, Any] = {"mode": self.mode, "pairs": self.pairs, "wall_seconds": round(self.seconds, 1)}
        if self.mode == "polling":
            figures["poll_interval"] = self.poll_interval
        if self.result is None:
            return {**figures, "passed": False, "error": self.error}
        result = self.result
        windows = result.config.windows
        steady, spike = windows[2], windows[3]
        # A window no record reached has no p99 (None): it cannot pass, and the soak's verdict already fails it.
        p99_max = max((row.sync_lag_p99_ms for row in result.rows if row.sync_lag_p99_ms is not None), default=None)
        figures.update(
            soak_passed=result.passed,
            p99_max_ms=p99_max,
            steady_p50_ms=result.rows[2].sync_lag_p50_ms,
            steady_p99_ms=result.rows[2].sync_lag_p99_ms,
            lag_limit_ms=self.lag_limit_ms(),
            passed=result.passed and p99_max is not None and p99_max < self.lag_limit_ms(),
            records=sum(row.records_emitted for row in result.rows),
            target=round(sum(row.target_emits for row in result.rows)),
            problems=result.problems,
            notes=result.notes,
        )
        n = self.pairs
        for role in ("source", "receiver"):
            base = result.baseline.get(role)
            in_steady = [r for r in result.resources if r.role == role and steady.start <= r.t < steady.end]
            in_spike = [r for r in result.resources if r.role == role and spike.start <= r.t < spike.end + 1]
            if base is None or not in_steady:
                continue
            figures[f"{role}_rss_mib"] = round(max(r.rss_kib for r in in_steady) / 1024, 1)
            figures[f"{role}_kib_per_pair"] = round((_median(in_steady, "rss_kib") - base.rss_kib) / n, 1)
            if in_spike:
                figures[f"{role}_kib_per_pair_spike"] = round((max(r.rss_kib for r in in_spike) - base.rss_kib) / n, 1)
            figures[f"{role}_fds_per_pair"] = round((_median(in_steady, "fds") - base.fds) / n, 2)
            figures[f"{role}_sockets_per_pair"] = round((_median(in_steady, "sockets") - base.sockets) / n, 2)
            figures[f"{role}_fds"] = int(_median(in_steady, "fds"))
        traffic = result.traffic
        steady_rate = _bytes_per_second(traffic, steady.start, steady.end)
        if steady_rate is not None:
            figures["bytes_per_s_per_pair"] = round(sum(steady_rate) / n, 1)
            figures["bytes_per_s_per_pair_to_source"] = round(steady_rate[0] / n, 1)
        spike_rate = _bytes_per_second(traffic, spike.start, spike.end)
        if spike_rate is not None:
            figures["bytes_per_s_per_pair_spike"] = round(sum(spike_rate) / n, 1)
        synced = sum(row.records_synced for row in result.rows)
        if traffic and synced:
            figures["bytes_per_record"] = round((traffic[-1][1] + traffic[-1][2]) / synced, 1)
        figures["steady_rate_per_pair"] = round(result.config.rate, 4)
        return figures


def _bytes_per_second(traffic: list[tuple[float, int, int]], start: float, end: float) -> tuple[float, float] | None:
    """(to source, from source) bytes/s between the last counter read at or before ``start``
    and the first at or after ``end`` (the window plus at most one sampling period)."""
    before = [x for x in traffic if x[0] <= start]
    after = [x for x in traffic if x[0] >= end]
    if not before or not after:
        return None
    (t0, up0, down0), (t1, up1, down1) = before[-1], after[0]
    if t1 <= t0:
        return None
    return (up1 - up0) / (t1 - t0), (down1 - down0) / (t1 - t0)


def _median(samples: list[ResourceSample], attribute: str) -> float:
    return float(statistics.median(getattr(sample, attribute) for sample in samples))


def run_step(step: Step, args: argparse.Namespace) -> Step:
    config = SoakConfig(
        windows=plan_windows(duration=args.seconds),
        rate=args.total_rate / step.pairs,
        pairs=step.pairs,
        mode=step.mode,
        poll_interval=step.poll_interval,
        relay=True,
        drain_timeout=args.drain_timeout,
        setup_timeout=120.0 + 0.2 * step.pairs,
        connections=4,
        resource_interval=0.5,
    )
    started = time.monotonic()
    try:
        step.result = run_soak(config, Progress(quiet=not args.verbose))
    except SoakError as exc:
        step.error = str(exc)
    step.seconds = time.monotonic() - started
    return step


def _cell(figures: dict[str, Any], key: str, fmt: str = "{}") -> str:
    value = figures.get(key)
    return "-" if value is None else fmt.format(value)


def print_table(rows: list[dict[str, Any]]) -> None:
    headers = (
        "mode",
        "pairs",
        "pass",
        "p99 max",
        "src KiB/pair",
        "(spike)",
        "rcv KiB/pair",
        "(spike)",
        "src fds/pair",
        "rcv fds/pair",
        "rcv sockets/pair",
        "B/s/pair",
        "(spike)",
        "B/record",
    )
    lines = [headers]
    for f in rows:
        mode = f["mode"] + (f" {f['poll_interval']:g}s" if f["mode"] == "polling" else "")
        lines.append(
            (
                mode,
                str(f["pairs"]),
                ("yes" if f.get("passed") else "NO") if "error" not in f else "ERROR",
                _cell(f, "p99_max_ms", "{} ms"),
                _cell(f, "source_kib_per_pair"),
                _cell(f, "source_kib_per_pair_spike"),
                _cell(f, "receiver_kib_per_pair"),
                _cell(f, "receiver_kib_per_pair_spike"),
                _cell(f, "source_fds_per_pair"),
                _cell(f, "receiver_fds_per_pair"),
                _cell(f, "receiver_sockets_per_pair"),
                _cell(f, "bytes_per_s_per_pair"),
                _cell(f, "bytes_per_s_per_pair_spike"),
                _cell(f, "bytes_per_record"),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    for index, line in enumerate(lines):
        print("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(line)))
        if index == 0:
            print("  ".join("-" * width for width in widths))


def _ladder(text: str) -> list[tuple[int, float | None]]:
    """``100,200`` or ``250@0.5,1000@5``: pair counts, each with an optional poll interval."""
    steps: list[tuple[int, float | None]] = []
    for part in text.split(","):
        if part.strip():
            count, _, interval = part.partition("@")
            steps.append((int(count), float(interval) if interval else None))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--continuous", type=_ladder, default=_ladder("100,200"), help="pair counts, continuous mode (100,200)"
    )
    parser.add_argument(
        "--polling",
        type=_ladder,
        default=_ladder("250,1000@5"),
        help="pair counts, polling mode; N@S polls every S seconds instead of --poll-interval (250,1000@5)",
    )
    parser.add_argument("--poll-interval", type=float, default=0.5, help="polling pairs' interval, seconds (0.5)")
    parser.add_argument("--total-rate", type=float, default=100.0, help="steady emit rate shared by all pairs, /s")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each step's soak (5 windows)")
    parser.add_argument("--drain-timeout", type=float, default=60.0)
    parser.add_argument("--verbose", action="store_true", help="the soak's progress lines on stderr")
    parser.add_argument("--json", action="store_true", help="also print one JSON object with every figure")
    args = parser.parse_args()
    steps = [Step("continuous", n, args.poll_interval) for n, _ in args.continuous]
    steps += [Step("polling", n, args.poll_interval if every is None else every) for n, every in args.polling]
    rows: list[dict[str, Any]] = []
    for step in steps:
        print(f"capacity: {step.mode} x{step.pairs} …", file=sys.stderr, flush=True)
        figures = run_step(step, args).figures()
        rows.append(figures)
        verdict = "ERROR " + str(figures.get("error")) if "error" in figures else f"passed={figures['passed']}"
        print(
            f"capacity: {step.mode} x{step.pairs}: {verdict}, p99 max {figures.get('p99_max_ms')} ms, "
            f"{step.seconds:.0f}s",
            file=sys.stderr,
            flush=True,
        )
    print(
        f"Capacity on this machine: {args.total_rate:g} records/s shared by the pairs (4x in the spike), "
        f"{args.seconds:g}s soak per step; pass = errors 0, every record synced, p99 lag < {LAG_LIMIT_MS} ms "
        "(+ the poll interval for polling pairs) in every window"
    )
    print_table(rows)
    for mode in ("continuous", "polling"):
        passing = [f["pairs"] for f in rows if f["mode"] == mode and f.get("passed")]
        tried = [f["pairs"] for f in rows if f["mode"] == mode]
        if tried:
            best = f"{max(passing)} pairs" if passing else "none of the sizes tried"
            print(f"largest passing N, {mode}: {best} (tried {', '.join(map(str, tried))})")
    for mode in ("continuous", "polling"):
        measured = [f for f in rows if f["mode"] == mode and "receiver_rss_mib" in f]
        for small, large in zip(measured, measured[1:], strict=False):
            extra = large["pairs"] - small["pairs"]
            if extra > 0:
                source = (large["source_rss_mib"] - small["source_rss_mib"]) * 1024 / extra
                receiver = (large["receiver_rss_mib"] - small["receiver_rss_mib"]) * 1024 / extra
                print(
                    f"marginal memory, {mode} {small['pairs']} -> {large['pairs']} pairs: "
                    f"source {source:.1f} KiB/pair, receiver {receiver:.1f} KiB/pair (peak steady RSS difference)"
                )
    for f in rows:
        for note in f.get("problems", []) + f.get("notes", []):
            print(f"  {f['mode']} x{f['pairs']}: {note}")
    print()
    print(SEED_TABLE, end="")
    if args.json:
        print(json.dumps(rows))


if __name__ == "__main__":
    main()
