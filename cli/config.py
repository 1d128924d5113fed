"""``spl config``: read, check and change this home's ``config.toml``.

A thin presenter over ``spl.core.config`` (what a key is, how text decodes) and ``spl.daemon.home`` (the
file). Nothing here talks to a daemon: the daemon reads ``config.toml`` once, at start, which is why ``set``
says when one is running and needs a restart.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

import typer

from spl.cli.client import CliError
from spl.cli.common import OUTPUT, home, wants_json
from spl.cli.output import emit_json, safe, table
from spl.core.config import (
    Config,
    ConfigError,
    config_key,
    effective_values,
    parse_value,
    problems_in,
    with_value,
)
from spl.daemon.home import HomeError, config_problem

__all__ = ["config_app"]

config_app = typer.Typer(
    help="Show, check and change this home's config.toml (docs/configuration.md lists every key).",
    no_args_is_help=True,
)


def _text(value: Any) -> str:
    """A value as it would be typed back into ``spl config set``."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def _home_source() -> str:
    return "$SYNCROPEL_HOME" if os.environ.get("SYNCROPEL_HOME") else "default (~/.syncro)"


@config_app.command("path")
def config_path(output: str = OUTPUT) -> None:
    """Print where this home's config.toml is ($SYNCROPEL_HOME/config.toml, else ~/.syncro/config.toml).

    Example: $EDITOR "$(spl config path)"
    """
    path = home().config_path
    if wants_json(output):
        emit_json({"object": "config_path", "path": str(path), "exists": path.exists(), "home": _home_source()})
    else:
        typer.echo(str(path))


@config_app.command("show")
def config_show(output: str = OUTPUT) -> None:
    """List every key with the value in effect and where it comes from (file or default).

    No environment variable changes a key; `spl serve --host/--port/--insecure-localhost` override values
    for one run only. Example: spl config show -o json | jq '.values[] | select(.source == "file")'
    """
    as_json = wants_json(output)
    h = home()
    text = h.config_text()
    try:
        values = effective_values(text)
    except ConfigError as exc:
        raise HomeError(config_problem(h.config_path, exc)) from None
    config = Config.from_toml(text)
    if as_json:
        emit_json(
            {
                "object": "config",
                "path": str(h.config_path),
                "home": _home_source(),
                "values": [
                    {"key": v.key.path, "value": v.value, "source": v.source, "default": v.key.default} for v in values
                ],
                "obsolete_keys": config.obsolete_keys,
                "ignored_sections": config.ignored_sections,
            }
        )
        return
    typer.echo(f"# {h.config_path}")
    table(
        [(v.key.path, _text(v.value) if v.value is not None else "(not set)", v.source) for v in values],
        ["KEY", "VALUE", "SOURCE"],
    )
    _report_tolerated(config)


def _report_tolerated(config: Config) -> None:
    for key in config.obsolete_keys:
        typer.echo(f"note: {key} is obsolete and ignored; remove it", err=True)
    for name in config.ignored_sections:
        typer.echo(f"note: [{safe(name)}] is not read by spl (kept as it is)", err=True)


@config_app.command("get")
def config_get(
    key: str = typer.Argument(..., help="A key such as serve.port (`spl config show` lists them)."),
    output: str = OUTPUT,
) -> None:
    """Print one key's value in effect (an unset optional key prints an empty line).

    Example: spl config get serve.port
    """
    as_json = wants_json(output)
    try:
        config_key(key)
    except ConfigError as exc:
        raise CliError(exc.problem) from None
    h = home()
    try:
        value = next(v for v in effective_values(h.config_text()) if v.key.path == key)
    except ConfigError as exc:
        raise HomeError(config_problem(h.config_path, exc)) from None
    if as_json:
        emit_json({"object": "config_value", "key": key, "value": value.value, "source": value.source})
    else:
        typer.echo(_text(value.value))


@config_app.command("set")
def config_set(
    key: str = typer.Argument(..., help="A key such as serve.port (`spl config show` lists them)."),
    value: str = typer.Argument(
        ...,
        help="The new value: true/false, a number, a duration (30s) for *_seconds/*_timeout, a JSON list or "
        "comma-separated origins for serve.cors_origins; an empty string unsets serve.public_url.",
    ),
    output: str = OUTPUT,
) -> None:
    """Change one key in config.toml, keeping the file's comments and layout.

    The value's type and range are checked before anything is written; the file is replaced atomically
    with mode 0600. A running daemon keeps its old value until it is restarted.

    Example: spl config set serve.port 9200
    """
    as_json = wants_json(output)
    h = home()
    text = h.config_text()
    try:
        new_value = parse_value(key, value)
        updated = with_value(text, key, new_value)
    except ConfigError as exc:
        if exc.key == key:
            raise CliError(exc.problem) from None
        raise HomeError(config_problem(h.config_path, exc)) from None
    try:
        previous = Config.from_toml(text).value(key)
    except ConfigError:  # the file was invalid (this set may be its fix): report what it said, if anything
        previous = _raw_value(text, key)
    config = h.write_config_text(updated)
    running = h.running()
    restart_required = running is not None
    if as_json:
        emit_json(
            {
                "object": "config_value",
                "key": key,
                "value": config.value(key),
                "previous": previous,
                "path": str(h.config_path),
                "restart_required": restart_required,
            }
        )
    else:
        now, was = _text(config.value(key)) or "(not set)", _text(previous) or "(not set)"
        typer.echo(f"{key} = {safe(now)} (was {safe(was)})")
    if running is not None:
        who = f"pid {running.pid}" if running.pid is not None else "starting"
        typer.echo(
            f"note: the daemon ({who}) read config.toml when it started; restart it to apply this: "
            "spl serve --stop && spl serve --daemon",
            err=True,
        )
    elif not as_json:
        typer.echo("note: takes effect when the daemon next starts", err=True)


def _raw_value(text: str, path: str) -> Any:
    """The value at ``path`` as the file spells it, whatever its type; tables may nest (``sync.discovery.x``)."""
    try:
        value: Any = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


@config_app.command("validate")
def config_validate(
    file: Path = typer.Argument(None, help="The file to check (default: this home's config.toml).", dir_okay=False),
    output: str = OUTPUT,
) -> None:
    """Check a config file without starting anything; exit 1 naming each bad key.

    Example: spl config validate /etc/spl/config.toml
    """
    as_json = wants_json(output)
    path = file if file is not None else home().config_path
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        hint = "" if file is not None else ": run `spl init` first (or set SYNCROPEL_HOME)"
        raise CliError(f"{path} does not exist{hint}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    problems = problems_in(text)
    config = None if problems else Config.from_toml(text)
    if as_json:
        emit_json(
            {
                "object": "config_validation",
                "path": str(path),
                "valid": not problems,
                "problems": [{"key": problem.key, "message": problem.problem} for problem in problems],
                "obsolete_keys": config.obsolete_keys if config else [],
                "ignored_sections": config.ignored_sections if config else [],
            }
        )
    else:
        for problem in problems:
            typer.echo(f"error: {safe(config_problem(path, problem))}", err=True)
        if config is not None:
            typer.echo(f"{path}: ok")
            _report_tolerated(config)
    if problems:
        raise typer.Exit(1)
