"""The export/import benchmark (``python -m spl.soak.portability_bench``): one tiny run against real daemons.

At 1,000 records the figures say nothing about speed; the test checks that every phase ran to its end, that the
round trip held (every thread's record ids equal on both stores), that each figure the table promises is printed,
and that the run leaves no daemon and no home behind.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from spl.core.genesis import GENESIS_THREADS
from spl.core.record import validate_envelope
from spl.soak import portability_bench as bench


def test_a_tiny_round_trip_prints_every_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bench.main(["--records", "1000", "--threads", "10", "--sign-workers", "0", "--workdir", str(tmp_path)])
    out = capsys.readouterr().out
    results = json.loads(out.strip().splitlines()[-1])

    assert results["round_trip_equal"] is True
    exported = 1000 + len(GENESIS_THREADS)  # the source's own genesis records travel too
    assert results["records_exported"] == exported and results["threads_compared"] == 10
    summary = results["import_summary"]
    assert summary["records_inserted"] == summary["records_inspected"] == exported
    assert summary["records_deduplicated"] == 0 and summary["identity"] == "adopted"
    passes = results["store_passes"]
    assert passes["records"] == exported and passes["verify_s"] > 0 and passes["commit_s"] > 0
    for key in ("export_per_s", "import_per_s", "round_trip_s", "bundle_bytes_per_record"):
        assert results[key] > 0, key
    for key in ("export_source_rss_mb", "export_client_rss_mb", "import_target_rss_mb", "import_client_rss_mb"):
        assert 10 < results[key] < 2000, (key, results[key])
    assert results["upload_s"] <= results["import_s"]

    for line in (
        "round trip held (every thread's ids equal)",
        "| export over HTTP, records/s |",
        "| import over HTTP (upload + verify + commit), records/s |",
        "| target daemon peak RSS after import, MB |",
        "| bundle, bytes/record |",
        "| store level: verify_bundle, records/s |",
        "Goals: export ",
    ):
        assert line in out, line
    assert list(tmp_path.iterdir()) == [], "the homes and the bundle are removed"


def test_records_are_realistic_and_unique_per_thread_and_clock() -> None:
    rng = random.Random(0)
    fields = [bench.record_fields(index, 300, "did:key:zbench", rng) for index in range(3_000)]
    assert len({(f["thread"], f["clock"]) for f in fields}) == 3_000
    assert len({f["thread"] for f in fields}) == 300
    assert all((f["act"] == "INTEND") == (f["clock"] == 1) for f in fields)
    sizes = [len(json.dumps(validate_envelope(f).body, separators=(",", ":"))) for f in fields[:200]]
    assert 280 <= min(sizes) and max(sizes) <= 520, (min(sizes), max(sizes))
