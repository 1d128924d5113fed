"""The ``spl`` Typer app and the options every command shares, alone in their module.

``spl.cli.main`` registers every command and group on :data:`app` in one place; command modules
import only the options from here. Nothing here imports a command module, so no import runs back
up (``tests/test_layers.py`` checks there is no cycle).

This module is on every command's path, ``spl version`` included: it imports typer and nothing heavy.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from typing import Any

import typer

from spl.cli.output import FORMATS, MACHINE_FORMATS, emit_error, error_object, machine_format
from spl.core.version import VERSION

__all__ = ["JSON_FLAG", "OUTPUT", "URL", "accept_json_flag", "app", "error_envelope"]

app = typer.Typer(
    name="spl",
    help="spl: a Syncropel daemon (steward) and its control commands.\n\n"
    "Environment: SYNCROPEL_HOME (the home, default ~/.syncro), SPL_SERVE_URL (the daemon URL, as --url), "
    "SPL_TOKEN (the credential sent to the daemon, before a saved token and the home's admin token).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _output_format(value: str) -> str:
    """``-o``'s value, one of :data:`spl.cli.output.FORMATS`; anything else is a usage error naming them (exit 2)."""
    if value not in FORMATS:
        raise typer.BadParameter(f"{value!r} is not one of {', '.join(FORMATS)}")
    return value


# The choices are in the help (the metavar) and in the error for a bad one. A parser rather than a click Choice:
# typer builds commands with its own copy of click, whose Choice is not public API.
OUTPUT = typer.Option(
    "text",
    "-o",
    "--output",
    parser=_output_format,
    metavar="[" + "|".join(FORMATS) + "]",
    help="Output format: text, json, yaml (the same data as json) or wide (text with every column).",
)
# The CLI reads $SPL_SERVE_URL itself (spl.cli.client: an explicit URL is checked, and never gets the home's
# admin credential), so the option only shows the variable in its help.
URL = typer.Option(
    None,
    "--url",
    help="Daemon URL (default: $SPL_SERVE_URL, else this home's running daemon; never guessed). "
    r"\[env var: SPL_SERVE_URL]",
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
# Marks a callback already wrapped, so a second pass over the tree leaves it alone.
_WRAPPED = "__spl_output_wrapped__"


def error_envelope(exc: BaseException) -> dict[str, Any]:
    """The error object ``-o json|yaml`` prints on stdout for a failure the wrapper caught.

    A daemon's error keeps its own ``code`` and ``type`` (``spl.cli.client.DaemonError``); a failure of the
    CLI's own (no daemon, a bad argument, an unreadable file) gets a code saying which.
    """
    code = getattr(exc, "code", None)
    message = str(exc)
    if isinstance(code, str) and code:
        message = message.removeprefix(f"{code}: ")
        kind = getattr(exc, "type", None)
        status = getattr(exc, "status", None)
        type_ = kind if isinstance(kind, str) and kind else "api_error" if isinstance(status, int) else "cli_error"
        return error_object(code, message, type_)
    if _is_usage(exc):
        formatted = getattr(exc, "format_message", None)  # BadParameter names the option it is about
        return error_object("USAGE", formatted() if callable(formatted) else message, "usage_error")
    name = type(exc).__name__
    local = {"NoDaemon": "NO_DAEMON", "DaemonUnreachable": "DAEMON_UNREACHABLE", "HomeError": "HOME_ERROR"}
    return error_object(local.get(name, "CLI_ERROR"), message)


def _is_usage(exc: BaseException) -> bool:
    """A usage error (``typer.BadParameter`` and its kin: typer's own copy of click's ``UsageError``)."""
    return any(cls.__name__ == "UsageError" for cls in type(exc).__mro__)


def _is_failure(exc: BaseException) -> bool:
    """The failures the CLI shows as one line (``spl.cli.main.run``), without importing their modules here."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(names & {"CliError", "HomeError"}) or _is_usage(exc)


def _with_json_flag(callback: Callable[..., Any]) -> Callable[..., Any]:
    """``callback`` with ``-o`` (the shared :data:`OUTPUT`) applied for the whole command, and a ``--json`` flag.

    Typer reads a command's options from its signature, so the wrapper publishes the original
    signature plus two keyword parameters: the flag, and the click context (to tell an explicit
    ``-o text`` from the default one). ``--json`` becomes ``output="json"``; ``--json -o text``
    contradicts itself and is a usage error. A command with a ``--json`` of its own (`spl status`)
    keeps it and gets no second one. Commands without the shared option are returned as they are.

    Around the call, ``-o yaml`` makes :func:`spl.cli.output.emit_json` write YAML, and under ``-o json|yaml``
    a failure is printed as an error object on stdout (exit 1; 2 for a usage error) instead of a line on
    stderr, so a script reading stdout gets JSON either way.
    """
    if getattr(callback, _WRAPPED, False):
        return callback
    signature = inspect.signature(callback, eval_str=True)
    params = signature.parameters.values()
    output = next((p.name for p in params if p.default is OUTPUT), None)
    # `spl status` has a --json of its own; it counts as -o json here too.
    own_json = next((p.name for p in params if "--json" in (getattr(p.default, "param_decls", None) or ())), None)
    has_own = own_json is not None
    if output is None:
        return callback
    # typer hands the click context to one parameter only: reuse the command's own if it has one (`spl pair`).
    own_ctx = next((p.name for p in params if p.annotation is typer.Context), None)

    @functools.wraps(callback)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx: typer.Context = kwargs[own_ctx] if own_ctx is not None else kwargs.pop(_CTX_PARAM)
        if not has_own and kwargs.pop(_JSON_PARAM):
            source = ctx.get_parameter_source(output)
            if kwargs[output] != "json" and source is not None and source.name == "COMMANDLINE":
                raise typer.BadParameter(f"--json contradicts -o {kwargs[output]}; pass one of them", ctx=ctx)
            kwargs[output] = "json"
        chosen = "json" if own_json is not None and kwargs.get(own_json) else kwargs[output]
        with machine_format(chosen):
            try:
                return callback(*args, **kwargs)
            except Exception as exc:
                if chosen not in MACHINE_FORMATS or not _is_failure(exc):
                    raise
                emit_error(error_envelope(exc))
                sys.stdout.flush()
                raise SystemExit(2 if _is_usage(exc) else 1) from None

    keyword = inspect.Parameter.KEYWORD_ONLY
    added = [] if own_ctx is not None else [inspect.Parameter(_CTX_PARAM, keyword, annotation=typer.Context)]
    annotations: dict[str, Any] = {} if own_ctx is not None else {_CTX_PARAM: typer.Context}
    if not has_own:
        added.insert(0, inspect.Parameter(_JSON_PARAM, keyword, default=JSON_FLAG, annotation=bool))
        annotations[_JSON_PARAM] = bool
    wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {**callback.__annotations__, **annotations}
    setattr(wrapper, _WRAPPED, True)
    return wrapper


def accept_json_flag(root: typer.Typer) -> None:
    """Give every command under ``root`` that takes ``-o`` a ``--json`` alias and its output rules (call after
    registering them all).

    One pass over the registered commands instead of a parameter in every command module: wherever
    ``-o json`` works, ``--json`` does, ``-o yaml`` and JSON errors too, and a new command gets all of it
    by using :data:`OUTPUT`.
    """
    for command in root.registered_commands:
        if command.callback is not None:
            command.callback = _with_json_flag(command.callback)
    # A group that acts when called alone (`spl pair` mints a code) does it in its callback.
    info = root.registered_callback
    if info is not None and info.callback is not None:
        info.callback = _with_json_flag(info.callback)
    for group in root.registered_groups:
        if group.typer_instance is not None:
            accept_json_flag(group.typer_instance)
