"""Named shutdown phases (runtime/shutdown.py): the budget arithmetic, and the timeline on trio's MockClock."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from spl.runtime.shutdown import Phase, PhaseReport, ShutdownPlan, ShutdownTimeline

GUARD = 1000.0


def plan() -> ShutdownPlan:
    return ShutdownPlan(
        (
            Phase("stop accepting", 1.0, (("http", 0.5),)),
            Phase("flush writer", 3.0, (("writer", 2.0), ("hub", 0.5))),
            Phase("release home", 1.0),
        ),
        limit=10.0,
    )


def test_the_plan_adds_up_its_phases_and_hands_out_child_budgets() -> None:
    shutdown = plan()
    assert shutdown.total == 5.0
    assert shutdown.child_ids == ("http", "writer", "hub")
    assert [shutdown.child_budget(c) for c in shutdown.child_ids] == [0.5, 2.0, 0.5]
    with pytest.raises(KeyError, match="no shutdown phase stops child 'folds'"):
        shutdown.child_budget("folds")


def test_a_plan_over_its_limit_is_refused() -> None:
    with pytest.raises(ValueError, match="need 12 s, more than the 10 s limit"):
        ShutdownPlan((Phase("a", 6.0), Phase("b", 6.0)), limit=10.0)


def test_children_must_fit_in_their_phase() -> None:
    with pytest.raises(ValueError, match="'a': its children need 3 s, more than its 2 s budget"):
        Phase("a", 2.0, (("x", 2.0), ("y", 1.0)))


def test_a_child_is_stopped_by_one_phase_only_and_names_are_distinct() -> None:
    with pytest.raises(ValueError, match="one phase only"):
        ShutdownPlan((Phase("a", 1.0, (("x", 1.0),)), Phase("b", 1.0, (("x", 1.0),))), limit=10.0)
    with pytest.raises(ValueError, match="distinct names"):
        ShutdownPlan((Phase("a", 1.0), Phase("a", 1.0)), limit=10.0)


async def test_phases_are_logged_cut_at_their_budget_and_overruns_warned(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="spl.shutdown")
    announced: list[str] = []
    timeline = ShutdownTimeline(plan(), on_phase=announced.append)
    with trio.fail_after(GUARD):
        with timeline.phase("stop accepting"):
            await trio.sleep(0.25)
        with timeline.phase("flush writer"):
            await trio.sleep_forever()  # a step that would never end is cut at its 3 s
        with timeline.phase("release home"):
            pass
    assert trio.current_time() == pytest.approx(3.25)
    assert announced == ["stop accepting", "flush writer", "release home"]
    assert timeline.reports == [
        PhaseReport("stop accepting", 1.0, pytest.approx(0.25), False),  # type: ignore[arg-type]
        PhaseReport("flush writer", 3.0, pytest.approx(3.0), True),  # type: ignore[arg-type]
        PhaseReport("release home", 1.0, 0.0, False),
    ]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "shutdown phase 1/3 'stop accepting' (budget 1 s)"),
        ("INFO", "shutdown phase 2/3 'flush writer' (budget 3 s)"),
        ("WARNING", "shutdown phase 'flush writer' overran its 3 s budget (3.00 s, cut); going on with the next one"),
        ("INFO", "shutdown phase 3/3 'release home' (budget 1 s)"),
    ]


async def test_a_synchronous_step_that_overruns_is_still_reported(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    timeline = ShutdownTimeline(plan())
    with timeline.phase("release home"):
        autojump_clock.jump(1.5)  # stands for blocking work the budget cannot cut
    assert timeline.reports == [PhaseReport("release home", 1.0, pytest.approx(1.5), False)]  # type: ignore[arg-type]
    assert timeline.reports[0].overran
    assert "overran its 1 s budget (1.50 s)" in caplog.text
