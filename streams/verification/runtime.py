"""What the verifier holds in a worker: the decision with its per-partition state, the
transactional producer, the restore from Kafka and the commits.

Exactly once, as the ingest: the outputs of one or more batches (verified counts, pending
change log entries, conflicts) and the input offsets of those batches (verification and
pool partitions) commit in one Kafka transaction with the reader's group metadata
(KIP-447). Any failure to commit ends the process (crash-only): the state in RocksDB may be
ahead of Kafka, and the next owner rebuilds it.

Restore of partition ``p`` on assignment, before any of its records is read:

1. wait until the verified and pending partitions ``p`` have no open transaction (a killed
   owner's is aborted by the broker after ``transaction_timeout_ms``);
2. the group's committed offsets of the pool partitions ``p`` (fetched stable: KIP-447);
3. the authoritative values: pool partitions ``p`` read committed from the beginning up to
   those offsets (exclusive) — exactly what the committed outputs had seen; the records from
   there on are read again as input;
4. the verified counts and the pending evidence: verified and pending partitions ``p`` to
   their end (only this group's committed transactions write them).

A caveat of compaction: a pool record older than the committed offset may have been
compacted away by a newer one after it; the key then has no authoritative value until that
newer record is read, and evidence in between waits for it. Nothing is lost or counted
twice; the comparison is only made against the newer version.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence

from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from monitoring.metrics import VerificationMetrics
from streams.kafka.batch_reader import Offsets
from streams.kafka.config import StreamsConfig
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import Topics, ensure_conflict_topics, ensure_topics
from streams.kafka.transaction import Transaction, TransactionFailed, produce_records
from streams.kafka.units_store import UnitsStore
from streams.verification.decision import SOURCE_HEADER, Output, Verifier
from streams.verification.store import RocksStore
from streams.wire.codec import SchemaRegistry

__all__ = ["Offsets", "TransactionFailed", "VerifyRuntime", "die"]

log = logging.getLogger(__name__)


class VerifyRuntime:
    def __init__(
        self,
        config: StreamsConfig,
        metrics: VerificationMetrics | None = None,
        *,
        registry: SchemaRegistry | None = None,
        units: UnitsStore | None = None,
    ) -> None:
        self.config = config
        self.topics = Topics.of(config)
        self.registry = registry or SchemaRegistry.from_dir(config.schema_dir)
        self.schema_topic = SchemaTopic(config.kafka, self.topics.schemas, self.registry)
        self.units = units or UnitsStore(config)
        self.metrics = metrics or VerificationMetrics()
        self._conflict_topics: set[str] = set()
        self.verifier = Verifier(
            self.topics,
            config.schema_dir,
            self.registry,
            registered=lambda code: self.units.current().registered(code),
            conflict_topic=self._conflict_topic,
            refresh_schemas=self.schema_topic.refresh,
            pending_max=config.verify_pending_max,
        )
        self.state_root = config.state_dir / "verification" / config.verify_group
        self._txn: Transaction | None = None
        self._lock = threading.Lock()  # the state: restores (reader thread) and decisions
        #: called by :meth:`close` (the open-conflict tracker)
        self.on_close: list[Callable[[], None]] = []

    @property
    def inputs(self) -> list[str]:
        return [self.topics.verification, *self.topics.pools.values()]

    def start(self) -> VerifyRuntime:
        ensure_topics(self.config, self.topics)
        self._check_partitioning()
        self.schema_topic.follow()
        self.units.start()
        self._txn = Transaction.start(
            self.config.kafka,
            f"{self.config.verify_group}.{uuid.uuid4().hex[:12]}",
            self.config.transaction_timeout_ms,
            "verifier",
            self.metrics.transactions,
        )
        return self

    def _check_partitioning(self) -> None:
        """Partition p of every input and state topic holds the same keys: they must all
        have the verification topic's partition count."""
        probe = Consumer(self.config.kafka.consumer(f"{self.config.verify_group}.meta"))
        try:
            meta = probe.list_topics(timeout=30).topics
        finally:
            probe.close()
        names = [*self.inputs, self.topics.verified, self.topics.verification_pending]
        counts = {t: len(meta[t].partitions) for t in names}
        if len(set(counts.values())) != 1:
            raise RuntimeError(
                f"the verification, pool, verified and pending topics must have one partition "
                f"count: {counts}"
            )

    def _conflict_topic(self, unit: str) -> str:
        # A commissioned third party ('<parent>.<TAG>') collects for its commissioning
        # unit, which answers for the data (article 17): its conflicts go there.
        unit = unit.split(".", 1)[0]
        name = self.topics.conflicts(unit)
        if name not in self._conflict_topics:
            ensure_conflict_topics(self.config, [unit])
            self._conflict_topics.add(name)
        return name

    def close(self) -> None:
        try:
            self.abort()
        except KafkaException as exc:
            log.warning("verifier abort on close: %s", exc)
        with self._lock:
            self.verifier.close(self.verifier.partitions())
        for close in self.on_close:
            close()
        self.schema_topic.close()
        self.units.close()

    # -- state ---------------------------------------------------------------------------
    def restore(self, partitions: Sequence[int], timeout: float | None = None) -> None:
        if not partitions:
            return
        began = time.monotonic()
        wait = timeout if timeout is not None else self.config.transaction_timeout_ms / 1000 * 3
        kafka, group = self.config.kafka, self.config.verify_group
        committed = Consumer(
            kafka.consumer(
                f"{group}.restore",
                **{"isolation.level": "read_committed", "enable.partition.eof": True},
            )
        )
        uncommitted = Consumer(
            kafka.consumer(f"{group}.probe", **{"isolation.level": "read_uncommitted"})
        )
        # Same group id, never subscribes: reads the group's committed offsets (stable).
        offsets = Consumer(kafka.consumer(group, **{"isolation.level": "read_committed"}))
        try:
            for p in partitions:
                states = [
                    TopicPartition(self.topics.verified, p),
                    TopicPartition(self.topics.verification_pending, p),
                ]
                ends = _stable_ends(committed, uncommitted, states, began + wait)
                pools = [TopicPartition(t, p) for t in self.topics.pools.values()]
                upto = {
                    (tp.topic, p): max(tp.offset, 0) if tp.offset != OFFSET_INVALID else 0
                    for tp in offsets.committed(pools, timeout=max(10.0, wait))
                }
                with self._lock:
                    self.verifier.open(p, RocksStore(self.state_root / str(p)))
                    for m in _read(committed, upto):
                        self.verifier.restore_pool(m.topic() or "", p, m.offset() or 0, m.value())
                    for m in _read(committed, {(t.topic, p): ends[t.topic] for t in states}):
                        if m.topic() == self.topics.verified:
                            self.verifier.restore_verified(p, m.key() or b"", m.value())
                        else:
                            self.verifier.restore_pending(p, m.key() or b"", m.value(), _source(m))
        finally:
            committed.close()
            uncommitted.close()
            offsets.close()
        self.verifier.take_tally()  # what the restore read is not news
        self.metrics.pending.set(self.verifier.pending_count())
        log.info(
            "verifier restored partitions %s in %.2fs", list(partitions), time.monotonic() - began
        )

    def drop(self, partitions: Sequence[int]) -> None:
        with self._lock:
            self.verifier.close(partitions)
        self.metrics.pending.set(self.verifier.pending_count())

    # -- the batch path ------------------------------------------------------------------
    def decide(self, messages: Sequence[Message]) -> list[Output]:
        out: list[Output] = []
        with self._lock:
            for m in messages:
                out += self.verifier.process(
                    m.topic() or "", m.partition() or 0, m.offset() or 0, m.value(), m.headers()
                )
        return out

    def produce(self, outputs: Sequence[Output], offsets: Offsets) -> None:
        txn = self._txn
        assert txn is not None, "VerifyRuntime.start() first"
        with txn.lock:
            produce_records(txn.begin(), outputs, txn.on_delivery)
            txn.cover(offsets)

    def commit_due(self, idle: bool) -> bool:
        return self._txn is not None and self._txn.due(idle, self.config.commit_interval_ms)

    def commit(self, group_metadata: Callable[[], object], timeout: float = 60.0) -> int:
        txn = self._txn
        assert txn is not None, "VerifyRuntime.start() first"
        if not txn.commit(group_metadata, timeout):
            return 0
        with self._lock:
            tally = self.verifier.take_tally()
            pending = self.verifier.pending_count()
        self.metrics.count(tally)
        self.metrics.pending.set(pending)
        return sum(tally.values())

    def abort(self, timeout: float = 10.0) -> None:
        """Abort the open transaction (a lost assignment, a stopping worker); after a
        commit in flight, if any."""
        if self._txn is not None:
            self._txn.abort(timeout)


def _source(m: Message) -> bytes | None:
    headers = m.headers()
    if isinstance(headers, list):
        for name, value in headers:
            if name == SOURCE_HEADER and isinstance(value, bytes):
                return value
    return None


def _stable_ends(
    committed: Consumer, uncommitted: Consumer, tps: list[TopicPartition], deadline: float
) -> dict[str, int]:
    """End offsets of ``tps`` once no transaction is open on them."""
    while True:
        ends = {tp.topic: committed.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        highs = {tp.topic: uncommitted.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
        if ends == highs:
            return ends
        if time.monotonic() > deadline:
            raise TransactionFailed(f"verifier state has an open transaction: {ends} < {highs}")
        time.sleep(0.2)


def _read(consumer: Consumer, upto: dict[tuple[str, int], int]) -> Iterator[Message]:
    """Committed records of each (topic, partition) below its offset in ``upto``."""
    left = {tp: end for tp, end in upto.items() if end > 0}
    if not left:
        return
    consumer.assign([TopicPartition(t, p, 0) for t, p in left])
    try:
        while left:
            for m in consumer.consume(10_000, 1.0):
                tp = (m.topic() or "", m.partition() or 0)
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        left.pop(tp, None)  # at the end: nothing more below it
                        continue
                    raise TransactionFailed(f"verifier restore: {err}")
                end = left.get(tp)
                if end is None:
                    continue
                offset = m.offset() or 0
                if offset < end:
                    yield m
                if offset + 1 >= end:
                    left.pop(tp, None)
            for pos in consumer.position([TopicPartition(t, p) for t, p in left]):
                if pos.offset >= left.get((pos.topic, pos.partition), 0) > 0:
                    left.pop((pos.topic, pos.partition), None)
    finally:
        consumer.unassign()


def die(exc: BaseException) -> None:
    """Crash-only: what was not committed is read again by the partitions' next owner."""
    log.critical("verifier stops without committing: %s", exc)
    logging.shutdown()
    os._exit(70)
