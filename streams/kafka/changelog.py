"""The single writer of a register kept in Kafka as a change log and a compacted snapshot
topic: the catalog (:mod:`streams.kafka.catalog_store`) and the unit register
(:mod:`streams.kafka.units_store`) both write through :class:`ChangeLogWriter`.

A writer is a transactional producer whose ``transactional.id`` is the same for every writer
of one register: ``init_transactions`` fences any other writer (its open transaction is
aborted, its commit fails) and waits until the previous writer's commit is complete.
:meth:`ChangeLogWriter.write` writes the changes to the change log, learns their offsets,
writes the snapshots (which name those offsets) to the snapshot topic and commits: both or
neither. :func:`read_log` reads one key's records from a change log, for its history.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.kafka.config import KafkaConfig
from streams.kafka.follower import CompactedView

__all__ = ["FENCED", "ChangeLogWriter", "close_writer", "read_log"]

FENCED = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
}

#: a change: (key, value) for the change log
Record = tuple[str, bytes]
#: the snapshots to write once the change-log offsets are known (last offset per key)
Snapshots = Callable[[dict[str, int]], list[Record]]


def close_writer(producer: Producer) -> None:
    """Close a writer; a fenced one cannot abort its transaction and need not (the broker
    already aborted it), so the client's warning about that is dropped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        producer.close()


class ChangeLogWriter:
    """Writes one register's changes and snapshots in transactions, as its only writer.

    ``noun`` names the register in messages ("catalog"); ``conflict`` is raised (with a
    message) when another writer took over, ``unavailable`` when Kafka fails."""

    def __init__(
        self,
        kafka: KafkaConfig,
        *,
        transactional_id: str,
        changes_topic: str,
        snapshot_topic: str,
        noun: str,
        conflict: Callable[[str], Exception],
        unavailable: Callable[[str], Exception],
        timeout: float,
    ) -> None:
        self.kafka = kafka
        self.transactional_id = transactional_id
        self.changes_topic = changes_topic
        self.snapshot_topic = snapshot_topic
        self.noun = noun
        self.conflict = conflict
        self.unavailable = unavailable
        self.timeout = timeout

    def become(self) -> Producer:
        """A transactional producer that fenced every other writer of this register."""
        producer = Producer(
            self.kafka.transactional_producer(
                self.transactional_id, **{"transaction.timeout.ms": 15_000, "linger.ms": 0}
            )
        )
        try:
            producer.init_transactions(self.timeout)
        except KafkaException as exc:
            close_writer(producer)
            raise self.unavailable(
                f"cannot become the writer of the {self.noun} topic {self.snapshot_topic}: "
                f"{exc.args[0] if exc.args else exc}; is Kafka up (`xiangyun stack status`)?"
            ) from exc
        return producer

    def write(
        self, producer: Producer, changes: Sequence[Record], snapshots: Snapshots
    ) -> tuple[dict[str, int], tuple[int, int]]:
        """Write ``changes`` to the change log and ``snapshots(offsets)`` to the snapshot
        topic in one transaction. Returns the change-log offset of each key's last change
        and the (partition, offset) of the last snapshot."""
        noun, timeout = self.noun, self.timeout
        written: dict[int, int] = {}  # change index → its offset in the change log
        stored: list[tuple[int, int]] = []
        failures: list[str] = []

        def on_change(i: int) -> Callable[[KafkaError | None, Any], None]:
            def report(err: KafkaError | None, msg: Any) -> None:
                if err is not None:
                    failures.append(str(err))
                else:
                    written[i] = msg.offset()

            return report

        def on_snapshot(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                failures.append(str(err))
            else:
                stored.append((msg.partition(), msg.offset()))

        def delivered(what: str, topic: str) -> None:
            left = producer.flush(timeout)
            if left or failures:
                producer.abort_transaction(timeout)
                raise self.unavailable(
                    f"could not write {left or len(failures)} {noun} {what} to {topic}: "
                    f"{failures[:3]}; nothing was changed; is Kafka up (`xiangyun stack status`)?"
                )

        offsets: dict[str, int] = {}
        try:
            producer.begin_transaction()
            for i, (key, value) in enumerate(changes):
                producer.produce(self.changes_topic, value, key.encode(), on_delivery=on_change(i))
            delivered("changes", self.changes_topic)
            for i, (key, _) in enumerate(changes):
                if i not in written:
                    producer.abort_transaction(timeout)
                    raise self.unavailable(
                        f"no delivery report for a {noun} change on {self.changes_topic}; "
                        f"nothing was changed"
                    )
                offsets[key] = written[i]
            for key, value in snapshots(offsets):
                producer.produce(self.snapshot_topic, value, key.encode(), on_delivery=on_snapshot)
            delivered("snapshots", self.snapshot_topic)
            producer.commit_transaction(timeout)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() in FENCED:
                raise self.conflict(
                    f"the {noun} changed concurrently: another writer took over "
                    f"{self.snapshot_topic} while this change was being written, so it was "
                    f"not written; retry"
                ) from exc
            if isinstance(err, KafkaError) and err.txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(timeout)
            raise self.unavailable(
                f"could not write to the {noun} topics {self.changes_topic} and "
                f"{self.snapshot_topic}: {err or exc}; is Kafka up (`xiangyun stack status`)?"
            ) from exc
        if not stored:
            raise self.unavailable(
                f"no delivery report for the {noun} snapshots on {self.snapshot_topic}"
            )
        return offsets, max(stored)


def read_log(
    kafka: KafkaConfig,
    topic: str,
    key: str,
    parse: Callable[[bytes], Any],
    timeout: float,
) -> tuple[list[Any], list[str]]:
    """Every record of ``key`` in the change log ``topic``, from the start to its current
    end, parsed with ``parse``; and the errors of records that could not be parsed (a
    tombstone is one). Raises :class:`~streams.kafka.follower.ViewError` or
    ``KafkaException`` if the topic cannot be read."""
    events: list[Any] = []
    bad: list[str] = []
    wanted = key.encode()

    def collect(k: bytes, value: bytes | None) -> None:
        if k != wanted:
            return
        try:
            if value is None:
                raise ValueError("tombstone")
            events.append(parse(value))
        except ValueError as exc:  # the registers' errors are ValueErrors
            bad.append(str(exc))

    view = CompactedView(kafka, topic, collect)
    try:
        view.start(timeout)
    finally:
        view.stop()
    return events, bad
