"""Task routes (``/v1/tasks``) and thread-id minting: STUB — filled in by issue 12's task work."""

from __future__ import annotations

from quart import Blueprint

__all__ = ["blueprint"]

blueprint = Blueprint("tasks", __name__)
