"""The daemon's log set-up (daemon/logs.py): formatters, the journal, quiet HTTP libraries, reopening the file."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from spl.daemon import logs


def record(level: int, message: str, *args: object, **extra: object) -> logging.LogRecord:
    entry = logging.LogRecord("spl.test", level, __file__, 1, message, args, None)
    entry.__dict__.update(extra)
    entry.created, entry.msecs = 1_764_460_800.25, 250.0  # 2025-11-30T00:00:00.250Z
    return entry


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    chatty = {name: logging.getLogger(name).level for name in logs.CHATTY_LIBRARIES}
    yield
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:], root.level = handlers, level
    for name, previous in chatty.items():
        logging.getLogger(name).setLevel(previous)


def test_journal_priorities_follow_sd_daemon() -> None:
    levels = [logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL]
    assert [logs.journal_priority(level) for level in levels] == [7, 6, 4, 3, 2]


def test_the_journal_formatter_prefixes_every_line_and_drops_the_time() -> None:
    formatter = logs.formatter_for("text", journal=True)
    assert formatter.format(record(logging.WARNING, "disk %s", "full")) == "<4>WARNING spl.test: disk full"
    assert formatter.format(record(logging.ERROR, "two\nlines")) == "<3>ERROR spl.test: two\n<3>lines"


def test_json_lines_carry_time_level_logger_message_and_extra_fields() -> None:
    line = logs.formatter_for("json", journal=False).format(
        record(logging.INFO, "pair %s up", "p1", pair="p1", path=Path("/x"))
    )
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2025-11-30T00:00:00.250Z",
        "level": "info",
        "logger": "spl.test",
        "message": "pair p1 up",
        "pair": "p1",
        "path": "/x",  # not JSON: written as its str()
    }


def test_json_lines_include_the_exception() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        entry = logging.LogRecord("spl.test", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info())
    parsed = json.loads(logs.JsonFormatter().format(entry))
    assert parsed["message"] == "failed" and parsed["exception"].endswith("RuntimeError: boom")


def test_journal_stream_must_be_the_very_stream() -> None:
    assert logs.is_journal_stream("8:1234", 8, 1234)
    assert not logs.is_journal_stream("8:1234", 8, 1235)  # inherited variable, stderr redirected elsewhere
    assert not logs.is_journal_stream(None, 8, 1234)
    assert not logs.is_journal_stream("garbage", 8, 1234)


def test_configure_uses_priorities_only_when_stderr_is_the_journal(tmp_path: Path) -> None:
    with open(tmp_path / "stream", "w") as stream:
        status = os.fstat(stream.fileno())
        journal = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        logs.configure("info", stream=stream, environ=journal)
        logging.getLogger("spl.x").warning("to the journal")
        logs.configure("info", stream=stream, environ={"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino + 1}"})
        logging.getLogger("spl.x").warning("not the journal")
    first, second = (tmp_path / "stream").read_text().splitlines()
    assert first == "<4>WARNING spl.x: to the journal"
    assert second.endswith(" WARNING spl.x: not the journal") and second[:4].isdigit()


def test_http_client_request_lines_are_gone_at_info_and_kept_at_debug() -> None:
    stream = io.StringIO()
    logs.configure("info", stream=stream)
    logging.getLogger("httpx").info('HTTP Request: GET http://peer/v1/records "HTTP/1.1 200 OK"')
    logging.getLogger("httpcore.connection").debug("connect_tcp.started")
    logging.getLogger("httpx").warning("kept")
    assert [line.split(" ", 2)[2] for line in stream.getvalue().splitlines()] == ["WARNING httpx: kept"]
    logs.configure("debug", stream=stream)
    assert logging.getLogger("httpx").isEnabledFor(logging.INFO)


def test_unknown_levels_and_formats_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'loud'; use one of debug, info, warning, error"):
        logs.configure("loud", stream=io.StringIO())
    with pytest.raises(ValueError, match="unknown log format 'xml'; use one of text, json"):
        logs.formatter_for("xml", journal=False)


def test_reopen_moves_to_a_new_file_after_a_rename(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "spl.log"
    logs.configure("info", log_file=path)
    logging.getLogger("spl.x").info("before")
    path.rename(path.with_suffix(".log.1"))
    assert logs.reopen_log_files() == [str(path)]
    logging.getLogger("spl.x").info("after")
    logging.getLogger().handlers[0].flush()
    assert "before" in path.with_suffix(".log.1").read_text() and "after" not in path.with_suffix(".log.1").read_text()
    assert path.read_text().rstrip().endswith("INFO spl.x: after")
