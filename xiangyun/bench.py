"""Benchmark: the ingest flow against raw Kafka pipes, on the same broker, in one run.

(a) raw pipe, at least once: a confluent-kafka consumer that re-produces every message
    unchanged: the consumer from :meth:`KafkaConfig.consumer` (no fetch stall), the
    worker's producer settings, ``produce(..., on_delivery=...)`` per record, a flush per
    batch and offsets stored only after the flush; its output topic configured like a pool
    topic. The fair ceiling of any consume-produce loop in this language and client.
(t) raw pipe, exactly once: the same loop in Kafka transactions, outputs and offsets
    committed together every ``commit_interval_ms`` as the worker does: what transactions
    alone cost, against (a).
(d) ingest, at least once: the raw pipe (a) with the worker's own decision (catalog, units,
    consent, collection spec, pool records with provenance) and no pool state: the
    at-least-once ingest as it was before the exactly-once change, with today's decision.
(b) ingest: a real ``xiangyun worker`` (Faust) deciding, deduplicating and routing the same
    records, exactly once. (b)/(d) is what exactly once costs.
(c) views: the materializer replaying the run's pool topics into Redis.
(g) ingest, at least once, as a worker: today's worker with the ingest agent of before
    exactly once (``xiangyun.bench_worker``: decide, produce, flush, then acknowledge; no pool
    state) and today's decision. The at-least-once path as it ran, with the worker around it
    that (d) leaves out: (b)/(g) is what exactly once costs a worker.

Each run has its own topics (a worker restores its pool state from the pool topics, so a
second run on the first run's topics would find every record a duplicate), deleted before
the next run. (b) and (g) each read their own copy of the sample on topics of their own and
take turns: (b) first in even runs, (g) first in odd ones. Each rate is records divided by
the span from the first output record's timestamp to the moment the last output is
acknowledged: for (a) its last flush, for (t) its last commit, for (b) the moment the
worker's committed offsets on the collect topic reach its end (offsets commit in the same
transaction as the outputs). Process start-up and group joins count for none. The
benchmark reports min/median/max of each rate and of the per-run ratios. Every topic and
consumer group it created is deleted at the end, Faust's internal topics included.
"""

from __future__ import annotations

import array
import concurrent.futures
import contextlib
import dataclasses
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
)

from connectors.consent import ConsentPublisher
from connectors.generator import SampleGenerator
from connectors.producer import SourceProducer
from streams.core.consent import Consent
from streams.ingest.decision import Outcome
from streams.ingest.pool_state import NATIVE
from streams.ingest.runtime import Runtime, settle_collector
from streams.kafka.batch_reader import unpack
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.config import idempotent_producer
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import Topics, ensure_topics
from streams.views import Materializer, PoolView, Progress
from streams.wire.codec import Schema, SchemaRegistry
from streams.wire.envelope import EnvelopeCodec
from xiangyun.bench_worker import NoPoolState
from xiangyun.outcomes import count_outcomes, end_offsets
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings
from xiangyun.stack import Stack
from xiangyun.units_cli import ensure_collect_topics

__all__ = ["BenchResult", "RunResult", "Spread", "ratios", "render", "run_bench"]

DEFAULT_RECORDS = 200_000
#: even: (b) and (g) each go first in half the runs
DEFAULT_RUNS = 4
#: how often the ingest measure asks for the worker's committed offsets
ACK_POLL_S = 0.025

#: the at-least-once pipe's consumer: offsets stored after each flush, committed by librdkafka
READER_OVERRIDES = {
    "enable.auto.commit": True,
    "auto.commit.interval.ms": 1000,
    "enable.auto.offset.store": False,
    "fetch.max.bytes": 52_428_800,
    "partition.assignment.strategy": "cooperative-sticky",
    "session.timeout.ms": 10_000,
}


@dataclass(frozen=True, slots=True)
class Spread:
    """Minimum, median and maximum of several runs."""

    min: float
    median: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        vals = list(values)
        if not vals:
            raise ValueError("no values")
        return cls(min(vals), statistics.median(vals), max(vals))

    def format(self, spec: str = ",.0f") -> str:
        return f"{self.min:{spec}} / {self.median:{spec}} / {self.max:{spec}}"


def ratios(numerators: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Per-pair ratios (0 where the denominator is 0): never a ratio of two medians."""
    if len(numerators) != len(denominators):
        raise ValueError(f"{len(numerators)} numerators, {len(denominators)} denominators")
    return [n / d if d else 0.0 for n, d in zip(numerators, denominators, strict=True)]


def _ratio(numerator: float, denominator: float) -> float:
    return ratios([numerator], [denominator])[0]


def rate(records: int, first_ms: int, end_s: float) -> float:
    """Records per second from the first output's timestamp (ms) to ``end_s`` (epoch s)."""
    return records / max(end_s - first_ms / 1000, 1e-3)


#: the share of outputs left out at each end of a run for its steady rate
STEADY_TRIM = 0.1


def steady_rate(times_ms: Sequence[int], trim: float = STEADY_TRIM) -> float:
    """Records per second between the outputs at the ``trim`` and ``1 - trim`` quantiles of
    their timestamps: the rate a worker keeps up, without what a run pays once at its start
    (the assignment, the first fetch) or its end (the last commit, the probe that sees it).
    0.0 for fewer than 100 outputs, or all in one millisecond."""
    n = len(times_ms)
    if n < 100:
        return 0.0
    ordered = sorted(times_ms)
    lo, hi = int(n * trim), n - 1 - int(n * trim)
    span_ms = ordered[hi] - ordered[lo]
    return (hi - lo) / (span_ms / 1000) if span_ms > 0 else 0.0


class OutputTimes(NamedTuple):
    """What :func:`_timestamps` read: the outputs, the first and last timestamps (ms) and
    the steady rate (:func:`steady_rate`)."""

    records: int
    first_ms: int
    last_ms: int
    steady: float


@dataclass(frozen=True, slots=True)
class RunResult:
    raw_rate: float
    raw_records: int
    ingest_rate: float
    ingest_outcomes: int
    worker_peak_mib: float
    txn_rate: float = 0.0
    view_rate: float = 0.0
    decided_rate: float = 0.0
    loop_rate: float = 0.0  # (e)
    loop_no_state_rate: float = 0.0  # (f)
    worker_alo_rate: float = 0.0  # (g)
    ingest_steady_rate: float = 0.0  # (b), the middle of the run
    worker_alo_steady_rate: float = 0.0  # (g), the middle of the run
    ingest_transactions: float = 0.0  # (b), committed

    @property
    def worker_cost(self) -> float:
        """(b)/(g): the exactly-once worker against the at-least-once worker."""
        return _ratio(self.ingest_rate, self.worker_alo_rate)

    @property
    def steady_cost(self) -> float:
        """(b)/(g) in the middle of the run (:func:`steady_rate`)."""
        return _ratio(self.ingest_steady_rate, self.worker_alo_steady_rate)

    @property
    def loop_cost(self) -> float:
        """(e)/(d): exactly once with the pool state, in-process, against at least once."""
        return _ratio(self.loop_rate, self.decided_rate)

    @property
    def txn_cost(self) -> float:
        """(f)/(d): transactions alone (no pool state), in-process, against at least once."""
        return _ratio(self.loop_no_state_rate, self.decided_rate)

    @property
    def eos_cost(self) -> float:
        """(b)/(d): the exactly-once ingest against the at-least-once one, same decision."""
        return _ratio(self.ingest_rate, self.decided_rate)

    @property
    def ratio(self) -> float:
        return _ratio(self.ingest_rate, self.raw_rate)

    @property
    def txn_ratio(self) -> float:
        return _ratio(self.txn_rate, self.raw_rate)


@dataclass
class BenchResult:
    records: int
    machine: str
    runs: list[RunResult] = field(default_factory=list)
    state_bytes_per_key: float = 0.0

    @property
    def raw(self) -> Spread:
        return Spread.of(r.raw_rate for r in self.runs)

    @property
    def ingest(self) -> Spread:
        return Spread.of(r.ingest_rate for r in self.runs)

    @property
    def ratio(self) -> Spread:
        return Spread.of(
            ratios([r.ingest_rate for r in self.runs], [r.raw_rate for r in self.runs])
        )

    @property
    def txn(self) -> Spread:
        return Spread.of(r.txn_rate for r in self.runs)

    @property
    def txn_ratio(self) -> Spread:
        return Spread.of(r.txn_ratio for r in self.runs)

    @property
    def ingest_vs_txn(self) -> Spread:
        return Spread.of(
            ratios([r.ingest_rate for r in self.runs], [r.txn_rate for r in self.runs])
        )

    @property
    def decided(self) -> Spread:
        return Spread.of(r.decided_rate for r in self.runs)

    @property
    def eos_cost(self) -> Spread:
        return Spread.of(r.eos_cost for r in self.runs)

    @property
    def views(self) -> Spread:
        return Spread.of(r.view_rate for r in self.runs)

    @property
    def loop_cost(self) -> Spread:
        return Spread.of(r.loop_cost for r in self.runs)

    @property
    def txn_cost(self) -> Spread:
        return Spread.of(r.txn_cost for r in self.runs)

    @property
    def worker_alo(self) -> Spread:
        return Spread.of(r.worker_alo_rate for r in self.runs)

    @property
    def worker_cost(self) -> Spread:
        return Spread.of(r.worker_cost for r in self.runs)

    @property
    def ingest_steady(self) -> Spread:
        return Spread.of(r.ingest_steady_rate for r in self.runs)

    @property
    def worker_alo_steady(self) -> Spread:
        return Spread.of(r.worker_alo_steady_rate for r in self.runs)

    @property
    def steady_cost(self) -> Spread:
        return Spread.of(r.steady_cost for r in self.runs)

    @property
    def ingest_transactions(self) -> Spread:
        return Spread.of(r.ingest_transactions for r in self.runs)

    @property
    def complete(self) -> bool:
        """Every run gave every record an outcome (and the raw pipe copied every record)."""
        return bool(self.runs) and all(
            r.ingest_outcomes == self.records and r.raw_records == self.records for r in self.runs
        )


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _raw_pipe(
    bench: Settings,
    src: str,
    dst: str,
    group: str,
    n: int,
    timeout: float,
    decide: Callable[[Sequence[Message]], Iterable[Outcome]] | None = None,
) -> tuple[int, float]:
    """Consume ``src`` and re-produce each message to ``dst`` the way the worker emits:
    per batch, produce with a delivery callback, flush, then store the batch's offsets.
    ``decide``: each batch's outcomes are produced instead (in their partitions).

    Returns the records acknowledged and the time (epoch s) the last flush returned.
    """
    c = Consumer(bench.kafka.consumer(group, **READER_OVERRIDES))
    p = idempotent_producer(bench.kafka)
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    produce = p.produce

    def send(value: bytes | None, key: bytes | None, partition: int, headers: Any) -> None:
        while True:
            try:
                # positionally, as the worker produces (cheaper than by keyword)
                produce(dst, value, key, partition, None, on_delivery, 0, headers)
                return
            except BufferError:
                p.poll(0.05)

    c.subscribe([src])
    done = 0
    acked_at = 0.0
    deadline = time.monotonic() + timeout
    try:
        while done < n and time.monotonic() < deadline:
            batch = [m for m in c.consume(bench.batch_size, 0.1) if m.error() is None]
            if not batch:
                continue
            if decide is None:
                for m in batch:
                    send(m.value(), m.key(), -1, None)  # -1: the partitioner's choice
            else:
                for out in decide(batch):
                    send(out.value, out.key, out.partition, out.headers)
            left = p.flush(60)
            if left or failures:
                raise RuntimeError(f"pipe to {dst}: {left} undelivered, failures: {failures[:5]}")
            acked_at = time.time()
            c.store_offsets(offsets=_next_offsets(batch))
            done += len(batch)
    finally:
        c.close()  # commits the stored offsets
    return done, acked_at


def _decided_pipe(
    bench: Settings, src: str, dst: str, group: str, n: int, timeout: float
) -> tuple[int, float]:
    """(d) the at-least-once ingest with today's decision: the raw pipe (a) with the
    worker's own :class:`~streams.ingest.decision.Ingestor` (catalog, units, consent,
    collection spec, pool records with provenance; no pool state, as before the
    exactly-once change) deciding each batch, every outcome produced to ``dst`` in its
    partition, flushed, then the batch's offsets stored."""
    runtime = Runtime(bench.streams)
    runtime.start()
    runtime.ingestor.state = NoPoolState()  # type: ignore[assignment]
    try:
        return _raw_pipe(
            bench, src, dst, group, n, timeout, lambda batch: runtime.decide(unpack(batch)[0])
        )
    finally:
        runtime.close()


def _fixed(value: object) -> Callable[[], object]:
    return lambda: value


def _eos_loop(
    bench: Settings, src: str, group: str, n: int, timeout: float, pool_state: bool
) -> tuple[int, float]:
    """(e) the worker's exactly-once ingest without the worker: its :class:`Runtime`
    deciding each batch (with the pool state, or (f) without it), outputs and offsets
    committed together as the agent commits them, each commit on a thread while the next
    batch is decided. (b)/(e) is what the worker's process (reader thread, Faust) costs."""
    runtime = Runtime(bench.streams)
    runtime.start()
    if not pool_state:
        runtime.ingestor.state = NoPoolState()  # type: ignore[assignment]
    c = Consumer(
        bench.kafka.consumer(
            group,
            **{
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "fetch.max.bytes": 52_428_800,
                "partition.assignment.strategy": "range",
            },
        )
    )
    committing = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bench-commit")
    pending: concurrent.futures.Future[int] | None = None
    c.subscribe([src])
    done = 0
    acked_at = 0.0
    deadline = time.monotonic() + timeout
    try:
        while done < n and time.monotonic() < deadline:
            batch = [m for m in c.consume(bench.batch_size, 0.1) if m.error() is None]
            if not batch:
                continue
            records, offsets = unpack(batch)
            outcomes = runtime.decide(records)
            if pending is not None:
                pending.result()
                acked_at = time.time()
            runtime.produce(outcomes, offsets)
            done += len(batch)
            if runtime.commit_due(done >= n):
                # the group metadata as of now, read on this thread (the consumer's)
                pending = committing.submit(runtime.commit, _fixed(c.consumer_group_metadata()))
        if pending is not None:
            pending.result()
            acked_at = time.time()
    finally:
        committing.shutdown()
        c.close()
        runtime.close()
    return done, acked_at


def _txn_pipe(
    bench: Settings, src: str, dst: str, group: str, n: int, timeout: float
) -> tuple[int, float]:
    """The raw pipe in Kafka transactions: outputs and offsets commit together every
    ``commit_interval_ms`` (or when no batch waits), as the worker commits."""
    c = Consumer(
        bench.kafka.consumer(
            group,
            **{
                "isolation.level": "read_committed",
                "fetch.max.bytes": 52_428_800,
                "partition.assignment.strategy": "cooperative-sticky",
            },
        )
    )
    p = Producer(
        bench.kafka.transactional_producer(
            f"{group}.txn", **{"transaction.timeout.ms": bench.transaction_timeout_ms}
        )
    )
    p.init_transactions(30)
    produce = p.produce
    c.subscribe([src])
    done = pending = 0
    offsets: dict[tuple[str, int], int] = {}
    opened = 0.0
    acked_at = 0.0
    deadline = time.monotonic() + timeout

    def commit() -> None:
        nonlocal pending, acked_at
        p.send_offsets_to_transaction(
            [TopicPartition(t, q, o) for (t, q), o in offsets.items()],
            c.consumer_group_metadata(),
            60,
        )
        p.commit_transaction(60)
        acked_at = time.time()
        offsets.clear()
        pending = 0

    try:
        while done < n and time.monotonic() < deadline:
            batch = [m for m in c.consume(bench.batch_size, 0.1) if m.error() is None]
            if batch:
                if not pending:
                    p.begin_transaction()
                    opened = time.monotonic()
                for m in batch:
                    while True:
                        try:
                            produce(dst, m.value(), m.key(), partition=m.partition() or 0)
                            break
                        except BufferError:
                            p.poll(0.05)
                for tp in _next_offsets(batch):
                    offsets[(tp.topic, tp.partition)] = tp.offset
                pending += len(batch)
                done += len(batch)
            age_ms = (time.monotonic() - opened) * 1000
            if pending and (not batch or age_ms >= bench.commit_interval_ms or done >= n):
                commit()
    finally:
        c.close()
    return done, acked_at


def _wait_committed(
    bench: Settings, topics: Topics, group: str, timeout: float, idle_timeout: float
) -> tuple[int, float]:
    """Poll ``group``'s committed offsets on the collect topics until they reach their
    ends: the moment (epoch s) the worker's last transaction was committed, and the records."""
    c = Consumer(bench.kafka.consumer(f"{group}-probe-{uuid.uuid4().hex[:6]}"))
    # Offsets committed in a transaction are visible only once it commits, whatever the
    # isolation level. Read committed asks for stable offsets: the broker refuses while any
    # transaction of the group is open (one always is, mid-stream) and librdkafka asks again
    # after its backoff, which put the end up to a second late (a tenth of a run).
    probe = Consumer(bench.kafka.consumer(group, **{"isolation.level": "read_uncommitted"}))
    try:
        every = c.list_topics(timeout=10).topics
        tps = [
            TopicPartition(t, p)
            for t in every
            if topics.principal_of(t) is not None
            for p in every[t].partitions
        ]
        ends = {(tp.topic, tp.partition): c.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        total = sum(ends.values())
        began = last_change = time.monotonic()
        shown, seen = began, -1
        while True:
            try:
                got = probe.committed(tps, timeout=10)
                now_wall, now = time.time(), time.monotonic()
                done = sum(max(0, tp.offset) for tp in got)
            except KafkaException:  # the coordinator moving: ask again
                now_wall, now, done = time.time(), time.monotonic(), seen
            if done != seen:
                seen, last_change = done, now
            if seen >= total:
                return seen, now_wall
            if now - began > timeout or now - last_change > idle_timeout:
                return seen, now_wall
            if now - shown > 2:
                shown = now
                _say(f"    committed {seen:,}/{total:,}")
            time.sleep(ACK_POLL_S)
    finally:
        c.close()
        probe.close()


def _view_rate(run: Settings, registry: SchemaRegistry) -> float:
    """Replay the run's pool topics into Redis from scratch: records applied per second."""
    records, seconds, _ = _replay_views(run, registry, timeout=600)
    return records / max(seconds, 1e-3)


def _replay_views(
    run: Settings, registry: SchemaRegistry, timeout: float, report_every: int = 0
) -> tuple[int, float, int]:
    """Replay the run's pool topics into an empty Redis view: records applied, seconds, and
    the bytes of Redis memory they took. The view is flushed again afterwards."""
    import redis

    view = PoolView(run.streams, registry)
    view.flush()
    memory = redis.Redis.from_url(run.redis_url)
    before = int(memory.info("memory")["used_memory"])
    m = Materializer(run.streams, registry).start()
    try:
        began = time.monotonic()
        said = [0]

        def say(p: Progress) -> None:
            if report_every and p.records - said[0] >= report_every:
                said[0] = p.records
                _say(f"    applied {p.records:,} records, {sum(p.lag.values()):,} to go")

        progress = m.catch_up(timeout=timeout, progress=say)
        seconds = time.monotonic() - began
        used = int(memory.info("memory")["used_memory"]) - before
    finally:
        m.stop()
        view.flush()
    return progress.records, seconds, used


def _next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        last[(m.topic() or "", m.partition() or 0)] = m.offset() or 0
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _timestamps(
    bench: Settings, start: dict[tuple[str, int], int], expected: int, read_committed: bool = False
) -> OutputTimes:
    """Read from ``start`` on: the records, their first and last timestamps, their steady
    rate."""
    isolation = "read_committed" if read_committed else "read_uncommitted"
    c = Consumer(
        bench.kafka.consumer(
            f"bench-read-{uuid.uuid4().hex[:8]}",
            **{"fetch.max.bytes": 52_428_800, "isolation.level": isolation},
        )
    )
    c.assign([TopicPartition(t, p, off) for (t, p), off in start.items()])
    times = array.array("q")
    try:
        while len(times) < expected:
            msgs = c.consume(10000, 2.0)
            if not msgs:
                break
            times.extend(m.timestamp()[1] for m in msgs if not m.error())
    finally:
        c.close()
    if not times:
        return OutputTimes(0, 0, 0, 0.0)
    return OutputTimes(len(times), min(times), max(times), steady_rate(times))


def _cleanup(admin: AdminClient, prefixes: tuple[str, ...], groups: Sequence[str]) -> None:
    """Delete every topic whose name starts with one of ``prefixes`` (the bench's own and
    Faust's internal ones) and the bench's consumer groups."""
    names = sorted(t for t in admin.list_topics(timeout=10).topics if t.startswith(prefixes))
    failed = []
    if names:
        for name, fut in admin.delete_topics(names, operation_timeout=30).items():
            try:
                fut.result(30)
            except KafkaException as exc:
                failed.append(f"{name}: {exc}")
    if groups:
        for fut in admin.delete_consumer_groups(list(groups), request_timeout=30).values():
            with contextlib.suppress(KafkaException):  # never committed: already gone
                fut.result(30)
    _say(f"deleted {len(names) - len(failed)} topics and the bench's consumer groups")
    for f in failed:
        _say(f"  could not delete {f}")


def _wait_for_leaders(admin: AdminClient, topic: str, timeout: float = 30.0) -> None:
    """A new topic's partitions take a moment to get a leader."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        meta = admin.list_topics(topic, timeout=10).topics.get(topic)
        if meta and meta.partitions and all(p.leader >= 0 for p in meta.partitions.values()):
            return
        time.sleep(0.1)
    raise RuntimeError(f"{topic}: partitions without a leader after {timeout}s")


def _machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem_kib = int(f.readline().split()[1])
        mem = f", {mem_kib / 1024**2:.0f} GiB"
    except (OSError, ValueError, IndexError):
        mem = ""
    cores = len(os.sched_getaffinity(0))
    return f"{model}, {cores} cores{mem}, {platform.machine()}, Python {platform.python_version()}"


def run_bench(
    settings: Settings,
    records: int = DEFAULT_RECORDS,
    runs: int = DEFAULT_RUNS,
    start_stack: bool = True,
    keep_topics: bool = False,
) -> BenchResult:
    if records < 1 or runs < 1:
        raise ValueError("records and runs must be at least 1")
    if start_stack:
        Stack(settings).up()
    run_id = uuid.uuid4().hex[:6]
    bench = dataclasses.replace(
        settings,
        topic_prefix=f"{settings.topic_prefix}-bench-{run_id}",
        app_id=f"{settings.app_id}-bench-{run_id}",
        metrics_port=settings.metrics_port + 10,
    )
    admin = AdminClient(settings.kafka.admin())
    prefixes = (f"{bench.topic_prefix}", f"{bench.app_id}-")
    groups: list[str] = []
    result = BenchResult(records, _machine())
    try:
        registry = SchemaRegistry.from_dir(settings.schema_dir)
        codec = EnvelopeCodec(registry, settings.schema_dir)
        sample: list[tuple[str, bytes, bytes]] = []
        cited: list[Consent] = []
        extra: list[Schema] = []
        for i in range(runs):
            run = dataclasses.replace(
                bench,
                topic_prefix=f"{bench.topic_prefix}-r{i}",
                app_id=f"{bench.app_id}-r{i}",
            )
            topics = Topics.of(run.streams)
            _say(f"[run {i + 1}/{runs}] topics {run.topic_prefix}.*, loading the catalog ...")
            if not sample:
                ensure_topics(run.streams, topics)
                with CatalogStore(run.streams) as store:
                    store.bootstrap()
                    gen = SampleGenerator(
                        codec,
                        store.current(),
                        settings.schema_dir,
                        seed=11,
                        broken_share=0.05,
                        spec_of=store.spec,
                        consents=True,
                    )
                    _say(f"[setup] generating {records:,} sample records ...")
                    sample = [(r.principal, r.key, r.value) for r in gen.records(records)]
                    extra = list(gen.extra_schemas)
                    cited = gen.consents()
                    # As the worker settles its collector after start-up: the in-process
                    # loops (d), (e), (f) run under the same collector as the worker's
                    # ingest (b), or the baseline would pay for the sample.
                    settle_collector()
            # The two workers each read their own copy of the sample on topics of their own:
            # the same broker work before each, and (g) writes no pool topic (b) restores.
            prepared = Sample(registry, sample, extra, cited)
            for run_ in (run, *_worker_runs(run)):
                _say(
                    f"[run {i + 1}/{runs}] publishing {records:,} records to {run_.topic_prefix}.*"
                )
                prepared.publish(run_)
            # The raw pipes write to topics configured exactly like a pool topic.
            pool_config = topics.all()[next(iter(topics.pools.values()))]
            raw_out = f"{topics.prefix}.raw-out"
            for fut in admin.create_topics(
                [
                    NewTopic(name, run.partitions, 1, config=pool_config)
                    for name in (raw_out, f"{raw_out}-txn", f"{raw_out}-alo")
                ]
            ).values():
                fut.result(30)
            _wait_for_leaders(admin, raw_out)
            _wait_for_leaders(admin, f"{raw_out}-txn")
            _wait_for_leaders(admin, f"{raw_out}-alo")
            result.runs.append(
                _one_run(run, admin, topics, registry, raw_out, records, i, runs, groups)
            )
            # Deleted before the next run: a broker holding every earlier run's topics is
            # not the broker the first run had.
            _cleanup(admin, _run_prefixes(run), [])
        _say("[state] pool state memory, 1,000,000 keys ...")
        result.state_bytes_per_key = state_bytes_per_key()
    finally:
        if keep_topics:
            _say(f"[cleanup] keeping topics {prefixes[0]}* and {prefixes[1]}*")
        else:
            _say("[cleanup] deleting the bench's topics and consumer groups ...")
            _cleanup(admin, prefixes, groups)
    return result


@dataclass(frozen=True)
class Sample:
    """The run's sample and what it needs on record: its writer schemas and the consents it
    cites."""

    registry: SchemaRegistry
    records: list[tuple[str, bytes, bytes]]
    extra_schemas: list[Schema]
    consents: list[Consent]

    def publish(self, run: Settings) -> None:
        """Topics, catalog, unit register, schemas and consents under ``run``'s prefix, then
        every record into its collect topic."""
        topics = Topics.of(run.streams)
        ensure_topics(run.streams, topics)
        with CatalogStore(run.streams) as store:  # the worker follows the catalog topic
            store.bootstrap()
        ensure_collect_topics(run)  # the unit register came with the catalog
        schemas = SchemaTopic(run.kafka, topics.schemas, self.registry)
        producer = SourceProducer(run.streams, schemas)
        producer.register([*self.registry, *self.extra_schemas])
        with ConsentPublisher(run.streams, registry=self.registry) as consents:
            consents.grant(self.consents)  # the consents the records cite, on record first
        producer.send_all(self.records, total=len(self.records))


def _worker_runs(run: Settings) -> tuple[Settings, Settings]:
    """The settings of (b) and (g) in a run: topics and consumer groups of their own."""
    return (
        dataclasses.replace(run, topic_prefix=f"{run.topic_prefix}b", app_id=f"{run.app_id}b"),
        dataclasses.replace(run, topic_prefix=f"{run.topic_prefix}g", app_id=f"{run.app_id}g"),
    )


def _run_prefixes(run: Settings) -> tuple[str, ...]:
    """The names of the topics a run made start with one of these: its own, those of (b)
    and (g), and Faust's internal topics of their workers."""
    return tuple(
        name
        for each in (run, *_worker_runs(run))
        for name in (f"{each.topic_prefix}.", f"{each.app_id}-")
    )


def _one_run(
    run: Settings,
    admin: AdminClient,
    topics: Topics,
    registry: SchemaRegistry,
    raw_out: str,
    records: int,
    i: int,
    runs: int,
    groups: list[str],
) -> RunResult:
    tag = f"[run {i + 1}/{runs}]"

    _say(f"{tag} (a) raw pipe, at least once: consume and re-produce unchanged ...")
    raw_group = f"{run.app_id}-raw"
    groups.append(raw_group)
    raw_start = end_offsets(run, [raw_out])
    raw_n, acked_at = _raw_pipe(run, topics.collect_pattern, raw_out, raw_group, records, 600)
    read_n, first_ms, _, _ = _timestamps(run, raw_start, raw_n)
    raw_rate = rate(raw_n, first_ms, acked_at) if raw_n and read_n == raw_n else 0.0
    _say(f"{tag} (a) {raw_n:,} records acknowledged, {raw_rate:,.0f}/s")

    _say(f"{tag} (t) raw pipe, exactly once: the same loop in transactions ...")
    txn_group = f"{run.app_id}-txn"
    groups.append(txn_group)
    txn_start = end_offsets(run, [f"{raw_out}-txn"])
    txn_n, txn_at = _txn_pipe(
        run, topics.collect_pattern, f"{raw_out}-txn", txn_group, records, 600
    )
    txn_first = _timestamps(run, txn_start, txn_n, read_committed=True).first_ms
    txn_rate = rate(txn_n, txn_first, txn_at) if txn_n else 0.0
    _say(f"{tag} (t) {txn_n:,} records committed, {txn_rate:,.0f}/s")

    _say(f"{tag} (d) the ingest's decision, at least once (no pool state, no transactions) ...")
    alo_group = f"{run.app_id}-alo"
    groups.append(alo_group)
    alo_start = end_offsets(run, [f"{raw_out}-alo"])
    alo_n, alo_at = _decided_pipe(
        run, topics.collect_pattern, f"{raw_out}-alo", alo_group, records, 600
    )
    alo_first = _timestamps(run, alo_start, alo_n).first_ms
    alo_rate = rate(alo_n, alo_first, alo_at) if alo_n == records else 0.0
    _say(f"{tag} (d) {alo_n:,} records decided and acknowledged, {alo_rate:,.0f}/s")

    # (b) and (g) in turns: (b) first in even runs. The one that went first was the slower
    # in 12 runs of 16, whichever it was (cause not found); taking turns favours neither.
    # Each starts with no dirty pages left by the loops before it (up to 290 MB).
    b_run, g_run = _worker_runs(run)
    eos: WorkerRun | None = None
    alo: tuple[float, float] | None = None
    for worker in ("b", "g") if i % 2 == 0 else ("g", "b"):
        os.sync()
        if worker == "b":
            eos = _exactly_once_worker(b_run, registry, records, raw_rate, tag, groups)
        else:
            alo = _at_least_once_worker(g_run, records, tag, groups)
    assert eos is not None and alo is not None
    worker_alo_rate, worker_alo_steady = alo
    _say(f"{tag} (c) views: replaying the pool topics of (b) into Redis ...")
    view_rate = _view_rate(b_run, registry)
    _say(f"{tag} (c) {view_rate:,.0f} pool records/s into Redis")
    loops: list[float] = []
    for name, with_state in (("e", True), ("f", False)):
        what = "with" if with_state else "without"
        _say(f"{tag} ({name}) exactly once in-process, {what} the pool state ...")
        loop_group = f"{run.app_id}-loop-{name}"
        groups.append(loop_group)
        loop_start = end_offsets(run, topics.outcomes)
        loop_n, loop_at = _eos_loop(
            run, topics.collect_pattern, loop_group, records, 600, with_state
        )
        loop_first = _timestamps(run, loop_start, loop_n, read_committed=True).first_ms
        loops.append(rate(loop_n, loop_first, loop_at) if loop_n == records else 0.0)
        _say(f"{tag} ({name}) {loop_n:,} records committed, {loops[-1]:,.0f}/s")
    return RunResult(
        raw_rate,
        raw_n,
        eos.rate,
        eos.outcomes,
        eos.peak_mib,
        txn_rate,
        view_rate,
        alo_rate,
        loop_rate=loops[0],
        loop_no_state_rate=loops[1],
        worker_alo_rate=worker_alo_rate,
        ingest_steady_rate=eos.steady,
        worker_alo_steady_rate=worker_alo_steady,
        ingest_transactions=eos.transactions,
    )


class WorkerRun(NamedTuple):
    rate: float
    outcomes: int
    peak_mib: float
    steady: float
    transactions: float


def _exactly_once_worker(
    run: Settings,
    registry: SchemaRegistry,
    records: int,
    raw_rate: float,
    tag: str,
    groups: list[str],
) -> WorkerRun:
    """(b) a real worker, exactly once, on ``run``'s topics: outcomes counted from Kafka."""
    _say(f"{tag} (b) ingest: starting a worker (fresh consumer group) ...")
    topics = Topics.of(run.streams)
    groups += [run.app_id, run.ingest_group]
    start = end_offsets(run, topics.outcomes)
    # The ingest alone (the path measured: decode, checks, dedup, transactional pool
    # write); the views are measured in (c), the other agents share the two cores else.
    ingest_only = dataclasses.replace(run, worker_agents="none")
    with WorkerProcess(ingest_only, name=f"bench-worker-{run.app_id}") as worker:
        committed, committed_at = _wait_committed(
            run, topics, run.ingest_group, timeout=900, idle_timeout=60
        )
        peak = worker.peak_rss_mib()
        transactions = worker.metric(
            'xiangyun_ingest_transactions_total{result="committed"}', timeout=10
        )
    tally = count_outcomes(
        run,
        start,
        topics=topics,
        registry=registry,
        expected=records,
        timeout=120,
        idle_timeout=10,
        progress=False,
    )
    ingest_rate = rate(tally.total, tally.first_ms, committed_at) if tally.total else 0.0
    out_times = _timestamps(run, start, records, read_committed=True)
    ingest_steady = out_times.steady if out_times.records == records == tally.total else 0.0
    _say(
        f"{tag} (b) {committed:,} records committed, {ingest_rate:,.0f}/s, steady "
        f"{ingest_steady:,.0f}/s; ratio {ratios([ingest_rate], [raw_rate])[0]:.2f}; "
        f"worker peak {peak:,.0f} MiB"
    )
    return WorkerRun(ingest_rate, tally.total, peak, ingest_steady, transactions)


def _at_least_once_worker(
    run: Settings, records: int, tag: str, groups: list[str]
) -> tuple[float, float]:
    """(g) today's worker with the at-least-once ingest agent of before (its own consumer
    groups): records from its first output's timestamp to its last one's, and its steady
    rate. The first leaves out its last flush, and the reader thread's commit of the last
    offsets, where (b) counts its last commit: if anything, the baseline is favoured."""
    _say(f"{tag} (g) ingest, at least once, as a worker: starting it (fresh consumer group) ...")
    topics = Topics.of(run.streams)
    alo = dataclasses.replace(run, worker_agents="none")
    groups += [alo.app_id, alo.ingest_group]
    start = end_offsets(run, topics.outcomes)
    with WorkerProcess(
        alo, name=f"bench-alo-worker-{run.app_id}", module="xiangyun.bench_worker", args=()
    ):
        acked, _ = _wait_committed(run, topics, alo.ingest_group, timeout=900, idle_timeout=60)
    read, first, last, steady = _timestamps(run, start, acked)
    whole = acked == records and read == records
    alo_rate = rate(acked, first, last / 1000) if whole else 0.0
    _say(f"{tag} (g) {acked:,} records acknowledged, {alo_rate:,.0f}/s, steady {steady:,.0f}/s")
    return alo_rate, steady if whole else 0.0


def render(r: BenchResult) -> str:
    lines = [
        "",
        f"records per run              {r.records:,}",
        f"runs                         {len(r.runs)}",
        "                             min / median / max",
        f"(a) raw pipe, at least once  {r.raw.format()} records/s",
        f"(t) raw pipe, exactly once   {r.txn.format()} records/s",
        f"(d) ingest, at least once    {r.decided.format()} records/s  (same decision)",
        f"(b) ingest flow (1 worker)   {r.ingest.format()} records/s",
        f"(g) ingest, at least once,   {r.worker_alo.format()} records/s  "
        "(as a worker, same decision)",
        f"(c) views into Redis         {r.views.format()} records/s",
        f"ratio (t)/(a), per run       {r.txn_ratio.format('.2f')}  (what transactions cost)",
        f"ratio (b)/(a), per run       {r.ratio.format('.2f')}  (against the raw ceiling)",
        f"ratio (b)/(t), per run       {r.ingest_vs_txn.format('.2f')}",
        f"ratio (b)/(d), per run       {r.eos_cost.format('.2f')}  "
        "(exactly once against at least once, same decision)",
        f"ratio (b)/(g), per run       {r.worker_cost.format('.2f')}  "
        "(the same, both as workers: today's at-least-once path)",
        f"(b) steady                   {r.ingest_steady.format()} records/s  "
        f"(outputs between the {STEADY_TRIM:.0%} and {1 - STEADY_TRIM:.0%} quantiles)",
        f"(g) steady                   {r.worker_alo_steady.format()} records/s",
        f"ratio (b)/(g) steady         {r.steady_cost.format('.2f')}  "
        "(the rate kept up, without a run's start and end)",
        f"(b) transactions committed   {r.ingest_transactions.format()}  per run",
        f"ratio (e)/(d), per run       {r.loop_cost.format('.2f')}  "
        "(the same, in-process: no worker around it)",
        f"ratio (f)/(d), per run       {r.txn_cost.format('.2f')}  "
        "(in-process, no pool state: what transactions cost)",
        f"worker peak memory (VmHWM)   {Spread.of(x.worker_peak_mib for x in r.runs).format()} MiB",
        "",
        "run   (a) raw/s   (t) txn/s   (d) alo/s   (b) ingest/s   (c) views/s   (e) loop/s"
        "   (f) no state/s   (g) alo worker/s   (b)/(d)   (b)/(g)   steady   outcomes",
    ]
    for i, x in enumerate(r.runs, 1):
        lines.append(
            f"{i:>3} {x.raw_rate:>11,.0f} {x.txn_rate:>11,.0f} {x.decided_rate:>11,.0f} "
            f"{x.ingest_rate:>14,.0f} {x.view_rate:>13,.0f} {x.loop_rate:>12,.0f} "
            f"{x.loop_no_state_rate:>16,.0f} {x.worker_alo_rate:>18,.0f} {x.eos_cost:>9.2f} "
            f"{x.worker_cost:>9.2f} {x.steady_cost:>8.2f}   "
            f"{x.ingest_outcomes:,}/{r.records:,}"
        )
    lines += [
        "",
        f"pool state                   {r.state_bytes_per_key:,.0f} bytes per key "
        f"(tracemalloc, 1,000,000 keys, {'C table' if NATIVE else 'pure Python'})",
        f"machine                      {r.machine}",
    ]
    return "\n".join(lines)


# -- the pool state's memory ---------------------------------------------------------------


def state_bytes_per_key(keys: int = 1_000_000) -> float:
    """Bytes a key costs in :class:`~streams.ingest.pool_state.PoolState`, measured with
    tracemalloc over ``keys`` distinct keys (realistic versions, times and fingerprints)."""
    import tracemalloc

    from streams.ingest.pool_state import PoolState, content_fingerprint, pack_state

    state = PoolState()
    t0 = 1_790_000_000_000
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(keys):
        key = f"population.resident|2201{i:014d}".encode()
        state.decide(i % 4, key, pack_state(i % 7 + 1, t0 + i, content_fingerprint(key)))
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(state) == keys
    return used / keys


# -- province scale -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ProvinceResult:
    subjects: int
    published: int
    ingest_seconds: float
    ingest_rate: float
    state_keys: int
    worker_peak_mib: float
    worker_bytes_per_key: float
    restore_seconds: float
    view_seconds: float
    view_records: int
    redis_bytes_per_record: float
    machine: str


def run_province(
    settings: Settings, subjects: int = 24_000_000, start_stack: bool = True
) -> ProvinceResult:
    """``subjects`` synthetic residents through one worker (the ingest alone, as in the
    benchmark) into the population pool, then the pool replayed into Redis, then a new
    worker restoring the pool state: elapsed times, worker and Redis memory, bytes per
    subject. Takes tens of minutes and several GiB at 24 million; not part of the tests."""
    if start_stack:
        Stack(settings).up()
    run_id = uuid.uuid4().hex[:6]
    run = dataclasses.replace(
        settings,
        topic_prefix=f"{settings.topic_prefix}-province-{run_id}",
        app_id=f"{settings.app_id}-province-{run_id}",
        metrics_port=settings.metrics_port + 11,
    )
    topics = Topics.of(run.streams)
    admin = AdminClient(settings.kafka.admin())
    registry = SchemaRegistry.from_dir(settings.schema_dir)
    codec = EnvelopeCodec(registry, settings.schema_dir)
    groups = [run.app_id, run.ingest_group]
    try:
        ensure_topics(run.streams, topics)
        with CatalogStore(run.streams) as store:
            store.bootstrap()
        ensure_collect_topics(run)
        with CatalogStore(run.streams) as store:
            store.start()
            gen = SampleGenerator(
                codec,
                store.current(),
                settings.schema_dir,
                seed=24,
                broken_share=0.0,
                evidence_share=0.0,
                weights={
                    r.id: 1.0 if r.id == "population.resident" else 0.0 for r in store.current()
                },
                spec_of=store.spec,
            )
        producer = SourceProducer(run.streams, SchemaTopic(run.kafka, topics.schemas, registry))
        producer.register([*registry, *gen.extra_schemas])
        _say(f"[province] publishing {subjects:,} residents ...")
        chunk, sent = 200_000, 0
        while sent < subjects:
            n = min(chunk, subjects - sent)
            producer.send_all(
                ((r.principal, r.key, r.value) for r in gen.records(n)), progress=False
            )
            sent += n
            _say(f"[province]   {sent:,}/{subjects:,}")
        _say("[province] ingest: one worker, exactly once ...")
        began = time.time()
        ingest_only = dataclasses.replace(run, worker_agents="none")
        with WorkerProcess(ingest_only, name=f"province-{run.app_id}") as worker:
            _, done_at = _wait_committed(
                run, topics, run.ingest_group, timeout=6 * 3600, idle_timeout=300
            )
            keys = int(worker.metric("xiangyun_ingest_state_keys", timeout=5))
            peak = worker.peak_rss_mib()
        _say(
            f"[province] ingest done in {done_at - began:,.0f} s; replaying the pool into Redis ..."
        )
        view_records, view_seconds, redis_used = _replay_views(
            run, registry, timeout=6 * 3600, report_every=1_000_000
        )
        _say("[province] restore: a new worker rebuilds the pool state ...")
        restore_run = dataclasses.replace(
            run, metrics_port=run.metrics_port + 1, worker_agents="none"
        )
        with WorkerProcess(restore_run, name=f"province-restore-{run.app_id}") as again:
            deadline = time.monotonic() + 3600
            while not again.metric("xiangyun_ingest_restore_seconds_count", timeout=5):
                if time.monotonic() > deadline:
                    break
                time.sleep(1)
            restore_s = again.metric("xiangyun_ingest_restore_seconds_sum", timeout=5)
        seconds = done_at - began
        baseline_mib = 120.0  # a worker's resident size before any key (measured at start-up)
        return ProvinceResult(
            subjects=subjects,
            published=sent,
            ingest_seconds=seconds,
            ingest_rate=sent / max(seconds, 1e-3),
            state_keys=keys,
            worker_peak_mib=peak,
            worker_bytes_per_key=(peak - baseline_mib) * 2**20 / max(keys, 1),
            restore_seconds=restore_s,
            view_seconds=view_seconds,
            view_records=view_records,
            redis_bytes_per_record=redis_used / max(view_records, 1),
            machine=_machine(),
        )
    finally:
        _say("[province] deleting its topics and groups ...")
        PoolView(run.streams, registry).flush()
        _cleanup(admin, (run.topic_prefix, f"{run.app_id}-"), groups)


def render_province(p: ProvinceResult) -> str:
    return "\n".join(
        [
            "",
            f"subjects published           {p.published:,} "
            f"(distinct in the pool: {p.state_keys:,})",
            f"ingest, one worker           {p.ingest_seconds:,.0f} s, "
            f"{p.ingest_rate:,.0f} records/s",
            f"worker peak memory           {p.worker_peak_mib:,.0f} MiB "
            f"(~{p.worker_bytes_per_key:,.0f} bytes per key over a 120 MiB start)",
            f"pool state restore           {p.restore_seconds:,.1f} s for {p.state_keys:,} keys",
            f"Redis view (replayed)        {p.view_records:,} records in {p.view_seconds:,.0f} s, "
            f"{p.redis_bytes_per_record:,.0f} bytes per record",
            f"machine                      {p.machine}",
        ]
    )
