"""What two copies of a thread disagree on: ``spl debug thread-diff`` (issue 11, seed 001 "Whole-pair recovery"). Pure.

Two sides, each a list of records as the daemon serves them (from a snapshot, a local daemon or a peer),
are compared twice:

* **by record**: the ids only one side holds, each with its act, actor and clock, so an operator sees
  which transition one side has and the other lacks;
* **by fold**: what the records *mean*. Every thread is folded with the generic thread fold
  (:class:`spl.core.fold.ThreadFold`) and compared field by field (state, counts, participants…). The
  federation pairs thread (``th_federation_pairs``) is folded again as the daemon reads it
  (:func:`spl.core.federation_pairs.fold_federation_pairs`) and compared pair by pair.

Folding the pairs thread needs the DID the fold trusts (it reads only records its own instance signed):
each side is folded with the DID that signed most of its pair records, because the two sides of a pair
are two instances, each recording the pair with its own key. When both sides are the same instance (a
snapshot against the live daemon), every field of each pair is compared; when they are two instances,
only the fields both ends of a pair share (state, mode, poll interval, namespace maps, thread allow-list,
nonce), since role, peer and token fields differ by design.

Records are folded in the order given (each side's own log order); ``sequence`` is dropped first, as it
is each instance's own numbering and says nothing about the content.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from spl.core.federation_pairs import FederationPair, fold_federation_pairs
from spl.core.fold import ThreadFold
from spl.core.pairs import PAIRS_THREAD

__all__ = [
    "SHARED_PAIR_FIELDS",
    "FieldDifference",
    "RecordSummary",
    "ThreadDiff",
    "diff_threads",
    "pair_signer",
]

SHARED_PAIR_FIELDS = ("state", "mode", "poll_interval", "maps", "thread_allow", "nonce")
"""What both ends of one federation pair record alike; the rest (role, peer, tokens, times) differs by design."""

_FOLD_FIELDS = ("state", "record_count", "last_clock", "opened_by", "closed_by")


@dataclass(frozen=True)
class RecordSummary:
    """A record only one side holds, as an operator reads it."""

    id: str
    act: str
    actor: str
    clock: int
    thread: str

    def to_wire(self) -> dict[str, Any]:
        return {"id": self.id, "act": self.act, "actor": self.actor, "clock": self.clock, "thread": self.thread}


@dataclass(frozen=True)
class FieldDifference:
    """One fold field that differs: ``scope`` is ``thread T``, ``pair_…`` or ``T participant A``; values as text."""

    scope: str
    field: str
    a: str
    b: str

    def text(self) -> str:
        return f"{self.scope}: {self.field} {self.a} (A) vs {self.b} (B)"

    def to_wire(self) -> dict[str, str]:
        return {"scope": self.scope, "field": self.field, "a": self.a, "b": self.b}


@dataclass(frozen=True)
class ThreadDiff:
    only_in_a: tuple[RecordSummary, ...]
    only_in_b: tuple[RecordSummary, ...]
    fold: tuple[FieldDifference, ...]

    @property
    def differs(self) -> bool:
        return bool(self.only_in_a or self.only_in_b or self.fold)

    def to_wire(self) -> dict[str, Any]:
        return {
            "object": "thread_diff",
            "differs": self.differs,
            "only_in_a": [record.to_wire() for record in self.only_in_a],
            "only_in_b": [record.to_wire() for record in self.only_in_b],
            "fold_differences": [difference.to_wire() for difference in self.fold],
        }


def _summary(record: Mapping[str, Any]) -> RecordSummary:
    return RecordSummary(
        str(record.get("id")),
        str(record.get("act")),
        str(record.get("actor")),
        int(record.get("clock") or 0),
        str(record.get("thread")),
    )


def _only(side: Sequence[Mapping[str, Any]], other_ids: set[str]) -> tuple[RecordSummary, ...]:
    summaries = [_summary(record) for record in side if record.get("id") not in other_ids]
    return tuple(sorted(summaries, key=lambda r: (r.thread, r.clock, r.actor, r.id)))


def _by_thread(records: Iterable[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each thread's records in the order given, without ``sequence`` (so :class:`ThreadFold` skips none)."""
    threads: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        plain = {key: value for key, value in record.items() if key != "sequence"}
        threads.setdefault(str(record.get("thread")), []).append(plain)
    return threads


def _text(value: Any) -> str:
    """A fold value as an operator reads it: none, a word, a number, or compact JSON."""
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_text(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{key}: {_text(item)}" for key, item in value.items()) + "}"
    return str(value)


def _fold(records: list[dict[str, Any]], thread: str) -> ThreadFold:
    fold = ThreadFold(thread)
    for record in records:
        fold.apply(record)
    return fold


def _thread_differences(thread: str, a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[FieldDifference]:
    fold_a, fold_b = _fold(a, thread), _fold(b, thread)
    wire_a, wire_b = fold_a.to_wire(), fold_b.to_wire()
    scope = f"thread {thread}"
    found = [
        FieldDifference(scope, name, _text(wire_a[name]), _text(wire_b[name]))
        for name in _FOLD_FIELDS
        if wire_a[name] != wire_b[name]
    ]
    people_a, people_b = fold_a.participants, fold_b.participants
    for actor in sorted(set(people_a) | set(people_b)):
        one, two = people_a.get(actor), people_b.get(actor)
        shown_a = f"{one.role} ({one.record_count} records)" if one else "absent"
        shown_b = f"{two.role} ({two.record_count} records)" if two else "absent"
        if shown_a != shown_b:
            found.append(FieldDifference(f"{scope} participant {actor}", "role", shown_a, shown_b))
    return found


def pair_signer(records: Iterable[Mapping[str, Any]]) -> str | None:
    """The DID that signed most of a side's ``th_federation_pairs`` records: the instance whose pairs they are."""
    counts = Counter(
        record.get("signer")
        for record in records
        if record.get("thread") == PAIRS_THREAD and isinstance(record.get("signer"), str)
    )
    return str(counts.most_common(1)[0][0]) if counts else None


def _pair_fields(pair: FederationPair) -> dict[str, Any]:
    fields = asdict(pair)
    fields["maps"] = [f"{mapping.initiator}:{mapping.responder}" for mapping in pair.maps]
    return fields


def _pair_differences(
    a: list[dict[str, Any]], b: list[dict[str, Any]], did_a: str | None, did_b: str | None
) -> list[FieldDifference]:
    pairs_a = fold_federation_pairs(a, did_a) if did_a else {}
    pairs_b = fold_federation_pairs(b, did_b) if did_b else {}
    same_instance = did_a is not None and did_a == did_b
    found: list[FieldDifference] = []
    for pair_id in sorted(set(pairs_a) | set(pairs_b)):
        one, two = pairs_a.get(pair_id), pairs_b.get(pair_id)
        if one is None or two is None:
            found.append(
                FieldDifference(pair_id, "pair", "present" if one else "absent", "present" if two else "absent")
            )
            continue
        fields_a, fields_b = _pair_fields(one), _pair_fields(two)
        names = list(fields_a) if same_instance else SHARED_PAIR_FIELDS
        found.extend(
            FieldDifference(pair_id, name, _text(fields_a[name]), _text(fields_b[name]))
            for name in names
            if fields_a[name] != fields_b[name]
        )
    return found


def diff_threads(
    a: Sequence[Mapping[str, Any]],
    b: Sequence[Mapping[str, Any]],
    *,
    did_a: str | None = None,
    did_b: str | None = None,
) -> ThreadDiff:
    """Compare two sides' records (each in its own log order).

    ``did_a`` / ``did_b`` are the DIDs the federation pair fold trusts on each side; by default the signer
    of most of that side's pair records (:func:`pair_signer`).
    """
    ids_a = {str(record.get("id")) for record in a}
    ids_b = {str(record.get("id")) for record in b}
    threads_a, threads_b = _by_thread(a), _by_thread(b)
    fold: list[FieldDifference] = []
    for thread in sorted(set(threads_a) | set(threads_b)):
        side_a, side_b = threads_a.get(thread, []), threads_b.get(thread, [])
        fold.extend(_thread_differences(thread, side_a, side_b))
        if thread == PAIRS_THREAD:
            fold.extend(_pair_differences(side_a, side_b, did_a or pair_signer(side_a), did_b or pair_signer(side_b)))
    return ThreadDiff(_only(a, ids_b), _only(b, ids_a), tuple(fold))
