"""The README's tour does what it says: the thread being watched is the one the SDK writes.

The operations review found the tour watching ``music.library`` while the SDK wrote ``th_tour``, so "the watching
terminal prints each record" never happened. This runs the README's own watch URL and SDK snippet.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx

from spl.daemon.launcher import DaemonProcess

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()
DEFAULT_URL = "http://127.0.0.1:9100"


def test_the_tour_watches_the_thread_the_sdk_writes(daemon: DaemonProcess) -> None:
    watch_path = re.search(r"curl -N http://127\.0\.0\.1:9100(/v1/threads/[^/\s]+/watch)", README)
    snippet = re.search(r"```python\n(.*?)```", README, re.S)
    assert watch_path is not None and snippet is not None
    code = snippet.group(1).replace(DEFAULT_URL, daemon.url)
    records: list[dict[str, object]] = []
    with (
        httpx.Client(timeout=httpx.Timeout(10.0)) as client,
        client.stream("GET", daemon.url + watch_path.group(1)) as stream,
    ):
        assert stream.status_code == 200  # subscribed: every later commit on the thread reaches this stream
        sdk = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert sdk.returncode == 0, sdk.stderr
        event = ""
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:") and event == "record.created":
                records.append(json.loads(line[5:])["record"])
            if len(records) == 2:
                break
    assert [r["act"] for r in records] == ["INTEND", "KNOW"]
    assert {r["thread"] for r in records} == {"th_tour"}
    assert "INTEND" in sdk.stdout  # the snippet reads the thread back too
