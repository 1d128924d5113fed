"""Jittered exponential backoff: the delay schedule between restarts and reconnects.

Pure logic, no I/O and no clock: the caller measures time (with trio's clock) and sleeps. The schedule is part of
the contract, because later code (federation pairs: ``base=1``, ``cap=300``) and its tests rely on it with a
seeded ``random.Random`` (design/runtime.md, "Supervisor semantics"):

    d(attempt)      = min(cap, base * factor ** attempt)             # Backoff.peek
    delay(attempt)  = clamp(d * (1 + rng.uniform(-jitter, jitter)), 0, cap)

``next_delay`` draws exactly one ``rng.uniform`` per call, also when ``jitter`` is 0, so that a seeded schedule does
not depend on the jitter setting in how it consumes the generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Jittered exponential backoff with a cap and a reset after a quiet period.

    Attributes:
        base: Seconds; the un-jittered delay of the first attempt.
        factor: Growth per attempt (``>= 1``).
        cap: No delay ever exceeds this, jitter included.
        jitter: Plus/minus fraction of the delay (``0 <= jitter <= 1``); 0 gives a deterministic schedule.
        reset_after: A success or quiet period at least this long resets the attempt count.
        rng: Source of jitter; inject a seeded ``random.Random`` for repeatable schedules.
        attempt: The attempt whose delay ``next_delay`` returns next.
    """

    base: float = 0.1
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.2
    reset_after: float = 60.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def __post_init__(self) -> None:
        if self.base < 0 or self.cap < 0 or self.reset_after < 0:
            raise ValueError("base, cap and reset_after must not be negative")
        if self.factor < 1:
            raise ValueError("factor must be at least 1, or the delays would shrink")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must lie in [0, 1], or a delay could turn negative")

    def peek(self, attempt: int) -> float:
        """Return the un-jittered delay of ``attempt``: ``min(cap, base * factor ** attempt)``.

        Args:
            attempt: Zero-based attempt number.

        Returns:
            The delay in seconds, never above ``cap``. A power too large for a float is the cap as well, so a
            long-failing peer cannot overflow the schedule.
        """
        try:
            raw = self.base * self.factor**attempt
        except OverflowError:
            return self.cap
        return min(self.cap, raw)

    def next_delay(self) -> float:
        """Return the jittered delay of the current attempt, then move on to the next attempt.

        Returns:
            ``clamp(peek(attempt) * (1 + rng.uniform(-jitter, jitter)), 0, cap)`` in seconds. Jitter spreads
            the retries of many children (or pairs) that failed together, so they do not retry in lockstep.
        """
        delay = self.peek(self.attempt) * (1 + self.rng.uniform(-self.jitter, self.jitter))
        self.attempt += 1
        return min(self.cap, max(0.0, delay))

    def reset(self) -> None:
        """Start the schedule again from the first attempt (after a success)."""
        self.attempt = 0

    def note_quiet(self, quiet_for: float) -> None:
        """Reset the schedule when things went well for long enough.

        A child that ran for ``reset_after`` seconds before it failed again is treated as healthy: its next
        delay is the short first one, not the long one its earlier failures had earned.

        Args:
            quiet_for: Seconds since the last failure (or how long the last incarnation ran).
        """
        if quiet_for >= self.reset_after:
            self.reset()
