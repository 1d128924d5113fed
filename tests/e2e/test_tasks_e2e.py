"""Tasks on a real daemon with auth on (issue 12): add, list, show, every event, the 409s, fan-out, tree, join status.

One daemon for the module; each test uses its own aliases, so the tests do not depend on each other's order.
Seed 000 step 1 runs once through the real ``spl`` in a shell pipe with ``jq``, exactly as written.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from spl.daemon.launcher import DaemonProcess

MINTED = re.compile(r"th_[0-9a-f]{64}")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    process = DaemonProcess(tmp_path_factory.mktemp("tasks") / "home", insecure=False)
    process.start(port=0)
    yield process
    process.kill()


@pytest.fixture(scope="module")
def http(daemon: DaemonProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=daemon.url, headers={"x-api-key": daemon.admin_token}, timeout=20.0) as client:
        yield client


def wait_until(predicate: Callable[[], bool], what: str, within: float = 15.0) -> None:
    """Poll the daemon until ``predicate`` holds (the joiner closes a parent after the child's commit answered)."""
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    return str(body["message"])


def event(http: httpx.Client, task: str, name: str, **fields: str) -> httpx.Response:
    return http.post(f"/v1/tasks/{task}/events", json={"event": name, **fields})


def test_add_list_show_and_every_event(http: httpx.Client) -> None:
    added = ok(
        http.post(
            "/v1/tasks",
            json={"title": "Ship v2", "alias": "REL-1", "priority": "P1", "labels": ["release"], "criteria": ["CI"]},
        ),
        201,
    )
    assert MINTED.fullmatch(added["thread"]) and (added["alias"], added["status"]) == ("REL-1", "open")
    assert (added["title"], added["labels"], added["criteria"]) == ("Ship v2", ["release"], ["CI"])
    message = error(http.post("/v1/tasks", json={"title": "again", "alias": "REL-1"}), 409, "TASK_ALIAS_TAKEN")
    assert added["thread"] in message

    allocated = [ok(http.post("/v1/tasks", json={"title": f"t{i}"}), 201)["alias"] for i in range(2)]
    number = int(allocated[0].split("-")[1])
    assert allocated == [f"TASK-{number:04d}", f"TASK-{number + 1:04d}"]

    shown = ok(http.get("/v1/tasks/REL-1"))
    assert shown["thread"] == added["thread"] and shown["fold"]["state"] == "open"
    assert ok(http.get(f"/v1/tasks/{added['thread']}"))["alias"] == "REL-1"

    steps = [
        ("start", {}, "active"),
        ("block", {"reason": "review"}, "blocked"),
        ("comment", {"text": "waiting"}, "blocked"),
        ("start", {}, "active"),
        ("done", {"summary": "shipped"}, "done"),
        ("reopen", {"reason": "regression"}, "open"),
        ("fail", {"reason": "red"}, "failed"),
        ("reopen", {}, "open"),
        ("cancel", {"reason": "superseded"}, "cancelled"),
    ]
    for name, fields, status in steps:
        assert ok(event(http, "REL-1", name, **fields))["status"] == status, name
    assert "reopen" in error(event(http, "REL-1", "done"), 409, "TASK_STATE")
    assert "reopen" in error(event(http, "REL-1", "start"), 409, "TASK_STATE")
    error(event(http, "REL-1", "comment"), 400, "INVALID_TASK_EVENT")  # a comment needs its text
    error(event(http, "REL-1", "explode"), 400, "INVALID_TASK_EVENT")

    listed = ok(http.get("/v1/tasks", params={"label": "release"}))
    assert [row["alias"] for row in listed["data"]] == ["REL-1"] and listed["data"][0]["status"] == "cancelled"
    page = ok(http.get("/v1/tasks", params={"limit": 1}))
    assert page["has_more"] and len(page["data"]) == 1
    second = ok(http.get("/v1/tasks", params={"limit": 1, "cursor": page["next_cursor"]}))
    assert second["data"][0]["opened_sequence"] < page["data"][0]["opened_sequence"]
    assert "cancelled" in error(http.get("/v1/tasks", params={"status": "weird"}), 400, "INVALID_PARAMETER")
    assert "spl task list" in error(http.get("/v1/tasks/NOPE-1"), 404, "TASK_NOT_FOUND")
    error(http.post("/v1/tasks", json={"title": ""}), 400, "INVALID_TASK")
    error(http.post("/v1/tasks", json={"title": "x", "alias": "th_" + "0" * 64}), 400, "INVALID_ALIAS")
    error(http.post("/v1/tasks", json={"title": "x", "join": "most"}), 400, "INVALID_JOIN")


def test_fan_out_tree_and_join_status(http: httpx.Client) -> None:
    ok(http.post("/v1/tasks", json={"title": "deploy", "alias": "DEPLOY-1"}), 201)
    fork = ok(http.post("/v1/tasks/DEPLOY-1/fan-out", json={"goals": ["build", "migrate"], "join": "k_of_n:1"}), 201)
    children = fork["children"]
    assert [child["goal"] for child in children] == ["build", "migrate"]
    assert all(MINTED.fullmatch(child["thread"]) and child["alias"].startswith("TASK-") for child in children)
    assert fork["join"] == {"mode": "k_of_n", "k": 1}

    tree = ok(http.get("/v1/tasks/DEPLOY-1/tree"))
    assert (tree["alias"], tree["truncated"], tree["nodes"]) == ("DEPLOY-1", False, 3)
    assert [node["alias"] for node in tree["children"]] == [child["alias"] for child in children]
    pending = ok(http.get("/v1/tasks/DEPLOY-1/join"))
    assert pending["decision"]["verdict"] == "pending" and pending["decision"]["total"] == 2

    ok(event(http, children[0]["alias"], "done", summary="image built"))
    wait_until(lambda: ok(http.get("/v1/tasks/DEPLOY-1"))["status"] == "done", what="the parent closes by itself")
    decided = ok(http.get("/v1/tasks/DEPLOY-1/join"))
    assert decided["decision"]["verdict"] == "satisfied" and decided["decision"]["accepted"] == 1
    assert decided["children"][0]["outcome"]["result"] == "image built"
    error(http.post("/v1/tasks/DEPLOY-1/fan-out", json={"goals": ["late"]}), 409, "PARENT_CLOSED")
    error(http.post("/v1/tasks/DEPLOY-1/fan-out", json={"goals": []}), 400, "INVALID_FORK")


def test_threads_mint_fork_and_reserved_parents(http: httpx.Client) -> None:
    minted = ok(http.post("/v1/threads", json={"kind": "task", "alias": "X-1", "nonce": "n1"}))
    assert minted["object"] == "thread_id" and minted == ok(
        http.post("/v1/threads", json={"kind": "task", "alias": "X-1", "nonce": "n1"})
    )
    sub = ok(http.post("/v1/threads", json={"kind": "sub", "parent": "th_p", "actor": "did:a:b", "timestamp_us": 1}))
    assert MINTED.fullmatch(sub["thread"]) and sub["seed"]["timestamp_us"] == 1
    assert MINTED.fullmatch(ok(http.post("/v1/threads", json={}))["thread"])
    error(http.post("/v1/threads", json={"kind": "other"}), 400, "INVALID_KIND")

    parent = "th_fork_e2e"
    opened = http.post(
        "/v1/records",
        json={"act": "INTEND", "actor": "did:test:e2e", "thread": parent, "clock": 1, "body": {"goal": "p"}},
    )
    assert opened.status_code == 201, opened.text
    fork = ok(http.post(f"/v1/threads/{parent}/fork", json={"goals": ["a", "b"], "join": "any"}), 201)
    assert [child["alias"] for child in fork["children"]] == [None, None]
    join = ok(http.get(f"/v1/threads/{parent}/join"))
    assert join["join"] == "any" and [c["thread"] for c in join["children"]] == [c["thread"] for c in fork["children"]]
    assert len(ok(http.get(f"/v1/threads/{parent}/tree"))["children"]) == 2
    error(http.post("/v1/threads/th_fleet_control/fork", json={"goals": ["x"]}), 403, "RESERVED_THREAD")
    error(http.post("/v1/threads/th_nothing_here/fork", json={"goals": ["x"]}), 404, "NOT_FOUND")


def test_a_read_only_token_cannot_write_tasks(daemon: DaemonProcess, http: httpx.Client) -> None:
    token = ok(http.post("/v1/tokens", json={"scopes": ["records:read"], "label": "tasks-ro"}), 201)["token"]
    with httpx.Client(base_url=daemon.url, headers={"x-api-key": token}, timeout=20.0) as reader:
        assert reader.get("/v1/tasks").status_code == 200
        error(reader.post("/v1/tasks", json={"title": "x"}), 403, "SCOPE_FORBIDDEN")
        error(reader.post("/v1/threads", json={}), 403, "SCOPE_FORBIDDEN")


@pytest.mark.skipif(shutil.which("jq") is None, reason="seed 000 step 1 pipes into jq")
def test_seed_000_step_1_through_the_real_spl(daemon: DaemonProcess, http: httpx.Client) -> None:
    ok(http.post("/v1/tasks", json={"title": "seed 000", "alias": "TASK-0042"}), 201)
    env = {**daemon.env(), "SPL_SERVE_URL": daemon.url}
    spl = f"{sys.executable} -m spl.cli"
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    command = "spl task show TASK-0042 -o json | jq -r '.thread'"
    if shutil.which("spl", path=env["PATH"]) is None:
        command = command.replace("spl ", spl + " ", 1)
    done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert MINTED.fullmatch(done.stdout.strip()), done.stdout


def test_concurrent_adds_get_distinct_aliases(daemon: DaemonProcess, http: httpx.Client) -> None:
    """A concurrent add may take the alias just read: the loser's request rolls back and retries the next one."""

    def add(index: int) -> str:
        with httpx.Client(base_url=daemon.url, headers={"x-api-key": daemon.admin_token}, timeout=20.0) as own:
            return str(ok(own.post("/v1/tasks", json={"title": f"race {index}"}), 201)["alias"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        aliases = list(pool.map(add, range(4)))
    assert len(set(aliases)) == 4, aliases
