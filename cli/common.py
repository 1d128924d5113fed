"""Helpers shared by the command groups: the app to register on, typed daemon errors, input parsing.

``call`` is :meth:`DaemonClient.request` plus the two things some commands need to decide
what to do next: the HTTP status (201 created vs 200 already stored) and the error
``code`` (``DUPLICATE_CLOCK`` → retry with a higher clock; no daemon → local fallback).
Both error classes are :class:`CliError`, so ``spl.cli.main.run`` prints them as the
usual one-line ``error: CODE: message``.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import typer

from spl.cli.client import CliError, DaemonClient
from spl.runtime.home import Home

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
    "main_app",
    "new_thread",
    "now_ms",
    "parse_body",
    "running_pid",
    "wants_json",
]

OUTPUT = typer.Option("text", "-o", "--output", help="Output format: text or json.")
URL = typer.Option(None, "--url", help="Daemon URL (default: $SPL_SERVE_URL, the running daemon, :9100).")


def main_app() -> typer.Typer:
    """The ``spl`` app that ``run()`` calls (``spl.cli.main`` aliases itself under ``-m``)."""
    from spl.cli.main import app

    return app


def home() -> Home:
    """This CLI's home: ``$SYNCROPEL_HOME`` or ``~/.syncro`` (same as ``spl.cli.main.home``)."""
    return Home.resolve()


def wants_json(output: str) -> bool:
    if output not in ("text", "json"):
        raise CliError(f"unknown output format {output!r}; use -o text or -o json")
    return output == "json"


def client_for(url: str | None) -> DaemonClient:
    return DaemonClient.for_home(home(), url)


def running_pid(h: Home) -> int | None:
    """The pid of this home's detached/foreground daemon if its pid file names a live process."""
    text = h.read_secret(h.pid_path)
    if not text or not text.isdigit():
        return None
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return int(text)
    return int(text)


class DaemonError(CliError):
    """The daemon answered with an error envelope; ``code`` is its machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code


class DaemonUnreachable(CliError):
    """Nothing accepted the connection at the daemon URL."""


@dataclass(frozen=True)
class Reply:
    status: int
    payload: Any


def call(
    client: DaemonClient,
    method: str,
    path: str,
    *,
    json_body: Any = None,
    params: dict[str, Any] | None = None,
) -> Reply:
    """One request; a 4xx/5xx raises :class:`DaemonError`, no connection :class:`DaemonUnreachable`."""
    headers = {"x-api-key": client.token} if client.token else {}
    kwargs: dict[str, Any] = {}
    if json_body is not None:
        kwargs["json"] = json_body
    if params:
        kwargs["params"] = {key: value for key, value in params.items() if value is not None}
    try:
        with httpx.Client(base_url=client.url, timeout=client.timeout, headers=headers) as http:
            response = http.request(method, path, **kwargs)
    except httpx.ConnectError:
        raise DaemonUnreachable(
            f"no daemon answers at {client.url}: start one with `spl serve` (or set SPL_SERVE_URL)"
        ) from None
    except httpx.TimeoutException:
        raise CliError(f"the daemon at {client.url} did not answer within {client.timeout:.0f}s") from None
    except httpx.HTTPError as exc:
        raise CliError(f"request to {client.url} failed: {exc.__class__.__name__}") from None
    try:
        payload = response.json()
    except ValueError:
        payload = None
    if response.status_code >= 400:
        if isinstance(payload, dict):
            code = str(payload.get("code") or payload.get("error") or "ERROR")
            message = str(payload.get("message", response.text[:200]))
            raise DaemonError(response.status_code, code, message)
        raise DaemonError(response.status_code, f"HTTP {response.status_code}", response.text[:200])
    return Reply(response.status_code, payload)


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
