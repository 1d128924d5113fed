"""Rolling federation figures (1-hour window, in memory, reset on restart): pure bookkeeping.

Feeds ``GET /v1/sync/health`` and ``GET /v1/sync/pairs/{id}/stats``: records pulled per
minute/hour, delivery latency (committed here minus created at the source), errors.
"""

from __future__ import annotations

import calendar
import functools
import re
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from spl.core.units import percentile

__all__ = ["LATENCY_BUCKETS_MS", "PairStats", "parse_rfc3339", "source_times", "summarise"]

WINDOW = 3600.0
LATENCY_BUCKETS_MS = (1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


# The form every spl daemon serves (``spl.core.stored``): parsed by slicing, the day looked up once.
_SERVED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|6[01])(\.[0-9]{1,9})?Z")


def parse_rfc3339(text: object) -> float | None:
    """``2026-11-21T02:23:45.807252Z`` → Unix seconds; None for anything else.

    Every pulled record's ``created_at`` passes here (delivery latency), so the served form is parsed
    by slicing with the start of its day cached; any other spelling goes through ``strptime``.
    """
    if not isinstance(text, str) or not text.endswith("Z") or len(text) < 20:
        return None
    if _SERVED.fullmatch(text):
        day = _day_start(text[:10])
        if day is not None:
            seconds = day + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])
            return seconds + (float("0" + text[19:-1]) if len(text) > 20 else 0.0)
    return _parse_strptime(text)


@functools.lru_cache(maxsize=64)
def _day_start(day: str) -> int | None:
    """Unix seconds at the start of ``YYYY-MM-DD`` (None for a date that does not exist)."""
    try:
        return calendar.timegm(time.strptime(day, "%Y-%m-%d"))
    except ValueError:
        return None


def _parse_strptime(text: str) -> float | None:
    try:
        whole, _, fraction = text[:-1].partition(".")
        seconds = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return seconds + (float("0." + fraction) if fraction.isdigit() else 0.0)
    except ValueError:
        return None


def source_times(records: list[dict[str, Any]]) -> dict[str, float]:
    """id → when the source committed it (its ``created_at``), for delivery latency.

    Records of one source transaction share their ``created_at``; each distinct text is parsed once.
    """
    times: dict[str, float] = {}
    parsed: dict[str, float | None] = {}
    for record in records:
        text, record_id = record.get("created_at"), record.get("id")
        if not isinstance(text, str) or not isinstance(record_id, str):
            continue
        created = parsed[text] if text in parsed else parsed.setdefault(text, parse_rfc3339(text))
        if created is not None:
            times[record_id] = created
    return times


@dataclass
class PairStats:
    pulled: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=20_000))
    latencies: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=20_000))
    errors: deque[float] = field(default_factory=lambda: deque(maxlen=5_000))

    def note_pulled(self, count: int, latencies_s: list[float], now: float) -> None:
        self.pulled.append((now, count))
        for latency in latencies_s:
            self.latencies.append((now, latency))

    def note_error(self, now: float) -> None:
        self.errors.append(now)

    def records_since(self, since: float) -> int:
        return sum(count for at, count in self.pulled if at >= since)

    def latencies_since(self, since: float) -> list[float]:
        return [latency for at, latency in self.latencies if at >= since]

    def errors_since(self, since: float) -> int:
        return sum(1 for at in self.errors if at >= since)

    def to_wire(self, now: float) -> dict[str, Any]:
        latencies_ms = [value * 1000 for value in self.latencies_since(now - WINDOW)]
        histogram = {f"le_{bound}ms": 0 for bound in LATENCY_BUCKETS_MS}
        histogram["gt_10000ms"] = 0
        for value in latencies_ms:
            for bound in LATENCY_BUCKETS_MS:
                if value <= bound:
                    histogram[f"le_{bound}ms"] += 1
                    break
            else:
                histogram["gt_10000ms"] += 1
        return {
            "records_last_minute": self.records_since(now - 60),
            "records_last_hour": self.records_since(now - WINDOW),
            "records_per_minute": round(self.records_since(now - WINDOW) / 60, 2),
            "errors_last_hour": self.errors_since(now - WINDOW),
            "latency_ms": summarise(latencies_ms),
            "latency_histogram": histogram,
        }


def summarise(latencies_ms: list[float]) -> dict[str, float | int | None]:
    """Count, mean and nearest-rank percentiles (``spl.core.units.percentile``, as the soak reports them)."""
    if not latencies_ms:
        return {"count": 0, "mean": None, "p50": None, "p95": None, "p99": None}
    return {
        "count": len(latencies_ms),
        "mean": round(sum(latencies_ms) / len(latencies_ms), 2),
        "p50": round(percentile(latencies_ms, 50), 2),
        "p95": round(percentile(latencies_ms, 95), 2),
        "p99": round(percentile(latencies_ms, 99), 2),
    }
