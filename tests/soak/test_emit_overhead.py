"""``python -m spl.soak.emit_overhead``, run tiny: every server answers and every figure is printed."""

from __future__ import annotations

import json
import math

import pytest

from spl.soak.emit_overhead import main

TARGETS = ("bare route", "spl, auth off", "spl, auth on")


def test_a_tiny_run_prints_every_figure(capsys: pytest.CaptureFixture[str]) -> None:
    main(["--requests", "48", "--rounds", "1", "--connections", "1,4", "--json"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("server CPU per request, ms (median of 1 rounds of 48 requests")
    table = "\n".join(lines[:-1])
    for connections in (1, 4):
        assert f"  {connections} connection(s):" in table
    for name in TARGETS:
        assert sum(1 for line in lines if line.strip().startswith(name)) == 2, table
    assert sum(1 for line in lines if "spl share (auth off):" in line) == 2, table
    assert sum(1 for line in lines if "spl share (auth on):" in line) == 2, table
    figures = json.loads(lines[-1])
    expected = {
        f"{key}_c{connections}_{figure}"
        for connections in (1, 4)
        for key, figure in (
            ("bare_route", "cpu_ms"),
            ("spl_auth_off", "cpu_ms"),
            ("spl_auth_on", "cpu_ms"),
            ("spl_auth_off", "share_ms"),
            ("spl_auth_on", "share_ms"),
        )
    }
    assert set(figures) == expected
    assert all(math.isfinite(value) for value in figures.values())
    assert all(figures[key] > 0 for key in expected if key.endswith("cpu_ms"))


def test_help_says_what_it_measures(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "bare quart-trio route" in capsys.readouterr().out


def test_sizes_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--connections", "0"])
    assert exit_info.value.code == 2
    assert "at least 1" in capsys.readouterr().err
