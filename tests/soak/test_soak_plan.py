"""The soak's pure logic: window schedule, emit rate, per-window figures, CSV, table, JSON, SVG, the result."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from spl.core.syncstats import summarise
from spl.soak.config import SoakConfig, SoakError
from spl.soak.figures import (
    ErrorSample,
    QueueSample,
    RecordSample,
    WindowFigures,
    aggregate,
    error_deltas_by_window,
    error_points,
    lag_ms,
    problems,
    queue_max_by_window,
)
from spl.soak.ledger import Emitted, Ledger
from spl.soak.plan import (
    SEED_STEADY_RATE,
    WINDOW_NAMES,
    emits_due,
    pause_seconds,
    plan_windows,
    rate_at,
    window_index,
    workload_plan,
)
from spl.soak.plot import ERROR_COLOUR, SERIES, event_label_boxes, render_svg
from spl.soak.progress import Progress, Status
from spl.soak.report import (
    CSV_HEADER,
    REFERENCE_NOTE,
    SEED_REFERENCE,
    format_csv,
    format_duration_min,
    format_table,
    report_document,
)
from spl.soak.result import build_result

SEEDS = Path("/work/shared/seeds")
R = SEED_STEADY_RATE


# -- the window scheduler ----------------------------------------------------------------


def test_scale_one_is_the_seeds_hundred_minutes() -> None:
    windows = plan_windows()
    assert [w.name for w in windows] == list(WINDOW_NAMES)
    assert [w.minutes for w in windows] == pytest.approx([5, 15, 60, 5, 15])
    assert windows[0].start == 0 and windows[-1].end == pytest.approx(6000)


def test_scale_shrinks_every_window_in_proportion() -> None:
    windows = plan_windows(scale=0.1)
    assert [w.seconds for w in windows] == pytest.approx([30, 90, 360, 30, 90])
    assert windows[-1].end == pytest.approx(600)
    for before, after in zip(windows, windows[1:], strict=False):
        assert before.end == after.start  # back to back, no gaps


def test_duration_sets_the_total() -> None:
    windows = plan_windows(duration=40)
    assert [w.seconds for w in windows] == pytest.approx([2, 6, 24, 2, 6])
    assert windows[-1].end == 40  # exact: the last window ends at the total


@pytest.mark.parametrize(("scale", "duration"), [(0.1, 60.0), (0.0, None), (-1.0, None), (None, 0.0), (math.inf, None)])
def test_bad_schedules_are_refused(scale: float | None, duration: float | None) -> None:
    with pytest.raises(ValueError):
        plan_windows(scale=scale, duration=duration)


def test_window_index_at_boundaries() -> None:
    windows = plan_windows(duration=100)  # 5 / 15 / 60 / 5 / 15 s
    assert window_index(windows, 0) == 0
    assert window_index(windows, 4.999) == 0
    assert window_index(windows, 5) == 1  # a boundary belongs to the later window
    assert window_index(windows, 20) == 2
    assert window_index(windows, 80) == 3
    assert window_index(windows, 85) == 4
    assert window_index(windows, 1000) == 4  # clamped: stragglers count in the last window


# -- the rate function ---------------------------------------------------------------------


def test_rate_shape_per_window() -> None:
    windows = plan_windows(duration=100)
    assert rate_at(windows, R, 2) == pytest.approx(0.5 * R)  # warmup
    assert rate_at(windows, R, 5) == pytest.approx(0.5 * R)  # ramp starts at half …
    assert rate_at(windows, R, 12.5) == pytest.approx(0.75 * R)  # … linear …
    assert rate_at(windows, R, 19.999) == pytest.approx(R, rel=1e-3)  # … to the steady rate
    assert rate_at(windows, R, 50) == pytest.approx(R)  # steady
    assert rate_at(windows, R, 82) == pytest.approx(4 * R)  # spike: 4×
    assert rate_at(windows, R, 90) == pytest.approx(R)  # recovery
    assert rate_at(windows, R, -1) == 0 and rate_at(windows, R, 100) == 0


def test_emits_due_integrates_the_rate() -> None:
    windows = plan_windows()  # the full 100 minutes at the seed's rate
    ends = [emits_due(windows, R, w.end) for w in windows]
    per_window = [ends[0]] + [b - a for a, b in zip(ends, ends[1:], strict=False)]
    assert per_window == pytest.approx([0.5 * R * 300, 0.75 * R * 900, 33_180, 4 * R * 300, R * 900])
    assert emits_due(windows, R, 0) == 0
    assert emits_due(windows, R, 10_000) == pytest.approx(ends[-1])  # nothing after the run


def test_emits_due_is_monotonic_and_its_slope_is_the_rate() -> None:
    windows = plan_windows(duration=100)
    previous = -1.0
    for step in range(0, 1000):
        t = step / 10
        value = emits_due(windows, 50.0, t)
        assert value >= previous
        previous = value
        if all(abs(t - w.start) > 0.01 for w in windows):
            slope = (emits_due(windows, 50.0, t + 0.001) - emits_due(windows, 50.0, t - 0.001)) / 0.002
            assert slope == pytest.approx(rate_at(windows, 50.0, t), rel=1e-3)


# -- percentiles and per-window figures ----------------------------------------------------


def test_soak_p50_agrees_with_sync_health() -> None:
    """The soak's lag percentiles and ``/v1/sync/health``'s are the same nearest-rank figure (once they were not:
    for 1..6 ms the health said 4 and the soak 3)."""
    windows = plan_windows(duration=100)
    for lags in ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [float(n) for n in range(1, 101)], [7.0], [3.0, 1.0, 2.0, 2.0]):
        row = aggregate(windows, [RecordSample(1.0, 0, lag) for lag in lags], [0] * 5, [0] * 5)[0]
        health = summarise(lags)
        assert (row.sync_lag_p50_ms, row.sync_lag_p99_ms) == (health["p50"], health["p99"]), lags


def test_lag_is_receiver_commit_minus_source_commit() -> None:
    assert lag_ms(1000.0, 1000.25) == pytest.approx(250.0)


def test_aggregate_per_window() -> None:
    windows = plan_windows(duration=100)
    records = [RecordSample(1.0, 0, float(n)) for n in range(1, 101)]  # warmup: 1 … 100 ms
    records += [RecordSample(30.0, 2, 10.4), RecordSample(31.0, 2, 10.6), RecordSample(32.0, 2, None)]
    rows = aggregate(windows, records, [3, 0, 7, 0, 0], [0, 0, 1, 0, 0], [10.0, 0, 0, 0, 0])
    warmup, ramp, steady = rows[0], rows[1], rows[2]
    assert (warmup.records_emitted, warmup.records_synced, warmup.sync_lag_p50_ms, warmup.sync_lag_p99_ms) == (
        100,
        100,
        50,
        99,
    )
    assert warmup.reconcile_queue_max == 3 and warmup.errors == 0 and warmup.target_emits == 10.0
    # an empty window: no lag figure (not 0 ms), its queue maximum as sampled
    assert (ramp.records_emitted, ramp.sync_lag_p50_ms, ramp.sync_lag_p99_ms, ramp.errors) == (0, None, None, 0)
    assert (steady.records_emitted, steady.records_synced) == (3, 2)
    assert (steady.sync_lag_p50_ms, steady.sync_lag_p99_ms) == (10, 11)  # whole ms, half up
    assert steady.errors == 2  # one pair-level error + one record that never arrived
    assert problems(rows) == [
        "steady: 2 of 3 emitted records reached the receiver",
        "steady: 1 pair-level error(s) (errors_total rose on the receiver)",
    ]
    assert problems(aggregate(windows, records[:100], [0] * 5, [0] * 5)) == []


def test_queue_max_counts_peaks_between_samples() -> None:
    windows = plan_windows(duration=100)
    samples = [
        QueueSample(0.0, 0, 0, 40),  # baseline: a high water from before the run does not count
        QueueSample(1.0, 0, 2, 40),
        QueueSample(10.0, 0, 1, 55),  # the high water rose since the last sample: a missed peak of 55 in ramp
        QueueSample(30.0, 0, 9, 55),
        QueueSample(31.0, 1, 0, 4),  # restarted: the new process's high water is new
        QueueSample(82.0, 1, 3, 4),
        QueueSample(120.0, 1, 99, 99),  # after the run: ignored
    ]
    assert queue_max_by_window(windows, samples) == [2, 55, 9, 3, None]  # no sample in recovery: unknown


def test_error_deltas_survive_restarts() -> None:
    windows = plan_windows(duration=100)
    samples = [
        ErrorSample(0.5, 0, "p1", 2),  # baseline: errors from before the run are not counted
        ErrorSample(1.0, 0, "p1", 2),
        ErrorSample(6.0, 0, "p1", 3),  # +1 in ramp
        ErrorSample(7.0, 1, "p1", 0),  # the receiver restarted: its counter began at 0
        ErrorSample(30.0, 1, "p1", 2),  # +2 in steady
        ErrorSample(31.0, 2, "p1", 1),  # restarted again: 1 new error
        ErrorSample(0.6, 0, "p2", 0),
        ErrorSample(150.0, 2, "p2", 1),  # during the drain: counts in the last window
    ]
    assert error_deltas_by_window(windows, samples) == [0, 1, 3, 0, 1]


# -- CSV and table -------------------------------------------------------------------------


def test_csv_has_the_seeds_exact_header_and_five_rows() -> None:
    windows = plan_windows(scale=0.1)
    rows = aggregate(windows, [RecordSample(w.start, i, 12.0) for i, w in enumerate(windows)], [1] * 5, [0] * 5)
    text = format_csv(rows)
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[0] == CSV_HEADER
    assert CSV_HEADER == (
        "window,duration_min,records_emitted,records_synced,sync_lag_p50_ms,sync_lag_p99_ms,reconcile_queue_max,errors"
    )
    assert len(lines) == 6
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert [row["window"] for row in parsed] == list(WINDOW_NAMES)
    assert [row["duration_min"] for row in parsed] == ["0.5", "1.5", "6", "0.5", "1.5"]
    for row in parsed:
        assert float(row["duration_min"]) > 0
        for column in CSV_HEADER.split(",")[2:]:
            assert re.fullmatch(r"\d+", row[column]), (column, row[column])


def test_seed_reference_round_trips_to_the_seed_text() -> None:
    expected = (
        "window,duration_min,records_emitted,records_synced,sync_lag_p50_ms,sync_lag_p99_ms,reconcile_queue_max,errors\n"
        "warmup,5,1240,1240,180,420,3,0\n"
        "ramp,15,8420,8420,210,512,7,0\n"
        "steady,60,33180,33180,225,548,9,0\n"
        "spike,5,4860,4860,610,1290,18,0\n"
        "recovery,15,7240,7240,240,580,12,0\n"
    )
    assert format_csv(SEED_REFERENCE) == expected
    seed = next(SEEDS.glob("001_*.txt"), None) if SEEDS.exists() else None
    if seed is not None:
        assert expected in seed.read_text()


@pytest.mark.parametrize("minutes,text", [(60.0, "60"), (0.5, "0.5"), (0.025, "0.025"), (1 / 30, "0.033"), (0, "0")])
def test_duration_min_format(minutes: float, text: str) -> None:
    assert format_duration_min(minutes) == text


def test_table_puts_the_seed_beside_ours() -> None:
    rows = [WindowFigures(n, 1.0, 10, 10, 5, 9, 1, 0, 0, 10.0) for n in WINDOW_NAMES]
    text = format_table(rows)
    assert "ref p99" in text and "1290" in text and "548" in text
    assert len(text.splitlines()) == 2 + 5 + 1
    assert text.splitlines()[-1] == REFERENCE_NOTE and "seed 001" in REFERENCE_NOTE  # says whose figures they are


# -- workload and plot ---------------------------------------------------------------------


def test_workload_plan() -> None:
    windows = plan_windows(scale=0.1)  # ramp 30–120 s, steady 120–480 s
    assert workload_plan(windows, faults=False) == [(264.0, "pause")]
    assert pause_seconds(windows) == pytest.approx(1.8)  # 0.5 % of the 360 s steady window
    plan = workload_plan(windows, faults=True)
    assert [action for _, action in plan] == ["restart", "pause", "kill"]
    assert plan[0][0] == pytest.approx(75.0)  # half-way through ramp
    assert plan[-1][0] == pytest.approx(372.0)  # 70 % into steady
    assert pause_seconds(plan_windows(scale=1)) == 2.0  # capped
    assert pause_seconds(plan_windows(duration=10)) == 0.1  # floor


def test_svg_is_well_formed_and_labelled() -> None:
    windows = plan_windows(duration=60)
    points = [(t / 10, 5.0 + (t % 50)) for t in range(600)] + [(45.0, 2500.0)]
    svg = render_svg(points, windows, title="lag <soak> & co", events=[(20.0, "pairs paused"), (30.0, "kill -9")])
    root = ET.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    texts = [element.text for element in root.iter("{http://www.w3.org/2000/svg}text")]
    for name in WINDOW_NAMES:
        assert name in texts
    assert "lag <soak> & co" in texts and "kill -9" in texts
    lag_lines = [line.get("class") for line in root.iter("{http://www.w3.org/2000/svg}polyline")]
    assert [name for name in lag_lines if name and name.startswith("lag-")] == ["lag-p50", "lag-p99", "lag-max"]
    empty = ET.fromstring(render_svg([], windows))
    assert "no samples" in [element.text for element in empty.iter("{http://www.w3.org/2000/svg}text")]


def test_report_document_is_json() -> None:
    windows = plan_windows(duration=10)
    records = [RecordSample(1.0, 0, 3.0), RecordSample(2.0, 1, None)]
    rows = aggregate(windows, records, [0] * 5, [0] * 5)
    document = report_document(
        {"rate": 1.0}, rows, windows, records, [QueueSample(0.1, 0, 0, 0)], [(3.0, "pairs paused")], problems(rows)
    )
    decoded = json.loads(json.dumps(document))
    assert decoded["samples"] == [[1.0, 0, 3.0], [2.0, 1, None]]
    assert decoded["passed"] is False and len(decoded["figures"]) == 5


# -- progress on stderr --------------------------------------------------------------------


def test_progress_is_one_rewritten_line_on_a_terminal_and_plain_lines_otherwise() -> None:
    tty = io.StringIO()
    bar = Progress(tty, tty=True)
    bar.total = 60
    bar.update(Status(phase="running", t=30, window="steady", emitted=10))
    bar.note("receiver restarted")
    bar.update(Status(phase="running", t=31, window="steady", emitted=11))
    bar.close()
    text = tty.getvalue()
    assert text.startswith("\r\x1b[K") and "[##########..........]" in text
    assert "\r\x1b[Ksoak: receiver restarted\n" in text and text.endswith("\n")

    plain = io.StringIO()
    lines = Progress(plain, tty=False)
    lines.total = 600
    for second in range(0, 100):
        lines.update(Status(phase="running", t=second, window="warmup" if second < 30 else "ramp"))
    printed = plain.getvalue().splitlines()
    assert all(line.startswith("soak: ") and "\r" not in line for line in printed)
    assert len(printed) == 4  # window starts (0 s, 30 s) and every 30 s (1/20 of the run) in between


# -- unobserved figures are empty, never 0 (operations review #13) ----------------------------


def test_a_window_no_record_reached_has_empty_lag_fields_not_zeros() -> None:
    windows = plan_windows(duration=10)
    records = [RecordSample(t, window_index(windows, t), 4.0) for t in (1.0, 5.0, 8.2, 9.0)]  # none in warmup
    queue = [QueueSample(t, 0, 1, 1) for t in (1.0, 5.0, 8.2, 9.0)]
    rows = aggregate(windows, records, queue_max_by_window(windows, queue), [0] * 5)
    parsed = list(csv.DictReader(io.StringIO(format_csv(rows))))
    warmup = parsed[0]
    assert (warmup["records_emitted"], warmup["records_synced"], warmup["errors"]) == ("0", "0", "0")
    assert (warmup["sync_lag_p50_ms"], warmup["sync_lag_p99_ms"], warmup["reconcile_queue_max"]) == ("", "", "")
    assert format_csv(rows).splitlines()[1] == "warmup,0.008,0,0,,,,0"
    assert [row["sync_lag_p50_ms"] for row in parsed[1:]] == ["4"] * 4
    table_warmup = format_table(rows).splitlines()[2].split()
    assert table_warmup[5:8] == ["-", "-", "-"]  # p50, p99, queue max
    document = json.loads(json.dumps(report_document({}, rows, windows, records, queue, [], problems(rows))))
    assert document["figures"][0]["sync_lag_p50_ms"] is None and document["figures"][1]["sync_lag_p50_ms"] == 4


def test_the_result_says_why_a_lag_field_is_empty() -> None:
    windows = plan_windows(duration=10)
    ledger = Ledger(len(windows), 1, final_errors_read=True)
    ledger.emitted = {"r1": Emitted(5.0, 2, 1000.0), "r2": Emitted(5.1, 2, 1000.0)}
    ledger.synced = {"r1": 1000.004, "r2": 1000.006}
    result = build_result(SoakConfig(windows=windows, rate=0.1), ledger, started_at=0.0, drain_seconds=1.0)
    assert [row.sync_lag_p50_ms for row in result.rows] == [None, None, 4, None, None]
    assert result.passed
    assert any("warmup, ramp, spike, recovery" in note and "not 0 ms" in note for note in result.notes)
    assert [row.reconcile_queue_max for row in result.rows] == [None] * 5  # no queue sample at all
    assert any("no reconcile-queue sample fell in warmup, ramp, steady" in note for note in result.notes)


@pytest.mark.parametrize(
    "change,option",
    [
        ({"pairs": 0}, "--pairs"),
        ({"mode": "sometimes"}, "--mode"),
        ({"emit": "carrier pigeon"}, "--emit"),
        ({"rate": 0.0}, "--rate"),
        ({"poll_interval": 0.0}, "--poll-interval"),
        ({"peer_token": "t"}, "--peer-url"),
        ({"connections": 0}, "--connections"),
    ],
)
def test_a_config_that_cannot_run_is_refused_before_anything_starts(change: dict[str, object], option: str) -> None:
    with pytest.raises(SoakError, match=option):
        SoakConfig(windows=plan_windows(duration=10), **change)  # type: ignore[arg-type]


# -- the plot: max above p99, labels apart (operations review #13) ------------------------------


def _svg_elements(svg: str, tag: str) -> list[ET.Element]:
    return list(ET.fromstring(svg).iter(f"{{http://www.w3.org/2000/svg}}{tag}"))


def test_the_max_line_is_drawn_on_top_of_p99_and_dashed() -> None:
    """In a slice of at most 100 records the nearest-rank p99 is the maximum: drawn first, max vanished under p99."""
    windows = plan_windows(duration=60)
    points = [(t / 10, 5.0 + (t % 7)) for t in range(600)]  # two records a slice: p99 == max everywhere
    lines = _svg_elements(render_svg(points, windows), "polyline")
    assert [line.get("stroke") for line in lines] == [colour for _, _, colour, _ in SERIES]
    assert [name for name, _, _, _ in SERIES] == ["p50", "p99", "max"]  # max last: on top
    p99, top = lines[1], lines[2]
    assert top.get("stroke-dasharray") and not p99.get("stroke-dasharray")  # p99 shows through the dashes
    assert top.get("points") == p99.get("points")  # the case that hid it: same line, now both visible
    legend = [line for line in _svg_elements(render_svg(points, windows), "line") if line.get("stroke-width") == "2"]
    assert legend[-1].get("stroke-dasharray") == top.get("stroke-dasharray")  # the legend draws it the same way


def test_event_labels_never_overlap() -> None:
    """A 0.1 s pause in a 20 s run puts "pairs paused" and "pairs resumed" one pixel apart."""
    windows = plan_windows(duration=20)
    events = [(8.8, "pairs paused"), (8.92, "pairs resumed"), (10.0, "receiver restarted (kill -9)"), (17.0, "x")]
    svg = render_svg([(1.0, 3.0)], windows, events=events)
    labels = [text for text in _svg_elements(svg, "text") if text.get("fill") == "#b04"]
    assert [text.text for text in labels] == [label for _, label in events]
    starts = [float(text.get("y") or 0) for text in labels]
    assert starts[1] > starts[0]  # the resume label starts below the pause label …
    assert starts[3] == starts[0]  # … while a label with room beside it stays at the top
    boxes = event_label_boxes([(800 * t / 20, label) for t, label in events], 64.0)
    for index, box in enumerate(boxes):
        assert not any(box.overlaps(other) for other in boxes[index + 1 :]), (index, boxes)
    assert [box.y0 for box in event_label_boxes([(100.0, "a"), (300.0, "b")], 64.0)] == [64.0, 64.0]


def test_the_max_line_has_a_colour_of_its_own() -> None:
    colours = {name: colour for name, _, colour, _ in SERIES}
    assert colours["max"] not in (colours["p50"], colours["p99"], "#b04", ERROR_COLOUR)  # not an event or error


def test_reference_lines_say_they_are_the_reference_run() -> None:
    """The dashed horizontals are another run's figures; "seed spike p99" alone assumed the reader knew the seed."""
    windows = plan_windows(duration=60)
    texts = [text.text or "" for text in _svg_elements(render_svg([(1.0, 3.0)], windows), "text")]
    assert "reference run (seed 001): steady p99 548 ms" in texts
    assert "reference run (seed 001): spike p99 1290 ms" in texts
    assert any(text.startswith("reference run (seed 001, 100 min)") for text in texts)  # the legend entry


def test_the_strip_shows_throughput_and_errors_on_the_same_time_axis() -> None:
    windows = plan_windows(duration=60)
    emitted = [t / 10 for t in range(600)] + [t / 100 + 40 for t in range(400)]  # 10/s, then 110/s for 4 s
    errors = [(20.0, 1), (20.1, 2), (50.0, 1)]  # two marks 0.1 s apart are one mark of 3
    svg = render_svg([(1.0, 3.0)], windows, emitted=emitted, errors=errors)
    throughput = [line for line in _svg_elements(svg, "polyline") if line.get("class") == "throughput"]
    assert len(throughput) == 1
    heights = [float(point.split(",")[1]) for point in (throughput[0].get("points") or "").split()]
    assert min(heights) < max(heights)  # the burst stands out
    counts = [text.text for text in _svg_elements(svg, "text") if text.get("class") == "error-count"]
    assert counts == ["3", "1"]
    xs = [float(text.get("x") or 0) for text in _svg_elements(svg, "text") if text.get("class") == "error-count"]
    assert xs[1] - xs[0] >= 30  # count labels never overlap
    texts = [text.text or "" for text in _svg_elements(svg, "text")]
    assert any(text.startswith("errors: 4") for text in texts)
    quiet = [text.text or "" for text in _svg_elements(render_svg([(1.0, 3.0)], windows, emitted=emitted), "text")]
    assert any(text.startswith("errors: none") for text in quiet)


def test_error_points_count_rises_and_restarts() -> None:
    samples = [
        ErrorSample(1.0, 0, "p1", 5),  # baseline: errors from before the run
        ErrorSample(2.0, 0, "p1", 7),
        ErrorSample(3.0, 1, "p1", 1),  # restarted: the counter began at 0
        ErrorSample(4.0, 1, "p1", 1),
    ]
    assert error_points(samples) == [(2.0, 2), (3.0, 1)]


def test_a_result_marks_never_synced_records_as_errors_for_the_strip() -> None:
    windows = plan_windows(duration=10)
    ledger = Ledger(len(windows), 1, final_errors_read=True)
    ledger.emitted = {"r1": Emitted(5.0, 2, 1000.0), "r2": Emitted(5.1, 2, 1000.0)}
    ledger.synced = {"r1": 1000.004}
    result = build_result(SoakConfig(windows=windows, rate=0.1), ledger, started_at=0.0, drain_seconds=1.0)
    assert result.errors == [(5.1, 1)]
