"""Canonical JSON: the byte string every record id and signature is computed over.

Spec §2.3. Values are normalised first (integral floats become exact integers, keys are
sorted by code point, NaN/Infinity are refused), then serialised with the standard
library's ``json`` without whitespace and without ASCII escaping. ``msgspec`` is *not*
used here on purpose: its float and key-order output differ from the SDK's for values
such as ``1e21`` and ``1e-7`` (design/runtime.md, pitfalls).
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["CanonicalError", "canonical_json", "normalize"]


class CanonicalError(ValueError):
    """A value that has no canonical JSON form (NaN, Infinity, a non-JSON type)."""


def normalize(value: Any) -> Any:
    """Return ``value`` in canonical shape: integral floats as ints, dict keys sorted."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise CanonicalError("NaN and Infinity have no JSON form")
        if value.is_integer():
            return int(value)
        return value
    if isinstance(value, list | tuple):
        return [normalize(item) for item in value]
    if isinstance(value, dict):
        normalized: dict[str, Any] = {}
        for key in sorted(value):
            if not isinstance(key, str):
                raise CanonicalError(f"object keys must be strings, got {type(key).__name__}")
            normalized[key] = normalize(value[key])
        return normalized
    raise CanonicalError(f"{type(value).__name__} is not a JSON value")


def canonical_json(value: Any) -> bytes:
    """The canonical UTF-8 bytes of ``value`` (spec §2.3, vectors in §2.6)."""
    text = json.dumps(
        normalize(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )
    return text.encode("utf-8")
