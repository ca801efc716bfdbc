"""Read back where collected records ended: the proof that counts add up.

Used by the demo, the benchmark and the integration tests: snapshot the outcome topics'
end offsets, publish, then count what arrived after the snapshot.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, TopicPartition

from streams.kafka.lag import group_lag
from streams.kafka.topics import Topics
from streams.wire.codec import SchemaRegistry, decode
from xiangyun.settings import Settings

__all__ = ["OutcomeTally", "count_outcomes", "end_offsets", "wait_for_no_lag"]


def end_offsets(settings: Settings, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    c = Consumer(settings.kafka.consumer("outcome-probe"))
    try:
        out = {}
        for t in topics:
            meta = c.list_topics(t, timeout=10).topics[t]
            for p in meta.partitions:
                out[(t, p)] = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
        return out
    finally:
        c.close()


def wait_for_no_lag(settings: Settings, topics: Topics, timeout: float = 120.0) -> int:
    """Wait until the worker group has committed everything in the collect topic."""
    deadline = time.monotonic() + timeout
    while True:
        lag = sum(group_lag(settings.kafka, topics.collect, settings.ingest_group).values())
        if lag == 0 or time.monotonic() > deadline:
            return lag
        print(
            f"  working off {lag:,} records left from an earlier run",
            end="\r",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(1)


@dataclass
class OutcomeTally:
    counts: Counter[str] = field(default_factory=Counter)
    first_ms: int = 0
    last_ms: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def span_s(self) -> float:
        return max(self.last_ms - self.first_ms, 1) / 1000


def count_outcomes(
    settings: Settings,
    start: dict[tuple[str, int], int],
    *,
    topics: Topics,
    registry: SchemaRegistry,
    expected: int,
    timeout: float = 120.0,
    idle_timeout: float = 30.0,
    progress: bool = True,
) -> OutcomeTally:
    """Count records that arrived after ``start`` until ``expected`` or a timeout.

    Keys: ``accepted:<pool>``, ``verification``, ``rejected:<REASON>``.
    """
    pool_topics = {p.value: t for p, t in topics.pools.items()}
    verification_topic, rejected_topic = topics.verification, topics.rejected
    rejected_schema = registry.by_name("org.xiangyun.Rejected")
    c = Consumer(
        settings.kafka.consumer(
            f"outcome-count-{uuid.uuid4().hex[:8]}",
            **{
                "enable.auto.commit": False,
                "fetch.max.bytes": 52_428_800,
            },
        )
    )
    c.assign([TopicPartition(t, p, off) for (t, p), off in start.items()])
    pool_of = {t: pool for pool, t in pool_topics.items()}
    tally = OutcomeTally()
    began = last_seen = time.monotonic()
    shown = 0.0
    try:
        while tally.total < expected:
            now = time.monotonic()
            if now - began > timeout or now - last_seen > idle_timeout:
                break
            msgs = c.consume(10000, 0.5)
            for m in msgs:
                if m.error():
                    continue
                last_seen = time.monotonic()
                topic = m.topic() or ""
                if topic == rejected_topic:
                    reason = decode(m.value() or b"", rejected_schema)["reason"]
                    tally.counts[f"rejected:{reason}"] += 1
                elif topic == verification_topic:
                    tally.counts["verification"] += 1
                else:
                    tally.counts[f"accepted:{pool_of[topic]}"] += 1
                ts = m.timestamp()[1]
                tally.first_ms = ts if not tally.first_ms else min(tally.first_ms, ts)
                tally.last_ms = max(tally.last_ms, ts)
            if progress and time.monotonic() - shown > 1:
                shown = time.monotonic()
                print(
                    f"  outcomes {tally.total:,}/{expected:,} records",
                    end="\r",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        c.close()
    if progress:
        print(f"  outcomes {tally.total:,}/{expected:,} records", file=sys.stderr, flush=True)
    return tally
