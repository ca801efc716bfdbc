import pytest

from xiangyun.bench import BenchResult, RunResult, Spread, rate, ratios, render, steady_rate


def test_spread_is_min_median_max_whatever_the_order():
    assert Spread.of([460_000.0, 118_000.0, 800_000.0]) == Spread(118_000, 460_000, 800_000)
    assert Spread.of([3.0, 1.0, 2.0, 4.0]) == Spread(1.0, 2.5, 4.0)
    assert Spread.of(iter([7.0])) == Spread(7.0, 7.0, 7.0)


def test_spread_of_nothing_is_refused():
    with pytest.raises(ValueError):
        Spread.of([])


def test_spread_formats_min_median_max():
    assert Spread(1234.4, 5678.6, 9000.0).format() == "1,234 / 5,679 / 9,000"
    assert Spread(0.104, 0.25, 0.5).format(".2f") == "0.10 / 0.25 / 0.50"


def test_ratios_are_per_pair_not_of_medians():
    raw, ingest = [100.0, 400.0, 1000.0], [50.0, 100.0, 100.0]
    assert ratios(ingest, raw) == [0.5, 0.25, 0.1]
    # the median of the per-run ratios, not median(ingest) / median(raw) = 0.25
    assert Spread.of(ratios(ingest, raw)).median == 0.25
    assert ratios([5.0], [0.0]) == [0.0]
    with pytest.raises(ValueError):
        ratios([1.0], [1.0, 2.0])


def test_rate_spans_first_timestamp_to_acknowledgement():
    assert rate(1000, first_ms=10_000, end_s=12.0) == 500.0
    assert rate(10, first_ms=10_000, end_s=10.0) == 10_000.0  # never divides by zero


def _run(raw: float, ingest: float, outcomes: int = 100) -> RunResult:
    return RunResult(raw, 100, ingest, outcomes, 90.0)


def test_bench_result_summarises_runs_and_is_complete_only_if_every_run_is():
    r = BenchResult(100, "test", [_run(100, 50), _run(400, 100), _run(1000, 100)])
    assert r.raw == Spread(100, 400, 1000)
    assert r.ingest == Spread(50, 100, 100)
    assert r.ratio == Spread(0.1, 0.25, 0.5)
    assert r.complete
    assert "0.10 / 0.25 / 0.50" in render(r)
    r.runs.append(_run(100, 50, outcomes=99))
    assert not r.complete
    assert not BenchResult(100, "test").complete


def test_what_exactly_once_costs_is_the_ingest_against_the_same_decision_at_least_once():
    runs = [
        RunResult(300, 100, 45, 100, 90.0, decided_rate=50),
        RunResult(300, 100, 48, 100, 90.0, decided_rate=40),
        RunResult(300, 100, 44, 100, 90.0, decided_rate=44),
    ]
    r = BenchResult(100, "test", runs)
    assert r.decided == Spread(40, 44, 50)
    assert r.eos_cost == Spread(0.9, 1.0, 1.2)
    assert "0.90 / 1.00 / 1.20" in render(r)
    assert RunResult(300, 100, 45, 100, 90.0).eos_cost == 0.0  # (d) not measured: no ratio


def test_the_in_process_loops_split_the_cost_into_transactions_and_pool_state():
    runs = [
        RunResult(300, 100, 45, 100, 90.0, decided_rate=50, loop_rate=45, loop_no_state_rate=55),
        RunResult(300, 100, 48, 100, 90.0, decided_rate=40, loop_rate=38, loop_no_state_rate=40),
    ]
    r = BenchResult(100, "test", runs)
    assert r.loop_cost == Spread(0.9, 0.925, 0.95)
    assert r.txn_cost == Spread(1.0, pytest.approx(1.05), 1.1)
    text = render(r)
    assert "(e)/(d), per run       0.90 / 0.93 / 0.95" in text
    assert "(f)/(d), per run       1.00 / 1.05 / 1.10" in text
    assert RunResult(300, 100, 45, 100, 90.0, loop_rate=45).loop_cost == 0.0  # no (d)


def test_the_worker_is_also_set_against_the_at_least_once_worker():
    runs = [
        RunResult(300, 100, 45, 100, 90.0, decided_rate=50, worker_alo_rate=50),
        RunResult(300, 100, 48, 100, 90.0, decided_rate=40, worker_alo_rate=40),
    ]
    r = BenchResult(100, "test", runs)
    assert r.worker_alo == Spread(40, 45, 50)
    assert r.worker_cost == Spread(0.9, 1.05, 1.2)
    assert "(b)/(g), per run       0.90 / 1.05 / 1.20" in render(r)
    assert RunResult(300, 100, 45, 100, 90.0).worker_cost == 0.0  # (g) not measured


def test_the_steady_rate_leaves_out_a_runs_start_and_end():
    # 1,000 outputs a second for 10 s, then the last one 5 s later (a slow last commit)
    times = [1_000 + i for i in range(10_000)] + [16_000]
    assert steady_rate(times) == pytest.approx(1_000, rel=0.01)
    assert steady_rate(times, trim=0.0) == pytest.approx(10_000 / 15, rel=0.01)
    assert steady_rate(times[:99]) == 0.0  # too few to say
    assert steady_rate([5] * 1_000) == 0.0  # all in one millisecond


def test_the_steady_ratio_is_reported_per_run_and_as_a_spread():
    runs = [
        RunResult(300, 100, 45, 100, 90.0, ingest_steady_rate=50, worker_alo_steady_rate=50),
        RunResult(300, 100, 48, 100, 90.0, ingest_steady_rate=44, worker_alo_steady_rate=40),
    ]
    r = BenchResult(100, "test", runs)
    assert r.steady_cost == Spread(1.0, 1.05, 1.1)
    assert "(b)/(g) steady         1.00 / 1.05 / 1.10" in render(r)
    assert RunResult(300, 100, 45, 100, 90.0, ingest_steady_rate=5).steady_cost == 0.0


def test_each_worker_reads_its_own_copy_on_topics_the_cleanup_deletes() -> None:
    import dataclasses

    from xiangyun.bench import _run_prefixes, _worker_runs
    from xiangyun.settings import Settings

    run = dataclasses.replace(Settings(), topic_prefix="xy-bench-1-r0", app_id="xy-bench-1-r0")
    b, g = _worker_runs(run)
    assert len({run.topic_prefix, b.topic_prefix, g.topic_prefix}) == 3
    assert len({run.ingest_group, b.ingest_group, g.ingest_group}) == 3
    prefixes = _run_prefixes(run)
    for each in (run, b, g):  # deleted after the run: its topics and its workers' internal ones
        assert f"{each.topic_prefix}.collect.x".startswith(prefixes)
        assert f"{each.app_id}-__assignor-__leader".startswith(prefixes)
    # and nothing of the next runs (r1 is not r10)
    assert not "xy-bench-1-r01.collect.x".startswith(prefixes)
