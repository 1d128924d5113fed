"""What every ``spl`` invocation shares: ``--version``, ``spl completion``, ``--json`` and the usage exit code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
from cli_support import Cli, base_env, run_spl

from spl.cli.main import app

SHELLS = ("bash", "zsh", "fish")


def test_version_flag_prints_what_spl_version_prints(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    flag = run_spl("--version", env=env).ok()
    assert re.fullmatch(r"spl \d+\.\d+\.\d+\S*\n", flag.out) and flag.err == ""
    assert flag.out == run_spl("version", env=env).ok().out


@pytest.mark.parametrize("shell", SHELLS)
def test_completion_prints_a_script_that_calls_spl_back(tmp_path: Path, shell: str) -> None:
    script = run_spl("completion", shell, env=base_env(tmp_path / "home")).ok().out
    assert "_SPL_COMPLETE=complete_" + shell in script and "spl" in script


def test_completion_help_says_how_to_load_it_and_unknown_shells_are_usage_errors(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    assert "source <(spl completion bash)" in run_spl("completion", "--help", env=env).ok().out
    refused = run_spl("completion", "tcsh", env=env)
    assert refused.code == 2 and "tcsh" in refused.err and refused.out == ""
    assert run_spl("no-such-command", env=env).code == 2


def test_bash_accepts_the_script_and_completes_with_it(tmp_path: Path) -> None:
    """The script is valid bash, and once sourced it completes ``spl sta`` to ``status`` by asking spl."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash on this machine")
    script = tmp_path / "spl.bash"
    script.write_text(run_spl("completion", "bash", env=base_env(tmp_path / "home")).ok().out)
    subprocess.run([bash, "-n", str(script)], check=True, timeout=30)
    # The candidates come from the protocol the script speaks: the variables it sets, answered by spl.
    asked = dict(
        base_env(tmp_path / "home"), _SPL_COMPLETE="complete_bash", COMP_WORDS="spl task list --j", COMP_CWORD="3"
    )
    assert run_spl(env=asked).ok().out.split() == ["--json"]
    # And end to end in bash, with the console script on PATH (a fresh interpreter: the real thing).
    spl = Path(sys.executable).with_name("spl")
    if not spl.exists():
        pytest.skip(f"no spl console script next to {sys.executable}")
    env = dict(base_env(tmp_path / "home"), PATH=f"{spl.parent}{os.pathsep}{os.environ.get('PATH', '')}")
    loaded = f'source {script}; COMP_WORDS=(spl sta); COMP_CWORD=1; _spl_completion spl; echo "${{COMPREPLY[@]}}"'
    completed = subprocess.run([bash, "-c", loaded], env=env, capture_output=True, text=True, timeout=30)
    assert completed.stdout.split() == ["status"], completed.stderr


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, child in getattr(command, "commands", {}).items():
        yield from _commands(child, (*path, name))


def test_every_command_that_takes_output_takes_json() -> None:
    """``--json`` is added in one place (``accept_json_flag``): a command with ``-o`` and no ``--json`` was missed."""
    with_output = 0
    for path, command in _commands(typer.main.get_command(app)):
        options = {opt for param in command.params for opt in getattr(param, "opts", [])}
        if "--output" in options:
            with_output += 1
            assert "--json" in options, " ".join(path)
        else:
            assert "--json" not in options, " ".join(path)
    assert with_output > 20


def test_json_and_a_contradicting_output_is_a_usage_error(tmp_path: Path) -> None:
    env = base_env(tmp_path / "home")
    assert run_spl("version", "--json", env=env).ok().json() == run_spl("version", "-o", "json", env=env).ok().json()
    assert run_spl("version", "-o", "json", "--json", env=env).ok().json()["version"]
    for args in (("-o", "text", "--json"), ("--json", "-o", "text")):
        refused = run_spl("version", *args, env=env)
        assert refused.code == 2 and "--json contradicts -o text" in refused.err and refused.out == ""


def test_json_is_o_json_against_a_daemon(cli: Cli) -> None:
    status = cli("status", "--json").ok().json()
    assert status.keys() == cli("status", "-o", "json").ok().json().keys()
    assert status["instance_did"].startswith("did:")  # `spl status` had its own --json; it stays
    cli("task", "add", "Ship the CLI basics", "--alias", "TASK-0013").ok()
    tasks = cli("task", "list", "--json").ok().json()
    assert tasks == cli("task", "list", "-o", "json").ok().json()
    assert [task["alias"] for task in tasks["data"]] == ["TASK-0013"]
    threads = cli("thread", "list", "--json").ok().json()
    assert threads == cli("thread", "list", "-o", "json").ok().json()
    assert tasks["data"][0]["thread"] in {thread["id"] for thread in threads["data"]}
