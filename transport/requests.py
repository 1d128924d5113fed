"""Request parsing helpers shared by the route modules: JSON bodies and query parameters."""

from __future__ import annotations

import json
from typing import Any

from quart import request

from spl.core.canonical import MAX_DEPTH
from spl.core.errors import InvalidRequest, PayloadTooLarge

__all__ = ["int_arg", "json_body"]


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def json_body(limit: int) -> Any:
    """The request body parsed as strict JSON (no NaN/Infinity), or a 400/413 naming the fix.

    Nesting is not limited here: the parser itself stops near the interpreter's recursion
    limit (a 400), and record bodies are held to ``MAX_DEPTH`` levels where they are
    validated (``BODY_TOO_DEEP``), which is also where records from peers pass.
    """
    if request.content_length is not None and request.content_length > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes; send smaller records (serve.max_body_bytes)")
    raw = await request.get_data(cache=False)
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes; send smaller records (serve.max_body_bytes)")
    if not raw.strip():
        raise InvalidRequest("request body is empty; send a JSON object", code="INVALID_JSON")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise InvalidRequest("request body is not UTF-8; send UTF-8 encoded JSON", code="INVALID_JSON") from None
    except RecursionError:
        raise InvalidRequest(
            f"request body nests arrays/objects too deeply to decode; record bodies may nest {MAX_DEPTH} levels",
            code="INVALID_JSON",
        ) from None
    except ValueError as exc:
        raise InvalidRequest(
            f"request body is not valid JSON ({exc}); send a JSON object", code="INVALID_JSON"
        ) from None


MAX_INT = 2**63 - 1  # the largest integer SQLite stores; beyond it a bound parameter overflows


def int_arg(name: str, default: int | None, *, minimum: int = 0, maximum: int | None = None) -> int | None:
    """An integer query parameter, bounded; a 400 naming the parameter when it is not."""
    value = request.args.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"query parameter '{name}' must be an integer", code="INVALID_PARAMETER") from None
    if maximum is None and number > MAX_INT:
        maximum = MAX_INT
    if number < minimum or (maximum is not None and number > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidRequest(f"query parameter '{name}' must be {bound}", code="INVALID_PARAMETER")
    return number
