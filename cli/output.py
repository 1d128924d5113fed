"""Output for read commands: a readable table by default, ``-o json`` / ``-o yaml`` for machines.

Whatever the CLI prints comes mostly from a daemon, and through it from clients and peers:
actors, thread ids, record bodies, token labels, a peer's error message. In text output
every such value goes through :func:`safe` (``spl.core.text.printable``), so an actor
such as ``"bob\\x1b]0;pwned\\x07\\nCRITICAL forged"`` prints as one inert cell instead of
retitling the terminal and forging a line; :func:`table` does it for every cell.
``-o json`` stays exact JSON: :func:`emit_json` spells the characters a terminal would act
on as ``\\uXXXX`` escapes, which decode to the very same strings.

The four formats (``-o text|json|yaml|wide``, docs/cli.md "Output"):

- ``text``: tables and lines for people; ``wide`` is text with the extra columns a list has to show.
- ``json`` and ``yaml`` carry the same data: a command calls :func:`emit_json` once, and the format
  the wrapper in :mod:`spl.cli.app` chose for this run (:func:`machine_format`) decides the spelling,
  so no command writes YAML of its own. Every list is one envelope (:func:`emit_list`), every error
  one object (:func:`error_object`), every ``*_at`` time an RFC 3339 UTC string (:func:`with_rfc3339`),
  whether the daemon sent it as one or as Unix seconds.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import re
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import typer

from spl.core.text import printable

__all__ = [
    "CELL_LIMIT",
    "FORMATS",
    "MACHINE_FORMATS",
    "OutputFormat",
    "Progress",
    "as_time",
    "emit_error",
    "emit_item",
    "emit_json",
    "emit_list",
    "error_object",
    "is_wide",
    "is_yaml",
    "json_line",
    "json_text",
    "list_envelope",
    "machine_format",
    "rfc3339",
    "safe",
    "table",
    "table_lines",
    "with_rfc3339",
    "yaml_text",
]

OutputFormat = str  # one of FORMATS
FORMATS = ("text", "json", "yaml", "wide")
MACHINE_FORMATS = ("json", "yaml")

# How this run spells machine output; set once per command by spl.cli.app's wrapper from -o.
_MACHINE_FORMAT: contextvars.ContextVar[str] = contextvars.ContextVar("spl_machine_format", default="json")

# Long enough for any legal field (actors are at most 512 characters, threads 256) even
# with a few escapes; a longer value from a misbehaving daemon is cut with "…".
CELL_LIMIT = 2048

# What json.dumps(ensure_ascii=False) leaves raw although it is not printable text: DEL, C1
# controls, and the non-ASCII characters str.isprintable refuses (bidi overrides, zero-width
# and other format characters, line/paragraph separators, lone surrogates, unassigned code
# points). C0 controls never reach this: json.dumps escapes them itself.
_JSON_SUSPECT = re.compile(r"[^\n\x20-\x7e]")


def safe(value: object, limit: int = CELL_LIMIT) -> str:
    """``value`` as one inert line for a terminal (see :func:`spl.core.text.printable`).

    Plain text comes out unchanged, and so does ``None`` or a number (as ``f"{value}"``
    would print it); control, format and other non-printable characters come out as
    ``\\xNN`` / ``\\uNNNN`` escapes.
    """
    return printable(value if isinstance(value, str) else str(value), limit)


def _json_escape(match: re.Match[str]) -> str:
    char = match.group()
    if char.isprintable():
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    code -= 0x10000  # astral: a UTF-16 surrogate pair, as JSON spells it
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def json_text(value: Any) -> str:
    """``value`` as indented JSON that decodes to ``value`` and holds no character a terminal acts on."""
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    # Outside strings JSON text is ASCII, so every suspect character sits inside a string,
    # where its \\u escape means the same character.
    return _JSON_SUSPECT.sub(_json_escape, text)


def yaml_text(value: Any) -> str:
    """``value`` as YAML (PyYAML's safe dumper: plain data only, no tags), keys in the order given.

    ``allow_unicode=False`` makes the emitter escape every non-ASCII character (``"\\u202E"``), so
    like :func:`json_text` the text holds nothing a terminal acts on; it loads back to ``value``.
    """
    import yaml  # not on the path of `spl --help` or a text command

    return str(yaml.safe_dump(value, sort_keys=False, allow_unicode=False, default_flow_style=False)).rstrip("\n")


@contextlib.contextmanager
def machine_format(output: str) -> Iterator[None]:
    """Within the block, :func:`emit_json` writes ``output`` (``yaml``) instead of JSON; other values leave JSON."""
    token = _MACHINE_FORMAT.set("yaml" if output == "yaml" else "json")
    try:
        yield
    finally:
        _MACHINE_FORMAT.reset(token)


def json_line(value: Any) -> str:
    """``value`` as one line of JSON (NDJSON streams, error objects), as inert as :func:`json_text`."""
    return _JSON_SUSPECT.sub(_json_escape, json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def is_yaml() -> bool:
    """Whether this run's machine format is YAML (``-o yaml``), for a command that streams its items."""
    return _MACHINE_FORMAT.get() == "yaml"


def emit_item(value: Any) -> None:
    """One item of a stream (``spl thread watch``): a JSON line, or under ``-o yaml`` one YAML document."""
    value = with_rfc3339(value)
    typer.echo("---\n" + yaml_text(value) if is_yaml() else json_line(value))


def emit_error(value: dict[str, Any]) -> None:
    """An error object on stdout: one JSON line (it may end an NDJSON stream), or a YAML document."""
    typer.echo(yaml_text(value) if is_yaml() else json_line(value))


def emit_json(value: Any) -> None:
    """Print ``value`` as this run's machine format (JSON, or YAML under ``-o yaml``), times in RFC 3339."""
    value = with_rfc3339(value)
    typer.echo(yaml_text(value) if _MACHINE_FORMAT.get() == "yaml" else json_text(value))


def list_envelope(items: Sequence[Any], *, has_more: bool = False, next_cursor: str | None = None) -> dict[str, Any]:
    """The one shape of every list the CLI prints as data: the daemon's own list answer (``/v1/tasks``).

    ``{"object": "list", "data": [...], "has_more": false, "next_cursor": null}``; ``next_cursor`` is the
    value to pass back for the next page where the command pages, else null.
    """
    return {"object": "list", "data": list(items), "has_more": has_more, "next_cursor": next_cursor}


def emit_list(items: Sequence[Any], *, has_more: bool = False, next_cursor: str | None = None) -> None:
    """Print ``items`` in :func:`list_envelope` (every list command's ``-o json|yaml``)."""
    emit_json(list_envelope(items, has_more=has_more, next_cursor=next_cursor))


def error_object(code: str, message: str, type_: str = "cli_error") -> dict[str, Any]:
    """The error envelope printed on stdout under ``-o json|yaml``: the daemon's own shape (spec §15)."""
    return {"object": "error", "type": type_, "code": code, "message": message}


def is_wide(output: str) -> bool:
    """Whether ``-o wide`` asked for a list's extra columns (text otherwise)."""
    return output == "wide"


# -- times -------------------------------------------------------------------------------

# The daemon spells times as RFC 3339 UTC strings, and older daemons as Unix seconds: the CLI takes both.
_TIME_KEY = re.compile(r"(.+_)?at")


def as_time(value: object) -> float | None:
    """A time the daemon sent, as Unix seconds: a number, or an RFC 3339 string with a zone; None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or len(value) > 64 or "T" not in value.upper():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # RFC 3339 always names its zone; a bare local time is not one
        return None
    try:
        return moment.timestamp()
    except (OverflowError, OSError, ValueError):
        return None


def rfc3339(value: object) -> str | None:
    """A time (Unix seconds or RFC 3339) as RFC 3339 UTC, ``2026-11-30T14:00:00Z`` (``.ffffffZ`` with a fraction).

    None for no time; a value that is not a time comes back as it was (the daemon's text, never a guess).
    """
    seconds = as_time(value)
    if seconds is None:
        return None
    try:
        whole = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    except (OverflowError, OSError, ValueError):
        return None
    micros = round(seconds % 1 * 1_000_000)
    if micros >= 1_000_000:  # rounding reached the next second: print it whole rather than .1000000
        whole, micros = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(seconds) + 1)), 0
    return f"{whole}.{micros:06d}Z" if micros else f"{whole}Z"


def with_rfc3339(value: Any) -> Any:
    """``value`` with every number under a time key (``at``, ``*_at``) spelled as RFC 3339 UTC.

    What the CLI prints as data carries one spelling of time, whichever the daemon (or the CLI's own
    local reading) used; strings are left as they are (a daemon's RFC 3339 text already is one).
    """
    if isinstance(value, dict):
        return {
            key: (
                rfc3339(item) or item
                if isinstance(key, str) and _TIME_KEY.fullmatch(key) and isinstance(item, int | float)
                else with_rfc3339(item)
            )
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [with_rfc3339(item) for item in value]
    return value


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> None:
    """Print left-aligned columns; long cells are kept whole (no truncation surprises).

    Every cell goes through :func:`safe`: a cell is daemon data and must not move the
    cursor, recolour the terminal or start a line of its own.
    """
    for line in table_lines(rows, headers):
        typer.echo(line)


def table_lines(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> list[str]:
    """The lines :func:`table` prints (a command that redraws, ``--watch``, compares them)."""
    cells = [[str(h) for h in headers]] + [["" if c is None else safe(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return lines


# -- progress ------------------------------------------------------------------------------


class Progress:
    """A one-line progress display for a command that waits (a catch-up of N records): done / total, rate, ETA.

    It writes to ``stream`` (stderr) and only when that is a terminal: a pipe or a log file gets nothing, and
    ``-o json|yaml`` callers never make one, so stdout stays data. Each :meth:`update` redraws the line in place
    (``\\r``); :meth:`finish` clears it, so the command's own lines follow on a clean line.
    """

    def __init__(self, total: int, *, unit: str = "records", stream: Any = None, clock: Any = time.monotonic) -> None:
        import sys

        self.total = max(0, total)
        self.unit = unit
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.started = clock()
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = bool(callable(isatty) and isatty())
        self._width = 0

    def line(self, done: int) -> str:
        """``catch-up: 120/500 records (24%), 60 records/s, ETA 6s``: what :meth:`update` draws (plain text)."""
        done = max(0, done)
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = done / elapsed
        if self.total:
            shown = min(done, self.total)
            head = f"catch-up: {shown}/{self.total} {self.unit} ({shown * 100 // self.total}%)"
        else:
            head = f"catch-up: {done} {self.unit}"
        eta = "-"
        if self.total and rate > 0:
            eta = f"{max(0.0, (self.total - done) / rate):.0f}s"
        return f"{head}, {rate:.0f} {self.unit}/s, ETA {eta}"

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        text = self.line(done)
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def finish(self) -> None:
        if self.enabled and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0
