"""Every ``spl`` command's ``--help`` shows an example (issue 13: "Every --help has an example")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from typer.main import get_command

from spl.cli.main import app


def commands(command: Any, path: tuple[str, ...] = ("spl",)) -> Iterator[tuple[str, Any]]:
    """Every leaf command under ``command`` (typer's click objects: groups have ``commands``)."""
    if hasattr(command, "commands"):
        for name, sub in command.commands.items():
            yield from commands(sub, (*path, name))
    else:
        yield " ".join(path), command


def test_every_command_help_shows_an_example() -> None:
    leaves = dict(commands(get_command(app)))
    assert len(leaves) > 80  # the walk reached the whole tree
    missing = [name for name, command in leaves.items() if not has_example(name, command.help or "")]
    assert missing == [], f"commands whose --help shows no example of themselves: {missing}"


def has_example(name: str, text: str) -> bool:
    """An ``Example…:`` paragraph that runs the command itself (``spl task add …`` for ``spl task add``)."""
    _, found, example = text.partition("Example")
    return bool(found) and name.removeprefix("spl ") in " ".join(example.split())
