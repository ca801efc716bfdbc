"""The exchange benchmark's report: percentiles and ratios computed from what was measured."""

from __future__ import annotations

from xiangyun.exchange_bench import ExchangeBench, Phase


def _phase(name: str, latencies: list[float]) -> Phase:
    return Phase(name, 1000, len(latencies), len(latencies), latencies)


def test_percentiles_are_of_the_measured_latencies() -> None:
    p = _phase("x", [float(i) for i in range(1, 101)])
    assert p.pct(0.5) == 51.0
    assert p.pct(0.99) == 100.0
    assert p.pct(0.0) == 1.0
    assert "nan" in Phase("empty", 1000).line()


def test_the_report_gives_both_ratios_and_the_floor_a_transaction_sets() -> None:
    bare = _phase("bare", [2.0] * 99 + [8.0])
    txn = _phase("bare in txns", [4.0] * 99 + [30.0])
    exchange = _phase("exchange", [10.0] * 99 + [45.0])
    alone = _phase("a transaction alone", [3.0] * 99 + [20.0])
    text = ExchangeBench(bare, txn, exchange, [], 0.0, alone).render()
    assert "exchange / bare: p50 x5.0, p99 x5.6" in text
    assert "exchange / bare in txns: p50 x2.5, p99 x1.5" in text
    assert "1.5 x the bare p99: 12.0 ms; a transaction alone: p99 20.0 ms" in text
