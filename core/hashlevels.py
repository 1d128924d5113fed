"""Hash levels L0–L3 of a record: what a redacted projection may say about the record it stands for.

Spec §2.12 (the SDK's algorithm) with §15.17 (L1 includes the domain ``d``). Each level is the
SHA-256 hex of the canonical JSON (§2.3) of a smaller object, so a coarser level reveals less:

====  ============================================  =============================================
L0    ``{"in", "op", "out", "p", "params"}``         everything: the exact body; never leaves its
                                                     namespace without a grant that lists L0
L1    ``{"d", "in", "op", "out", "p"}``              structure: domain, operation, shapes, act
L2    ``{"in", "out", "p"}``                         flow: shapes and act
L3    ``{"in", "out"}``                              intent: shapes only
====  ============================================  =============================================

``p`` is the record's act; ``d`` is ``body.domain`` (default ``""``); ``op`` is ``body.operation``
(default: the act in lowercase); ``in``/``out`` are ``body.input_shape``/``body.output_shape``
(default ``"VOID"``); ``params`` is every body key except ``operation``, ``input_shape`` and
``output_shape`` (so it holds ``domain``, ``kind``, ``namespace``…). Values are taken as they are,
whatever their type, exactly as the SDK does (``syncropel.hashing.hash_levels``), so a receiver
holding the original can check a projection's levels with the SDK. The tests compare the two
over random bodies.

The canonical form is :func:`spl.core.canonical.canonical_json`, byte-identical to the SDK's for
every JSON value (its property tests). A record body that passed validation always has levels:
each level object nests its values exactly as deep as the body does.

Pure: no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from spl.core.canonical import canonical_json

__all__ = ["LEVEL_NAMES", "hash_levels"]

LEVEL_NAMES = ("L0", "L1", "L2", "L3")
_NOT_PARAMS = frozenset({"operation", "input_shape", "output_shape"})


def _sha256(value: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()


def hash_levels(act: str, body: Mapping[str, Any]) -> dict[str, str]:
    """``{"L0": hex, "L1": hex, "L2": hex, "L3": hex}`` for a record of ``act`` with ``body``.

    Raises:
        spl.core.canonical.CanonicalError: a body value without a JSON form (never for a
            validated record's body).
    """
    domain = body.get("domain", "")
    operation = body.get("operation", act.lower())
    shape_in = body.get("input_shape", "VOID")
    shape_out = body.get("output_shape", "VOID")
    params = {key: value for key, value in body.items() if key not in _NOT_PARAMS}
    return {
        "L0": _sha256({"in": shape_in, "op": operation, "out": shape_out, "p": act, "params": params}),
        "L1": _sha256({"d": domain, "in": shape_in, "op": operation, "out": shape_out, "p": act}),
        "L2": _sha256({"in": shape_in, "out": shape_out, "p": act}),
        "L3": _sha256({"in": shape_in, "out": shape_out}),
    }
