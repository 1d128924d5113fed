"""``spl kill`` / ``spl unkill`` against a real daemon, in one scenario (each step builds on the last)."""

from __future__ import annotations

from cli_support import Cli, one_error_line


def test_kill_and_unkill(cli: Cli) -> None:
    # Exactly one level: none or two is a usage error (exit 2), and nothing is sent.
    for args in ((), ("--soft", "--hard")):
        refused = cli("kill", *args)
        assert refused.code == 2 and "exactly one of --soft, --hard, --emergency" in refused.err, refused
    for command in ("kill", "unkill"):
        shown = cli(command, "--help").ok().out
        assert "Example: spl " + command in shown
    assert "--emergency" in cli("kill", "--help").out

    assert "NOT_FROZEN" in one_error_line(cli("unkill"))
    frozen = cli("kill", "--soft", "--reason", "drill 7", "-o", "json").ok().json()
    assert (frozen["level"], frozen["frozen"], frozen["reason"]) == ("soft", True, "drill 7")
    assert frozen["since"].endswith("Z") and len(frozen["record_id"]) == 64

    # Soft: a new INTEND is refused with the freeze's code, other acts pass.
    line = one_error_line(cli("intend", "-t", "th_kill_cli", "start something"))
    assert "FLEET_FROZEN_SOFT" in line and "drill 7" in line and "spl unkill" in line

    assert "ALREADY_FROZEN" in one_error_line(cli("kill", "--soft"))
    text = cli("kill", "--hard", "--reason", "incident").ok().out
    assert text.startswith("frozen (hard) since ") and "incident" in text and "spl unkill" in text
    status = cli("status").ok().out
    assert "fleet:     FROZEN (hard) since" in status and "incident" in status
    assert "INVALID_REASON" in one_error_line(cli("kill", "--emergency", "--reason", "x" * 501))

    thawed = cli("unkill", "--reason", "resolved").ok()
    assert thawed.out.startswith("not frozen")
    assert "fleet:     not frozen" in cli("status").ok().out
    cli("intend", "-t", "th_kill_cli", "start something").ok()
