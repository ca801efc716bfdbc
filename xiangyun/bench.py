"""Benchmark: the ingest flow against a raw Kafka pipe, on the same broker, in one run.

(a) raw pipe: a confluent-kafka consumer that re-produces every message unchanged, built
    like the worker's collect reader and output path: the consumer from
    :meth:`KafkaConfig.consumer` (no fetch stall) with the reader's overrides, the worker's
    idempotent producer, ``produce(..., on_delivery=...)`` per record, a flush per batch
    and offsets stored only after the flush; its output topic is configured like a pool
    topic;
(b) ingest: a real ``xiangyun worker`` (Faust) deciding and routing the same records.

Each rate is records divided by the span from the first output record's timestamp to the
broker's acknowledgement of the last output: the raw pipe takes the time its last flush
returns, the ingest measure the time the outcome topics' end offsets (acknowledged
records) reach the number of records. Process start-up and group joins count for neither.
The benchmark runs (a) then (b) ``runs`` times and reports min/median/max of each rate and
of the per-run ratio (b)/(a). Every topic and consumer group it created is deleted at the
end, Faust's internal topics included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import statistics
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    NewTopic,
    OffsetSpec,
)

from connectors.generator import SampleGenerator
from connectors.producer import SourceProducer
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.config import idempotent_producer
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import Topics, ensure_topics
from streams.wire.codec import SchemaRegistry
from streams.wire.envelope import EnvelopeCodec
from xiangyun.outcomes import count_outcomes, end_offsets
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings
from xiangyun.stack import Stack

__all__ = ["BenchResult", "RunResult", "Spread", "ratios", "render", "run_bench"]

DEFAULT_RECORDS = 200_000
DEFAULT_RUNS = 3
#: how often the ingest measure asks the broker for the outcome topics' end offsets
ACK_POLL_S = 0.025

#: the collect reader's consumer overrides (streams/ingest/reader.py), group aside
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


def rate(records: int, first_ms: int, end_s: float) -> float:
    """Records per second from the first output's timestamp (ms) to ``end_s`` (epoch s)."""
    return records / max(end_s - first_ms / 1000, 1e-3)


@dataclass(frozen=True, slots=True)
class RunResult:
    raw_rate: float
    raw_records: int
    ingest_rate: float
    ingest_outcomes: int
    worker_peak_mib: float

    @property
    def ratio(self) -> float:
        return ratios([self.ingest_rate], [self.raw_rate])[0]


@dataclass
class BenchResult:
    records: int
    machine: str
    runs: list[RunResult] = field(default_factory=list)

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
    def complete(self) -> bool:
        """Every run gave every record an outcome (and the raw pipe copied every record)."""
        return bool(self.runs) and all(
            r.ingest_outcomes == self.records and r.raw_records == self.records for r in self.runs
        )


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _raw_pipe(
    bench: Settings, src: str, dst: str, group: str, n: int, timeout: float
) -> tuple[int, float]:
    """Consume ``src`` and re-produce each message to ``dst`` the way the worker emits:
    per batch, produce with a delivery callback, flush, then store the batch's offsets.

    Returns the records acknowledged and the time (epoch s) the last flush returned.
    """
    c = Consumer(bench.kafka.consumer(group, **READER_OVERRIDES))
    p = idempotent_producer(bench.kafka)
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    produce = p.produce
    c.subscribe([src])
    done = 0
    acked_at = 0.0
    deadline = time.monotonic() + timeout
    try:
        while done < n and time.monotonic() < deadline:
            batch = [m for m in c.consume(bench.batch_size, 0.1) if m.error() is None]
            if not batch:
                continue
            for m in batch:
                while True:
                    try:
                        produce(dst, m.value(), m.key(), on_delivery=on_delivery)
                        break
                    except BufferError:
                        p.poll(0.05)
            left = p.flush(60)
            if left or failures:
                raise RuntimeError(f"raw pipe: {left} undelivered, failures: {failures[:5]}")
            acked_at = time.time()
            c.store_offsets(offsets=_next_offsets(batch))
            done += len(batch)
    finally:
        c.close()  # commits the stored offsets
    return done, acked_at


def _next_offsets(batch: Sequence[Message]) -> list[TopicPartition]:
    last: dict[tuple[str, int], int] = {}
    for m in batch:
        last[(m.topic() or "", m.partition() or 0)] = m.offset() or 0
    return [TopicPartition(t, p, o + 1) for (t, p), o in last.items()]


def _first_timestamp(
    bench: Settings, start: dict[tuple[str, int], int], expected: int
) -> tuple[int, int]:
    """Read from ``start`` on: (records, the first record's timestamp in ms)."""
    c = Consumer(
        bench.kafka.consumer(
            f"bench-read-{uuid.uuid4().hex[:8]}", **{"fetch.max.bytes": 52_428_800}
        )
    )
    c.assign([TopicPartition(t, p, off) for (t, p), off in start.items()])
    seen = first = 0
    try:
        while seen < expected:
            msgs = c.consume(10000, 2.0)
            if not msgs:
                break
            for m in msgs:
                if m.error():
                    continue
                ts = m.timestamp()[1]
                first = ts if not first else min(first, ts)
                seen += 1
    finally:
        c.close()
    return seen, first


def _wait_acknowledged(
    admin: AdminClient,
    start: dict[tuple[str, int], int],
    expected: int,
    timeout: float,
    idle_timeout: float,
) -> tuple[int, float]:
    """Poll the end offsets of the outcome topics until ``expected`` records past ``start``
    are acknowledged; return that count and the time (epoch s) the answer arrived."""
    latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
    specs = {TopicPartition(t, p): latest for (t, p) in start}
    began = last_change = time.monotonic()
    shown = began
    total = -1
    while True:
        ends = {tp: f.result(10).offset for tp, f in admin.list_offsets(specs).items()}
        now_wall, now = time.time(), time.monotonic()
        seen = sum(ends[tp] - start[(tp.topic, tp.partition)] for tp in ends)
        if seen != total:
            total, last_change = seen, now
        if total >= expected:
            return total, now_wall
        if now - began > timeout or now - last_change > idle_timeout:
            return total, now_wall
        if now - shown > 2:
            shown = now
            _say(f"    acknowledged {total:,}/{expected:,}")
        time.sleep(ACK_POLL_S)


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
    topics = Topics.of(bench.streams)
    admin = AdminClient(settings.kafka.admin())
    prefixes = (f"{bench.topic_prefix}.", f"{bench.app_id}-")
    groups: list[str] = []
    result = BenchResult(records, _machine())
    try:
        _say(f"[setup] topics {bench.topic_prefix}.*, loading the catalog ...")
        ensure_topics(bench.streams, topics)
        registry = SchemaRegistry.from_dir(settings.schema_dir)
        codec = EnvelopeCodec(registry, settings.schema_dir)
        with CatalogStore(bench.streams) as store:  # the worker follows the catalog topic
            store.bootstrap()
            gen = SampleGenerator(
                codec,
                store.current(),
                settings.schema_dir,
                seed=11,
                broken_share=0.05,
                spec_of=store.spec,
            )
        _say(f"[setup] generating and publishing {records:,} sample records ...")
        sample = [(r.key, r.value) for r in gen.records(records)]
        producer = SourceProducer(bench.streams, SchemaTopic(bench.kafka, topics.schemas, registry))
        producer.register([*registry, *gen.extra_schemas])
        producer.send_all(sample, total=len(sample))
        del sample

        # The raw pipe writes to a topic configured exactly like a pool topic, one for all
        # runs as the worker's outcome topics are: only the first run of each writes to a
        # new topic.
        pool_config = topics.all()[next(iter(topics.pools.values()))]
        raw_out = f"{topics.prefix}.raw-out"
        for fut in admin.create_topics(
            [NewTopic(raw_out, bench.partitions, 1, config=pool_config)]
        ).values():
            fut.result(30)
        _wait_for_leaders(admin, raw_out)
        for i in range(runs):
            result.runs.append(
                _one_run(bench, admin, topics, registry, raw_out, records, i, runs, groups)
            )
    finally:
        if keep_topics:
            _say(f"[cleanup] keeping topics {prefixes[0]}* and {prefixes[1]}*")
        else:
            _say("[cleanup] deleting the bench's topics and consumer groups ...")
            _cleanup(admin, prefixes, groups)
    return result


def _one_run(
    bench: Settings,
    admin: AdminClient,
    topics: Topics,
    registry: SchemaRegistry,
    raw_out: str,
    records: int,
    i: int,
    runs: int,
    groups: list[str],
) -> RunResult:
    records_wanted = records
    tag = f"[run {i + 1}/{runs}]"

    _say(f"{tag} (a) raw pipe: consume and re-produce unchanged ...")
    raw_group = f"{bench.app_id}-raw-{i}"
    groups.append(raw_group)
    raw_start = end_offsets(bench, [raw_out])
    raw_n, acked_at = _raw_pipe(bench, topics.collect, raw_out, raw_group, records_wanted, 600)
    read_n, first_ms = _first_timestamp(bench, raw_start, raw_n)
    raw_rate = rate(raw_n, first_ms, acked_at) if raw_n and read_n == raw_n else 0.0
    _say(f"{tag} (a) {raw_n:,} records acknowledged, {raw_rate:,.0f}/s")

    _say(f"{tag} (b) ingest: starting a worker (fresh consumer group) ...")
    run = dataclasses.replace(bench, app_id=f"{bench.app_id}-r{i}")
    groups += [run.app_id, run.ingest_group]
    start = end_offsets(run, topics.outcomes)
    with WorkerProcess(run, name=f"bench-worker-{bench.app_id}-r{i}") as worker:
        acked, acked_at = _wait_acknowledged(
            admin, start, records_wanted, timeout=900, idle_timeout=60
        )
        peak = worker.peak_rss_mib()
    tally = count_outcomes(
        run,
        start,
        topics=topics,
        registry=registry,
        expected=records_wanted,
        timeout=120,
        idle_timeout=10,
        progress=False,
    )
    ingest_rate = rate(tally.total, tally.first_ms, acked_at) if tally.total else 0.0
    _say(
        f"{tag} (b) {acked:,} outcomes acknowledged, {ingest_rate:,.0f}/s; "
        f"ratio {ratios([ingest_rate], [raw_rate])[0]:.2f}; worker peak {peak:,.0f} MiB"
    )
    return RunResult(raw_rate, raw_n, ingest_rate, tally.total, peak)


def render(r: BenchResult) -> str:
    lines = [
        "",
        f"records per run              {r.records:,}",
        f"runs                         {len(r.runs)}",
        "                             min / median / max",
        f"(a) raw pipe                 {r.raw.format()} records/s",
        f"(b) ingest flow (1 worker)   {r.ingest.format()} records/s",
        f"ratio (b)/(a), per run       {r.ratio.format('.2f')}",
        f"worker peak memory (VmHWM)   {Spread.of(x.worker_peak_mib for x in r.runs).format()} MiB",
        "",
        "run   (a) raw/s   (b) ingest/s   ratio   outcomes",
    ]
    for i, x in enumerate(r.runs, 1):
        lines.append(
            f"{i:>3} {x.raw_rate:>11,.0f} {x.ingest_rate:>14,.0f} {x.ratio:>7.2f}   "
            f"{x.ingest_outcomes:,}/{r.records:,}"
        )
    lines += ["", f"machine                      {r.machine}"]
    return "\n".join(lines)
