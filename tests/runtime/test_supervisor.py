"""The supervisor (runtime/supervisor.py) on trio's MockClock: exact virtual times, no real waiting.

Synchronisation is by events, by the supervisor's own ``nursery.start`` protocol, or by
``trio.testing.wait_all_tasks_blocked`` ("everything has reacted"), which trio serves before it jumps the mock clock.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import msgspec
import pytest
import trio
import trio.testing

from spl.runtime.backoff import Backoff
from spl.runtime.supervisor import (
    ChildContext,
    ChildSnapshot,
    ChildSpec,
    LeftDown,
    Restart,
    Strategy,
    Supervisor,
    SupervisorGaveUp,
    SupervisorSnapshot,
)

Start = Callable[[ChildContext], Awaitable[None]]
GUARD = 1000.0  # virtual seconds: a hang jumps the mock clock straight to this guard


def fixed_backoff(base: float = 0.1, factor: float = 2.0, reset_after: float = 60.0) -> Callable[[], Backoff]:
    """Backoffs without jitter: 0.1, 0.2, 0.4, ... unless told otherwise."""
    return lambda: Backoff(base=base, factor=factor, jitter=0.0, reset_after=reset_after)


class Log:
    """(virtual time, event) pairs written by the children under test."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str]] = []
        self._waiters: dict[str, trio.Event] = {}

    def __call__(self, text: str) -> None:
        self.events.append((trio.current_time(), text))
        if text in self._waiters:
            self._waiters.pop(text).set()

    async def wait_for(self, text: str) -> None:
        if text not in self.texts:
            await self._waiters.setdefault(text, trio.Event()).wait()

    @property
    def texts(self) -> list[str]:
        return [text for _, text in self.events]

    def time_of(self, text: str) -> float:
        return next(at for at, t in self.events if t == text)


def actor(log: Log, *, ready_after: float = 0.0, cleanup: float = 0.0) -> Start:
    """A well-behaved actor: logs its messages, crashes on "crash", returns on "return", stops when asked."""

    async def start(ctx: ChildContext) -> None:
        name = f"{ctx.child_id}#{ctx.incarnation}"
        log(f"start {name}")
        if ready_after:
            await trio.sleep(ready_after)
        ctx.started()
        try:
            async with trio.open_nursery() as nursery:

                async def stop_when_asked() -> None:
                    await ctx.stop_requested.wait()
                    log(f"stop {name}")
                    if cleanup:
                        await trio.sleep(cleanup)
                    nursery.cancel_scope.cancel()

                nursery.start_soon(stop_when_asked)
                while True:
                    message = await ctx.receive()
                    log(f"{name} got {message}")
                    if message == "crash":
                        raise ValueError(f"{ctx.child_id} crashed")
                    if message == "return":
                        nursery.cancel_scope.cancel()
        finally:
            log(f"end {name}")

    return start


def spec(log: Log, id: str, *, restart: Restart = Restart.PERMANENT, shutdown_budget: float = 5.0) -> ChildSpec:
    return ChildSpec(id=id, start=actor(log), restart=restart, shutdown_budget=shutdown_budget, inbox_size=16)


@asynccontextmanager
async def running(supervisor: Supervisor) -> AsyncIterator[None]:
    """Run ``supervisor`` for the body of the block, then shut it down and wait for it."""
    async with trio.open_nursery() as nursery:
        await nursery.start(supervisor.run)
        yield
        supervisor.shutdown()


def child(supervisor: Supervisor, child_id: str) -> ChildSnapshot:
    return next(c for c in supervisor.snapshot().children if c.id == child_id)


# ------------------------------------------------------------------------------------------- start and stop


async def test_children_start_in_order_and_stop_in_reverse(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    specs = [ChildSpec(id=name, start=actor(log, ready_after=1.0), inbox_size=1) for name in "abc"]
    supervisor = Supervisor("root", specs)
    with trio.fail_after(GUARD):
        async with running(supervisor):
            # Each child took 1 s to become ready, and the next one waited for it.
            assert [(at, text) for at, text in log.events] == [
                (0.0, "start a#0"),
                (1.0, "start b#0"),
                (2.0, "start c#0"),
            ]
            assert trio.current_time() == 3.0
            assert supervisor.snapshot().state == "running"
            assert [c.state for c in supervisor.snapshot().children] == ["running"] * 3
    assert log.texts[3:] == ["stop c#0", "end c#0", "stop b#0", "end b#0", "stop a#0", "end a#0"]
    assert supervisor.snapshot().state == "stopped"
    assert [c.state for c in supervisor.snapshot().children] == ["stopped"] * 3


async def test_shutdown_budget_is_honoured_at_the_exact_virtual_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()

    async def stubborn(ctx: ChildContext) -> None:
        ctx.started()
        try:
            await trio.sleep_forever()  # ignores stop_requested
        except trio.Cancelled:
            log("stubborn cancelled")
            raise

    supervisor = Supervisor(
        "root",
        [
            ChildSpec(id="graceful", start=actor(log, cleanup=1.0), shutdown_budget=10.0, inbox_size=1),
            ChildSpec(id="stubborn", start=stubborn, shutdown_budget=2.5),
        ],
    )
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await trio.sleep(5.0)  # let virtual time pass before the shutdown; nothing waits on it
    assert log.time_of("stubborn cancelled") == pytest.approx(7.5)  # 5 + its budget of 2.5
    assert log.time_of("stop graceful#0") == pytest.approx(7.5)  # reverse order: only after stubborn
    assert log.time_of("end graceful#0") == pytest.approx(8.5)  # its 1 s of cleanup fits its budget
    assert trio.current_time() == pytest.approx(8.5)


async def test_shutdown_during_a_backoff_does_not_wait_for_it(autojump_clock: trio.testing.MockClock) -> None:
    async def crash(ctx: ChildContext) -> None:
        ctx.started()
        raise ValueError("boom")

    supervisor = Supervisor("root", [ChildSpec(id="c", start=crash)], backoff_factory=fixed_backoff(base=100.0))
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await trio.testing.wait_all_tasks_blocked()
            assert child(supervisor, "c").state == "restarting"
    assert trio.current_time() == 0.0
    assert child(supervisor, "c").state == "stopped"
    assert child(supervisor, "c").next_retry_at is None


async def test_shutdown_before_the_children_are_ready_still_returns(autojump_clock: trio.testing.MockClock) -> None:
    async def never_ready(ctx: ChildContext) -> None:
        await trio.sleep_forever()

    log = Log()
    supervisor = Supervisor("root", [ChildSpec(id="slow", start=never_ready, shutdown_budget=1.0), spec(log, "next")])
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run)
            await trio.testing.wait_all_tasks_blocked()
            assert supervisor.snapshot().state == "starting"
            assert child(supervisor, "slow").state == "starting"
            supervisor.shutdown()
    assert trio.current_time() == 1.0  # the child's budget, then the hard cancel
    assert log.events == []  # "next" waited for "slow" to be ready, which never happened
    assert [c.state for c in supervisor.snapshot().children] == ["stopped", "stopped"]


async def test_shutdown_before_run_makes_run_return_at_once(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    supervisor = Supervisor("root", [spec(log, "a")])
    supervisor.shutdown()
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
    assert log.events == []
    # The request was used up: the next run runs normally.
    with trio.fail_after(GUARD):
        async with running(supervisor):
            assert log.texts == ["start a#0"]


async def test_a_child_failing_before_it_is_ready_holds_back_the_ones_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()

    async def flaky(ctx: ChildContext) -> None:
        log(f"start flaky#{ctx.incarnation}")
        if ctx.incarnation < 2:
            raise ValueError("not yet")
        ctx.started()
        await ctx.stop_requested.wait()

    supervisor = Supervisor(
        "root", [ChildSpec(id="flaky", start=flaky), spec(log, "after")], backoff_factory=fixed_backoff()
    )
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run)
            await log.wait_for("start flaky#1")
            await trio.testing.wait_all_tasks_blocked()  # flaky#1 failed too and waits for its second backoff
            snapshot = supervisor.snapshot()
            assert snapshot.state == "starting"
            assert [(c.state, c.restarts) for c in snapshot.children] == [("restarting", 2), ("starting", 0)]
            assert child(supervisor, "after").next_retry_at is not None
            await log.wait_for("start after#0")
            supervisor.shutdown()
    assert log.texts[:4] == ["start flaky#0", "start flaky#1", "start flaky#2", "start after#0"]
    assert [at for at, _ in log.events[:4]] == pytest.approx([0.0, 0.1, 0.3, 0.3])
    assert child(supervisor, "flaky").restarts == 2
    assert child(supervisor, "after").restarts == 0


# ------------------------------------------------------------------------------------------- restart schedule


def crash_until(starts: list[float], count: int, done: trio.Event, *, before_ready: bool) -> Start:
    """A child that crashes on each of its first ``count - 1`` starts and then stays up."""

    async def start(ctx: ChildContext) -> None:
        starts.append(trio.current_time())
        if len(starts) == count:
            ctx.started()
            done.set()
            await trio.sleep_forever()
        if not before_ready:
            ctx.started()
        raise ValueError(f"crash {ctx.incarnation}")

    return start


def expected_start_times(make_backoff: Callable[[], Backoff], count: int) -> list[float]:
    backoff, at, times = make_backoff(), 0.0, [0.0]
    for _ in range(count - 1):
        at += backoff.next_delay()
        times.append(at)
    return times


@pytest.mark.parametrize("before_ready", [False, True], ids=["crash-after-ready", "crash-before-ready"])
@pytest.mark.parametrize("seed", [None, 1234], ids=["no-jitter", "seeded-jitter"])
async def test_restarts_happen_at_the_exact_backoff_times(
    autojump_clock: trio.testing.MockClock, before_ready: bool, seed: int | None
) -> None:
    def make_backoff() -> Backoff:
        if seed is None:
            return Backoff(jitter=0.0)
        return Backoff(jitter=0.2, rng=random.Random(seed))

    starts: list[float] = []
    done = trio.Event()
    crasher = ChildSpec(id="c", start=crash_until(starts, 7, done, before_ready=before_ready))
    supervisor = Supervisor("root", [crasher], max_restarts=100, backoff_factory=make_backoff)
    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(supervisor.run)
            await done.wait()
            supervisor.shutdown()
    expected = expected_start_times(make_backoff, 7)
    if seed is None:
        assert expected == pytest.approx([0.0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3])
    assert starts == pytest.approx(expected, abs=1e-9)
    assert child(supervisor, "c").restarts == 6


async def test_a_long_run_resets_the_backoff(autojump_clock: trio.testing.MockClock) -> None:
    starts: list[float] = []
    fifth = trio.Event()

    async def start(ctx: ChildContext) -> None:
        starts.append(trio.current_time())
        ctx.started()
        if ctx.incarnation == 2:
            await trio.sleep(10.0)  # longer than reset_after: healthy again
        if ctx.incarnation == 4:
            fifth.set()
            await trio.sleep_forever()
        raise ValueError("boom")

    supervisor = Supervisor(
        "root", [ChildSpec(id="c", start=start)], max_restarts=100, backoff_factory=fixed_backoff(reset_after=5.0)
    )
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await fifth.wait()
    # 0 -> +0.1 -> +0.2 -> (ran 10 s, reset) +0.1 -> +0.2
    assert starts == pytest.approx([0.0, 0.1, 0.3, 10.4, 10.6])


async def test_restart_intensity_exceeded_gives_up(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()

    async def crash(ctx: ChildContext) -> None:
        log(f"start crasher#{ctx.incarnation}")
        ctx.started()
        raise ValueError(f"boom {ctx.incarnation}")

    supervisor = Supervisor(
        "root",
        [spec(log, "steady"), ChildSpec(id="crasher", start=crash)],
        max_restarts=3,
        period=10.0,
        backoff_factory=fixed_backoff(),
    )
    with trio.fail_after(GUARD):
        with pytest.raises(SupervisorGaveUp) as caught:
            await supervisor.run()
    assert caught.value.supervisor_id == "root"
    assert caught.value.child_id == "crasher"
    assert caught.value.last_error == "ValueError: boom 3"
    # Three restarts were allowed (at 0.1, 0.3, 0.7); the fourth crash, at 0.7, went over the limit.
    assert log.texts == [
        "start steady#0",
        "start crasher#0",
        "start crasher#1",
        "start crasher#2",
        "start crasher#3",
        "stop steady#0",  # the rest was stopped gracefully before run() raised
        "end steady#0",
    ]
    assert trio.current_time() == pytest.approx(0.7)
    snapshot = supervisor.snapshot()
    assert snapshot.state == "failed"
    assert [(c.id, c.state) for c in snapshot.children] == [("steady", "stopped"), ("crasher", "failed")]


async def test_restarts_spread_wider_than_the_period_do_not_give_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    done = trio.Event()
    crasher = ChildSpec(id="c", start=crash_until(starts, 12, done, before_ready=False))
    # One restart per second, at most two per second allowed: never over the limit.
    supervisor = Supervisor(
        "root", [crasher], max_restarts=1, period=1.0, backoff_factory=fixed_backoff(base=1.0, factor=1.0)
    )
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await done.wait()
    assert starts == pytest.approx([float(n) for n in range(12)])


async def test_a_nested_supervisor_that_gives_up_crashes_as_a_child(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()

    async def crash(ctx: ChildContext) -> None:
        ctx.started()
        raise ValueError("inner boom")

    inner = Supervisor(
        "pairs",
        [spec(log, "steady"), ChildSpec(id="crasher", start=crash)],
        max_restarts=0,
        backoff_factory=fixed_backoff(),
    )
    outer = Supervisor("root", [inner.child_spec()], max_restarts=1, backoff_factory=fixed_backoff())
    with trio.fail_after(GUARD):
        with pytest.raises(SupervisorGaveUp) as caught:
            await outer.run()
    # The inner supervisor gave up; for the outer one that was a crash of its child "pairs", restarted once
    # (a second run of the same inner supervisor), and the second crash went over the outer limit.
    assert caught.value.supervisor_id == "root"
    assert caught.value.child_id == "pairs"
    assert caught.value.last_error.startswith("SupervisorGaveUp: supervisor 'pairs' gave up: child 'crasher'")
    assert log.texts == [
        "start steady#0",
        "stop steady#0",
        "end steady#0",
        "start steady#1",
        "stop steady#1",
        "end steady#1",
    ]
    assert log.time_of("start steady#1") == pytest.approx(0.1)
    assert inner.snapshot().state == "failed"


# ---------------------------------------------------------------------------------------- restart policies


@pytest.mark.parametrize(
    ("restart", "message", "restarted", "final_state"),
    [
        (Restart.PERMANENT, "return", True, None),
        (Restart.PERMANENT, "crash", True, None),
        (Restart.TRANSIENT, "return", False, "exited"),
        (Restart.TRANSIENT, "crash", True, None),
        (Restart.TEMPORARY, "return", False, "exited"),
        (Restart.TEMPORARY, "crash", False, "failed"),
    ],
)
async def test_restart_policy(
    autojump_clock: trio.testing.MockClock,
    restart: Restart,
    message: str,
    restarted: bool,
    final_state: str | None,
) -> None:
    log = Log()
    supervisor = Supervisor("root", [spec(log, "c", restart=restart)], backoff_factory=fixed_backoff())
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await supervisor.send("c", message)
            if restarted:
                await log.wait_for("start c#1")
                assert log.time_of("start c#1") == pytest.approx(0.1)
            else:
                await trio.sleep(1.0)  # far past the 0.1 s backoff: a restart would have happened by now
                assert "start c#1" not in log.texts
            snapshot = child(supervisor, "c")
            assert snapshot.restarts == (1 if restarted else 0)
            assert snapshot.state == ("running" if restarted else final_state)
            assert snapshot.last_error == ("ValueError: c crashed" if message == "crash" else None)


async def test_a_crash_inside_an_exception_group_is_unwrapped(autojump_clock: trio.testing.MockClock) -> None:
    async def start(ctx: ChildContext) -> None:
        ctx.started()
        raise ExceptionGroup("outer", [ExceptionGroup("inner", [KeyError("first")]), RuntimeError("second")])

    supervisor = Supervisor("root", [ChildSpec(id="c", start=start, restart=Restart.TEMPORARY)])
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await trio.testing.wait_all_tasks_blocked()
            assert child(supervisor, "c").state == "failed"
            assert child(supervisor, "c").last_error == "KeyError: 'first'"


async def test_keyboard_interrupt_is_not_a_crash(autojump_clock: trio.testing.MockClock) -> None:
    async def start(ctx: ChildContext) -> None:
        ctx.started()
        raise KeyboardInterrupt

    log = Log()
    supervisor = Supervisor("root", [spec(log, "bystander"), ChildSpec(id="c", start=start)])
    with trio.fail_after(GUARD):
        with pytest.RaisesGroup(KeyboardInterrupt):
            await supervisor.run()
    assert child(supervisor, "c").restarts == 0
    assert log.texts == ["start bystander#0", "end bystander#0"]  # cancelled at once: no graceful stop
    assert [c.state for c in supervisor.snapshot().children] == ["stopped", "stopped"]


# --------------------------------------------------------------------------------------------- strategies


@pytest.mark.parametrize(
    ("strategy", "restarted"),
    [
        (Strategy.ONE_FOR_ONE, ["c"]),
        (Strategy.ONE_FOR_ALL, ["a", "b", "c", "d"]),
        (Strategy.REST_FOR_ONE, ["c", "d"]),
    ],
)
async def test_strategy_restarts_the_right_children_in_the_right_order(
    autojump_clock: trio.testing.MockClock, strategy: Strategy, restarted: list[str]
) -> None:
    log = Log()
    supervisor = Supervisor(
        "root", [spec(log, name) for name in "abcd"], strategy=strategy, backoff_factory=fixed_backoff()
    )
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await trio.sleep(2.0)
            await supervisor.send("c", "crash")
            await trio.testing.wait_all_tasks_blocked()
            crashed_at = trio.current_time()
            assert [c.state for c in supervisor.snapshot().children] == [
                "restarting" if name in restarted else "running" for name in "abcd"
            ]
            await log.wait_for(f"start {restarted[-1]}#1")
            after_crash = log.events[log.texts.index("c#0 got crash") + 1 :]
    others_stopped = [name for name in reversed(restarted) if name != "c"]
    assert [text for _, text in after_crash][: 2 * len(others_stopped) + 1 + len(restarted)] == (
        ["end c#0"]
        + [line for name in others_stopped for line in (f"stop {name}#0", f"end {name}#0")]
        + [f"start {name}#1" for name in restarted]
    )
    # The siblings stopped at once; the group came back together after the crashed child's backoff (0.1 s).
    for name in restarted:
        assert log.time_of(f"start {name}#1") == pytest.approx(crashed_at + 0.1)
    for name in set("abcd") - set(restarted):
        assert f"start {name}#1" not in log.texts


# ----------------------------------------------------------------------------------------- inbox and pause


async def test_pause_keeps_messages_and_resume_delivers_them_in_order(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    supervisor = Supervisor("root", [spec(log, "c")])
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await trio.testing.wait_all_tasks_blocked()  # the child waits in receive() when the gate closes
            supervisor.pause("c")
            for n in range(3):
                await supervisor.send("c", n)
            await trio.testing.wait_all_tasks_blocked()
            assert log.texts == ["start c#0"]
            assert child(supervisor, "c").state == "paused"
            assert child(supervisor, "c").paused is True
            supervisor.resume("c")
            await trio.testing.wait_all_tasks_blocked()
            assert log.texts == ["start c#0", "c#0 got 0", "c#0 got 1", "c#0 got 2"]
            assert child(supervisor, "c").state == "running"


async def test_receive_nowait_honours_the_gate(autojump_clock: trio.testing.MockClock) -> None:
    seen: list[object] = []
    proceed = trio.Event()

    async def start(ctx: ChildContext) -> None:
        ctx.started()
        await proceed.wait()
        with pytest.raises(trio.WouldBlock):
            ctx.receive_nowait()  # paused, although a message is queued
        seen.append("blocked")

    supervisor = Supervisor("root", [ChildSpec(id="c", start=start, inbox_size=4, restart=Restart.TEMPORARY)])
    with trio.fail_after(GUARD):
        async with running(supervisor):
            supervisor.pause("c")
            await supervisor.send("c", "queued")
            proceed.set()
            await trio.testing.wait_all_tasks_blocked()
            assert seen == ["blocked"]
            assert child(supervisor, "c").state == "exited"


async def test_messages_sent_during_a_restart_reach_the_next_incarnation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    supervisor = Supervisor("root", [spec(log, "c")], backoff_factory=fixed_backoff(base=5.0))
    with trio.fail_after(GUARD):
        async with running(supervisor):
            inbox = supervisor.inbox("c")
            await supervisor.send("c", "crash")
            await trio.testing.wait_all_tasks_blocked()
            assert child(supervisor, "c").state == "restarting"
            await inbox.send("a")
            await inbox.send("b")
            assert supervisor.inbox("c") is inbox  # the same send side for every incarnation
            await log.wait_for("c#1 got b")
    assert log.texts[:6] == ["start c#0", "c#0 got crash", "end c#0", "start c#1", "c#1 got a", "c#1 got b"]
    assert log.time_of("c#1 got a") == pytest.approx(5.0)


async def test_a_child_without_inbox_has_no_send_side() -> None:
    async def start(ctx: ChildContext) -> None:
        ctx.started()

    supervisor = Supervisor("root", [ChildSpec(id="c", start=start)])
    with pytest.raises(ValueError):
        supervisor.inbox("c")
    with pytest.raises(KeyError):
        supervisor.inbox("nobody")


# --------------------------------------------------------------------------------------------- dynamic


async def test_add_stop_start_and_remove_children(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    supervisor = Supervisor("root", [spec(log, "a")])
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await supervisor.add_child(spec(log, "pair", shutdown_budget=1.0))
            assert log.texts == ["start a#0", "start pair#0"]
            assert [c.id for c in supervisor.snapshot().children] == ["a", "pair"]
            with pytest.raises(ValueError):
                await supervisor.add_child(spec(log, "pair"))

            await supervisor.stop_child("pair")
            assert log.texts[-2:] == ["stop pair#0", "end pair#0"]
            assert child(supervisor, "pair").state == "stopped"
            await supervisor.send("pair", "kept while stopped")

            await supervisor.start_child("pair")
            await trio.testing.wait_all_tasks_blocked()
            assert log.texts[-2:] == ["start pair#1", "pair#1 got kept while stopped"]
            assert child(supervisor, "pair").state == "running"

            inbox = supervisor.inbox("pair")
            await supervisor.remove_child("pair")
            assert log.texts[-2:] == ["stop pair#1", "end pair#1"]
            assert [c.id for c in supervisor.snapshot().children] == ["a"]
            with pytest.raises(trio.ClosedResourceError):
                await inbox.send("gone")
            with pytest.raises(KeyError):
                await supervisor.stop_child("pair")
            with pytest.raises(KeyError):
                await supervisor.start_child("pair")
            assert child(supervisor, "a").state == "running"
    assert log.texts[-2:] == ["stop a#0", "end a#0"]


async def test_stop_child_cancels_a_pending_restart(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    supervisor = Supervisor("root", [spec(log, "c")], backoff_factory=fixed_backoff(base=1.0))
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await supervisor.send("c", "crash")
            await trio.testing.wait_all_tasks_blocked()
            assert child(supervisor, "c").state == "restarting"
            await supervisor.stop_child("c")
            await trio.sleep(5.0)  # past the 1 s backoff: the cancelled restart would have happened
            assert child(supervisor, "c").state == "stopped"
            assert child(supervisor, "c").next_retry_at is None
            assert "start c#1" not in log.texts


async def test_start_child_skips_the_rest_of_a_backoff(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    supervisor = Supervisor("root", [spec(log, "c")], backoff_factory=fixed_backoff(base=20.0))
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await trio.sleep(1.0)
            await supervisor.send("c", "crash")
            await trio.testing.wait_all_tasks_blocked()
            assert child(supervisor, "c").next_retry_at == 21.0
            await supervisor.start_child("c")
            assert log.time_of("start c#1") == 1.0
            assert child(supervisor, "c").state == "running"
            assert child(supervisor, "c").next_retry_at is None
            await trio.sleep(100.0)  # past the abandoned retry time: no second start
            assert "start c#2" not in log.texts


async def test_add_child_that_fails_before_it_is_ready_returns_and_retries(
    autojump_clock: trio.testing.MockClock,
) -> None:
    starts: list[float] = []
    up = trio.Event()
    supervisor = Supervisor("root", backoff_factory=fixed_backoff(base=2.0))
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await supervisor.add_child(ChildSpec(id="pair", start=crash_until(starts, 2, up, before_ready=True)))
            assert trio.current_time() == 0.0  # add_child did not wait for the backoff
            assert child(supervisor, "pair").state == "restarting"
            assert child(supervisor, "pair").last_error == "ValueError: crash 0"
            await up.wait()
    assert starts == [0.0, 2.0]


async def test_a_command_cut_short_by_shutdown_raises(autojump_clock: trio.testing.MockClock) -> None:
    async def never_ready(ctx: ChildContext) -> None:
        await trio.sleep_forever()

    supervisor = Supervisor("root")
    outcome: list[str] = []

    async def add() -> None:
        with pytest.raises(RuntimeError, match="stopped before the command completed"):
            await supervisor.add_child(ChildSpec(id="slow", start=never_ready, shutdown_budget=0.5))
        outcome.append("refused")

    with trio.fail_after(GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            nursery.start_soon(add)
            await trio.testing.wait_all_tasks_blocked()
            assert child(supervisor, "slow").state == "starting"
            supervisor.shutdown()
    assert outcome == ["refused"]
    assert child(supervisor, "slow").state == "stopped"
    assert trio.current_time() == 0.5
    with pytest.raises(RuntimeError, match="not running"):
        await supervisor.stop_child("slow")


async def test_commands_on_a_supervisor_that_is_not_running(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    supervisor = Supervisor("root")
    await supervisor.add_child(spec(log, "later"))  # registered only; the next run starts it
    assert child(supervisor, "later").state == "stopped"
    for command in (supervisor.start_child, supervisor.stop_child, supervisor.remove_child):
        with pytest.raises(RuntimeError):
            await command("later")
        with pytest.raises(KeyError):
            await command("nobody")
    assert log.events == []
    with trio.fail_after(GUARD):
        async with running(supervisor):
            assert log.texts == ["start later#0"]


# -------------------------------------------------------------------------------------------- snapshot


async def test_snapshot_reports_states_errors_and_retry_times(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    inner = Supervisor("pairs", [spec(log, "peer-1", restart=Restart.TRANSIENT)])
    supervisor = Supervisor(
        "root",
        [spec(log, "writer"), inner.child_spec()],
        strategy=Strategy.ONE_FOR_ONE,
        backoff_factory=fixed_backoff(base=2.0),
    )
    assert supervisor.snapshot().state == "stopped"
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await trio.sleep(3.0)
            await supervisor.send("writer", "crash")
            await trio.testing.wait_all_tasks_blocked()
            supervisor.pause("pairs")
            snapshot = supervisor.snapshot()
            assert snapshot == SupervisorSnapshot(
                id="root",
                strategy="one_for_one",
                state="running",
                children=[
                    ChildSnapshot(
                        id="writer",
                        state="restarting",
                        restarts=1,
                        last_error="ValueError: writer crashed",
                        next_retry_at=5.0,  # crashed at 3.0, backoff 2.0
                        restart="permanent",
                        paused=False,
                        children=None,
                    ),
                    ChildSnapshot(
                        id="pairs",
                        state="paused",
                        restarts=0,
                        last_error=None,
                        next_retry_at=None,
                        restart="permanent",
                        paused=True,
                        children=SupervisorSnapshot(
                            id="pairs",
                            strategy="one_for_one",
                            state="running",
                            children=[
                                ChildSnapshot(
                                    id="peer-1",
                                    state="running",
                                    restarts=0,
                                    last_error=None,
                                    next_retry_at=None,
                                    restart="transient",
                                    paused=False,
                                    children=None,
                                )
                            ],
                        ),
                    ),
                ],
            )
            decoded = msgspec.json.decode(msgspec.json.encode(snapshot), type=SupervisorSnapshot)
            assert decoded.children[1].children == snapshot.children[1].children
            await log.wait_for("start writer#1")
            assert log.time_of("start writer#1") == 5.0
            assert child(supervisor, "writer").state == "running"
            assert child(supervisor, "writer").next_retry_at is None
    # The nested supervisor was stopped through its stop_requested, gracefully.
    assert log.texts[-4:] == ["stop peer-1#0", "end peer-1#0", "stop writer#1", "end writer#1"]
    assert inner.snapshot().state == "stopped"


# ------------------------------------------------------------------------------------ essential children


def crashing(log: Log, *, before_ready: bool = False, while_set: trio.Event | None = None) -> Start:
    """A child that crashes on every start (or only until ``while_set`` is set), logging each start."""

    async def start(ctx: ChildContext) -> None:
        log(f"start {ctx.child_id}#{ctx.incarnation}")
        if while_set is not None and while_set.is_set():
            ctx.started()
            await trio.sleep_forever()
        if not before_ready:
            ctx.started()
        raise ValueError(f"boom {ctx.incarnation}")

    return start


async def test_a_non_essential_child_over_its_intensity_is_left_down(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    supervisor = Supervisor(
        "root",
        [spec(log, "steady"), ChildSpec(id="optional", start=crashing(log), essential=False)],
        max_restarts=3,
        period=10.0,
        backoff_factory=fixed_backoff(),
    )
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await log.wait_for("start optional#3")
            await trio.testing.wait_all_tasks_blocked()
            # Restarts at 0.1, 0.3 and 0.7; the fourth crash, at 0.7, went over: only that child stays down.
            assert supervisor.left_down() == [LeftDown("optional", 3, 10.0, "ValueError: boom 3")]
            assert supervisor.snapshot().state == "running"
            assert [(c.id, c.state, c.last_error) for c in supervisor.snapshot().children] == [
                ("steady", "running", None),
                ("optional", "failed", "ValueError: boom 3"),
            ]
            await supervisor.send("steady", "still here")
            await log.wait_for("steady#0 got still here")
            await trio.sleep(100.0)  # nothing restarts it later either
            assert log.texts.count("start optional#4") == 0
    assert log.texts[-2:] == ["stop steady#0", "end steady#0"]
    assert supervisor.snapshot().state == "stopped"  # a normal stop: run() did not raise SupervisorGaveUp


async def test_non_essential_restarts_do_not_use_up_the_essential_window(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    supervisor = Supervisor(
        "root",
        [spec(log, "writer"), ChildSpec(id="optional", start=crashing(log), essential=False)],
        max_restarts=2,
        period=10.0,
        backoff_factory=fixed_backoff(),
    )
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await log.wait_for("start optional#2")  # two restarts of the optional child: its window is full
            for incarnation in range(2):  # two restarts of the writer: the shared window is full, not over
                await supervisor.send("writer", "crash")
                await log.wait_for(f"start writer#{incarnation + 1}")
            await trio.testing.wait_all_tasks_blocked()
            assert child(supervisor, "writer").state == "running"
            assert [down.child_id for down in supervisor.left_down()] == ["optional"]
    assert supervisor.snapshot().state == "stopped"


async def test_an_essential_child_still_makes_the_supervisor_give_up(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    supervisor = Supervisor(
        "root",
        [ChildSpec(id="optional", start=crashing(log), essential=False), ChildSpec(id="writer", start=crashing(log))],
        max_restarts=1,
        backoff_factory=fixed_backoff(),
    )
    with trio.fail_after(GUARD):
        with pytest.raises(SupervisorGaveUp) as caught:
            await supervisor.run()
    assert caught.value.child_id == "writer"


async def test_a_non_essential_child_failing_at_start_lets_the_rest_start(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = Log()
    supervisor = Supervisor(
        "root",
        [ChildSpec(id="optional", start=crashing(log, before_ready=True), essential=False), spec(log, "server")],
        max_restarts=2,
        backoff_factory=fixed_backoff(),
    )
    with trio.fail_after(GUARD):
        async with running(supervisor):  # nursery.start returned: the supervisor reported itself started
            assert log.texts == ["start optional#0", "start optional#1", "start optional#2", "start server#0"]
            assert child(supervisor, "server").state == "running"
            assert child(supervisor, "optional").state == "failed"
            assert supervisor.left_down() == [LeftDown("optional", 2, 30.0, "ValueError: boom 2")]


async def test_start_child_brings_a_left_down_child_back(autojump_clock: trio.testing.MockClock) -> None:
    log = Log()
    fixed = trio.Event()
    supervisor = Supervisor(
        "root",
        [ChildSpec(id="optional", start=crashing(log, while_set=fixed), essential=False)],
        max_restarts=1,
        backoff_factory=fixed_backoff(),
    )
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await log.wait_for("start optional#1")
            await trio.testing.wait_all_tasks_blocked()
            assert [down.child_id for down in supervisor.left_down()] == ["optional"]
            fixed.set()  # the operator fixed the cause
            await supervisor.start_child("optional")
            assert supervisor.left_down() == []
            assert child(supervisor, "optional").state == "running"


# ------------------------------------------------------------------------------------------------ the log


async def test_every_restart_is_a_warning_naming_the_child_and_the_error(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log()
    supervisor = Supervisor("root", [spec(log, "worker")], backoff_factory=fixed_backoff())
    caplog.set_level("INFO", logger="spl.supervisor")
    with trio.fail_after(GUARD):
        async with running(supervisor):
            await supervisor.send("worker", "crash")
            await log.wait_for("start worker#1")
    restarts = [r for r in caplog.records if "restarting" in r.getMessage()]
    assert [(r.levelname, r.getMessage()) for r in restarts] == [
        ("WARNING", "supervisor 'root': child 'worker' ended: ValueError: worker crashed; restarting in 0.10 s")
    ]
    assert (restarts[0].child, restarts[0].error) == ("worker", "ValueError: worker crashed")  # type: ignore[attr-defined]


async def test_a_child_cancelled_at_its_shutdown_budget_is_a_warning(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    async def stubborn(ctx: ChildContext) -> None:
        ctx.started()
        await trio.sleep_forever()  # ignores stop_requested

    log = Log()
    supervisor = Supervisor(
        "root", [spec(log, "polite"), ChildSpec(id="stubborn", start=stubborn, shutdown_budget=1.5)]
    )
    with trio.fail_after(GUARD):
        async with running(supervisor):
            pass
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "supervisor 'root': child 'stubborn' did not stop within its 1.5 s shutdown budget; cancelling it"
    ]
