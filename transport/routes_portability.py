"""Portability routes: ``POST /v1/portability/export`` and ``POST /v1/portability/import`` (spec §9, issue 11)."""

from __future__ import annotations

from quart import Blueprint

__all__ = ["blueprint"]

blueprint = Blueprint("portability", __name__)
