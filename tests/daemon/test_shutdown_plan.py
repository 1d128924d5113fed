"""The daemon's shutdown plan against its supervision tree and the systemd unit (pure: no daemon is run)."""

from __future__ import annotations

import configparser
from pathlib import Path

from spl.core.units import parse_duration
from spl.daemon.assembly import SHUTDOWN_PLAN, STOP_LIMIT

UNIT = Path(__file__).resolve().parents[2] / "docs" / "spl.service"
ROOT_CHILDREN = {"sse-hub", "store-writer", "reconciler", "joiner", "federation", "http-server", "watchdog"}
ROOT_CHILDREN |= {"metrics-http", "discovery"}  # [metrics] port's listener; mDNS discovery (issue 14)


def service_section() -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    return parser["Service"]


def test_the_stop_fits_in_ten_seconds_with_room_for_the_exit() -> None:
    assert [phase.name for phase in SHUTDOWN_PLAN.phases] == [
        "stop accepting",
        "end streams",
        "stop pairs",
        "flush writer",
        "release home",
    ]
    assert SHUTDOWN_PLAN.total == 9.0 and STOP_LIMIT == 10.0


def test_every_child_of_the_root_is_stopped_by_one_phase_in_reverse_start_order() -> None:
    assert set(SHUTDOWN_PLAN.child_ids) == ROOT_CHILDREN
    # Reverse of the start order (assembly.py): the writer stops after what feeds it and before what it feeds.
    assert SHUTDOWN_PLAN.child_ids == (
        "watchdog",
        "discovery",
        "metrics-http",
        "http-server",
        "federation",
        "joiner",
        "reconciler",
        "store-writer",
        "sse-hub",
    )


def test_the_unit_gives_systemd_the_same_story() -> None:
    service = service_section()
    assert service["Type"] == "notify"
    assert parse_duration(service["TimeoutStopSec"] + "s") > STOP_LIMIT  # systemd never SIGKILLs a stop in time
    watchdog = parse_duration(service["WatchdogSec"] + "s")
    assert watchdog >= 2 * 1.0  # spl pings every WatchdogSec/2, at least every 0.5 s
    assert service["StateDirectory"] == "spl" and service["Environment"] == "SYNCROPEL_HOME=%S/spl"
    assert service["UMask"] == "0077" and service["LimitNOFILE"] == "65536"
