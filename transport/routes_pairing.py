"""Routes of issue 13/14 (pairing): placeholder blueprint, registered in transport/app.py."""

from __future__ import annotations

from quart import Blueprint

__all__ = ["blueprint"]

blueprint = Blueprint("pairing", __name__)
