"""``spl kill`` / ``spl unkill``: STUB — filled in by issue 12's kill-switch work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["COMMANDS"]

COMMANDS: tuple[Callable[..., Any], ...] = ()
