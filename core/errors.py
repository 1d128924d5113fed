"""Every failure the daemon reports to a caller, in one place.

The hierarchy (each leaf carries its HTTP status and wire ``code``)::

    SplError                         base: status, type, code, message
    ├── InvalidRequest      400      bad input the caller can fix
    │   ├── InvalidRecord   400      INVALID_RECORD / INVALID_THREAD / INVALID_JSON …
    │   └── PayloadTooLarge 413      PAYLOAD_TOO_LARGE
    ├── AuthRequired        401      AUTH_REQUIRED
    ├── ScopeForbidden      403      SCOPE_FORBIDDEN
    ├── NamespaceRejected   403      NAMESPACE_REJECTED (spec §7)
    ├── NotFound            404      NOT_FOUND / ROUTE_NOT_FOUND
    ├── Conflict            409      DUPLICATE_CLOCK (spec §15.5), ALREADY_EXISTS
    ├── StoreCorrupt        500      STORE_CORRUPT: a page of hub.db is damaged (restore it)
    └── Unavailable         503      SHUTTING_DOWN, STORE_UNAVAILABLE
        └── StorageFull     503      STORAGE_FULL: no room for the write (free space or raise the cap)

A bare ``SplError`` is the 500 ``INTERNAL`` answer for a bug: its message says "see the
daemon log", where the traceback was written once.

The HTTP layer turns any ``SplError`` into ``{"object":"error","type","code","message"}``
(plus ``error`` = code, which older SDK readers look for) in exactly one place.
Messages name the fix and never contain secrets.
"""

from __future__ import annotations


class SplError(Exception):
    """Base class: a failure with an HTTP status and a machine-readable code."""

    status: int = 500
    type: str = "api_error"
    code: str = "INTERNAL"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status

    def to_wire(self) -> dict[str, object]:
        """The JSON error envelope of spec §15.9."""
        return {
            "object": "error",
            "type": self.type,
            "code": self.code,
            "error": self.code,
            "message": self.message,
        }


class InvalidRequest(SplError):
    status = 400
    type = "invalid_request_error"
    code = "INVALID_REQUEST"


class InvalidRecord(InvalidRequest):
    """A record envelope that fails validation; ``field`` names the culprit."""

    code = "INVALID_RECORD"

    def __init__(self, field: str, message: str, *, code: str | None = None) -> None:
        super().__init__(f"{field}: {message}", code=code)
        self.field = field


class PayloadTooLarge(InvalidRequest):
    status = 413
    code = "PAYLOAD_TOO_LARGE"


class AuthRequired(SplError):
    status = 401
    type = "authentication_error"
    code = "AUTH_REQUIRED"


class ScopeForbidden(SplError):
    status = 403
    type = "permission_error"
    code = "SCOPE_FORBIDDEN"


class NamespaceRejected(SplError):
    status = 403
    type = "invalid_request_error"
    code = "NAMESPACE_REJECTED"


class NotFound(SplError):
    status = 404
    type = "not_found_error"
    code = "NOT_FOUND"


class Conflict(SplError):
    status = 409
    type = "conflict_error"
    code = "CONFLICT"


class DuplicateClock(Conflict):
    """Another record already holds this (thread, actor, clock): spec §15.5."""

    code = "DUPLICATE_CLOCK"

    def __init__(self, thread: str, actor: str, clock: int) -> None:
        super().__init__(
            f"DuplicateClock: thread={thread} actor={actor} clock={clock}. "
            "Another record by this actor on this thread already uses that clock; "
            "emit with a higher clock (or omit it and let the SDK pick one)."
        )


class Unavailable(SplError):
    status = 503
    type = "api_error"
    code = "UNAVAILABLE"


class StoreCorrupt(SplError):
    """A read or write met a damaged page of the store: this request fails, the daemon keeps serving.

    A 500 rather than a 503 because retrying does not help; only the operator can, from a backup.
    """

    status = 500
    type = "api_error"
    code = "STORE_CORRUPT"


class StorageFull(Unavailable):
    """The write did not fit (SQLITE_FULL, ENOSPC, or the store reached ``[store] max_bytes``).

    A 503: the same request succeeds once space is freed or the cap is raised, and reads go on meanwhile.
    """

    code = "STORAGE_FULL"
