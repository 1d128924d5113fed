"""Which commits nudge the joiner (``spl.actors.writer.may_close_or_fork``): closes, forks, and a thaw."""

from __future__ import annotations

import json

import pytest

from spl.actors.writer import may_close_or_fork
from spl.core import fleet_control


@pytest.mark.parametrize(
    ("body", "nudges"),
    [
        ({"fulfills": "a" * 64}, True),
        ({"cancels": "a" * 64}, True),
        ({"verdict": "reject"}, True),
        ({"task_event": "fail"}, True),
        ({"sub_thread": "th_child"}, True),
        ({"join": "all"}, True),
        ({"kind": fleet_control.UNFREEZE_KIND, "_v": 1, "reason": "done"}, True),  # held closes resume at once
        ({"kind": fleet_control.FREEZE_KIND, "_v": 1, "level": "hard", "reason": "x"}, False),
        ({"summary": "an ordinary observation"}, False),
        ({}, False),
    ],
)
def test_the_joiner_is_nudged_by_what_can_close_or_fork_a_thread_or_lift_a_freeze(
    body: dict[str, object], nudges: bool
) -> None:
    stored = json.dumps({"act": "KNOW", "thread": "th_x", "body": body, "sequence": 1})
    assert may_close_or_fork(stored) is nudges
