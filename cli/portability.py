"""``spl export`` and ``spl import``: move a whole instance, identity included (spec §9, issue 11)."""

from __future__ import annotations

__all__: list[str] = []
