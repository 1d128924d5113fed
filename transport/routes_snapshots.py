"""Thread snapshots: ``GET /v1/threads/snapshot`` and ``POST /v1/threads/restore`` (spec §9, issue 11)."""

from __future__ import annotations

from quart import Blueprint

__all__ = ["blueprint"]

blueprint = Blueprint("snapshots", __name__)
