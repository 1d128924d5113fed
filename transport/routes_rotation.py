"""Identity rotation routes (issue 14): placeholder blueprint, registered in transport/app.py."""

from __future__ import annotations

from quart import Blueprint

__all__ = ["blueprint"]

blueprint = Blueprint("rotation", __name__)
