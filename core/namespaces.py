"""The namespace registry: which ``body.namespace`` values ingest accepts (spec §7).

The registry is itself a fold over LEARN records on ``th_namespace_registry`` whose body
kind is ``core.namespace.v1`` (``namespace_id``, ``status``, ``description``); the latest
record per id wins and ``default`` is always active. The entry key is ``namespace_id``,
not ``namespace``, because ``body.namespace`` is what ingest checks on every record.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any

from spl.core.errors import Conflict, InvalidRequest, NamespaceRejected
from spl.core.rotation import owns

__all__ = [
    "NAMESPACE_KIND",
    "REGISTRY_THREAD",
    "NamespaceEntry",
    "NamespaceRegistry",
    "ancestors",
    "validate_namespace_id",
]

REGISTRY_THREAD = "th_namespace_registry"
NAMESPACE_KIND = "core.namespace.v1"
STATUSES = ("active", "archived", "deleted")
# \A…\Z and .fullmatch: ^…$ with .match would accept a trailing "\n".
_ID = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}(/[a-z0-9][a-z0-9_-]{0,62}){0,3}\Z")


def validate_namespace_id(namespace: str) -> str:
    """Return ``namespace`` if it is a legal id, else raise a 400 naming the rule."""
    if namespace == "default":
        return namespace
    if not isinstance(namespace, str) or len(namespace) > 256 or not _ID.fullmatch(namespace):
        raise InvalidRequest(
            f"invalid namespace id {namespace!r}: use 1-4 '/'-separated segments of lowercase "
            "letters, digits, '_' or '-' (each starting with a letter or digit, at most 63 characters)",
            code="INVALID_NAMESPACE",
        )
    return namespace


def ancestors(namespace: str) -> list[str]:
    """``a/b/c`` → ``["a", "a/b", "a/b/c"]``: the chain, outermost first."""
    parts = namespace.split("/")
    return ["/".join(parts[: index + 1]) for index in range(len(parts))]


@dataclass
class NamespaceEntry:
    id: str
    status: str
    description: str = ""
    record_id: str | None = None
    clock: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "object": "namespace",
            "id": self.id,
            "status": self.status,
            "description": self.description,
            "level": _level(self.id),
            "record_id": self.record_id,
        }


def _level(namespace: str) -> str:
    if namespace == "default":
        return "DEFAULT"
    return ("ORG", "PROJECT", "ENV", "JOB")[namespace.count("/")]


@dataclass
class NamespaceRegistry:
    """Current registry state; ``apply`` is fed every committed registry record in order."""

    entries: dict[str, NamespaceEntry] = field(
        default_factory=lambda: {"default": NamespaceEntry("default", "active", "the implicit namespace")}
    )

    @classmethod
    def folded(cls, records: Iterable[dict[str, Any]], own_did: str | Collection[str]) -> NamespaceRegistry:
        """The registry as stored records (decoded, in sequence order) make it.

        Only records this instance signed are configuration (spec §15.18): a registry record a
        peer managed to get stored is kept as a record but never changes the registry. ``own_did`` is every key of
        the instance's rotation chain (a rotated steward keeps its namespaces), or its one DID.
        """
        registry = cls()
        for record in records:
            if owns(own_did, record.get("signer")):
                registry.apply(record["thread"], record["act"], record["body"], record["id"], record["clock"])
        return registry

    def apply(self, thread: str, act: str, body: dict[str, Any], record_id: str, clock: int) -> bool:
        """Apply one record; returns True when it changed the registry."""
        if thread != REGISTRY_THREAD or act != "LEARN" or body.get("kind") != NAMESPACE_KIND:
            return False
        namespace = body.get("namespace_id")
        status = body.get("status", "active")
        if not isinstance(namespace, str) or namespace == "default" or status not in STATUSES:
            return False
        description = body.get("description")
        self.entries[namespace] = NamespaceEntry(
            namespace, status, description if isinstance(description, str) else "", record_id, clock
        )
        return True

    def is_active(self, namespace: str) -> bool:
        entry = self.entries.get(namespace)
        return entry is not None and entry.status == "active"

    def check(self, namespace: str) -> None:
        """Accept ``namespace`` or raise 403 ``NAMESPACE_REJECTED`` naming the fix (spec §7)."""
        if namespace == "default":
            return
        try:
            validate_namespace_id(namespace)
        except InvalidRequest as exc:
            raise NamespaceRejected(f"namespace {namespace!r} rejected: {exc.message}") from None
        for ancestor in ancestors(namespace):
            if not self.is_active(ancestor):
                raise NamespaceRejected(
                    f"namespace {namespace!r} rejected: ancestor '{ancestor}' is not Active in the "
                    f"registry. Register it first: spl namespace create {ancestor}"
                )

    def check_create(self, namespace: str) -> None:
        """Allow registering ``namespace`` now, or raise what the caller must fix first.

        Raises:
            Conflict: 409 ``ALREADY_EXISTS``: it is ``default`` or already active.
            InvalidRequest: 400 ``PARENT_NAMESPACE_MISSING``: an enclosing namespace is not active.
        """
        if namespace == "default" or self.is_active(namespace):
            raise Conflict(f"namespace {namespace!r} already exists and is active", code="ALREADY_EXISTS")
        for ancestor in ancestors(namespace)[:-1]:
            if not self.is_active(ancestor):
                raise InvalidRequest(
                    f"parent namespace '{ancestor}' is not active; create it first: spl namespace create {ancestor}",
                    code="PARENT_NAMESPACE_MISSING",
                )

    def listing(self) -> list[NamespaceEntry]:
        return sorted(self.entries.values(), key=lambda entry: entry.id)
