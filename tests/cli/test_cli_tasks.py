"""``spl task …``, ``spl thread fork|show`` and ``spl debug replay`` against a real daemon, in one scenario."""

from __future__ import annotations

import re
import time
from pathlib import Path

import httpx
from cli_support import Cli, DaemonLike, base_env, one_error_line, run_spl

MINTED = re.compile(r"th_[0-9a-f]{64}")


def test_task_lifecycle_fan_out_tree_join_and_replay(cli: Cli, daemon: DaemonLike) -> None:
    added = cli("task", "add", "Ship v2", "--alias", "TASK-0042", "--label", "release", "--criteria", "CI green")
    assert added.ok().out.startswith("added TASK-0042 th_") and "(open)" in added.out
    shown = cli("task", "show", "TASK-0042", "-o", "json").ok().json()
    assert MINTED.fullmatch(shown["thread"]) and shown["status"] == "open" and shown["fold"]["state"] == "open"
    text = cli("task", "show", shown["thread"]).ok().out
    assert "alias:" in text and "TASK-0042" in text and "criterion:" in text and "opener" in text

    assert cli("task", "start", "TASK-0042").ok().out == "TASK-0042 active\n"
    line = one_error_line(cli("task", "start", "TASK-0042"))
    assert "TASK_STATE" in line and "active" in line
    assert "NOT_FOUND" in one_error_line(cli("task", "show", "TASK-9999"))

    fork = cli("task", "fan-out", "TASK-0042", "build", "migrate", "--join", "k_of_n:2", "-o", "json").ok().json()
    first, second = (child["alias"] for child in fork["children"])
    listing = cli("task", "list", "--status", "open", "-o", "json").ok().json()["data"]
    assert {first, second} <= {task["alias"] for task in listing}

    cli("task", "done", first, "--summary", "image built").ok()
    cli("task", "done", second).ok()
    deadline = time.monotonic() + 15
    while httpx.get(f"{daemon.url}/v1/tasks/TASK-0042", timeout=10).json()["status"] != "done":
        assert time.monotonic() < deadline, "the joiner did not close the parent"
        time.sleep(0.05)
    tree = cli("task", "tree", "TASK-0042").ok().out.splitlines()
    assert tree[0].startswith("TASK-0042 th_") and tree[0].endswith("done") and len(tree) == 3
    assert tree[1].startswith(f"  {first} ") and tree[1].endswith("→ done")
    join = cli("task", "join-status", "TASK-0042").ok().out
    assert "decision: satisfied (2 accepted, 0 rejected, 0 open of 2)" in join and "k_of_n" in join

    steps = cli("debug", "replay", "TASK-0042", "-o", "json").ok().json()["data"]
    assert steps[0]["task"] == {"before": None, "after": "open"} and steps[0]["role"] == "opener"
    assert steps[-1]["task"]["after"] == "done" and steps[-1]["join"]["kind"] == "core.join.closed.v1"
    replayed = cli("debug", "replay", "TASK-0042").ok().out
    assert "task: open → active" in replayed and "child th_" in replayed and "final: thread done, task done" in replayed

    cli("intend", "-t", "th_cli_fork", "parent goal").ok()
    forked = cli("thread", "fork", "th_cli_fork", "a", "b", "--join", "any").ok().out
    assert forked.startswith("forked 2 from th_cli_fork (join any)")
    cli("do", "-t", "th_cli_anomaly", "work").ok()
    show = cli("thread", "show", "th_cli_anomaly").ok().out
    assert "anomalies:  first_record_not_intend" in show and "observer" in show
    assert "RESERVED_THREAD" in one_error_line(cli("thread", "fork", "th_fleet_control", "x"))


def test_every_task_command_has_an_example(tmp_path: Path) -> None:
    commands = [
        ("task", name)
        for name in ("add list show start done fail cancel block reopen comment fan-out tree join-status".split())
    ]
    for command in [*commands, ("thread", "fork"), ("debug", "replay")]:
        assert "Example" in run_spl(*command, "--help", env=base_env(tmp_path)).ok().out, command
