"""Routes of issue 13/14 (discovery): placeholder blueprint, registered in transport/app.py."""

from __future__ import annotations

from quart import Blueprint

__all__ = ["blueprint"]

blueprint = Blueprint("discovery", __name__)
