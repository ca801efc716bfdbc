"""The batch reader's two ways of reading (no Kafka: a stand-in consumer on the reader's own
thread): one batch read ahead while the agent decides, or read only when the agent asks."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError

from streams.app import create_app
from streams.ingest.reader import CollectReader
from tests.unit.kafka_fakes import FakeMessage
from xiangyun.settings import Settings


class _Event(FakeMessage):
    """What librdkafka hands over among the messages: an end of partition, an error."""

    def __init__(self, code: int) -> None:
        super().__init__(b"", b"", -1)
        self._code = code

    def error(self) -> KafkaError:  # type: ignore[override]
        return KafkaError(self._code)


class _Consumer:
    """Always has one more message (the first read with ``events`` around it); counts how
    often it was asked."""

    def __init__(self, events: list[FakeMessage] | None = None) -> None:
        self.reads = 0
        self.lock = threading.Lock()
        self.events = events or []

    def consume(self, _n: int, _timeout: float) -> list[FakeMessage]:
        with self.lock:
            self.reads += 1
            if self.reads == 1 and self.events:
                return [self.events[0], FakeMessage(b"k", b"v", 1), *self.events[1:]]
            return [FakeMessage(b"k", b"v", self.reads)]

    def poll(self, _timeout: float) -> FakeMessage:
        return self.consume(1, 0)[0]

    def consumer_group_metadata(self) -> object:
        return object()

    def close(self) -> None:
        pass


class _CountingEvent(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.waits = 0

    def wait(self, timeout: float | None = None) -> bool:
        self.waits += 1
        return super().wait(timeout)


def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.001)


def _run_reader(
    on_demand: bool, consumer: _Consumer | None = None
) -> tuple[list[int], int, int, list[Any]]:
    """The offsets of the first two batches the agent got, reads before and after ready(),
    and the first batch."""
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-batches")
    consumer = consumer or _Consumer()

    async def run() -> tuple[list[int], int, int, list[Any]]:
        app = create_app(settings.streams)
        app.flow_control.resume()
        reader = CollectReader(app, settings.streams, "unit.collect", on_demand=on_demand)
        if on_demand:
            reader._demand = _CountingEvent()
            reader._demand.set()
        subscriber = reader.channel.clone(is_iterator=True)
        reader._loop = asyncio.get_running_loop()
        reader._consumer = consumer  # type: ignore[assignment]
        thread = threading.Thread(target=reader._run, daemon=True)
        thread.start()
        try:
            first = await asyncio.wait_for(subscriber.get(), 5)
            if on_demand:
                demand = reader._demand
                assert isinstance(demand, _CountingEvent)
                seen = demand.waits
                # The reader has gone round its loop several times without reading.
                await asyncio.to_thread(_until, lambda: demand.waits >= seen + 3)
            else:
                # A batch is read ahead while the agent holds the first one.
                await asyncio.to_thread(_until, lambda: consumer.reads >= 2)
            before = consumer.reads
            reader.ready()
            second = await asyncio.wait_for(subscriber.get(), 5)
            got: list[Any] = [first, second]
            return [b[0].offset() for b in got], before, consumer.reads, first
        finally:
            reader._stopping.set()
            reader.ready()
            await asyncio.to_thread(thread.join, 5)

    return asyncio.run(run())


def test_an_on_demand_reader_reads_only_when_the_agent_asks() -> None:
    offsets, before, after, _first = _run_reader(on_demand=True)
    assert before == 1  # nothing read while the agent held its batch
    assert offsets == [1, 2]  # the next batch was read after ready(), not before
    assert after >= 2


def test_a_reader_reads_one_batch_ahead_by_default() -> None:
    offsets, before, _after, _first = _run_reader(on_demand=False)
    assert before >= 2
    assert offsets == [1, 2]


def test_events_among_the_messages_are_not_handed_over_and_errors_are_said(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[FakeMessage] = [
        _Event(KafkaError._PARTITION_EOF),
        _Event(KafkaError._TRANSPORT),
    ]
    with caplog.at_level(logging.WARNING, logger="streams.kafka.batch_reader"):
        _offsets, _before, _after, first = _run_reader(False, _Consumer(events))
    assert [m.offset() for m in first] == [1]  # the message alone
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "collect reader" in said[0]  # the error; the end silently


class _CommittingConsumer(_Consumer):
    """Records each commit: the thread it came from, its offsets, and whether it waited."""

    def __init__(self) -> None:
        super().__init__()
        self.commits: list[tuple[str, list[tuple[str, int, int]], bool]] = []

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        got = sorted((tp.topic, tp.partition, tp.offset) for tp in offsets)
        self.commits.append((threading.current_thread().name, got, asynchronous))


def test_acknowledged_offsets_are_merged_into_one_commit_that_does_not_wait() -> None:
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-acks")
    consumer = _CommittingConsumer()

    async def run() -> None:
        reader = CollectReader(create_app(settings.streams), settings.streams, "unit.collect")
        reader.acknowledge({("t", 0): 5, ("t", 1): 2})
        reader.acknowledge({("t", 0): 7})
        reader._commit_acknowledged(consumer)  # type: ignore[arg-type]
        reader._commit_acknowledged(consumer)  # type: ignore[arg-type]  # nothing new: no-op

    asyncio.run(run())
    assert [(o, a) for _t, o, a in consumer.commits] == [([("t", 0, 7), ("t", 1, 2)], True)]


def test_the_reader_thread_commits_what_the_agent_acknowledged() -> None:
    # A call into the consumer from the agent's thread would wait for the reader's poll.
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-acks")
    consumer = _CommittingConsumer()

    async def run() -> None:
        app = create_app(settings.streams)
        app.flow_control.resume()
        reader = CollectReader(app, settings.streams, "unit.collect")
        subscriber = reader.channel.clone(is_iterator=True)
        reader._loop = asyncio.get_running_loop()
        reader._consumer = consumer  # type: ignore[assignment]
        thread = threading.Thread(target=reader._run, name="the-reader", daemon=True)
        thread.start()
        try:
            first = await asyncio.wait_for(subscriber.get(), 5)
            reader.acknowledge({("unit.collect", 0): first[-1].offset() + 1})
            await asyncio.wait_for(subscriber.get(), 5)  # the reader goes round again
            await asyncio.wait_for(subscriber.get(), 5)
            await asyncio.to_thread(_until, lambda: bool(consumer.commits))
        finally:
            reader._stopping.set()
            await asyncio.to_thread(thread.join, 5)

    asyncio.run(run())
    assert consumer.commits == [("the-reader", [("unit.collect", 0, 2)], True)]


def test_a_stopping_reader_does_not_wait_for_a_barrier_no_agent_will_take() -> None:
    # The worker stops its agents before its readers: the revoke in consumer.close() waited
    # a minute for a barrier nobody took, past any grace period, and the stop was a kill.
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-stop")

    class _Closing:
        def consumer_group_metadata(self) -> object:
            return object()

    async def run() -> tuple[bool, float]:
        reader = CollectReader(create_app(settings.streams), settings.streams, "unit.collect")
        reader._loop = asyncio.get_running_loop()
        reader._stopping.set()
        began = time.monotonic()
        ok = await asyncio.to_thread(reader._committed_before_revoke, _Closing(), [0, 1])  # type: ignore[arg-type]
        return ok, time.monotonic() - began

    ok, took = asyncio.run(run())
    assert not ok  # nothing of the partitions commits: the runtime aborts what is open
    assert took < 1.0
