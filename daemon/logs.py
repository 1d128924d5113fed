"""The daemon's logging: where lines go, how they look, and reopening the file on SIGHUP.

- **Destination.** Foreground: stderr. ``spl serve --daemon``: ``logs/spl.log`` (``--log-file``), opened by a
  handler that ``reopen_log_files()`` closes and opens again by name, so logrotate's ``postrotate kill -HUP``
  moves the daemon to a fresh file instead of having it write into the rotated one.
- **The journal.** Under systemd stderr is a journald stream and ``$JOURNAL_STREAM`` names it (``dev:inode``).
  Then each line starts with its syslog priority (``<3>`` error … ``<7>`` debug, the sd-daemon convention), so
  ``journalctl -p warning`` works, and carries no timestamp of its own: the journal stamps every line.
- **Formats.** ``text`` (``time LEVEL logger: message``) or ``json``: one object per line with ``time`` (RFC 3339,
  UTC), ``level``, ``logger``, ``message``, the fields passed as ``extra=`` and ``exception`` when there is one.
- **Noise.** httpx and httpcore log every request at INFO (98% of a federating daemon's log once): they are held
  at WARNING unless the level is debug.

The formatters and ``is_journal_stream`` are pure and unit-tested; ``configure`` installs them on the root logger.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

__all__ = [
    "FORMATS",
    "LEVELS",
    "JournalFormatter",
    "JsonFormatter",
    "ReopeningFileHandler",
    "configure",
    "is_journal_stream",
    "reopen_log_files",
]

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"  # the journal adds the time and the process
CHATTY_LIBRARIES = ("httpx", "httpcore")  # one INFO line per HTTP request

# syslog priorities (sd-daemon.h): what journald reads from a "<N>" line prefix.
_PRIORITIES = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))
_DEBUG_PRIORITY = 7

# Attributes every LogRecord has: whatever else a record carries came from ``extra=``.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def journal_priority(levelno: int) -> int:
    """The syslog priority of a logging level: 2 critical, 3 error, 4 warning, 6 info, 7 debug."""
    for threshold, priority in _PRIORITIES:
        if levelno >= threshold:
            return priority
    return _DEBUG_PRIORITY


class JournalFormatter(logging.Formatter):
    """Prefix every line of what ``inner`` formats with ``<N>``, so a traceback keeps its record's priority."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{journal_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in self.inner.format(record).split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the ``extra=`` fields, and the exception if any.

    Values JSON cannot hold are written as their ``str()``, so a log call never fails on what it was given.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def is_journal_stream(journal_stream: str | None, device: int, inode: int) -> bool:
    """Whether a stream with this device and inode is the one ``$JOURNAL_STREAM`` (``dev:inode``) names.

    systemd sets the variable for a service whose stdout or stderr it connected to the journal; a child that
    redirected stderr elsewhere inherits the variable but not the stream, hence the comparison.
    """
    if not journal_stream:
        return False
    try:
        wanted_device, wanted_inode = (int(part) for part in journal_stream.split(":", 1))
    except ValueError:
        return False
    return (wanted_device, wanted_inode) == (device, inode)


def _stream_is_journal(stream: TextIO, environ: Mapping[str, str]) -> bool:
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError):  # no descriptor (a test's StringIO) or a closed one
        return False
    return is_journal_stream(environ.get("JOURNAL_STREAM"), status.st_dev, status.st_ino)


class ReopeningFileHandler(logging.FileHandler):
    """A log file that ``reopen()`` closes and opens again by name (after logrotate renamed it)."""

    def reopen(self) -> None:
        self.acquire()
        try:
            old = self.stream
            self.stream = self._open()
            if old is not None:
                _follow_standard_streams(old, self.stream)
                old.close()
        finally:
            self.release()


def _follow_standard_streams(old: TextIO, new: TextIO) -> None:
    """Point stdout and stderr at the new file where they pointed at the old one.

    ``spl serve --daemon`` sends the child's stdout and stderr to the log file too (a crash's traceback must
    land somewhere): after a rotation they should follow the log, not keep the renamed file growing.
    """
    try:
        old_status = os.fstat(old.fileno())
    except (OSError, ValueError):
        return
    for descriptor in (1, 2):
        try:
            status = os.fstat(descriptor)
        except OSError:
            continue
        if (status.st_dev, status.st_ino) == (old_status.st_dev, old_status.st_ino):
            os.dup2(new.fileno(), descriptor)


def formatter_for(log_format: str, *, journal: bool) -> logging.Formatter:
    """The formatter for ``--log-format`` (text or json), with priority prefixes when writing to the journal.

    Raises:
        ValueError: An unknown format.
    """
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; use one of {', '.join(FORMATS)}")
    inner: logging.Formatter
    if log_format == "json":
        inner = JsonFormatter()
    else:
        inner = logging.Formatter(JOURNAL_TEXT_FORMAT if journal else TEXT_FORMAT)
    return JournalFormatter(inner) if journal else inner


def configure(
    level: str,
    log_format: str = "text",
    log_file: Path | None = None,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to ``log_file``, else to ``stream`` (stderr).

    Returns the handler installed (it replaces any other on the root logger).

    Raises:
        ValueError: An unknown level or format.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    environ = os.environ if environ is None else environ
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handler = ReopeningFileHandler(log_file, encoding="utf-8")
        journal = False
    else:
        stream = sys.stderr if stream is None else stream
        handler = logging.StreamHandler(stream)
        journal = _stream_is_journal(stream, environ)
    handler.setFormatter(formatter_for(log_format, journal=journal))
    numeric = logging.getLevelNamesMapping()[level.upper()]
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(logging.DEBUG if numeric <= logging.DEBUG else logging.WARNING)
    return handler


def reopen_log_files() -> list[str]:
    """Reopen every log file the root logger writes to (SIGHUP); returns their paths."""
    reopened = []
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopeningFileHandler):
            handler.reopen()
            reopened.append(handler.baseFilename)
    return reopened
