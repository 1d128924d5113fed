"""A graceful stop as a sequence of named phases, each with its own time budget.

Why phases: a stop that only walks the supervision tree in reverse gives every child its own budget one after
the other, so the worst case is their sum (34 s once, more than systemd's ``TimeoutStopSec``) and nobody can
tell from the log which part was slow. A ``ShutdownPlan`` names the phases ("stop accepting", "end streams", …),
says which children each one stops and how long each child may take, and refuses a plan whose phases add up to
more than its limit. ``ShutdownTimeline`` runs the phases: it logs each one at INFO when it starts, cuts it at
its budget, and logs a WARNING when it overran, so a slow stop names its culprit.

The child budgets come from the plan (``ShutdownPlan.child_budget``): the same numbers bound a phase and the
supervisor's hard cancel of the children it stops. All timing is trio's clock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import trio

__all__ = ["Phase", "PhaseReport", "ShutdownPlan", "ShutdownTimeline"]

log = logging.getLogger("spl.shutdown")


@dataclass(frozen=True)
class Phase:
    """One named step of a stop.

    Attributes:
        name: What the step does, as operators read it in the log and in systemd's status line.
        budget: Seconds the whole step may take.
        children: The supervised children this step stops, in order, each with its own shutdown budget
            (seconds between its ``stop_requested`` and the hard cancel). They stop one after the other, so
            their budgets must fit in the phase's.
    """

    name: str
    budget: float
    children: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        if self.budget <= 0:
            raise ValueError(f"shutdown phase {self.name!r}: the budget must be positive")
        if any(budget < 0 for _, budget in self.children):
            raise ValueError(f"shutdown phase {self.name!r}: a child budget is negative")
        needed = sum(budget for _, budget in self.children)
        if needed > self.budget:
            raise ValueError(
                f"shutdown phase {self.name!r}: its children need {needed:g} s, more than its {self.budget:g} s budget"
            )

    @property
    def child_ids(self) -> tuple[str, ...]:
        return tuple(child for child, _ in self.children)


@dataclass(frozen=True)
class ShutdownPlan:
    """The phases of a stop, in order, whose budgets add up to at most ``limit`` seconds.

    Raises:
        ValueError: The phases need more than ``limit`` seconds, two share a name, or a child is stopped twice.
    """

    phases: tuple[Phase, ...]
    limit: float

    def __post_init__(self) -> None:
        names = [phase.name for phase in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"shutdown phases must have distinct names: {names}")
        children = [child for phase in self.phases for child in phase.child_ids]
        if len(set(children)) != len(children):
            raise ValueError(f"a child may be stopped by one phase only: {children}")
        if self.total > self.limit:
            raise ValueError(f"the shutdown phases need {self.total:g} s, more than the {self.limit:g} s limit")

    @property
    def total(self) -> float:
        """The worst case of a stop: every phase using its whole budget."""
        return sum(phase.budget for phase in self.phases)

    @property
    def child_ids(self) -> tuple[str, ...]:
        """Every child the plan stops, in the order it stops them."""
        return tuple(child for phase in self.phases for child in phase.child_ids)

    def phase(self, name: str) -> Phase:
        """The phase called ``name``.

        Raises:
            KeyError: The plan has no such phase.
        """
        for phase in self.phases:
            if phase.name == name:
                return phase
        raise KeyError(f"the shutdown plan has no phase {name!r}")

    def child_budget(self, child_id: str) -> float:
        """The shutdown budget the plan gives ``child_id`` (for its ``ChildSpec``).

        Raises:
            KeyError: No phase stops this child.
        """
        for phase in self.phases:
            for child, budget in phase.children:
                if child == child_id:
                    return budget
        raise KeyError(f"no shutdown phase stops child {child_id!r}")


@dataclass(frozen=True)
class PhaseReport:
    """How one phase went: its name, its budget, the seconds it took, and whether it was cut at its budget."""

    name: str
    budget: float
    elapsed: float
    cut: bool

    @property
    def overran(self) -> bool:
        return self.cut or self.elapsed > self.budget


@dataclass
class ShutdownTimeline:
    """Runs the phases of ``plan`` one ``with timeline.phase(name):`` block at a time.

    Args:
        plan: The phases and their budgets.
        on_phase: Told each phase's name as it starts (the daemon sends it to systemd as ``STATUS=``).
    """

    plan: ShutdownPlan
    on_phase: Callable[[str], object] = lambda name: None
    reports: list[PhaseReport] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Run the body as phase ``name``: logged at INFO, cancelled at its budget, a WARNING if it overran.

        The body may also be synchronous work (closing files): it cannot be cut then, but it is still timed.
        """
        phase = self.plan.phase(name)
        number = self.plan.phases.index(phase) + 1
        log.info(
            "shutdown phase %d/%d %r (budget %g s)",
            number,
            len(self.plan.phases),
            name,
            phase.budget,
            extra={"phase": name, "budget": phase.budget},
        )
        self.on_phase(name)
        began = trio.current_time()
        with trio.move_on_after(phase.budget) as scope:
            yield
        report = PhaseReport(name, phase.budget, trio.current_time() - began, scope.cancelled_caught)
        self.reports.append(report)
        if report.overran:
            log.warning(
                "shutdown phase %r overran its %g s budget (%.2f s%s); going on with the next one",
                name,
                phase.budget,
                report.elapsed,
                ", cut" if report.cut else "",
                extra={"phase": name, "budget": phase.budget, "elapsed": round(report.elapsed, 3)},
            )

    def names(self) -> Sequence[str]:
        """The phases run so far, in order."""
        return [report.name for report in self.reports]
