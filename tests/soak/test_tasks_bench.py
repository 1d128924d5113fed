"""The tasks/joins/folds benchmark (``python -m spl.soak.tasks_bench``): one tiny run against a real daemon.

At 2,000 records, 200 tasks and 10 children the figures say nothing about speed (the goals live in the benchmark,
not here); the test checks that every part ran to its end and printed its figures, that the synthesis came
exactly once per child and closed the parent, that no listing plan scans the records, and that the run leaves
no daemon and no home behind. The pure helpers are checked on their own: the windows the issue names, and task
data that covers every status.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import pytest

from spl.core import tasks as task_fold
from spl.daemon.bootstrap import initialise
from spl.daemon.home import Home
from spl.soak import tasks_bench as bench
from spl.store.database import connect_reader


def test_a_tiny_run_prints_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(
        ["--records", "2000", "--tasks", "200", "--children", "10", "--calls", "3", "--cli-runs", "1"]
        + ["--workdir", str(tmp_path)]
    )
    out = capsys.readouterr().out
    results = json.loads(out.strip().splitlines()[-1])

    for part in ("fold_task", "fold_plain"):
        fold = results[part]
        assert [(w["first"], w["last"]) for w in fold["windows"]] == [(1, 500), (501, 1000), (1501, 2000)]
        for key in ("fold_us_per_record", "cpu_us_per_record", "us_per_record"):
            assert all(w[key] > 0 for w in fold["windows"]), (part, key)
        assert fold["fold_ratio"] > 0 and fold["fit_fold_ratio"] > 0
    assert results["fold_task"]["task_status"] in task_fold.STATUSES
    assert results["fold_task"]["task_status"] not in task_fold.TERMINAL, "the cycle must keep the task open"

    join = results["join"]
    assert "error" not in join, join
    assert join["from_ack"]["n"] == 10 and not math.isnan(join["from_ack"]["p50_ms"])
    assert join["synthesised"] == 10 and join["exactly_once"] is True
    assert join["closing_records"] == 1 and join["closed_after_last"] is True and join["parent_state"] == "done"

    http, store = results["http_listing"], results["store_listing"]
    assert "error" not in http, http
    for name, _, _ in bench.LISTINGS:
        assert http[name]["n"] == 3 and http[name]["p50_ms"] > 0, (name, http.get(name))
        assert http[name]["rows"] == store[name]["rows"], name
        assert results["plans"][name]["plan"] and results["plans"][name]["scans_records"] is False, name
    assert http["no filter"]["rows"] == http["page 2 (cursor)"]["rows"] == 100
    assert 0 < http["status=blocked"]["rows"] < 100
    cli = results["cli_listing"]
    assert cli["spl task list"]["n"] == 1 and cli["spl --help (start-up floor)"]["n"] == 1, cli

    for line in (
        "### 1. Fold cost: 2,000 records on one thread",
        "| ratio last/first window (goal < 1.3 for the fold step) |",
        "| ratio on a line fitted through every commit |",
        "| label=ops&assignee=agent-10 |",
        "| `spl task list` (subprocess, start-up included) |",
        "Query plans (EXPLAIN QUERY PLAN",
        "from the close's HTTP answer to the synthesising record on the watch",
        "Goals: fold flat: last/first window ",
    ):
        assert line in out, line
    assert "NOT MEASURED" not in out
    assert list(tmp_path.iterdir()) == [], "the stores and the home are removed"


def test_the_windows_are_the_issues_at_full_size_and_never_overlap() -> None:
    assert bench.windows(100_000) == [(1, 1000), (9001, 10000), (49001, 50000), (99001, 100000)]
    for records in (1, 499, 500, 2000, 7777, 20_000, 250_000):
        spans = bench.windows(records)
        assert spans[0][0] == 1 and spans[-1][1] == records
        assert all(first <= last for first, last in spans)
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False)), spans


def test_the_benchmark_tasks_cover_every_status(tmp_path: Path) -> None:
    home = Home.resolve(tmp_path / "home")
    initialise(home)
    committed = bench.build_tasks(home, 40)
    connection = connect_reader(home.db_path)
    try:
        statuses = Counter(str(status) for (status,) in connection.execute("SELECT status FROM tasks"))
    finally:
        connection.close()
    assert committed > 40 and sum(statuses.values()) == 40
    assert set(statuses) == set(task_fold.STATUSES), statuses
