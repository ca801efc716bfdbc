"""The exchange's Kafka side: stores it follows, its transactional producer, the access log's
writer, the decisions store's restore, and the transaction of each batch.

Exactly once: a batch's answers (to the requesters' reply topics), decision records,
subscription records, subscription deliveries and access-log entries, and the offsets of
the request and pool messages they answer for, commit in ONE Kafka transaction
(``send_offsets_to_transaction`` with the exchange group's metadata, KIP-447). Readers use
``read_committed``: an answer is never seen without its entry, nor an entry without its
answer. A failure to commit ends the process (crash-only), like the ingest.

One writer of the access log: the transactional id is ``<app_id>.exchange`` for every
instance, so a starting instance fences any older one (and aborts its open transaction at
once), and only then reads where the log ends to number its entries. Only one worker at a
time is the exchange: it holds a lease in Redis (:mod:`streams.exchange.lease`); the others
wait on standby.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from monitoring.metrics import ExchangeMetrics
from streams.audit.entry import AccessEntry
from streams.audit.log import AccessLog, EntryWriter, read_topic
from streams.exchange.core import Exchange, Message, Output, Step
from streams.exchange.messages import ExchangeCodec
from streams.kafka.batch_reader import Offsets
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.config import StreamsConfig
from streams.kafka.policy_store import PolicyStore, PolicyUnavailable, catalog_fields
from streams.kafka.topics import Topics, ensure_department_topics, ensure_topics
from streams.kafka.transaction import DeliveryFailed, Transaction, TransactionFailed
from streams.kafka.units_store import UnitsStore
from streams.views.reader import PoolView
from streams.wire.codec import decode

__all__ = ["ExchangeRuntime", "Offsets"]

log = logging.getLogger(__name__)

#: how old the freshness figures an answer carries may be, seconds (stamped when the
#: refresh began); a thread refreshes them every FRESHNESS_EVERY_S, off the decisions' path
#: (a refresh asks the broker: ~10 ms, far more on a busy machine)
FRESHNESS_TTL_S = 3.0
FRESHNESS_EVERY_S = 0.5
#: how long a batch waits, at most, for the policy topic when a request names an approval
POLICY_SYNC_TIMEOUT_S = 2.0


class ExchangeRuntime:
    """What the exchange agent needs; nothing touches Kafka or Redis before :meth:`start`."""

    def __init__(
        self,
        config: StreamsConfig,
        metrics: ExchangeMetrics | None = None,
        *,
        policy: PolicyStore | None = None,
        catalog: CatalogStore | None = None,
        units: UnitsStore | None = None,
        view: PoolView | None = None,
    ) -> None:
        self.config = config
        self.topics = Topics.of(config)
        self.metrics = metrics or ExchangeMetrics()
        self.codec = ExchangeCodec(config.schema_dir)
        self.policy = policy or PolicyStore(config)
        self.catalog = catalog or CatalogStore(config)
        self.units = units or UnitsStore(config)
        self.view = view or PoolView(config)
        self.access = AccessLog(config)
        self._pool_schema = self.view.registry.by_name("org.xiangyun.PoolRecord")
        self.exchange = Exchange(
            self.topics,
            self.codec,
            self.policy,
            self.catalog.current,
            catalog_fields(self.catalog),
            self.units.current,
            self.view.get_many,
            freshness=self._freshness,
            decode_pool=self._decode_pool,
            mask_key=config.policy_mask_key,
            sync_policy=self._sync_policy,
        )
        self.transactional_id = f"{config.app_id}.exchange"
        self._txn: Transaction | None = None
        self.writer: EntryWriter | None = None
        self._answers: Counter[tuple[str, str]] = Counter()
        self._deliveries: Counter[tuple[str, str]] = Counter()
        self._sent_at: list[float] = []
        self._fresh: tuple[float, tuple[int | None, int | None]] = (0.0, (None, None))
        self._closing = threading.Event()
        self._refresher: threading.Thread | None = None
        self._known_replies: set[str] = set()
        self._state_lock = threading.Lock()

    # -- start and stop ------------------------------------------------------------------
    def start(self) -> ExchangeRuntime:
        ensure_topics(self.config, self.topics)
        self.policy.start()
        self.catalog.start()
        self.units.start()
        # The same transactional id as any earlier exchange: that one is fenced, and its open
        # transaction aborted, before the log's end is read to number the entries.
        self._txn = Transaction.start(
            self.config.kafka,
            self.transactional_id,
            self.config.transaction_timeout_ms,
            "exchange",
            self.metrics.transactions,
        )
        self.writer = self.access.writer()
        self._refresh_freshness()  # the first answers carry the figures too
        self._refresher = threading.Thread(
            target=self._keep_fresh, name="exchange-freshness", daemon=True
        )
        self._refresher.start()
        for _, value in read_topic(self.config.kafka, self.topics.exchange_subscriptions):
            self.exchange.restore_subscription(value)
        self.metrics.subscriptions.set(len(self.exchange.subscriptions))
        log.info(
            "exchange: writing the access log from entry %d; %d active subscriptions",
            self.writer.next_seq,
            len(self.exchange.subscriptions),
        )
        return self

    def close(self) -> None:
        self._closing.set()
        if self._refresher is not None:
            self._refresher.join(10)  # before the view's probe closes
        try:
            self.abort()
        except KafkaException as exc:
            log.warning("exchange: abort on close: %s", exc)
        for closing in (self.policy.close, self.catalog.close, self.units.close, self.view.close):
            try:
                closing()
            except Exception as exc:  # closing is best effort
                log.warning("exchange: close: %s", exc)

    # -- reading helpers -----------------------------------------------------------------
    def _freshness(self) -> tuple[int | None, int | None]:
        at, value = self._fresh
        return value if time.monotonic() - at < FRESHNESS_TTL_S else (None, None)

    def _refresh_freshness(self) -> None:
        asked = time.monotonic()
        try:
            f = self.view.freshness(timeout=5.0)
            self._fresh = (asked, (f.applied_at_ms, f.behind))
        except Exception as exc:  # the answers go out without the figures meanwhile
            log.warning("exchange: view freshness unknown: %s", exc)

    def _sync_policy(self) -> None:
        try:
            self.policy.sync(timeout=POLICY_SYNC_TIMEOUT_S)
        except PolicyUnavailable as exc:  # decided on the policy as last read
            log.warning("exchange: policy not read to its end: %s", exc)

    def _keep_fresh(self) -> None:
        while not self._closing.wait(FRESHNESS_EVERY_S):
            self._refresh_freshness()

    def _decode_pool(self, value: bytes) -> Mapping[str, Any]:
        rec: dict[str, Any] = dict(decode(value, self._pool_schema))
        raw: bytes = rec["payload"]
        rec["payload"] = decode(raw, self.view.registry.writer_of(raw))
        return rec

    # -- assignment (on the reader's thread) ---------------------------------------------
    def restore(self, assigned: Sequence[tuple[str, int]]) -> int:
        """Before any request of the newly ``assigned`` request partitions is read: make
        sure their reply topics exist, and load their decisions from the decisions topic
        (partition p holds those of partition p of every request topic)."""
        by_partition: dict[int, set[str]] = {}
        for topic, p in assigned:
            dept = self.exchange.requester_of(topic)
            if dept is None:
                continue
            if dept not in self._known_replies:
                ensure_department_topics(self.config, dept, request=False)
                self._known_replies.add(dept)
            by_partition.setdefault(self._decisions_partition(p), set()).add(dept)
        if not by_partition:
            return 0
        began = time.monotonic()
        consumer = Consumer(
            self.config.kafka.consumer(
                f"{self.config.exchange_group}.restore",
                **{"isolation.level": "read_committed", "enable.partition.eof": True},
            )
        )
        n = 0
        try:
            for p, depts in sorted(by_partition.items()):
                wanted = tuple(f"{d}|".encode() for d in depts)
                items = self._read_partition(consumer, p)
                with self._state_lock:
                    n += self.exchange.restore_decisions(
                        (k, v) for k, v in items if k.startswith(wanted)
                    )
        finally:
            consumer.close()
        log.info(
            "exchange: %d decisions of partitions %s restored in %.2fs",
            n,
            sorted(by_partition),
            time.monotonic() - began,
        )
        return n

    def _decisions_partition(self, p: int) -> int:
        return p % self.config.partitions

    def _read_partition(self, consumer: Consumer, p: int) -> list[tuple[bytes, bytes | None]]:
        tp = TopicPartition(self.topics.exchange_decisions, p)
        _lo, end = consumer.get_watermark_offsets(tp, timeout=10, cached=False)
        out: list[tuple[bytes, bytes | None]] = []
        if end <= 0:
            return out
        consumer.assign([TopicPartition(tp.topic, p, 0)])
        deadline = time.monotonic() + 120
        try:
            while True:
                if consumer.position([tp])[0].offset >= end:
                    return out
                if time.monotonic() > deadline:
                    raise TransactionFailed(f"could not read {tp.topic}:{p} to offset {end}")
                for m in consumer.consume(10_000, 0.5):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            if (m.offset() or 0) >= end:
                                return out
                            continue
                        raise TransactionFailed(f"restore of decisions: {err}")
                    out.append((m.key() or b"", m.value()))
        finally:
            consumer.unassign()

    def drop(self, revoked: Sequence[tuple[str, int]]) -> None:
        depts = {d for t, _ in revoked if (d := self.exchange.requester_of(t)) is not None}
        if depts:
            with self._state_lock:
                self.exchange.drop_decisions(depts)

    # -- the batch path ------------------------------------------------------------------
    def decide(self, messages: Sequence[Message]) -> list[Step]:
        """Every message's step, in order (on the agent's worker thread)."""
        with self._state_lock:
            return self.exchange.handle_batch(messages)

    def produce(self, steps: Sequence[Step], offsets: Offsets, sent_at: Sequence[float]) -> None:
        """Add the steps' records and entries and the offsets they answer for to the open
        transaction (begun here if none is). Never while :meth:`commit` runs."""
        txn, writer = self._txn, self.writer
        assert txn is not None and writer is not None, "start() first"
        with txn.lock:  # the log's numbering goes with the transaction
            producer = txn.begin()
            for step in steps:
                for out in step.out:
                    if isinstance(out, AccessEntry):
                        key, value = writer.record(out)
                        self._send(producer, txn, Output(writer.topic, key, value, 0))
                    else:
                        self._send(producer, txn, out)
                for a in step.answers:
                    self._answers[a] += 1
                for d in step.deliveries:
                    self._deliveries[d] += 1
            txn.cover(offsets)
            self._sent_at.extend(sent_at)

    def _send(self, producer: Producer, txn: Transaction, out: Output) -> None:
        while True:
            try:
                if out.partition is None:
                    producer.produce(out.topic, out.value, out.key, on_delivery=txn.on_delivery)
                else:
                    producer.produce(
                        out.topic,
                        out.value,
                        out.key,
                        partition=self._decisions_partition(out.partition)
                        if out.topic == self.topics.exchange_decisions
                        else out.partition,
                        on_delivery=txn.on_delivery,
                    )
                return
            except BufferError:
                producer.poll(0.05)

    def commit_due(self) -> bool:
        """Group commit: every batch commits as soon as the commit before it is done (the
        agent awaits that one before it produces the next batch), so a department's answer
        waits for one commit, and under load the batches, not the waits, grow. An
        interval, as the ingest commits, held every answer up to the interval at a steady
        rate (p50 138 ms at 1,000/s against 6 ms for the bare round trip)."""
        return self._txn is not None and self._txn.open

    def commit(self, group_metadata: Callable[[], object], timeout: float = 60.0) -> int:
        """Send the offsets with the group metadata and commit; the answers committed.
        Raises :class:`TransactionFailed` after aborting."""
        txn, writer = self._txn, self.writer
        assert txn is not None and writer is not None, "start() first"
        with txn.lock:
            try:
                if not txn.commit(group_metadata, timeout):
                    return 0
            except DeliveryFailed:
                writer.committed()  # the entries were written; the worker stops on it
                raise
            except TransactionFailed:
                writer.aborted()
                raise
            writer.committed()
            sent_at, self._sent_at = self._sent_at, []
            answers, self._answers = self._answers, Counter()
            deliveries, self._deliveries = self._deliveries, Counter()
        now = time.time()
        for t in sent_at:
            self.metrics.latency.observe(max(0.0, now - t))
        self.metrics.count(answers, deliveries)
        self.metrics.subscriptions.set(len(self.exchange.subscriptions))
        return sum(answers.values())

    def abort(self, timeout: float = 10.0) -> None:
        """Abort the open transaction (a lost assignment, a stopping worker); after a
        commit in flight, if any."""
        txn = self._txn
        if txn is None:
            return
        with txn.lock:
            try:
                txn.abort(timeout)
            finally:
                if self.writer is not None:
                    self.writer.aborted()
