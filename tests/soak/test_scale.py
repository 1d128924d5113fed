"""The scale benchmark (``python -m spl.soak.scale``): its helpers, and one tiny run against real daemons."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spl.core.identity import Identity
from spl.soak import scale
from spl.soak.scale import OverLimit, median_figure, parse_size, parse_sizes, size_label


@pytest.mark.parametrize(
    ("text", "count"),
    [("200", 200), ("10k", 10_000), ("10K", 10_000), ("1m", 1_000_000), ("10m", 10_000_000), ("2.5k", 2_500),
     (" 100_000 ", 100_000), ("1.5M", 1_500_000)],
)  # fmt: skip
def test_parse_size_reads_suffixes(text: str, count: int) -> None:
    assert parse_size(text) == count


@pytest.mark.parametrize("text", ["", "k", "ten", "0", "-5k", "1.5", "0.0001k", "nan", "infk"])
def test_parse_size_refuses_what_is_not_a_count(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_parse_sizes_sorts_and_drops_repeats_so_each_column_grows_the_last() -> None:
    assert parse_sizes("1m,10k,100k,10k,") == [10_000, 100_000, 1_000_000]


def test_size_label_is_the_short_form() -> None:
    assert [size_label(n) for n in (200, 10_000, 2_500, 1_000_000, 10_000_000)] == ["200", "10k", "2.5k", "1M", "10M"]
    assert all(parse_size(size_label(n)) == n for n in (200, 2_500, 10_000, 1_000_000))


def test_median_figure_counts_a_timeout_as_the_longest() -> None:
    assert median_figure([3.0, 1.0, 2.0]) == 2.0
    assert median_figure([4.0, 1.0]) == 2.5
    assert median_figure([1.0, OverLimit(30), OverLimit(30)]) == OverLimit(30)
    assert median_figure([1.0, 2.0, OverLimit(30)]) == 2.0
    assert median_figure([None, None]) is None
    assert str(OverLimit(30)) == ">30s"


def test_layouts_spread_records_as_named() -> None:
    big, many, per_record = (scale.layouts(threads=3)[name] for name in scale.LAYOUTS)
    assert {big.thread_of(n) for n in range(10)} == {"th_big"} and big.thread_length(10) == 10
    assert [many.thread_of(n)[-1] for n in range(5)] == ["0", "1", "2", "0", "1"]
    assert [many.clock_of(n) for n in range(5)] == [1, 1, 1, 2, 2] and many.thread_length(7) == 3
    assert len({per_record.thread_of(n) for n in range(10)}) == 10 and per_record.thread_length(10) == 1
    for layout in (big, many, per_record):  # a store refuses a second record on (thread, actor, clock)
        keys = {(f["thread"], f["actor"], f["clock"]) for f in map(lambda n: scale.record_fields(layout, n), range(50))}
        assert len(keys) == 50


def test_worker_processes_sign_the_same_records_in_the_same_order() -> None:
    layout, seed = scale.layouts(threads=4)["many-threads"], Identity.generate().seed
    inline = [pair for batch in scale.signed_batches(seed, layout, 0, 25, batch=10, workers=0) for pair in batch]
    pooled = [pair for batch in scale.signed_batches(seed, layout, 0, 25, batch=10, workers=1) for pair in batch]
    assert pooled == inline and len(inline) == 25
    assert [envelope.clock for envelope, _ in inline[:5]] == [1, 1, 1, 1, 2]


def test_a_tiny_run_fills_every_row_with_sane_figures(tmp_path: Path) -> None:
    options = scale.Options(
        repeats=1, restarts=1, timeout=30, push_records=400, push_batch=200, build_workers=0, emits=3,
        pull_records=1, pull_seconds=0.3,
    )  # fmt: skip
    chosen = list(scale.layouts(threads=50).values())
    results = scale.run_benchmark(tmp_path, [200, 500], chosen, options)
    for layout in chosen:
        rows = scale.rows_for(layout)
        table = scale.format_table(layout, results[layout.name])
        assert all(row.label in table for row in rows) and " – " not in table and "| >" not in table, table
        for size in (200, 500):
            figures = results[layout.name][size]
            assert set(figures) == {row.key for row in rows}, layout.name
            for key, value in figures.items():
                assert isinstance(value, float | int) and value > 0, (layout.name, size, key, value)
            assert 300 < figures["disk_bytes_per_record"] < 20_000, figures  # ~450 bytes of JSON plus indexes
            assert figures["rss_mib"] < 1024
    assert results["big-thread"][500]["feed_cpu_per_1k_ms"] < 60_000
    json.dumps(results)  # the --json output is made of these


def test_unknown_layouts_and_sizes_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        scale.main(["--layouts", "big-thread,huge"])
    assert "unknown huge" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        scale.main(["--sizes", "lots"])
    assert "not a size" in capsys.readouterr().err
