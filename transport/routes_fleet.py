"""The kill switch routes (``th_fleet_control``): STUB — filled in by issue 12's kill-switch work."""

from __future__ import annotations

from quart import Blueprint

__all__ = ["blueprint"]

blueprint = Blueprint("fleet_control", __name__)
