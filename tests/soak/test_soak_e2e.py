"""``spl federation soak`` end to end: two real daemons, faults, the seed's CSV on stdout."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from spl.soak.plan import WINDOW_NAMES
from spl.soak.report import CSV_HEADER

SOAK_TIMEOUT = 150.0


def _spl(*args: str, timeout: float, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in ("SPL_SERVE_URL", "SPL_TOKEN")}
    env["SYNCROPEL_HOME"] = str(cwd / "unused-home")  # the soak starts its own daemons with their own homes
    return subprocess.run(
        [sys.executable, "-m", "spl.cli", *args],
        env=env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.slow
def test_short_soak_with_faults_passes(tmp_path: Path) -> None:
    """20 s (1 / 3 / 12 / 1 / 3 s windows) with a graceful restart and a kill -9 of the receiver."""
    out = tmp_path / "out"
    result = _spl(
        "federation", "soak", "--csv", "--duration", "20", "--faults", "--out", str(out),
        timeout=SOAK_TIMEOUT, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    lines = result.stdout.splitlines()
    assert lines[0] == CSV_HEADER
    assert len(lines) == 6, result.stdout  # only the CSV on stdout
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [row["window"] for row in rows] == list(WINDOW_NAMES)
    for row in rows:
        assert row["errors"] == "0", row
        assert row["records_synced"] == row["records_emitted"], row
        assert int(row["records_emitted"]) > 0, row
    assert "receiver restarted (kill -9)" in result.stderr and "receiver restarted (SIGTERM)" in result.stderr
    assert "paused 1 pair(s)" in result.stderr and "all resumed after" in result.stderr
    assert (out / "soak.csv").read_text() == result.stdout
    document = json.loads((out / "soak.json").read_text())
    assert document["passed"] is True
    assert len(document["samples"]) == sum(int(row["records_emitted"]) for row in rows)
    assert ET.parse(out / "soak-lag.svg").getroot().tag == "{http://www.w3.org/2000/svg}svg"


@pytest.mark.parametrize(
    "args,message",
    [
        (("--scale", "0.1", "--duration", "60"), "not both"),
        (("--mode", "sometimes"), "--mode"),
        (("--rate", "0"), "--rate"),
        (("--peer-token", "t"), "--peer-url"),
        (("--duration", "soon"), "--duration"),
    ],
)
def test_usage_errors_are_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = _spl("federation", "soak", "--csv", *args, timeout=60, cwd=tmp_path)
    assert result.returncode != 0
    assert result.stdout == ""
    assert message in result.stderr and "Traceback" not in result.stderr
