"""Request parsing helpers shared by the route modules: JSON bodies and query parameters."""

from __future__ import annotations

from typing import Any

from quart import request

from spl.core.errors import InvalidRequest, PayloadTooLarge
from spl.core.wire import parse_json
from spl.transport.context import current_request

__all__ = ["body_bytes", "int_arg", "json_body"]


async def body_bytes(limit: int) -> bytes:
    """The raw request body, or 413 when it is larger than ``limit`` (declared or actually sent)."""
    req = current_request()
    declared = req.content_length
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes; send smaller records (serve.max_body_bytes)")
    raw = await req.get_data(cache=False)
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body is larger than {limit} bytes; send smaller records (serve.max_body_bytes)")
    return raw


async def json_body(limit: int) -> Any:
    """The request body parsed as strict JSON (no NaN/Infinity), or a 400/413 naming the fix.

    For routes without a typed payload yet; the others decode :func:`body_bytes` with a
    ``spl.core.wire`` decoder.
    """
    return parse_json(await body_bytes(limit))


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
