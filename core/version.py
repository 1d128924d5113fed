"""spl's version, alone in a module: ``spl --version`` reads it without importing signing or wire code."""

from __future__ import annotations

__all__ = ["VERSION"]

VERSION = "0.1.0"
