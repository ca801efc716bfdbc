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

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.kafka.lag import GroupLag
from streams.kafka.topics import Topics
from streams.wire.codec import SchemaRegistry, decode
from xiangyun.settings import Settings

__all__ = [
    "Accounting",
    "Ledger",
    "OutcomeTally",
    "account",
    "collect_lag",
    "count_outcomes",
    "end_offsets",
    "read_ledger",
    "wait_for_no_lag",
]


def _high(c: Consumer, tp: TopicPartition, timeout: float = 30.0) -> int:
    """The high watermark; a topic just made may not answer for a moment (NOT_LEADER)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return int(c.get_watermark_offsets(tp, timeout=10)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def end_offsets(settings: Settings, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    c = Consumer(settings.kafka.consumer("outcome-probe"))
    try:
        out = {}
        for t in topics:
            meta = c.list_topics(t, timeout=10).topics[t]
            for p in meta.partitions:
                out[(t, p)] = _high(c, TopicPartition(t, p))
        return out
    finally:
        c.close()


def collect_lag(settings: Settings, topics: Topics) -> int:
    """Records of every collect topic the ingest group has not committed (-1: unknown, the
    broker could not say)."""
    try:
        lag = GroupLag(settings.kafka).of(settings.ingest_group, topics.is_collect)
    except KafkaException:  # the group's coordinator moving, a broker away: ask again
        return -1
    return sum(lag.values())


def wait_for_no_lag(settings: Settings, topics: Topics, timeout: float = 120.0) -> int:
    """Wait until the worker group has committed everything in the collect topics."""
    deadline = time.monotonic() + timeout
    while True:
        lag = collect_lag(settings, topics)
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

    Keys: ``accepted:<pool>``, ``superseded:<REASON>``, ``verification``,
    ``rejected:<REASON>``. Reads ``read_committed``: an aborted transaction counts nothing.
    """
    pool_topics = {p.value: t for p, t in topics.pools.items()}
    verification_topic, rejected_topic = topics.verification, topics.rejected
    rejected_schema = registry.by_name("org.xiangyun.Rejected")
    superseded_topic = topics.superseded
    superseded_schema = registry.by_name("org.xiangyun.Superseded")
    c = Consumer(
        settings.kafka.consumer(
            f"outcome-count-{uuid.uuid4().hex[:8]}",
            **{
                "enable.auto.commit": False,
                "fetch.max.bytes": 52_428_800,
                "isolation.level": "read_committed",
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
                elif topic == superseded_topic:
                    reason = decode(m.value() or b"", superseded_schema)["reason"]
                    tally.counts[f"superseded:{reason}"] += 1
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


#: where a collected record stands: (collect topic, partition, offset)
Position = tuple[str, int, int]


@dataclass
class Ledger:
    """Every committed outcome of the collect topics' records, by source position.

    ``outcomes[(topic, partition, offset)]`` lists the (kind, reason) of each outcome record
    that answers for that collected record: exactly one each is the exactly-once property.
    """

    outcomes: dict[Position, list[tuple[str, str]]] = field(default_factory=dict)
    #: (collect topic, partition) → (low, high) watermarks
    collected: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    @property
    def published(self) -> int:
        return sum(high - low for low, high in self.collected.values())

    def missing(self) -> list[Position]:
        return [
            (t, p, o)
            for (t, p), (low, high) in self.collected.items()
            for o in range(low, high)
            if (t, p, o) not in self.outcomes
        ]

    def doubled(self) -> dict[Position, list[tuple[str, str]]]:
        return {k: v for k, v in self.outcomes.items() if len(v) > 1}

    def counts(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for answers in self.outcomes.values():
            for kind, reason in answers:
                out[f"{kind}:{reason}" if reason else kind] += 1
        return out


def read_ledger(settings: Settings, topics: Topics, timeout: float = 60.0) -> Ledger:
    """Read the collect topics' extent and every outcome topic ``read_committed`` to its
    end, and file each outcome under the collected record it answers for."""
    from streams.ingest.pool_state import SOURCE_HEADER, unpack_source

    registry = SchemaRegistry.from_dir(settings.schema_dir)
    schemas = {
        "rejected": registry.by_name("org.xiangyun.Rejected"),
        "superseded": registry.by_name("org.xiangyun.Superseded"),
        "accepted": registry.by_name("org.xiangyun.PoolRecord"),
    }
    kind_of = {t: "accepted" for t in topics.pools.values()}
    kind_of[topics.superseded] = "superseded"
    kind_of[topics.rejected] = "rejected"
    kind_of[topics.verification] = "verification"
    c = Consumer(
        settings.kafka.consumer(
            f"ledger-{uuid.uuid4().hex[:8]}",
            **{"isolation.level": "read_committed", "fetch.max.bytes": 52_428_800},
        )
    )
    ledger = Ledger()
    try:
        every = c.list_topics(timeout=10).topics
        for collect in sorted(t for t in every if topics.principal_of(t) is not None):
            for p in every[collect].partitions:
                ledger.collected[(collect, p)] = c.get_watermark_offsets(
                    TopicPartition(collect, p), timeout=10
                )
        ends: dict[tuple[str, int], int] = {}
        for t in kind_of:
            for p in c.list_topics(t, timeout=10).topics[t].partitions:
                high = c.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                if high > 0:
                    ends[(t, p)] = high
        c.assign([TopicPartition(t, p, 0) for (t, p) in ends])
        deadline = time.monotonic() + timeout
        left = dict(ends)
        while left and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                if m.error():
                    continue
                t, part, off = m.topic() or "", m.partition() or 0, m.offset() or 0
                if off + 1 >= left.get((t, part), 0):
                    left.pop((t, part), None)
                kind = kind_of[t]
                if kind == "verification":
                    raw = dict(m.headers() or []).get(SOURCE_HEADER)
                    assert isinstance(raw, bytes), "evidence without its source header"
                    ledger.outcomes.setdefault(unpack_source(raw), []).append((kind, ""))
                    continue
                body = decode(m.value() or b"", schemas[kind])
                reason = body.get("reason", "")
                src = (body["source_topic"], body["source_partition"], body["source_offset"])
                ledger.outcomes.setdefault(src, []).append((kind, reason))
            # Compacted pool partitions may end in a marker: stop once positions pass it.
            for (t, part), high in list(left.items()):
                pos = c.position([TopicPartition(t, part)])[0].offset
                if pos >= high:
                    left.pop((t, part), None)
        if left:
            raise TimeoutError(f"outcome topics not read to their end: {sorted(left)[:5]}")
    finally:
        c.close()
    return ledger


#: the columns of the accounting, in the order published = the sum of the others
ACCOUNT_COLUMNS = ("accepted", "duplicate", "stale", "conflict", "evidence", "rejected")
_COLUMN_OF = {
    "accepted": "accepted",
    "superseded:DUPLICATE": "duplicate",
    "superseded:STALE": "stale",
    "superseded:VERSION_CONFLICT": "conflict",
    "verification": "evidence",
}


@dataclass
class Accounting:
    """Per resource and source unit: published = accepted + duplicate + stale + conflict +
    evidence + rejected, each read from Kafka (the collect topic and the outcome topics)."""

    rows: dict[tuple[str, str], Counter[str]] = field(default_factory=dict)
    unanswered: int = 0
    doubled: int = 0

    @property
    def balanced(self) -> bool:
        return (
            self.unanswered == 0
            and self.doubled == 0
            and all(
                c["published"] == sum(c[k] for k in ACCOUNT_COLUMNS) for c in self.rows.values()
            )
        )

    def render(self) -> list[str]:
        head = f"{'resource':<36} {'unit':<22} {'published':>9}" + "".join(
            f" {c:>9}" for c in ACCOUNT_COLUMNS
        )
        lines = [head]
        total: Counter[str] = Counter()
        for (resource, unit), c in sorted(self.rows.items()):
            total.update(c)
            lines.append(
                f"{resource[:36]:<36} {unit[:22]:<22} {c['published']:>9,}"
                + "".join(f" {c[k]:>9,}" for k in ACCOUNT_COLUMNS)
            )
        lines.append(
            f"{'all':<36} {'':<22} {total['published']:>9,}"
            + "".join(f" {total[k]:>9,}" for k in ACCOUNT_COLUMNS)
        )
        verdict = "adds up" if self.balanced else "DOES NOT ADD UP"
        lines.append(
            f"accounting {verdict}: {self.unanswered} records without an outcome, "
            f"{self.doubled} with more than one"
        )
        return lines


def account(settings: Settings, topics: Topics, timeout: float = 120.0) -> Accounting:
    """Read the collect topic and every outcome, and account for each published record."""
    from streams.wire.codec import CodecError
    from streams.wire.envelope import EnvelopeCodec

    ledger = read_ledger(settings, topics, timeout)
    registry = SchemaRegistry.from_dir(settings.schema_dir)
    codec = EnvelopeCodec(registry, settings.schema_dir)
    c = Consumer(
        settings.kafka.consumer(
            f"account-{uuid.uuid4().hex[:8]}", **{"fetch.max.bytes": 52_428_800}
        )
    )
    out = Accounting()
    try:
        todo = {tp: hi for tp, (lo, hi) in ledger.collected.items() if hi > lo}
        c.assign([TopicPartition(t, p, ledger.collected[(t, p)][0]) for t, p in todo])
        deadline = time.monotonic() + timeout
        while todo and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                if m.error():
                    continue
                t, part, off = m.topic() or "", m.partition() or 0, m.offset() or 0
                if off + 1 >= todo.get((t, part), 0):
                    todo.pop((t, part), None)
                try:
                    env = codec.decode(m.value() or b"")
                    resource, unit = env.resource_id[:80], env.provider[:40]
                except (CodecError, ValueError, TypeError, KeyError):
                    resource, unit = "(undecodable)", ""
                row = out.rows.setdefault((resource, unit), Counter())
                row["published"] += 1
                answers = ledger.outcomes.get((t, part, off), [])
                if not answers:
                    out.unanswered += 1
                elif len(answers) > 1:
                    out.doubled += 1
                for kind, reason in answers:
                    key = f"{kind}:{reason}" if kind == "superseded" else kind
                    row[_COLUMN_OF.get(key, "rejected")] += 1
        if todo:
            raise TimeoutError(f"collect topic not read to its end: partitions {sorted(todo)}")
    finally:
        c.close()
    return out
