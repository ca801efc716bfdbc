"""One Kafka transaction at a time (事务): consume, transform, produce, exactly once.

The ingest, the verifier and the exchange each hold one transactional producer. The outputs
of one or more batches and the input offsets of those batches commit together
(``send_offsets_to_transaction`` with the consumer's group metadata, KIP-447): a worker that
lost its group membership cannot commit, and an aborted transaction leaves nothing visible
to ``read_committed`` readers. The protocol lives here once; what each agent counts around
it stays with that agent.

A transaction belongs to its agent, which produces into it and commits it on an executor
thread while it decides the next batch. A lost assignment or a stop aborts it from the
reader's thread: every step takes :attr:`Transaction.lock`, and callers that keep their own
bookkeeping beside it (tallies, the access log's numbering) take it around both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from streams.kafka.batch_reader import Offsets
from streams.kafka.config import KafkaConfig

__all__ = ["DeliveryFailed", "Produced", "Transaction", "TransactionFailed", "produce_records"]

log = logging.getLogger(__name__)


class Produced(Protocol):
    """A record to produce (an ingest outcome, a verifier output): ``partition`` -1 lets
    the partitioner choose; ``value`` None is a tombstone."""

    @property
    def topic(self) -> str: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def partition(self) -> int: ...
    @property
    def headers(self) -> Any: ...


def produce_records(
    producer: Producer,
    records: Iterable[Produced],
    on_delivery: Callable[[KafkaError | None, object], None] | None = None,
) -> None:
    """Produce each record to its topic and partition, waiting while librdkafka's local
    queue is full. Positionally (topic, value, key, partition, callback, on_delivery,
    timestamp, headers): a quarter cheaper than by keyword, on the ingest's hot path."""
    produce = producer.produce
    for r in records:
        while True:
            try:
                produce(r.topic, r.value, r.key, r.partition, None, on_delivery, 0, r.headers)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                producer.poll(0.05)


class Counted(Protocol):
    """A counter with one label, the result: ``committed`` or ``aborted`` (a Prometheus
    counter such as ``xiangyun_ingest_transactions_total``)."""

    def labels(self, result: str) -> Any: ...


class TransactionFailed(RuntimeError):
    """A transaction could not commit; it was aborted (or the producer is fenced)."""


class DeliveryFailed(TransactionFailed):
    """The transaction committed, but a delivery callback reported a failed output
    (librdkafka fails the commit first; this is the loud second line)."""


class Transaction:
    """A transactional producer and the transaction open on it, if any.

    ``name`` says whose it is in errors and logs ("ingest", "verifier", "exchange");
    ``counted``, if given, counts each transaction committed or aborted."""

    def __init__(self, producer: Producer, name: str, counted: Counted | None = None) -> None:
        self.producer = producer
        self.name = name
        self._counted = counted
        self.lock = threading.RLock()
        self.open = False
        self.opened_at = 0.0
        self.offsets: Offsets = {}
        self._failures: list[str] = []

    @classmethod
    def start(
        cls,
        kafka: KafkaConfig,
        transactional_id: str,
        timeout_ms: int,
        name: str,
        counted: Counted | None = None,
    ) -> Transaction:
        """A producer with ``transactional_id``, initialised: an earlier producer with the
        same id is fenced, and its open transaction aborted."""
        producer = Producer(
            kafka.transactional_producer(transactional_id, **{"transaction.timeout.ms": timeout_ms})
        )
        producer.init_transactions(30)
        return cls(producer, name, counted)

    def begin(self) -> Producer:
        """The producer, with a transaction open on it (begun here if none is)."""
        with self.lock:
            if not self.open:
                self.producer.begin_transaction()
                self.open = True
                self.opened_at = time.monotonic()
            return self.producer

    def cover(self, offsets: Offsets) -> None:
        """The open transaction also answers for ``offsets`` (the next offsets to read)."""
        with self.lock:
            self.offsets.update(offsets)

    def due(self, idle: bool, interval_ms: float) -> bool:
        """Commit when no batch waits (latency) or the transaction is old enough."""
        if not self.open:
            return False
        return idle or (time.monotonic() - self.opened_at) * 1000 >= interval_ms

    def on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        """A delivery callback for outputs whose failure must fail the commit loudly."""
        if err is not None:
            self._failures.append(str(err))

    def commit(self, group_metadata: Callable[[], object], timeout: float = 60.0) -> bool:
        """Send the covered offsets with the consumer's group metadata and commit; False if
        no transaction was open. Raises :class:`TransactionFailed`, after aborting when
        librdkafka says the transaction must be. A retriable error (a timeout: the commit
        may still complete) is retried, as librdkafka allows, until ``timeout`` is spent."""
        with self.lock:
            if not self.open:
                return False
            offsets = [TopicPartition(t, p, o) for (t, p), o in self.offsets.items()]
            deadline = time.monotonic() + timeout
            try:
                if offsets:
                    metadata = group_metadata()
                    self._retrying(
                        lambda left: self.producer.send_offsets_to_transaction(
                            offsets, metadata, left
                        ),
                        deadline,
                    )
                self._retrying(self.producer.commit_transaction, deadline)
            except KafkaException as exc:
                self._count("aborted")
                self._failures = []
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.txn_requires_abort():
                    try:
                        self.producer.abort_transaction(timeout)
                    except KafkaException as abort_exc:
                        log.error("%s: abort after a failed commit: %s", self.name, abort_exc)
                raise TransactionFailed(
                    f"{self.name} transaction not committed: {err or exc}"
                ) from exc
            finally:
                self.open = False
                self.offsets = {}
            if self._failures:
                failures, self._failures = self._failures[:5], []
                raise DeliveryFailed(
                    f"{self.name}: delivery failures in a committed transaction: {failures}"
                )
            self._count("committed")
            return True

    def abort(self, timeout: float = 10.0) -> bool:
        """Abort the open transaction; False if none was open. After a commit in flight on
        another thread, if any: that one commits or fails on its own."""
        with self.lock:
            if not self.open:
                return False
            try:
                self.producer.abort_transaction(timeout)
                self._count("aborted")
            finally:
                self.open = False
                self.offsets = {}
                self._failures = []
            return True

    def _retrying(self, call: Callable[[float], object], deadline: float) -> None:
        """``call(seconds left)``, again while librdkafka calls its error retriable and
        time is left."""
        while True:
            try:
                call(max(0.001, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                retriable = isinstance(err, KafkaError) and err.retriable()
                if not retriable or time.monotonic() >= deadline:
                    raise
                log.warning("%s transaction: %s; trying again", self.name, err)
                time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))

    def _count(self, result: str) -> None:
        if self._counted is not None:
            self._counted.labels(result).inc()
