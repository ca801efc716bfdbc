"""Quality figures: completeness, validity, timeliness, consistency; the 15-minute window."""

from __future__ import annotations

import json
import math

from monitoring.metrics import QualityMetrics
from streams.catalog.model import UPDATE_FREQUENCIES
from streams.quality.figures import (
    TIMELINESS_LIMIT_MS,
    WINDOW_MS,
    QualityBook,
    QualityRow,
    Window,
    filled,
    spec_fields,
)

T = 1_800_000_000_000
R, U = "population.resident", "220000-GA"


def test_every_update_frequency_has_a_limit_or_none() -> None:
    assert set(TIMELINESS_LIMIT_MS) == set(UPDATE_FREQUENCIES)
    assert TIMELINESS_LIMIT_MS["realtime"] == 60_000
    assert TIMELINESS_LIMIT_MS["hourly"] == 3_600_000
    assert TIMELINESS_LIMIT_MS["daily"] == 86_400_000
    assert TIMELINESS_LIMIT_MS["irregular"] is None


def test_required_fields_are_non_nullable_without_default() -> None:
    parsed = {
        "fields": [
            {"name": "a", "type": "string"},
            {"name": "b", "type": ["null", "string"], "default": None},
            {"name": "c", "type": "int", "default": 0},
            {"name": "d", "type": "double"},
        ]
    }
    fields = spec_fields(parsed)
    assert fields.required == ("a", "d") and fields.optional == ("b", "c")
    assert not filled(None) and not filled("") and not filled([]) and not filled({})
    assert filled(0) and filled(False) and filled("x") and filled(0.0)


def accept(book: QualityBook, at: int, now: int, *, delay: int = 1000, opt: int = 1) -> None:
    book.accepted(
        R, U, at, now, required=(4, 4), optional=(opt, 2), delay_ms=delay, limit_ms=60_000
    )


def test_figures_of_a_pair() -> None:
    book = QualityBook(T)
    accept(book, T, T)  # on time, 5 of 6 fields
    accept(book, T, T, delay=120_000, opt=2)  # late, 6 of 6
    book.passed(R, U, T, T)  # superseded
    book.rejected(R, U, "FIELD_RULE", T, T)
    book.verified(R, U, True, T, T)
    book.verified(R, U, True, T, T)
    book.verified(R, U, False, T, T)
    (row,) = book.rows(T)
    fig = row.window
    assert fig.records == 4 and fig.rejected == 1
    assert fig.reasons == {"FIELD_RULE": 1}
    assert fig.validity == 0.75
    assert fig.completeness == 11 / 12
    assert fig.completeness_required == 1.0 and fig.completeness_optional == 0.75
    assert fig.timeliness == 0.5
    assert fig.consistency is None and row.open_conflicts is None  # verification not running
    book.open_conflicts = {(R, U): 1}
    (row,) = book.rows(T)
    assert row.window.consistency == 2 / 3 and row.open_conflicts == 1
    assert row.total == row.window


def test_nothing_to_measure_is_none() -> None:
    book = QualityBook(T)
    book.rejected("(undecodable)", "(undecodable)", "MALFORMED", T, T)
    (row,) = book.rows(T)
    assert row.window.validity == 0.0
    assert row.window.completeness is None and row.window.timeliness is None


def test_the_window_forgets_what_is_older_than_15_minutes_the_total_does_not() -> None:
    book = QualityBook(T)
    accept(book, T, T)
    book.rejected(R, U, "FIELD_RULE", T + 10 * 60_000, T + 10 * 60_000)
    (row,) = book.rows(T + 10 * 60_000)
    assert row.window.records == 2
    (row,) = book.rows(T + WINDOW_MS + 60_000)
    assert row.window.records == 1 and row.window.validity == 0.0
    assert row.total.records == 2 and row.total.validity == 0.5
    # An outcome written long ago (read on start-up) counts since start only.
    book.passed(R, U, T - 2 * WINDOW_MS, T + WINDOW_MS + 60_000)
    (row,) = book.rows(T + WINDOW_MS + 60_000)
    assert row.window.records == 1 and row.total.records == 3


def test_window_buckets() -> None:
    w = Window(span_ms=3 * 60_000, bucket_ms=60_000)
    now = T - T % 60_000
    for minute in range(5):
        bucket = w.bucket(now + minute * 60_000, now + 4 * 60_000)
        if bucket is not None:
            bucket.records += 1
    assert w.total(now + 4 * 60_000).records == 3
    assert w.total(now + 6 * 60_000).records == 1
    assert w.total(now + 9 * 60_000).records == 0


def test_row_round_trip_and_gauges() -> None:
    book = QualityBook(T)
    accept(book, T, T)
    book.rejected("(undecodable)", "(undecodable)", "MALFORMED", T, T)
    rows = book.rows(T)
    for row in rows:
        assert QualityRow.from_json(row.to_json()) == row
        assert json.loads(row.to_json())["resource"] == row.resource
    metrics = QualityMetrics()
    metrics.show((r.resource, r.unit, r.window, r.open_conflicts) for r in rows)
    get = metrics.registry.get_sample_value
    assert get("xiangyun_quality_validity_ratio", {"resource": R, "unit": U}) == 1.0
    assert get("xiangyun_quality_window_records", {"resource": R, "unit": U}) == 1
    undecodable = {"resource": "(undecodable)", "unit": "(undecodable)"}
    assert get("xiangyun_quality_validity_ratio", undecodable) == 0.0
    completeness = get("xiangyun_quality_completeness_ratio", undecodable)
    assert completeness is not None and math.isnan(completeness)
