"""`xiangyun pools` without Kafka or Redis: every verb has help, a record reads well."""

from __future__ import annotations

import pytest

from monitoring.metrics import ViewMetrics
from streams.views.reader import Freshness, ResourceStats, ViewStats
from xiangyun.cli import build_parser
from xiangyun.pools_cli import render_freshness, render_record, render_stats
from xiangyun.settings import Settings


@pytest.mark.parametrize("verb", ["get", "stats", "rebuild"])
def test_every_verb_has_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["pools", verb, "--help"])
    assert exc.value.code == 0
    assert "usage: xiangyun pools " + verb in capsys.readouterr().out


def test_get_takes_resource_and_subject() -> None:
    args = build_parser().parse_args(["pools", "get", "population.resident", "S1", "--json"])
    assert (args.resource_id, args.subject_id, args.json) == ("population.resident", "S1", True)


def test_a_record_with_its_provenance() -> None:
    rec = {
        "resource_id": "population.resident",
        "subject_id": "S1",
        "version": 4,
        "observed_at_ms": 1_767_225_600_000,
        "content_fingerprint": bytes(range(8)),
        "record_id": "r-1",
        "provider": "220000-GA",
        "channel": "DIRECT",
        "region": "220000",
        "consent_ref": None,
        "accepted_at_ms": 1_767_225_601_500,
        "source_topic": "xy.collect",
        "source_partition": 2,
        "source_offset": 77,
        "catalog_version": 3,
        "verification_count": 1,
        "payload": {"name": "李明", "address": None},
        "payload_bytes": b"\xc3\x01",
        "payload_schema": "org.xiangyun.payload.Resident",
    }
    text = render_record(rec)
    assert "collected by    220000-GA (region 220000), channel DIRECT" in text
    assert "2026-01-01 00:00:01.500Z, against catalog version 3" in text
    assert "xy.collect partition 2 offset 77" in text
    assert "0001020304050607" in text and "verified by     1 other source\n" in text
    assert "name     李明" in text and "address  -" in text


def test_stats_and_freshness_lines() -> None:
    stats = ViewStats("g1", [ResourceStats("population.resident", "population", 4, 1000)], 3, 1100)
    lines = render_stats(stats, Settings())
    assert any("population.resident" in ln and ln.endswith("250") for ln in lines)
    assert lines[-1] == "total: 4 records in 3 keys, 1100 bytes (275 bytes per record)"
    behind = Freshness("g1", None, {"xy.pool.population": 3}, {}, {})
    assert render_freshness(behind)[0] == "freshness: last batch applied never; 3 records behind"
    assert "no view" in render_freshness(Freshness(None, None, {}, {}, {}))[0]


def test_view_metrics_follow_naming_conventions() -> None:
    m = ViewMetrics()
    m.applied({"population": 3}, 1.0)
    m.rebuilds.inc()
    m.lag.labels("xy.pool.population").set(5)
    r = m.registry
    assert r.get_sample_value("xiangyun_view_records_applied_total", {"pool": "population"}) == 3
    assert r.get_sample_value("xiangyun_view_rebuilds_total") == 1
    assert r.get_sample_value("xiangyun_view_lag_records", {"topic": "xy.pool.population"}) == 5
    age = r.get_sample_value("xiangyun_view_freshness_seconds")
    assert age is not None and age > 1000
