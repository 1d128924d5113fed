"""The mesh-health page's routes in-process (issue 13): the open page and its headers, the token its data needs,
what a snapshot holds and bounds, and how the stream ends.

The stream's body is read by calling its generator: quart-trio's test client hangs when leaving an endless stream
(see ``design/runtime.md``). The page itself, in a real browser against real daemons, is
``tests/e2e/test_ui_browser.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from e2e_support import assert_error
from inprocess import InProcessDaemon, copy_home, run_in_process

from spl.core.pairs import PairError, PairStatus
from spl.transport import routes_ui
from spl.transport.routes_ui import ASSETS, SLOTS_KEY, StreamSlots, mesh_events, mesh_snapshot

JSON = {"content-type": "application/json"}


@pytest.fixture
async def secure(home_template: Path, tmp_path: Path) -> AsyncIterator[InProcessDaemon]:
    async with run_in_process(copy_home(home_template, tmp_path / "secure"), insecure=False) as daemon:
        yield daemon


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# -- the page ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(ASSETS))
async def test_the_page_and_its_assets_are_open_and_locked_down(secure: InProcessDaemon, path: str) -> None:
    answer = await secure.get(path)  # auth is on, and no token is sent
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == ASSETS[path][1]
    assert answer.headers["x-content-type-options"] == "nosniff"
    policy = answer.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "frame-ancestors 'none'" in policy


async def test_the_page_loads_nothing_from_elsewhere_and_runs_no_inline_script(secure: InProcessDaemon) -> None:
    html = (await secure.get("/ui")).text
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/ui/app.js" defer>']
    assert re.findall(r"""(?:src|href)="([^"]*)\"""", html) == ["/ui/favicon.svg", "/ui/style.css", "/ui/app.js"]
    for path in ASSETS:
        text = (await secure.get(path)).text
        # The one absolute URL is the SVG namespace, a name the browser never fetches.
        assert set(re.findall(r"https?://[^\s\"'`)]+", text)) <= {"http://www.w3.org/2000/svg"}, path
        code = code_of(text) if path.endswith(".js") else text
        assert "innerHTML" not in code and "eval(" not in code and "document.write" not in code, path


async def test_the_token_is_sent_in_a_header_and_kept_for_the_tab_only(secure: InProcessDaemon) -> None:
    script = code_of((await secure.get("/ui/app.js")).text)
    assert "sessionStorage" in script and "localStorage" not in script
    assert "headers.authorization = `Bearer ${token}`" in script and "EventSource" not in script
    assert "?token" not in script and "&token" not in script


def code_of(script: str) -> str:
    """The script without its comment lines (which name what the code avoids)."""
    return "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("//"))


# -- the stream's gate ------------------------------------------------------------------------------------------


async def test_the_stream_needs_a_token_with_metrics_read(secure: InProcessDaemon) -> None:
    assert_error(await secure.get("/v1/ui/events"), 401, "AUTH_REQUIRED")
    reader = await secure.mint_token(["records:read"], "not enough")
    forbidden = assert_error(await secure.get("/v1/ui/events", headers=bearer(reader)), 403, "SCOPE_FORBIDDEN")
    assert "metrics:read" in forbidden["message"]


async def test_streams_beyond_the_limit_are_refused_with_the_fix(secure: InProcessDaemon) -> None:
    token = await secure.mint_token(["metrics:read"], "ui")
    secure.app.config[SLOTS_KEY] = StreamSlots(0)  # every place taken
    refused = await secure.get("/v1/ui/events", headers=bearer(token))
    assert refused.status_code == 503, refused.text
    assert refused.json()["code"] == "UI_STREAMS_FULL" and "close another /ui tab" in refused.json()["message"]


def test_a_slot_is_released_once_however_the_stream_ends() -> None:
    slots = StreamSlots(1)
    slot = slots.take()
    with pytest.raises(Exception, match="mesh-health streams are open"):
        slots.take()
    slot.release()
    slot.release()  # the generator's end and its finaliser may both release it
    assert slots.open == 0
    slots.take()
    assert slots.open == 1


# -- the stream's body --------------------------------------------------------------------------------------------


async def test_open_streams_share_one_snapshot_a_tick(in_process_daemon: InProcessDaemon) -> None:
    slots = StreamSlots(2)
    first = slots.frame(in_process_daemon.services, now=100.0)
    assert slots.frame(in_process_daemon.services, now=100.4) is first  # a second page, within the tick
    later = slots.frame(in_process_daemon.services, now=100.5)
    assert later is not first and parse(later)[0] == "mesh"


def parse(frame: bytes) -> tuple[str, Any]:
    lines = frame.decode("ascii").split("\n")
    assert frame.endswith(b"\n\n") and len(lines) == 4, frame[:200]
    assert lines[0].startswith("event: ") and lines[1].startswith("data: ")
    return lines[0][len("event: ") :], json.loads(lines[1][len("data: ") :])


async def test_the_stream_sends_a_snapshot_at_once_and_ends_when_the_daemon_stops(
    in_process_daemon: InProcessDaemon,
) -> None:
    services = in_process_daemon.services
    slots = StreamSlots(1)
    stream = mesh_events(services, slots.take())
    name, snapshot = parse(await stream.__anext__())
    assert name == "mesh"
    assert snapshot["object"] == "mesh_snapshot" and snapshot["status"] == "ok"
    assert snapshot["instance_did"] == services.identity.did
    assert snapshot["sequence"] == services.head_sequence()
    children = {child["id"] for child in snapshot["supervision"]["children"]}
    assert {"sse-hub", "store-writer", "federation"} <= children
    services.stopping.set()  # the daemon's first shutdown phase
    name, _ = parse(await stream.__anext__())
    assert name == "server_shutdown"
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()
    assert slots.open == 0


async def test_a_snapshot_lists_sync_pairs_with_their_figures_and_last_error(
    in_process_daemon: InProcessDaemon,
) -> None:
    created = await in_process_daemon.post(
        "/v1/sync/pairs",
        json={
            "peer_did": "did:key:z6MkpTHR8VNsBxYAAWHut2Geadd9jSwuBV8xRoAnwWsdvktH",
            "peer_url": "http://127.0.0.1:9",
            "thread_id": "th_ui",
            "mode": "on-demand",
        },
    )
    assert created.status_code == 201, created.text
    pair_id = created.json()["pair_id"]
    kicked = await in_process_daemon.post(f"/v1/sync/pairs/{pair_id}/kick?wait=1", headers=JSON)
    assert kicked.status_code == 200, kicked.text  # the in-process daemon reaches no peer: the pull fails
    api = (await in_process_daemon.get(f"/v1/sync/pairs/{pair_id}")).json()
    rows = mesh_snapshot(in_process_daemon.services)["pairs"]
    assert [(row["kind"], row["pair_id"]) for row in rows] == [("sync", pair_id)]
    row = rows[0]
    assert row["state"] == api["state"] and row["lag_records"] == api["lag_records"]
    assert row["peer_url"] == "http://127.0.0.1:9" and row["scope"] == "th_ui"
    assert row["last_error"]["code"] == api["last_error"]["code"]
    assert row["errors_total"] == api["errors_total"] >= 1

    # A metrics:read token alone (a scraper's) sees what /metrics exports, not who the peers are or what they said:
    # the pair routes keep that behind federation:manage.
    slots = StreamSlots(1)
    _, figures_only = parse(slots.frame(in_process_daemon.services, now=1.0, detail=False))
    _, full = parse(slots.frame(in_process_daemon.services, now=1.0, detail=True))
    assert figures_only["detail"] is False and full["detail"] is True
    bare = figures_only["pairs"][0]
    assert bare["state"] == api["state"] and bare["lag_records"] == api["lag_records"]
    assert bare["last_error"]["code"] == api["last_error"]["code"] and bare["last_error"]["message"] is None
    assert (bare["peer_url"], bare["peer_did"], bare["scope"], bare["state_reason"]) == (None, None, None, None)
    assert "127.0.0.1:9" not in json.dumps(figures_only) and "th_ui" not in json.dumps(figures_only)
    assert full["pairs"][0]["peer_url"] == "http://127.0.0.1:9"


def test_text_a_peer_chose_is_one_bounded_line() -> None:
    status = PairStatus("pair_0123456789abcdef", state="failing", reason="x" * 10_000)
    status.last_error = PairError("HTTP_4XX", "<script>alert(1)</script>\n\u202e" + "y" * 10_000, 1.0)
    figures = routes_ui._figures(status, 2.0)
    message = figures["last_error"]["message"]
    assert len(message) <= routes_ui.TEXT_LIMIT + 1
    assert "\n" not in message and "\u202e" not in message
    assert message.startswith("<script>")  # kept as text: the page writes it with textContent, never as HTML


def test_the_tree_is_bounded_and_shows_the_pair_supervisor_under_federation() -> None:
    children = [{"id": f"c{n}", "state": "running", "restarts": 0, "last_error": None} for n in range(1000)]
    children.append({"id": "federation", "state": "running", "restarts": 2, "last_error": "boom\x1b[31m"})

    class Pairs:
        def snapshot(self) -> dict[str, Any]:
            return {"id": "pairs", "strategy": "one_for_one", "state": "running", "children": []}

    class Federation:
        supervisor = Pairs()

    tree = routes_ui._tree({"id": "root", "state": "running", "children": children[-1:] + children[:-1]}, Federation())
    assert tree["children_total"] == 1001 and len(tree["children"]) == routes_ui.MAX_TREE_CHILDREN
    federation = tree["children"][0]
    assert federation["children"]["id"] == "pairs" and "\x1b" not in federation["last_error"]
    bare = routes_ui._tree_without_errors(tree)  # what a metrics:read token alone is sent
    assert bare["children"][0]["last_error"] is None and bare["children"][0]["restarts"] == 2
    assert bare["children"][0]["children"]["id"] == "pairs" and "boom" not in json.dumps(bare)
