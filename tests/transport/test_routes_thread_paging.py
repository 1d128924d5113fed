"""``GET /v1/threads`` pages with a cursor, most recently written first, each thread once; the default is unchanged."""

from __future__ import annotations

from pathlib import Path

from e2e_support import assert_error, envelope
from inprocess import InProcessDaemon

from spl.core.genesis import GENESIS_THREADS
from spl.store.database import connect_writer
from spl.store.queries import list_threads


async def write_threads(node: InProcessDaemon, count: int) -> list[str]:
    names = [f"th_page_{index:03d}" for index in range(count)]
    for clock, name in enumerate(names, start=1):
        assert (await node.post("/v1/records", json=envelope(name, clock))).status_code == 201
    return names


async def test_paging_walks_every_thread_once_newest_first(in_process_daemon: InProcessDaemon) -> None:
    names = await write_threads(in_process_daemon, 25)
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        query = "/v1/threads?limit=10" + (f"&cursor={cursor}" if cursor else "")
        page = (await in_process_daemon.get(query)).json()
        seen += [thread["id"] for thread in page["data"]]
        pages += 1
        if not page["has_more"]:
            assert page["next_cursor"] is None
            break
        cursor = page["next_cursor"]
    # The six reserved threads' genesis records (spl init) are the oldest: listed last (this caller is an admin).
    assert seen == list(reversed(names)) + list(reversed(GENESIS_THREADS))
    assert pages == -(-len(seen) // 10)


async def test_the_default_listing_is_unchanged(in_process_daemon: InProcessDaemon) -> None:
    names = await write_threads(in_process_daemon, 3)
    page = (await in_process_daemon.get("/v1/threads")).json()
    listed = [t["id"] for t in page["data"]]
    assert page["object"] == "list" and listed == list(reversed(names)) + list(reversed(GENESIS_THREADS))
    assert page["has_more"] is False and page["next_cursor"] is None


async def test_a_cursor_that_is_not_one_is_a_400(in_process_daemon: InProcessDaemon) -> None:
    assert_error(await in_process_daemon.get("/v1/threads?cursor=page-two"), 400, "INVALID_CURSOR")


def test_a_page_walks_the_index_instead_of_sorting_the_table(tmp_path: Path) -> None:
    connection = connect_writer(tmp_path / "hub.db")
    try:
        for namespace in (None, "acme"):
            where = "WHERE namespace = ? AND last_seq < ?" if namespace else "WHERE last_seq < ?"
            bindings = ("acme", 10, 5) if namespace else (10, 5)
            plan = " ".join(
                str(row[-1])
                for row in connection.execute(
                    f"EXPLAIN QUERY PLAN SELECT thread FROM threads {where} ORDER BY last_seq DESC LIMIT ?", bindings
                )
            )
            assert "USING INDEX threads_" in plan and "TEMP B-TREE" not in plan, plan
        assert list_threads(connection, limit=5) == []
    finally:
        connection.close()
