"""The ``spl`` Typer app and the options every command shares, alone in their module.

``spl.cli.main`` registers every command and group on :data:`app` in one place; command modules
import only the options from here. Nothing here imports a command module, so no import runs back
up (``tests/test_layers.py`` checks there is no cycle).

This module is on every command's path, ``spl version`` included: it imports typer and nothing heavy.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

import typer

from spl.core.manifest import VERSION

__all__ = ["JSON_FLAG", "OUTPUT", "URL", "accept_json_flag", "app"]

app = typer.Typer(
    name="spl",
    help="spl: a Syncropel daemon (steward) and its control commands.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

OUTPUT = typer.Option("text", "-o", "--output", help="Output format: text or json.")
URL = typer.Option(
    None, "--url", help="Daemon URL (default: $SPL_SERVE_URL, else this home's running daemon; never guessed)."
)
JSON_FLAG = typer.Option(False, "--json", help="Same as -o json.")


def _print_version(value: bool) -> None:
    """``spl --version``: the same line as ``spl version``, then stop before any command runs."""
    if value:
        typer.echo(f"spl {VERSION}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", is_eager=True, callback=_print_version, help="Print the spl version and exit."
    ),
) -> None:
    """spl: a Syncropel daemon (steward) and its control commands."""


# The parameter names the wrapper adds; a command's own parameters never start with ``spl_``.
_JSON_PARAM, _CTX_PARAM = "spl_json", "spl_ctx"


def _with_json_flag(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` with a ``--json`` flag next to its ``-o/--output`` (the shared :data:`OUTPUT`).

    Typer reads a command's options from its signature, so the wrapper publishes the original
    signature plus two keyword parameters: the flag, and the click context (to tell an explicit
    ``-o text`` from the default one). ``--json`` becomes ``output="json"``; ``--json -o text``
    contradicts itself and is a usage error. Commands without the shared option, or with a ``--json`` of their
    own (this also makes a second pass harmless), are returned as they are.
    """
    signature = inspect.signature(callback, eval_str=True)
    params = signature.parameters.values()
    output = next((p.name for p in params if p.default is OUTPUT), None)
    has_own = any("--json" in (getattr(p.default, "param_decls", None) or ()) for p in params)  # `spl status` has one
    if output is None or has_own:
        return callback

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx: typer.Context = kwargs.pop(_CTX_PARAM)
        if kwargs.pop(_JSON_PARAM):
            source = ctx.get_parameter_source(output)
            if kwargs[output] != "json" and source is not None and source.name == "COMMANDLINE":
                raise typer.BadParameter(f"--json contradicts -o {kwargs[output]}; pass one of them", ctx=ctx)
            kwargs[output] = "json"
        return callback(*args, **kwargs)

    keyword = inspect.Parameter.KEYWORD_ONLY
    added = [
        inspect.Parameter(_JSON_PARAM, keyword, default=JSON_FLAG, annotation=bool),
        inspect.Parameter(_CTX_PARAM, keyword, annotation=typer.Context),
    ]
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**callback.__annotations__, _JSON_PARAM: bool, _CTX_PARAM: typer.Context}
    return wrapper


def accept_json_flag(root: typer.Typer) -> None:
    """Give every command under ``root`` that takes ``-o`` a ``--json`` alias (call after registering them all).

    One pass over the registered commands instead of a parameter in every command module: wherever
    ``-o json`` works, ``--json`` does, and a new command gets it by using :data:`OUTPUT`.
    """
    for command in root.registered_commands:
        if command.callback is not None:
            command.callback = _with_json_flag(command.callback)
    for group in root.registered_groups:
        if group.typer_instance is not None:
            accept_json_flag(group.typer_instance)
