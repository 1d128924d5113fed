"""The federation-pair benchmarks (``python -m spl.soak.federation_pair_bench`` and ``spl.soak.filtered_pull``):
one tiny run of each against real daemons, and a SIGTERM in the middle of one.

Sizes are tiny, so the figures say nothing about speed; the tests check that every measurement ran to the
end, counted what it should and printed it, and that an interrupted run leaves no daemon behind.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spl.soak import federation_pair_bench as bench
from spl.soak import filtered_pull


def test_a_tiny_run_of_every_federation_pair_measurement(tmp_path: Path) -> None:
    options = bench.Options(
        handshakes=1, catchup=300, threads=10, rounds=1, kinds=("sync", "fed"), rate=20, seconds=1,
        lag_kinds=("fed", "sync"), build_workers=0,
    )  # fmt: skip
    results = bench.run_benchmark(tmp_path, options)

    handshake = results["handshake"]
    for part in ("whole_ms", "manifest_ms", "post_ms", "commit_ms"):
        assert 0 < handshake[part]["p50"] <= handshake[part]["p95"] <= handshake[part]["max"], handshake
    # The whole handshake holds a manifest fetch and a pair POST of its own.
    assert handshake["whole_ms"]["p50"] > handshake["manifest_ms"]["p50"]

    summary = {row["pair"]: row for row in results["catchup"]["summary"]}
    assert summary.keys() == {"sync pair, 1 thread", "federation pair, 10 threads"}
    assert summary["sync pair, 1 thread"]["records"] == 300
    assert summary["federation pair, 10 threads"]["records"] == 301  # and scale's one-record th_lone
    for row in summary.values():
        assert row["records_per_s"] > 0 and row["receiver_cpu_per_1k_ms"] > 0, row

    fed, sync = results["lag"]
    for run in (fed, sync):
        assert run["records"] == 20 and run["missing"] == 0, run
        assert 0 <= run["lag_ms"]["p50"] <= run["lag_ms"]["p99"] <= run["lag_ms"]["max"] < 30_000, run
    assert sync["echoed_back"] == 0  # a sync pair pulls one way only

    report = bench.format_report(results)
    for line in ("`POST /v1/federation/pairs` on A, whole", "federation pair, 10 threads", "| sync pair (reference) |"):
        assert line in report, report
    json.dumps(results)  # the --json output
    assert not any(path.is_dir() for path in tmp_path.iterdir()), "every daemon home is removed"


def test_a_tiny_filtered_pull_serves_exactly_the_namespace(tmp_path: Path) -> None:
    options = filtered_pull.Options(
        sizes=(400, 2_000), share=20, repeats=1, build_workers=0, min_records=0, min_seconds=0
    )
    results = filtered_pull.run_benchmark(tmp_path, options)
    assert [results[size]["matched"] for size in (400, 2_000)] == [20, 100]  # pull_all checked each count
    for size in (400, 2_000):
        for feed in ("namespace", "consent", "projection"):
            figures = results[size][feed]
            assert figures["pages"] == 1 and figures["pull_ms"] > 0 and figures["us_per_record"] > 0, figures
    assert "`namespace=music`: wall per matched record" in filtered_pull.format_table(results, 20)


def test_records_fall_in_the_namespace_one_in_share() -> None:
    fields = [filtered_pull.record_fields(index, 100) for index in range(1_000)]
    music = [f for f in fields if f["body"].get("namespace") == filtered_pull.NAMESPACE]
    assert len(music) == 10 and all(f["thread"].startswith("th_music_") for f in music)
    assert len({(f["thread"], f["actor"], f["clock"]) for f in fields}) == 1_000  # no clock collides


def test_bad_flags_are_refused_before_any_daemon_starts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--pairs", "sync,carrier-pigeon"])
    assert "unknown carrier-pigeon" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--only", ""])
    with pytest.raises(SystemExit):
        bench.main(["--lag-threads", "3"])  # the sync reference carries one thread
    assert "--lag-threads" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        filtered_pull.main(["--sizes", "lots"])
    assert "not a size" in capsys.readouterr().err


def _daemons_under(scratch: Path) -> list[int]:
    """Live processes whose home lies under ``scratch`` (a daemon carries its home in its environment)."""
    found = []
    needle = f"SYNCROPEL_HOME={scratch}/".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes() and (entry / "stat").read_text().split(") ")[1][0] != "Z":
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="looks for survivors in /proc")
def test_sigterm_stops_the_bench_and_every_daemon_it_started(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "spl.soak.federation_pair_bench",
            "--only",
            "lag",
            "--lag-pairs",
            "fed",
            "--seconds",
            "600",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stderr is not None
        seen = b""
        deadline = time.monotonic() + 90
        while b"emitting" not in seen:  # both daemons are up and paired once this is printed
            assert time.monotonic() < deadline and process.poll() is None, seen.decode()
            ready, _, _ = select.select([process.stderr], [], [], 1.0)
            if ready:
                seen += os.read(process.stderr.fileno(), 65536)
        assert _daemons_under(tmp_path), "the bench's daemons should be running"
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if process.stderr is not None:
            process.stderr.close()
    assert _daemons_under(tmp_path) == []
    assert list(tmp_path.iterdir()) == [], "the temporary homes are removed"
