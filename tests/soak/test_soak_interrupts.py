"""SIGTERM, SIGHUP or Ctrl-C to ``spl federation soak``: the throw-away daemons stop and their homes go.

Before, Python's default SIGTERM action ended the soak on the spot and both daemons were
re-parented to PID 1, still running, their homes left in the temporary directory. These runs
are real: a soak process, its two daemons, a signal, then a look at /proc for any survivor.
SIGHUP takes the same path (:class:`~spl.soak.interrupts.StopSignals` routes both); it is checked
in-process, without another pair of daemons.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trio
import trio.lowlevel

from spl.soak.interrupts import SoakInterrupted, StopSignals
from spl.soak.report import CSV_HEADER
from spl.soak.run import _unwrap

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="looks for survivors in /proc")

WAIT = 90.0  # seconds a phase of the soak may take to show up on a loaded machine


def _daemons_under(scratch: Path) -> list[int]:
    """Live (not zombie) processes whose home is under ``scratch``: a daemon carries its home in its environment."""
    found = []
    needle = f"SYNCROPEL_HOME={scratch}/".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes() and (entry / "stat").read_text().split(") ")[1][0] != "Z":
                found.append(int(entry.name))
        except (OSError, IndexError):
            continue  # gone, or not ours to read
    return found


def _sigint_as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _wait_for_stderr(process: subprocess.Popen[bytes], marker: bytes, seen: bytearray) -> None:
    """Read the soak's stderr until ``marker`` shows up (or fail after WAIT seconds)."""
    assert process.stderr is not None
    deadline = time.monotonic() + WAIT
    while marker not in seen:
        remaining = deadline - time.monotonic()
        assert remaining > 0 and process.poll() is None, f"no {marker!r} on stderr:\n{seen.decode()}"
        ready, _, _ = select.select([process.stderr], [], [], remaining)
        if ready:
            seen.extend(os.read(process.stderr.fileno(), 65536))


@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "phase"),
    [
        (signal.SIGTERM, b"running 60s"),  # in trio: the run unwinds through its nurseries
        (signal.SIGINT, b"running 60s"),  # Ctrl-C sent to the soak alone (a terminal sends it to the group)
        (signal.SIGTERM, b"starting the receiving daemon"),  # while the daemons start, outside trio
    ],
    ids=["sigterm-running", "sigint-running", "sigterm-starting"],
)
def test_a_stop_signal_stops_both_daemons_and_removes_their_homes(
    tmp_path: Path, signum: signal.Signals, phase: bytes
) -> None:
    scratch = tmp_path / "tmp"  # the soak's temporary directory: its homes are made here
    scratch.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("SPL_SERVE_URL", "SPL_TOKEN")}
    env |= {"SYNCROPEL_HOME": str(tmp_path / "unused-home"), "TMPDIR": str(scratch)}
    seen = bytearray()
    out_dir = tmp_path / "out"
    with subprocess.Popen(
        [sys.executable, "-m", "spl.cli", "federation", "soak", "--csv", "--duration", "60", "--out", str(out_dir)],
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        # As from a terminal: SIGINT at its default. A shell without job control starts background commands
        # (`make test &`, some CI runners) with SIGINT ignored, and the soak would inherit that.
        preexec_fn=_sigint_as_from_a_terminal,
    ) as process:
        try:
            _wait_for_stderr(process, phase, seen)
            if phase.startswith(b"starting"):  # catch a daemon half-started, not the moment before
                deadline = time.monotonic() + WAIT
                while not _daemons_under(scratch) and time.monotonic() < deadline:
                    time.sleep(0.01)  # polling /proc for the first child, not synchronising with the soak
            else:
                assert len(_daemons_under(scratch)) == 2, "expected a source and a receiver"
                assert {p.name for p in next(scratch.glob("spl-soak-*")).iterdir()} >= {"source", "receiver"}
            process.send_signal(signum)
            out, err = process.communicate(timeout=WAIT)
            survivors = _daemons_under(scratch)
        finally:  # a failing test must not leave a soak or its daemons running
            if process.poll() is None:
                process.kill()
            for pid in _daemons_under(scratch):
                os.kill(pid, signal.SIGKILL)
    assert survivors == [], "a daemon survived the soak"
    assert list(scratch.iterdir()) == [], "the daemons' homes were left behind"
    stderr = (seen + err).decode()
    assert process.returncode == 128 + signum, stderr
    assert f"stopped by {signal.Signals(signum).name}" in stderr and "Traceback" not in stderr, stderr
    assert out == b""  # no CSV on stdout from a run that did not finish
    if phase.startswith(b"running"):  # the figures so far: a table on stderr, the files marked partial
        assert "partial figures: stopped by" in stderr and "ref p99" in stderr, stderr
        assert (out_dir / "soak.csv").read_text().splitlines()[0] == CSV_HEADER
        assert "(partial: stopped by" in (out_dir / "soak-lag.svg").read_text()
    else:  # stopped before the first window: nothing to report
        assert not out_dir.exists()


main_thread_only = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(), reason="signal handlers need the main thread"
)


@main_thread_only
def test_sighup_stops_a_soak_like_sigterm_outside_and_inside_trio() -> None:
    # As from a terminal: a run under nohup starts with SIGHUP ignored, which the soak keeps (the next test).
    inherited = signal.signal(signal.SIGHUP, signal.SIG_DFL)
    try:
        _sighup_stops_a_soak()
    finally:
        signal.signal(signal.SIGHUP, inherited)


def _sighup_stops_a_soak() -> None:
    with StopSignals() as signals, pytest.raises(SoakInterrupted) as outside:
        signal.raise_signal(signal.SIGHUP)  # the terminal went away while the daemons start
    assert outside.value.signum == signal.SIGHUP and outside.value.exit_status == 129

    async def run_forever() -> None:
        signal.raise_signal(signal.SIGHUP)
        await trio.sleep_forever()

    with StopSignals() as signals, pytest.raises(BaseException) as inside:
        signals.run(run_forever)
    stopped = _unwrap(inside.value) if isinstance(inside.value, BaseExceptionGroup) else inside.value
    assert isinstance(stopped, SoakInterrupted) and stopped.signum == signal.SIGHUP
    assert signal.getsignal(signal.SIGHUP) is not signals._raise  # handlers restored on the way out


@main_thread_only
def test_an_ignored_sighup_stays_ignored_under_nohup() -> None:
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # what `nohup` does before it starts the soak
    try:
        with StopSignals() as signals:
            signal.raise_signal(signal.SIGHUP)  # ignored: no SoakInterrupted

            async def main() -> str:
                signal.raise_signal(signal.SIGHUP)
                await trio.lowlevel.checkpoint()
                return "still running"

            assert signals.run(main) == "still running"
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)
