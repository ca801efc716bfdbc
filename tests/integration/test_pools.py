"""Exactly-once resource pools on the real broker: deduplication, staleness, conflicts,
bad versions and times, SIGKILL at unlucky moments and partitions moving between workers."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter

from confluent_kafka import Consumer, TopicPartition

from connectors.generator import SampleGenerator, SampleRecord
from connectors.producer import SourceProducer
from streams.kafka.topics import Topics
from streams.wire.codec import SchemaRegistry, decode, encode, read_fingerprint
from streams.wire.envelope import Envelope, EnvelopeCodec
from xiangyun.outcomes import Ledger, collect_lag, read_ledger, wait_for_no_lag
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings


def pool_versions(settings: Settings, topics: Topics) -> dict[bytes, list[tuple[int, int]]]:
    """Every committed pool record per key: (version, observed-at) in log order."""
    registry = SchemaRegistry.from_dir(settings.schema_dir)
    schema = registry.by_name("org.xiangyun.PoolRecord")
    c = Consumer(
        settings.kafka.consumer(
            f"pools-{uuid.uuid4().hex[:6]}", **{"isolation.level": "read_committed"}
        )
    )
    out: dict[bytes, list[tuple[int, int]]] = {}
    try:
        ends = {}
        for t in topics.pools.values():
            for p in c.list_topics(t, timeout=10).topics[t].partitions:
                high = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                if high:
                    ends[(t, p)] = high
        c.assign([TopicPartition(t, p, 0) for t, p in ends])
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                if m.error():
                    continue
                rec = decode(m.value() or b"", schema)
                out.setdefault(m.key() or b"", []).append((rec["version"], rec["observed_at_ms"]))
            for (t, p), high in list(ends.items()):
                if c.position([TopicPartition(t, p)])[0].offset >= high:
                    del ends[(t, p)]
        assert not ends, f"pool topics not read to their end: {ends}"
    finally:
        c.close()
    return out


def variant(
    codec: EnvelopeCodec, registry: SchemaRegistry, rec: SampleRecord, **change: object
) -> bytes:
    """The record with envelope fields changed; ``content`` changes a payload field."""
    env = codec.decode(rec.value)
    content = change.pop("content", None)
    if content is not None:
        writer = registry.get(read_fingerprint(env.payload))
        assert writer is not None
        payload = dict(decode(env.payload, writer))
        field = "address"  # free text: no field rule to break
        payload[field] = f"{payload[field]}{content}"
        env = dataclasses.replace(env, payload=encode(writer, payload))
    return codec.encode(dataclasses.replace(env, **change))  # type: ignore[arg-type]


def test_duplicates_stale_conflicts_and_bad_versions(
    settings: Settings,
    topics: Topics,
    generator: SampleGenerator,
    producer: SourceProducer,
    codec: EnvelopeCodec,
    registry: SchemaRegistry,
    worker: WorkerProcess,
) -> None:
    base = next(r for r in generator.records(200) if r.expected == "accepted:population")
    env: Envelope = codec.decode(base.value)
    t0 = env.observed_at_ms
    sends = [
        ("v1 A", variant(codec, registry, base, version=1, observed_at_ms=t0), "accepted"),
        (
            "v1 A again",
            variant(codec, registry, base, version=1, observed_at_ms=t0),
            "superseded:DUPLICATE",
        ),
        (
            "v1 A new id",
            variant(
                codec, registry, base, version=1, observed_at_ms=t0, record_id=str(uuid.uuid4())
            ),
            "superseded:DUPLICATE",
        ),
        (
            "v3 B",
            variant(codec, registry, base, version=3, observed_at_ms=t0 + 10, content="B"),
            "accepted",
        ),
        (
            "v2 C",
            variant(codec, registry, base, version=2, observed_at_ms=t0 + 20, content="C"),
            "superseded:STALE",
        ),
        (
            "v3 C",
            variant(codec, registry, base, version=3, observed_at_ms=t0 + 10, content="C"),
            "superseded:VERSION_CONFLICT",
        ),
        (
            "v3 older",
            variant(codec, registry, base, version=3, observed_at_ms=t0 + 5, content="D"),
            "superseded:STALE",
        ),
        (
            "v4 B",
            variant(codec, registry, base, version=4, observed_at_ms=t0 + 30, content="B"),
            "superseded:DUPLICATE",
        ),
        (
            "negative",
            variant(codec, registry, base, version=-1, content="E"),
            "rejected:INVALID_VERSION",
        ),
        (
            "future",
            variant(
                codec,
                registry,
                base,
                version=9,
                observed_at_ms=int(time.time() * 1000) + 3_600_000,
                content="F",
            ),
            "rejected:INVALID_TIME",
        ),
        (
            "v5 G",
            variant(codec, registry, base, version=5, observed_at_ms=t0 + 40, content="G"),
            "accepted",
        ),
    ]
    for _, value, _ in sends:  # one at a time, in this order, on one partition (one key)
        producer.send_all([(base.principal, base.key, value)], progress=False)
    assert wait_for_no_lag(settings, topics, timeout=60) == 0
    ledger = read_ledger(settings, topics)
    (topic, partition) = next(tp for tp, (lo, hi) in ledger.collected.items() if hi > lo)
    low, high = ledger.collected[(topic, partition)]
    got = [ledger.outcomes.get((topic, partition, o)) for o in range(low, high)]
    assert got == [
        [(exp.split(":")[0], exp.split(":")[1] if ":" in exp else "")] for _, _, exp in sends
    ]
    versions = pool_versions(settings, topics)[base.key]
    assert versions == [(1, t0), (3, t0 + 10), (5, t0 + 40)], "only updates reach the pool"


def _sample(generator: SampleGenerator, n: int) -> list[SampleRecord]:
    """``n`` records with distinct keys."""
    seen: set[bytes] = set()
    out: list[SampleRecord] = []
    for r in generator.records(int(n * 1.3)):
        if r.key not in seen:
            seen.add(r.key)
            out.append(r)
            if len(out) == n:
                break
    assert len(out) == n
    return out


def _wait_progress(workers: list[WorkerProcess], more_than: float, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while sum(w.metric("xiangyun_ingest_records_total{") for w in workers) <= more_than:
        assert time.monotonic() < deadline, f"no progress past {more_than} records"
        time.sleep(0.05)


def _check_exactly_once(ledger: Ledger, expected_total: int) -> Counter[str]:
    assert sum(hi - lo for lo, hi in ledger.collected.values()) == expected_total
    missing = ledger.missing()
    doubled = ledger.doubled()
    assert not missing, f"{len(missing)} records without an outcome, e.g. {missing[:3]}"
    assert not doubled, (
        f"{len(doubled)} records with two outcomes, e.g. {list(doubled.items())[:3]}"
    )
    return ledger.counts()


def test_sigkill_three_times_and_moving_partitions_keep_exactly_once(
    settings: Settings,
    topics: Topics,
    generator: SampleGenerator,
    producer: SourceProducer,
) -> None:
    distinct = _sample(generator, 150_000)
    again = distinct[::10]  # 10 % exact re-publications
    producer.send_all(((r.principal, r.key, r.value) for r in [*distinct, *again]), progress=False)
    total = len(distinct) + len(again)

    def worker(name: str) -> WorkerProcess:
        s = dataclasses.replace(settings, metrics_port=_free_port())
        return WorkerProcess(s, name=f"{name}-{settings.app_id}").start()

    def committed() -> int:
        """Records whose outcomes the group has committed (monotonic across crashes)."""
        lag = collect_lag(settings, topics)
        return -1 if lag < 0 else total - lag

    def kill_after(victim: WorkerProcess, share: float) -> None:
        deadline = time.monotonic() + 180
        while (done := committed()) < share * total:
            assert time.monotonic() < deadline, f"no progress past {done:,}/{total:,}"
            time.sleep(0.02)
        assert victim.proc is not None and victim.proc.poll() is None, "the worker had died"
        victim.kill()  # SIGKILL while it works: open transaction, batches in flight
        victim.stop()
        assert done < total, "the kill came after the work was done"
        kills.append(done)

    kills: list[int] = []
    w1 = worker("w1")
    kill_after(w1, 0.15)
    w2, w3 = worker("w2"), worker("w3")  # two workers: partitions split, then move
    kill_after(w2, 0.45)
    kill_after(w3, 0.75)
    w4 = worker("w4")
    try:
        assert wait_for_no_lag(settings, topics, timeout=240) == 0
    finally:
        w4.stop()
    assert len(kills) == 3 and kills == sorted(kills)
    counts = _check_exactly_once(read_ledger(settings, topics, timeout=120), total)
    accepted = sum(n for k, n in counts.items() if k.startswith("accepted"))
    expected_accepted = sum(1 for r in distinct if r.expected.startswith("accepted"))
    expected_evidence = sum(1 for r in [*distinct, *again] if r.expected == "verification")
    assert accepted == expected_accepted
    assert counts["superseded:DUPLICATE"] == sum(
        1 for r in again if r.expected.startswith("accepted")
    )
    assert counts["verification"] == expected_evidence
    assert sum(counts.values()) == total
    versions = pool_versions(settings, topics)
    assert len(versions) == expected_accepted
    assert all(len(v) == 1 for v in versions.values()), "a key with two pool versions"


def test_a_worker_leaving_and_one_joining_never_let_a_stale_version_win(
    settings: Settings,
    topics: Topics,
    generator: SampleGenerator,
    producer: SourceProducer,
    codec: EnvelopeCodec,
    registry: SchemaRegistry,
) -> None:
    subjects = [r for r in _sample(generator, 6_000) if r.expected == "accepted:population"][:3_000]
    rounds = 6
    for v in range(1, rounds + 1):  # every subject gets versions 1..6 in order
        producer.send_all(
            (
                (r.principal, r.key, variant(codec, registry, r, version=v, content=f"v{v}"))
                for r in subjects
            ),
            progress=False,
        )

    def worker(name: str) -> WorkerProcess:
        s = dataclasses.replace(settings, metrics_port=_free_port(), batch_size=200)
        return WorkerProcess(s, name=f"{name}-{settings.app_id}").start()

    a, b = worker("a"), worker("b")
    _wait_progress([a, b], 3_000)
    a.stop()  # leaves mid-stream: its in-flight batches commit or abort before the move
    c = worker("c")
    try:
        assert wait_for_no_lag(settings, topics, timeout=180) == 0
    finally:
        b.stop()
        c.stop()
    _check_exactly_once(read_ledger(settings, topics), len(subjects) * rounds)
    versions = pool_versions(settings, topics)
    for r in subjects:
        got = [v for v, _ in versions[r.key]]
        assert got == sorted(got), f"{r.key!r}: versions out of order {got}"
        assert got[-1] == rounds, f"{r.key!r}: latest pool version is {got[-1]}, not {rounds}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_flushed_during_ingest_loses_nothing_and_a_rebuild_equals_the_live_view(
    settings: Settings,
    topics: Topics,
    generator: SampleGenerator,
    producer: SourceProducer,
) -> None:
    import random
    import subprocess
    import sys

    import redis as redis_lib

    from streams.views import PoolView

    db = random.randint(1, 15)  # a database of this test's own: FLUSHDB touches nothing else
    run = dataclasses.replace(
        settings, redis_url=f"redis://127.0.0.1:6379/{db}", metrics_port=_free_port()
    )
    r = redis_lib.Redis.from_url(run.redis_url)
    sample = _sample(generator, 30_000)
    producer.send_all(((x.principal, x.key, x.value) for x in sample), progress=False)
    expected = {x.key for x in sample if x.expected.startswith("accepted")}
    view = PoolView(run.streams)
    with WorkerProcess(run, name=f"views-{settings.app_id}") as worker:
        _wait_progress([worker], 5_000)
        r.flushdb()  # Redis loses everything while the worker writes
        assert wait_for_no_lag(run, topics, timeout=120) == 0
        deadline = time.monotonic() + 120
        while not (fresh := view.freshness()).current or fresh.generation is None:
            assert time.monotonic() < deadline, f"view not current: {fresh.behind} behind"
            time.sleep(0.2)
        live = view.digest()
        assert view.stats().records == len(expected), "the view holds every accepted key"
    env = {**{k: v for k, v in __import__("os").environ.items() if not k.startswith("XIANGYUN_")}}
    env.update(run.describe(reveal=True))
    rebuilt = subprocess.run(
        [sys.executable, "-m", "xiangyun", "pools", "rebuild"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert view.digest() == live, "a replay of the pool topics equals the live view"
    some = next(x for x in sample if x.expected == "accepted:population")
    resource, subject = some.key.decode().split("|", 1)
    shown = subprocess.run(
        [sys.executable, "-m", "xiangyun", "pools", "get", resource, subject],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    assert subject in shown.stdout and "collected" in shown.stdout
    assert "220000-GA" in shown.stdout, "the provenance names the collecting unit"
    books = subprocess.run(
        [sys.executable, "-m", "xiangyun", "pools", "stats", "--accounting"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert books.returncode == 0, books.stdout + books.stderr
    assert "accounting adds up" in books.stdout
    view.flush()
