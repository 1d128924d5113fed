"""Helpers shared by the command groups: typed daemon errors, input parsing, the home.

The app the groups register on is :mod:`spl.cli.app` (its own module, so imports run one way).

``call`` is :meth:`DaemonClient.request` plus the two things some commands need to decide
what to do next: the HTTP status (201 created vs 200 already stored) and the error
``code`` (``DUPLICATE_CLOCK`` → retry with a higher clock; no daemon → local fallback).
Both error classes are :class:`CliError`, so ``spl.cli.main.run`` prints them as the
usual one-line ``error: CODE: message``.
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from spl.cli.app import OUTPUT, URL
from spl.cli.client import CliError, DaemonClient, DaemonError, DaemonUnreachable, Reply, call
from spl.cli.output import FORMATS, MACHINE_FORMATS
from spl.daemon.home import Home

__all__ = [
    "OUTPUT",
    "URL",
    "DaemonError",
    "DaemonUnreachable",
    "Reply",
    "call",
    "client_for",
    "compact_json",
    "home",
    "home_did",
    "new_thread",
    "now_ms",
    "parse_body",
    "running_pid",
    "secret_argument",
    "wants_json",
]


def home() -> Home:
    """This CLI's home: ``$SYNCROPEL_HOME`` or ``~/.syncro``."""
    return Home.resolve()


def wants_json(output: str) -> bool:
    """Whether ``-o`` asked for data (json, or yaml: :func:`spl.cli.output.emit_json` spells it) rather than text.

    ``-o`` is a click Choice, so an unknown format stops at parsing; this guards direct callers.
    """
    if output not in FORMATS:
        raise CliError(f"unknown output format {output!r}; use -o {', '.join(FORMATS)}")
    return output in MACHINE_FORMATS


def client_for(url: str | None) -> DaemonClient:
    return DaemonClient.for_home(home(), url)


def running_pid(h: Home) -> int | None:
    """The pid of the daemon holding this home's run lock, or None (none runs, or it has just started)."""
    running = h.running()
    return running.pid if running is not None else None


def new_thread() -> str:
    """A fresh thread id in the form the daemon mints: ``th_`` + 64 lowercase hex (spec §15.10)."""
    return "th_" + secrets.token_hex(32)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def parse_body(text: str | None, option: str = "--body") -> dict[str, Any]:
    """``--body`` as inline JSON, ``@path`` (a file) or ``-`` (stdin); it must be a JSON object."""
    if text is None:
        return {}
    source = "the argument"
    if text == "-":
        text, source = sys.stdin.read(), "stdin"
    elif text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            text, source = path.read_text(), str(path)
        except OSError as exc:
            raise CliError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{option}: {source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
            f"""pass an object such as '{{"key": "value"}}', @file.json or - for stdin"""
        ) from None
    if not isinstance(value, dict):
        raise CliError(f'{option}: expected a JSON object such as \'{{"key": "value"}}\', got {type(value).__name__}')
    return value


def compact_json(value: Any) -> str:
    """Canonical-looking one-line JSON (sorted keys, no spaces): stable across instances."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def home_did(home: Home) -> str | None:
    """The instance DID recorded in the home's config, or None when there is no home."""
    try:
        return home.load_config().did
    except Exception:
        return None


def secret_argument(value: str, option: str, hint: str) -> str:
    """A token given on the command line as itself, ``@file`` or ``-`` (stdin), so it need
    not sit in shell history; stripped, never empty (``hint`` says what to pass instead)."""
    text = value
    if value == "-":
        text = sys.stdin.read()
    elif value.startswith("@"):
        path = Path(value[1:]).expanduser()
        try:
            text = path.read_text()
        except OSError as exc:
            raise CliError(f"{option}: cannot read {path}: {exc.strerror or exc}") from None
    token = text.strip()
    if not token:
        raise CliError(f"{option} is empty; {hint}")
    return token
