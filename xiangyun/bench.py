"""Benchmark: the ingest flow against the raw ceiling, on the same broker, in one run.

(a) raw ceiling: a confluent-kafka consumer that re-produces every message unchanged;
(b) ingest: a real ``xiangyun worker`` (Faust) deciding and routing the same records.
Both rates are taken between the first and the last output record's broker timestamp,
so process start-up and group joins count for neither.
"""

from __future__ import annotations

import dataclasses
import platform
import statistics
import sys
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

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

__all__ = ["BenchResult", "run_bench"]

RAW_RUNS = 3  # the ceiling varies run to run on a shared machine: take the median


@dataclass
class BenchResult:
    records: int
    raw_rate: float
    ingest_rate: float
    worker_peak_mib: float
    ingest_outcomes: int
    machine: str

    @property
    def ratio(self) -> float:
        return self.ingest_rate / self.raw_rate if self.raw_rate else 0.0


def _raw_pipe(settings: Settings, src: str, dst: str, n: int, timeout: float) -> tuple[int, float]:
    """Consume ``src`` and re-produce each message to ``dst``; rate over output timestamps."""
    c = Consumer(
        settings.kafka.consumer(
            f"bench-raw-{uuid.uuid4().hex[:8]}",
            **{
                "enable.auto.commit": True,
                "fetch.max.bytes": 52_428_800,
            },
        )
    )
    p = idempotent_producer(settings.kafka)  # the worker's own producer settings
    c.subscribe([src])
    done = 0
    first = last = 0
    deadline = time.monotonic() + timeout
    try:
        while done < n and time.monotonic() < deadline:
            for m in c.consume(settings.batch_size, 0.5):
                if m.error():
                    continue
                while True:
                    try:
                        p.produce(dst, m.value(), m.key())
                        break
                    except BufferError:
                        p.poll(0.05)
                done += 1
            p.poll(0)
        p.flush(60)
    finally:
        c.close()
    # Rate from the output's broker-side create times.
    rc = Consumer(
        settings.kafka.consumer(
            f"bench-read-{uuid.uuid4().hex[:8]}",
            **{
                "enable.auto.commit": False,
            },
        )
    )
    rc.subscribe([dst])
    seen = 0
    try:
        while seen < done:
            msgs = rc.consume(10000, 2.0)
            if not msgs:
                break
            for m in msgs:
                ts = m.timestamp()[1]
                first = ts if not first else min(first, ts)
                last = max(last, ts)
                seen += 1
    finally:
        rc.close()
    return done, done / max((last - first) / 1000, 1e-3)


def run_bench(
    settings: Settings, records: int = 200_000, start_stack: bool = True, keep_topics: bool = False
) -> BenchResult:
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
    ensure_topics(bench.streams, topics)
    raw_outs = [f"{topics.prefix}.raw-out-{i}" for i in range(RAW_RUNS)]
    admin = AdminClient(settings.kafka.admin())
    for fut in admin.create_topics(
        [NewTopic(t, settings.partitions, 1) for t in raw_outs]
    ).values():
        fut.result(30)

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
    print(f"generating {records:,} sample records ...", file=sys.stderr)
    sample = [(r.key, r.value) for r in gen.records(records)]
    producer = SourceProducer(bench.streams, SchemaTopic(bench.kafka, topics.schemas, registry))
    producer.register([*registry, *gen.extra_schemas])
    producer.send_all(sample, total=len(sample))
    del sample

    print(
        f"(a) raw ceiling: consume and re-produce unchanged, {RAW_RUNS} runs ...", file=sys.stderr
    )
    raw_rates = []
    for out in raw_outs:
        raw_n, rate = _raw_pipe(bench, topics.collect, out, records, timeout=600)
        raw_rates.append(rate)
        print(f"    {raw_n:,} records, {rate:,.0f}/s", file=sys.stderr)
    raw_rate = statistics.median(raw_rates)

    print("(b) ingest flow: a Faust worker deciding and routing ...", file=sys.stderr)
    start = end_offsets(bench, topics.outcomes)
    with WorkerProcess(bench, name=f"bench-worker-{run_id}") as worker:
        tally = count_outcomes(
            bench,
            start,
            topics=topics,
            registry=registry,
            expected=records,
            timeout=900,
            idle_timeout=60,
        )
        peak = worker.peak_rss_mib()
    ingest_rate = tally.total / tally.span_s
    print(f"    {tally.total:,} records, {ingest_rate:,.0f}/s", file=sys.stderr)
    if not keep_topics:
        admin.delete_topics([*topics.all(), *raw_outs])
    machine = f"{platform.machine()}, {_cpus()} cores, Python {platform.python_version()}"
    return BenchResult(records, raw_rate, ingest_rate, peak, tally.total, machine)


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


def render(r: BenchResult) -> str:
    return "\n".join(
        [
            "",
            f"records                      {r.records:,}",
            f"(a) raw ceiling (median of {RAW_RUNS}) {r.raw_rate:>9,.0f} records/s",
            f"(b) ingest flow (1 worker)   {r.ingest_rate:>10,.0f} records/s",
            f"ratio (b)/(a)                {r.ratio:>10.2f}",
            f"worker peak memory (VmHWM)   {r.worker_peak_mib:>10,.0f} MiB",
            f"ingest outcomes read back    {r.ingest_outcomes:,}/{r.records:,}",
            f"machine                      {r.machine}",
        ]
    )
