"""Supervisors: start, restart, pause and stop actors (design/runtime.md, "Supervisor semantics").

The model, in the words of Erlang/OTP:

- A supervisor runs its children (``ChildSpec``) in one nursery it owns. Each start of a child is an
  *incarnation*: a task with its own cancel scope and ``ChildContext``. Inbox and pause gate (``Mailbox``) belong to
  the supervisor and outlive incarnations, so no queued message is lost across a restart.
- One controller task (the body of ``run``) makes every decision, one job at a time: an incarnation ended, a
  backoff timer fired, an operator command (add/stop/start/remove). Decisions are therefore never interleaved.
- Children start in order, each once the previous one called ``ctx.started()``, and stop in reverse order, each
  within its shutdown budget (``stop_requested``, then the hard cancel).
- When an incarnation ends, the restart policy (permanent/transient/temporary) decides whether it comes back,
  the strategy decides which children come back with it, and the crashed child's ``Backoff`` decides when. A
  backoff wait is a timer task; the controller stays free meanwhile.
- More than ``max_restarts`` restarts within ``period`` seconds make the supervisor give up: it stops the rest
  and ``run`` raises ``SupervisorGaveUp`` to its parent. That window is shared by the *essential* children (the
  default). A child declared ``essential=False`` is one the supervisor can do without: it gets a window of its own,
  and going over it leaves only that child down (state "failed", listed by ``left_down()``) while the others keep
  running; its restarts never count against the shared window. A daemon uses this so that one failing optional
  service (federation, say) does not take down the process that still serves everything else.

Only ``Exception`` is a crash; ``trio.Cancelled``, ``KeyboardInterrupt`` and ``SystemExit`` pass through. All timing
uses trio's clock, so the schedule is exact under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import collections
import enum
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Sequence

import trio

from spl.runtime.backoff import Backoff
from spl.runtime.child import (
    EXITED,
    FAILED,
    RESTARTING,
    RUNNING,
    STARTING,
    STOPPED,
    ChildContext,
    ChildRecord,
    ChildSpec,
    Incarnation,
    LeftDown,
    PendingRestart,
    Restart,
    describe,
)
from spl.runtime.snapshot import ChildSnapshot, SupervisorSnapshot

log = logging.getLogger("spl.supervisor")

__all__ = [
    "ChildContext",
    "ChildSnapshot",
    "ChildSpec",
    "LeftDown",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorGaveUp",
    "SupervisorSnapshot",
]


class Strategy(enum.StrEnum):
    """Which children are restarted together with the one that ended."""

    ONE_FOR_ONE = "one_for_one"  # only that child
    ONE_FOR_ALL = "one_for_all"  # every active child
    REST_FOR_ONE = "rest_for_one"  # that child and the active children started after it


class SupervisorGaveUp(Exception):
    """Restart intensity exceeded: more than ``max_restarts`` restarts within ``period`` seconds.

    Attributes:
        supervisor_id: The supervisor that gave up.
        child_id: The child whose exit went over the limit.
        last_error: How that child's last incarnation ended.
    """

    def __init__(self, supervisor_id: str, child_id: str, last_error: str) -> None:
        super().__init__(
            f"supervisor {supervisor_id!r} gave up: child {child_id!r} went over the restart intensity "
            f"(last error: {last_error})"
        )
        self.supervisor_id = supervisor_id
        self.child_id = child_id
        self.last_error = last_error


class _Job:
    """One decision for the controller; operator commands wait for ``done`` and get ``error`` back."""

    def __init__(self, action: Callable[[], Awaitable[None]], *, reply: bool = False) -> None:
        self.action = action
        self.reply = reply
        self.done = trio.Event()
        self.error: BaseException | None = None

    def finish(self, error: BaseException | None) -> None:
        self.error = error
        self.done.set()


class _ReadySignal:
    """A ``trio.TaskStatus`` that reports a nested supervisor's start-up to its parent's ``ChildContext``."""

    def __init__(self, context: ChildContext) -> None:
        self._context = context

    def started(self, value: object = None) -> None:
        self._context.started()


class Supervisor:
    """Runs children under a restart strategy, with backoff and a restart intensity limit.

    Args:
        id: Name in snapshots and errors.
        children: Started in this order by ``run``.
        strategy: Which children restart together (see ``Strategy``).
        max_restarts: Restarts allowed within ``period`` seconds before the supervisor gives up.
        period: The intensity window, in seconds of trio time.
        backoff_factory: Makes one ``Backoff`` per child; inject seeded ones for repeatable tests.
    """

    def __init__(
        self,
        id: str,
        children: Sequence[ChildSpec] = (),
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 5,
        period: float = 30.0,
        backoff_factory: Callable[[], Backoff] = Backoff,
    ) -> None:
        if max_restarts < 0 or period <= 0:
            raise ValueError("max_restarts must not be negative and period must be positive")
        self.id = id
        self.strategy = Strategy(strategy)
        self.max_restarts = max_restarts
        self.period = period
        self._backoff_factory = backoff_factory
        self._children: list[ChildRecord] = []
        for spec in children:
            self._register(spec)
        self._state = STOPPED
        self._nursery: trio.Nursery | None = None
        self._jobs: trio.MemorySendChannel[_Job] | None = None
        self._control_scope: trio.CancelScope | None = None
        self._shutdown_requested = False
        self._restart_times: collections.deque[float] = collections.deque()

    # ----------------------------------------------------------------------------------------- life cycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the children in order, supervise them until ``shutdown()``, then stop them in reverse order.

        ``task_status.started()`` is reported once every child has been ready at least once (or ended for
        good). A shutdown during start-up still reports it just before returning, so that a parent's
        ``nursery.start`` returns instead of failing. A finished run may be started again (a nested supervisor
        restarted by its parent).

        Cancelling ``run`` from outside is the hard stop: every child is cancelled at once, without its budget.

        Raises:
            SupervisorGaveUp: Restart intensity exceeded; raised after the remaining children were stopped.
            RuntimeError: The supervisor is already running.
        """
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.id!r} is already running")
        self._restart_times.clear()
        for child in self._children:
            child.ever_ready, child.rest_state = False, STARTING
            child.restart_times.clear()
            child.left_down = None
        self._state = STARTING
        gave_up: SupervisorGaveUp | None = None
        announced = False
        send, receive = trio.open_memory_channel[_Job](math.inf)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery, self._jobs = nursery, send
                send.send_nowait(_Job(functools.partial(self._start_in_order, list(self._children))))
                try:
                    await self._control(receive, task_status)
                except SupervisorGaveUp as exc:
                    gave_up = exc
                announced = self._state != STARTING
                self._refuse_jobs(send, receive)
                await self._stop_all()
                nursery.cancel_scope.cancel()  # what is left are backoff timers
        finally:
            self._forget_incarnations()
            self._nursery = self._jobs = self._control_scope = None
            self._shutdown_requested = False
            self._state = FAILED if gave_up is not None else STOPPED
        if gave_up is not None:
            raise gave_up
        if not announced:
            task_status.started()

    def _forget_incarnations(self) -> None:
        """After a run that ended without stopping its children (cancelled from outside), mark them stopped."""
        for child in self._children:
            if child.active:
                child.current = child.pending = child.next_retry_at = None
                child.rest_state = STOPPED

    def shutdown(self) -> None:
        """Begin the graceful stop of the whole tree; ``run`` returns when it is done.

        Idempotent and synchronous, so signal handlers and other actors can call it. Called before ``run``, it
        makes the next ``run`` return at once.
        """
        self._shutdown_requested = True
        if self._control_scope is not None:
            self._control_scope.cancel()

    async def _control(self, jobs: trio.MemoryReceiveChannel[_Job], task_status: trio.TaskStatus[None]) -> None:
        """Run the decisions one by one until ``shutdown()`` cancels this loop."""
        with trio.CancelScope() as self._control_scope:
            if self._shutdown_requested:
                return
            async for job in jobs:
                await self._run_job(job)
                if self._state == STARTING and all(c.ever_ready or not c.active for c in self._children):
                    self._state = RUNNING
                    task_status.started()

    async def _run_job(self, job: _Job) -> None:
        """Run one job and hand its outcome to whoever waits for it."""
        try:
            await job.action()
        except SupervisorGaveUp as exc:
            job.finish(exc)
            raise
        except Exception as exc:
            if not job.reply:
                raise  # a bug in the supervisor itself: let it crash loudly
            job.finish(exc)  # an operator's mistake (unknown id, ...) belongs to the operator
        except BaseException:
            job.finish(RuntimeError(f"supervisor {self.id!r} stopped before the command completed"))
            raise
        else:
            job.finish(None)

    def _post(self, job: _Job) -> None:
        if self._jobs is not None:  # otherwise the run is over and there is nothing left to decide
            self._jobs.send_nowait(job)

    def _refuse_jobs(self, send: trio.MemorySendChannel[_Job], receive: trio.MemoryReceiveChannel[_Job]) -> None:
        """Close the job queue and fail the commands still waiting in it."""
        self._jobs = None
        send.close()
        while True:
            try:
                job = receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            job.finish(RuntimeError(f"supervisor {self.id!r} stopped before the command ran"))
        receive.close()

    # ---------------------------------------------------------------------------------------- incarnations

    def _spawn(self, child: ChildRecord) -> Incarnation:
        """Start a new incarnation of ``child`` in the supervisor's nursery."""
        assert self._nursery is not None
        incarnation = Incarnation(child, child.starts)
        child.starts += 1
        child.left_down = None  # started again (``start_child``): no longer given up on
        child.current, child.pending, child.next_retry_at = incarnation, None, None
        name = f"{self.id}/{child.spec.id}#{incarnation.context.incarnation}"
        self._nursery.start_soon(self._run_incarnation, incarnation, name=name)
        return incarnation

    async def _run_incarnation(self, incarnation: Incarnation) -> None:
        """Run one incarnation and report its end to the controller.

        Only ``Exception`` is a crash. An exception group of ``Exception``s (a child's own nursery failing) is an
        ``Exception`` too; a group holding ``Cancelled`` or ``KeyboardInterrupt`` is not and passes through.
        """
        child = incarnation.child
        try:
            with incarnation.cancel_scope:
                await child.spec.start(incarnation.context)
        except Exception as exc:
            incarnation.crashed = True
            incarnation.error = child.last_error = describe(exc)
        finally:
            incarnation.done.set()
            incarnation.settled.set()
        self._post(_Job(functools.partial(self._on_exit, incarnation)))

    async def _bring_up(self, child: ChildRecord) -> Incarnation:
        """Start ``child`` and wait until it is ready or has already ended."""
        incarnation = self._spawn(child)
        await incarnation.settled.wait()
        if not incarnation.ready:
            child.current = None  # handled by the start sequence, not by its exit job
        return incarnation

    async def _start_in_order(self, group: Sequence[ChildRecord]) -> None:
        """Start ``group`` one child after the other, each once the previous one is ready.

        A child that ends before it is ready is restarted in place under its policy: it and the rest of the
        group wait for its backoff, so the order holds. One that is not restarted is skipped.
        """
        for position, child in enumerate(group):
            if child.current is not None:
                continue
            incarnation = await self._bring_up(child)
            if incarnation.ready or not self._wants_restart(child, incarnation):
                continue
            if not self._count_restart(child, incarnation):
                continue  # a non-essential child left down: the rest of the group starts without it
            delay = self._delay_for(child, incarnation)
            self._log_restart(child, incarnation, delay, before_ready=True)
            self._schedule_restart(group[position:], delay)
            return

    # -------------------------------------------------------------------------------------------- restarts

    async def _on_exit(self, incarnation: Incarnation) -> None:
        """Decide what follows the end of a ready incarnation: nothing, or a restart of its group."""
        child = incarnation.child
        if child.current is not incarnation:
            return  # stopped on purpose, superseded, or already handled by the start sequence
        child.current = None
        if not self._wants_restart(child, incarnation):
            return
        if not self._count_restart(child, incarnation):
            return  # a non-essential child left down; its siblings are not disturbed
        delay = self._delay_for(child, incarnation)  # before the stops below, which take time
        self._log_restart(child, incarnation, delay, before_ready=False)
        group = self._restart_group(child)
        for other in reversed(group):
            if other is not child:
                await self._stop(other)
                other.rest_state = RESTARTING
        self._schedule_restart(group, delay)

    def _log_restart(self, child: ChildRecord, incarnation: Incarnation, delay: float, *, before_ready: bool) -> None:
        """One WARNING per restart, naming the child and how it ended: a restart is news to an operator."""
        how = incarnation.error or f"returned (restart={child.spec.restart.value})"
        log.warning(
            "supervisor %r: child %r %s: %s; restarting in %.2f s",
            self.id,
            child.spec.id,
            "failed to start" if before_ready else "ended",
            how,
            delay,
            extra={"supervisor": self.id, "child": child.spec.id, "error": how, "delay": round(delay, 3)},
        )

    def _wants_restart(self, child: ChildRecord, incarnation: Incarnation) -> bool:
        """Apply the restart policy; a child that stays down gets its final state here."""
        if child.spec.restart.wants_restart(incarnation.crashed):
            return True
        child.rest_state = FAILED if incarnation.crashed else EXITED
        return False

    def _count_restart(self, child: ChildRecord, incarnation: Incarnation) -> bool:
        """Record a restart against the intensity limit; return whether the child may be restarted.

        An essential child counts in the supervisor's shared window, a non-essential one in its own. Going over
        a non-essential child's window returns False: the child stays down (state "failed") and is listed by
        ``left_down()``.

        Raises:
            SupervisorGaveUp: An essential child's exit is restart number ``max_restarts + 1`` within the last
                ``period`` seconds.
        """
        now = trio.current_time()
        window = self._restart_times if child.spec.essential else child.restart_times
        window.append(now)
        while now - window[0] >= self.period:
            window.popleft()
        if len(window) <= self.max_restarts:
            return True
        last_error = incarnation.error or "returned (restart=permanent)"
        child.rest_state = FAILED
        if child.spec.essential:
            raise SupervisorGaveUp(self.id, child.spec.id, last_error)
        left_down = child.left_down = LeftDown(child.spec.id, len(window) - 1, self.period, last_error)
        window.clear()  # a later ``start_child`` begins with a fresh window
        log.error(
            "supervisor %r left child %r down after %d restarts in %g s (last error: %s); the others keep running",
            self.id,
            left_down.child_id,
            left_down.restarts,
            left_down.period,
            last_error,
        )
        return False

    def _restart_group(self, child: ChildRecord) -> list[ChildRecord]:
        """The children the strategy restarts together with ``child``, in start order."""
        if self.strategy is Strategy.ONE_FOR_ONE:
            return [child]
        position = self._children.index(child)
        candidates = self._children if self.strategy is Strategy.ONE_FOR_ALL else self._children[position:]
        return [c for c in candidates if c is child or c.active]

    @staticmethod
    def _delay_for(child: ChildRecord, incarnation: Incarnation) -> float:
        """The next backoff delay of ``child``; a long enough run first resets its schedule."""
        child.backoff.note_quiet(trio.current_time() - incarnation.began_at)
        return child.backoff.next_delay()

    def _schedule_restart(self, group: Sequence[ChildRecord], delay: float) -> None:
        """Mark ``group`` as restarting and start it again, in order, after ``delay`` seconds.

        A child that was never started (it waits behind one that failed before it was ready) is "starting", not
        restarting, and its restart count stays as it is.
        """
        assert self._nursery is not None
        pending = PendingRestart(group)
        retry_at = trio.current_time() + delay
        for child in group:
            if child.pending is None and child.starts > 0:
                child.restarts += 1
            child.rest_state = RESTARTING if child.starts > 0 else STARTING
            child.pending, child.next_retry_at = pending, retry_at
        self._nursery.start_soon(self._restart_after, pending, delay)

    async def _restart_after(self, pending: PendingRestart, delay: float) -> None:
        await trio.sleep(delay)
        self._post(_Job(functools.partial(self._start_pending, pending)))

    async def _start_pending(self, pending: PendingRestart) -> None:
        """Start the children still waiting on ``pending`` (not stopped, removed or rescheduled meanwhile)."""
        await self._start_in_order([c for c in pending.group if c.pending is pending])

    # ----------------------------------------------------------------------------------------------- stops

    async def _stop(self, child: ChildRecord) -> None:
        """Stop the live incarnation of ``child``, if any: ``stop_requested``, its budget, then the hard cancel.

        Shielded: a stop that began finishes within its budget even when the supervisor is shutting down, so
        the child always gets its graceful chance.
        """
        incarnation = child.current
        if incarnation is None:
            return
        incarnation.context.request_stop()
        with trio.CancelScope(shield=True):
            with trio.move_on_after(child.spec.shutdown_budget) as budget:
                await incarnation.done.wait()
            if budget.cancelled_caught:
                log.warning(
                    "supervisor %r: child %r did not stop within its %g s shutdown budget; cancelling it",
                    self.id,
                    child.spec.id,
                    child.spec.shutdown_budget,
                    extra={"supervisor": self.id, "child": child.spec.id},
                )
            incarnation.cancel_scope.cancel()
            await incarnation.done.wait()
        child.current = None

    async def _retire(self, child: ChildRecord) -> None:
        """Stop ``child`` and cancel any restart it was waiting for; it stays down."""
        child.pending, child.next_retry_at = None, None
        await self._stop(child)
        child.rest_state = STOPPED

    async def _stop_all(self) -> None:
        """Stop the children in reverse start order; those that ended for good keep their state."""
        for child in reversed(self._children):
            if child.state not in (EXITED, FAILED):
                await self._retire(child)

    # ------------------------------------------------------------------------------------------- commands

    def _register(self, spec: ChildSpec) -> ChildRecord:
        if any(c.spec.id == spec.id for c in self._children):
            raise ValueError(f"supervisor {self.id!r} already has a child {spec.id!r}")
        child = ChildRecord(spec, self._backoff_factory())
        self._children.append(child)
        return child

    def _child(self, child_id: str) -> ChildRecord:
        for child in self._children:
            if child.spec.id == child_id:
                return child
        raise KeyError(f"supervisor {self.id!r} has no child {child_id!r}")

    async def _command(self, action: Callable[[], Awaitable[None]]) -> None:
        """Queue ``action`` for the controller and wait for its outcome (its error is raised here).

        Raises:
            RuntimeError: The supervisor is not running.
        """
        job = _Job(action, reply=True)
        if self._jobs is None:
            raise RuntimeError(f"supervisor {self.id!r} is not running")
        self._jobs.send_nowait(job)
        await job.done.wait()
        if job.error is not None:
            raise job.error

    async def add_child(self, spec: ChildSpec) -> None:
        """Add a child after the existing ones and start it at once (per-pair actors, for instance).

        Returns once the child is ready, or once its failed first start has been handed to its backoff. On a
        supervisor that is not running the spec is only registered; the next ``run`` starts it.

        Raises:
            ValueError: The id is taken.
        """
        if self._jobs is None:
            self._register(spec)
            return

        async def add() -> None:
            await self._start_in_order([self._register(spec)])

        await self._command(add)

    async def stop_child(self, child_id: str) -> None:
        """Stop a child gracefully (within its budget) and keep its spec; its state becomes "stopped".

        A restart the child was waiting for is cancelled. Its inbox stays open: messages queue for a later
        ``start_child``.

        Raises:
            KeyError: No such child.
            RuntimeError: The supervisor is not running.
        """
        self._child(child_id)
        await self._command(lambda: self._retire(self._child(child_id)))

    async def start_child(self, child_id: str) -> None:
        """Start a child that is not running (stopped, ended, or waiting for a restart: no more waiting).

        Raises:
            KeyError: No such child.
            RuntimeError: The supervisor is not running.
        """
        self._child(child_id)
        await self._command(lambda: self._start_in_order([self._child(child_id)]))

    async def remove_child(self, child_id: str) -> None:
        """Stop a child, forget its spec and close its inbox (senders get ``trio.ClosedResourceError``).

        Raises:
            KeyError: No such child.
            RuntimeError: The supervisor is not running.
        """
        self._child(child_id)

        async def remove() -> None:
            child = self._child(child_id)
            await self._retire(child)
            self._children.remove(child)
            child.mailbox.close()

        await self._command(remove)

    # ------------------------------------------------------------------------------------ inbox and gate

    def inbox(self, child_id: str) -> trio.MemorySendChannel[object]:
        """The send side of a child's inbox: the same object for every incarnation.

        Raises:
            KeyError: No such child.
            ValueError: The child has no inbox.
        """
        return self._child(child_id).mailbox.send_channel

    async def send(self, child_id: str, message: object) -> None:
        """Queue ``message`` for a child, waiting while its inbox is full (backpressure)."""
        await self.inbox(child_id).send(message)

    def pause(self, child_id: str) -> None:
        """Close the gate in front of a child's inbox: it stays alive, messages queue."""
        self._child(child_id).mailbox.pause()

    def resume(self, child_id: str) -> None:
        """Open the gate again; queued messages are received in order."""
        self._child(child_id).mailbox.resume()

    # -------------------------------------------------------------------------------------------- reading

    def snapshot(self) -> SupervisorSnapshot:
        """The tree as it is now, nested supervisors included."""
        return SupervisorSnapshot(
            id=self.id,
            strategy=self.strategy.value,
            state=self._state,
            children=[self._child_snapshot(c) for c in self._children],
        )

    def left_down(self) -> list[LeftDown]:
        """The non-essential children this supervisor stopped restarting (and not started again since)."""
        return [child.left_down for child in self._children if child.left_down is not None]

    @staticmethod
    def _child_snapshot(child: ChildRecord) -> ChildSnapshot:
        nested = child.spec.supervisor
        return ChildSnapshot(
            id=child.spec.id,
            state=child.state,
            restarts=child.restarts,
            last_error=child.last_error,
            next_retry_at=child.next_retry_at,
            restart=child.spec.restart.value,
            paused=child.mailbox.paused,
            children=nested.snapshot() if nested is not None else None,
        )

    # --------------------------------------------------------------------------------------------- nesting

    def child_spec(self, *, restart: Restart = Restart.PERMANENT, shutdown_budget: float | None = None) -> ChildSpec:
        """A spec that runs this supervisor as a child of another one.

        Args:
            restart: The restart policy of the nested supervisor as a whole.
            shutdown_budget: Defaults to the sum of the current children's budgets (they stop one after the
                other), at least 5 s. Pass it explicitly when children are added later.
        """
        if shutdown_budget is None:
            shutdown_budget = max(5.0, sum(c.spec.shutdown_budget for c in self._children))
        return ChildSpec(
            id=self.id,
            start=self.run_as_child,
            restart=restart,
            shutdown_budget=shutdown_budget,
            supervisor=self,
        )

    async def run_as_child(self, context: ChildContext) -> None:
        """Run as a child: ready when ``run`` is started, graceful stop when ``stop_requested`` is set."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._shutdown_when_set, context.stop_requested)
            await self.run(task_status=_ReadySignal(context))
            nursery.cancel_scope.cancel()

    async def _shutdown_when_set(self, event: trio.Event) -> None:
        await event.wait()
        self.shutdown()
