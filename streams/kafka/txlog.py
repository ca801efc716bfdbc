"""A fenced single writer of a change log and its compacted snapshot topic.

The catalog and the policy lists are kept the same way: an append-only change log (the
history) and a compacted topic of bounded current states, written together in one Kafka
transaction by one writer at a time. :func:`become_writer` makes a transactional producer
whose ``transactional.id`` is the same for every writer of a store, so a new writer fences
the others; :func:`write_changes` writes the changes, learns their offsets, writes the
snapshots built from those offsets, and commits: both or neither. ``noun`` names the store
in messages; ``unavailable`` and ``conflict`` are the store's error types.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.kafka.config import KafkaConfig

__all__ = ["FENCED", "Record", "become_writer", "close_writer", "write_changes"]

FENCED = {
    KafkaError._FENCED,
    KafkaError.PRODUCER_FENCED,
    KafkaError.INVALID_PRODUCER_EPOCH,
}

#: a record: (key, value)
Record = tuple[bytes, bytes]


def close_writer(producer: Producer) -> None:
    """Close a writer; a fenced one cannot abort its transaction and need not (the broker
    already aborted it), so the client's warning about that is dropped."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        producer.close()


def become_writer(
    kafka: KafkaConfig,
    transactional_id: str,
    topic: str,
    timeout: float,
    *,
    noun: str,
    unavailable: type[Exception],
) -> Producer:
    """The one writer of ``topic`` (fences any other holding ``transactional_id``)."""
    producer = Producer(
        kafka.transactional_producer(
            transactional_id, **{"transaction.timeout.ms": 15_000, "linger.ms": 0}
        )
    )
    try:
        producer.init_transactions(timeout)
    except KafkaException as exc:
        close_writer(producer)
        raise unavailable(
            f"cannot become the writer of the {noun} topic {topic}: "
            f"{exc.args[0] if exc.args else exc}; is Kafka up (`xiangyun stack status`)?"
        ) from exc
    return producer


def write_changes(
    producer: Producer,
    changes_topic: str,
    changes: Sequence[Record],
    snapshot_topic: str,
    snapshots: Callable[[list[int]], Sequence[Record]],
    timeout: float,
    *,
    noun: str,
    unavailable: type[Exception],
    conflict: type[Exception],
) -> tuple[list[int], tuple[int, int]]:
    """Write ``changes`` to the change log and then ``snapshots(offsets)`` (the offsets of
    the changes, in order) to the snapshot topic, in one transaction. Returns the offsets
    of the changes and the (partition, offset) of the last snapshot."""
    offsets: dict[int, int] = {}  # change index → its offset in the change log
    written: list[tuple[int, int]] = []
    failures: list[str] = []

    def on_change(i: int) -> Callable[[KafkaError | None, Any], None]:
        def report(err: KafkaError | None, msg: Any) -> None:
            if err is not None:
                failures.append(str(err))
            else:
                offsets[i] = msg.offset()

        return report

    def on_snapshot(err: KafkaError | None, msg: Any) -> None:
        if err is not None:
            failures.append(str(err))
        else:
            written.append((msg.partition(), msg.offset()))

    def delivered(what: str, topic: str) -> None:
        left = producer.flush(timeout)
        if left or failures:
            producer.abort_transaction(timeout)
            raise unavailable(
                f"could not write {left or len(failures)} {noun} {what} to {topic}: "
                f"{failures[:3]}; nothing was changed; is Kafka up (`xiangyun stack status`)?"
            )

    try:
        producer.begin_transaction()
        for i, (key, value) in enumerate(changes):
            producer.produce(changes_topic, value, key, on_delivery=on_change(i))
        delivered("changes", changes_topic)
        if len(offsets) != len(changes):
            producer.abort_transaction(timeout)
            raise unavailable(
                f"no delivery report for a {noun} change on {changes_topic}; nothing was changed"
            )
        for key, value in snapshots([offsets[i] for i in range(len(changes))]):
            producer.produce(snapshot_topic, value, key, on_delivery=on_snapshot)
        delivered("snapshots", snapshot_topic)
        producer.commit_transaction(timeout)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else None
        if isinstance(err, KafkaError) and err.code() in FENCED:
            raise conflict(
                f"the {noun} changed concurrently: another writer took over {snapshot_topic} "
                f"while this change was being written, so it was not written; retry"
            ) from exc
        if isinstance(err, KafkaError) and err.txn_requires_abort():
            with contextlib.suppress(KafkaException):
                producer.abort_transaction(timeout)
        raise unavailable(
            f"could not write to the {noun} topics {changes_topic} and {snapshot_topic}: "
            f"{err or exc}; is Kafka up (`xiangyun stack status`)?"
        ) from exc
    if not written:
        raise unavailable(f"no delivery report for the {noun} snapshots on {snapshot_topic}")
    return [offsets[i] for i in range(len(changes))], max(written)
