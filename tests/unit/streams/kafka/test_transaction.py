"""The one transaction protocol of the ingest, the verifier and the exchange: begin, cover
offsets, commit with the group metadata, abort; and an abort from another thread while a
commit is in flight (no broker: a recording producer)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from streams.kafka.transaction import DeliveryFailed, Transaction, TransactionFailed


class Producer:
    """The transactional calls of confluent_kafka.Producer, recorded; each call checks that
    no other one is running (librdkafka refuses that with a conflict)."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.in_call = threading.Lock()
        self.commit_started = threading.Event()
        self.release_commit = threading.Event()
        self.release_commit.set()
        self.commit_error: KafkaError | None = None
        self.commit_failures: list[KafkaError] = []  # raised by the next commits, in turn

    def _call(self, name: str) -> None:
        if not self.in_call.acquire(blocking=False):
            raise KafkaException(KafkaError(KafkaError._CONFLICT, f"{name} during another call"))
        try:
            self.calls.append(name)
            if name == "commit":
                self.commit_started.set()
                assert self.release_commit.wait(5)
                if self.commit_failures:
                    raise KafkaException(self.commit_failures.pop(0))
                if self.commit_error is not None:
                    raise KafkaException(self.commit_error)
        finally:
            self.in_call.release()

    def begin_transaction(self) -> None:
        self._call("begin")

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, _t: float) -> None:
        self._call(f"offsets:{[(tp.topic, tp.partition, tp.offset) for tp in offsets]}")
        assert metadata == "metadata"

    def commit_transaction(self, _t: float) -> None:
        self._call("commit")

    def abort_transaction(self, _t: float) -> None:
        self._call("abort")


def _txn() -> tuple[Transaction, Producer]:
    producer = Producer()
    return Transaction(producer, "unit"), producer  # type: ignore[arg-type]


def test_outputs_and_offsets_commit_together_once() -> None:
    txn, producer = _txn()
    assert not txn.commit(lambda: "metadata")  # nothing open: nothing to commit
    txn.begin()
    txn.begin()  # one transaction, however many batches
    txn.cover({("c", 0): 5})
    txn.cover({("c", 0): 9, ("c", 1): 3})
    assert txn.commit(lambda: "metadata")
    assert producer.calls == ["begin", "offsets:[('c', 0, 9), ('c', 1, 3)]", "commit"]
    assert not txn.open and txn.offsets == {}
    assert not txn.abort()  # nothing left to abort


def test_a_commit_is_due_when_idle_or_old_enough() -> None:
    txn, _ = _txn()
    assert not txn.due(idle=True, interval_ms=0)  # nothing open
    txn.begin()
    assert txn.due(idle=True, interval_ms=60_000)
    assert not txn.due(idle=False, interval_ms=60_000)
    assert txn.due(idle=False, interval_ms=0)


def test_an_abortable_failure_is_aborted_and_reported() -> None:
    txn, producer = _txn()
    producer.commit_error = KafkaError(
        KafkaError._TIMED_OUT, "broker gone", txn_requires_abort=True
    )
    txn.begin()
    txn.cover({("c", 0): 1})
    with pytest.raises(TransactionFailed, match="unit transaction not committed"):
        txn.commit(lambda: "metadata")
    assert producer.calls[-2:] == ["commit", "abort"]
    assert not txn.open and txn.offsets == {}


def test_a_fatal_failure_is_reported_without_an_abort() -> None:
    txn, producer = _txn()
    producer.commit_error = KafkaError(KafkaError._FENCED, "fenced", fatal=True)
    txn.begin()
    with pytest.raises(TransactionFailed, match="fenced"):
        txn.commit(lambda: "metadata")
    assert "abort" not in producer.calls


def test_a_delivery_failure_fails_the_commit_loudly() -> None:
    txn, _ = _txn()
    txn.begin()
    txn.on_delivery(None, object())  # delivered
    txn.on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"), object())
    with pytest.raises(TransactionFailed, match=r"delivery failures.*too large"):
        txn.commit(lambda: "metadata")
    txn.begin()
    assert txn.commit(lambda: "metadata")  # reported once


def test_an_abort_from_another_thread_waits_for_the_commit_in_flight() -> None:
    """A lost assignment aborts on the reader's thread while the agent's commit runs on the
    executor's: the abort waits, and finds nothing left to abort."""
    txn, producer = _txn()
    producer.release_commit.clear()
    txn.begin()
    txn.cover({("c", 0): 4})
    committed: list[bool] = []
    committer = threading.Thread(target=lambda: committed.append(txn.commit(lambda: "metadata")))
    committer.start()
    assert producer.commit_started.wait(5)
    aborted: list[bool] = []
    aborter = threading.Thread(target=lambda: aborted.append(txn.abort()))
    aborter.start()
    aborter.join(0.2)
    assert aborter.is_alive()  # held while the commit runs
    producer.release_commit.set()
    committer.join(5)
    aborter.join(5)
    assert committed == [True] and aborted == [False]
    assert producer.calls == ["begin", "offsets:[('c', 0, 4)]", "commit"]


def test_an_abort_during_a_produce_waits_for_it() -> None:
    """Whoever holds the lock (an agent producing a batch) finishes before the abort."""
    txn, producer = _txn()
    with txn.lock:
        txn.begin()
        aborted: list[bool] = []
        aborter = threading.Thread(target=lambda: aborted.append(txn.abort()))
        aborter.start()
        aborter.join(0.2)
        assert aborter.is_alive()
        txn.cover({("c", 0): 2})
    aborter.join(5)
    assert aborted == [True] and not txn.open and txn.offsets == {}
    assert producer.calls == ["begin", "abort"]


def test_a_retriable_commit_error_is_retried_as_librdkafka_allows() -> None:
    txn, producer = _txn()
    timed_out = KafkaError(KafkaError._TIMED_OUT, "slow broker", retriable=True)
    producer.commit_failures = [timed_out, timed_out]
    txn.begin()
    txn.cover({("c", 0): 3})
    assert txn.commit(lambda: "metadata", timeout=10)
    assert producer.calls == ["begin", "offsets:[('c', 0, 3)]", "commit", "commit", "commit"]
    assert not txn.open


def test_a_retriable_error_that_lasts_past_the_timeout_fails_the_commit() -> None:
    txn, producer = _txn()
    producer.commit_error = KafkaError(KafkaError._TIMED_OUT, "broker away", retriable=True)
    txn.begin()
    with pytest.raises(TransactionFailed, match="broker away"):
        txn.commit(lambda: "metadata", timeout=0.3)
    assert producer.calls.count("commit") >= 2 and not txn.open


def test_a_delivery_failure_after_the_commit_is_its_own_error() -> None:
    txn, _ = _txn()
    txn.begin()
    txn.on_delivery(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "too large"), object())
    with pytest.raises(DeliveryFailed):  # committed: the caller must not roll back its books
        txn.commit(lambda: "metadata")
