"""The collect reader's hand-over to the agent (no Kafka: the consumer is never started)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from streams.app import create_app
from streams.ingest.reader import CollectReader
from streams.kafka.batch_reader import Barrier, KeepingChannel, unpack
from xiangyun.settings import Settings


def test_a_batch_waits_for_the_agent_instead_of_being_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-collect")
    looked: list[int] = []  # subscriber counts the reader saw while it had the batch

    async def run() -> object:
        app = create_app(settings.streams)
        reader = CollectReader(app, settings.streams, "unit.collect")
        channel_type = type(reader.channel)
        count = channel_type.subscriber_count

        def seen(channel: Any) -> int:
            n: int = count.fget(channel)  # type: ignore[attr-defined]
            looked.append(n)
            return n

        monkeypatch.setattr(channel_type, "subscriber_count", property(seen))
        delivery = asyncio.ensure_future(reader._deliver(["batch"]))  # type: ignore[list-item]
        deadline = time.monotonic() + 5
        while len(looked) < 2 and not delivery.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.001)
        # It looked for a reader, found none and looked again: it held on to the batch.
        assert looked[:2] == [0, 0], looked
        assert not delivery.done(), "delivered to a channel nobody reads: the batch is lost"
        app.flow_control.resume()  # as the worker does once it runs
        subscriber = reader.channel.clone(is_iterator=True)
        await asyncio.wait_for(delivery, 2)
        return await asyncio.wait_for(subscriber.get(), 2)

    assert asyncio.run(run()) == ["batch"]


def test_the_reader_is_idle_only_when_no_batch_waits_for_the_agent() -> None:
    # Faust puts into the subscribers' queues: the channel's own queue is always empty, and
    # an idle() that asked it said "idle" while batches waited (the ingest then committed
    # after every batch instead of every commit interval).
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-collect")

    async def run() -> list[bool]:
        app = create_app(settings.streams)
        app.flow_control.resume()
        reader = CollectReader(app, settings.streams, "unit.collect")
        subscriber = reader.channel.clone(is_iterator=True)
        seen = [reader.idle()]
        await reader._deliver(["batch"])  # type: ignore[list-item]
        seen.append(reader.idle())
        await asyncio.wait_for(subscriber.get(), 2)
        seen.append(reader.idle())
        return seen

    assert asyncio.run(run()) == [True, False, True]


def test_a_batch_on_its_way_in_is_not_idle() -> None:
    # The agent takes a batch and decides it without yielding to the event loop: the next
    # batch, already read, is then on its way in. An idle() that saw only the channel said
    # "idle" there, and under full load the ingest committed after every other batch.
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-collect")

    async def run() -> tuple[list[bool], list[object]]:
        loop = asyncio.get_running_loop()
        app = create_app(settings.streams)
        app.flow_control.resume()
        reader = CollectReader(app, settings.streams, "unit.collect")
        subscriber = reader.channel.clone(is_iterator=True)  # the agent
        await reader._deliver(["a"])  # the channel holds one batch: the next one waits
        handing = loop.run_in_executor(None, reader._hand_over, ["b"], loop)
        for _ in range(1000):  # until the reader thread has the next batch on its way
            if reader._handing_over:
                break
            await asyncio.sleep(0.001)
        taken = [subscriber.queue.get_nowait()]  # taken, and decided without yielding:
        seen = [reader.idle()]  # the agent asks
        taken.append(await asyncio.wait_for(subscriber.get(), 2))
        assert await asyncio.wait_for(handing, 2) is True
        seen.append(reader.idle())
        return seen, taken

    seen, taken = asyncio.run(run())
    assert taken == [["a"], ["b"]]
    assert seen == [False, True]


def test_the_reader_goes_on_once_its_batch_is_in_the_channel() -> None:
    # Not once the event loop turns to complete the hand-over's future: the agent decides
    # the batch it just took without yielding, and the next batch is read meanwhile.
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-collect")

    async def run() -> list[bool]:
        loop = asyncio.get_running_loop()
        app = create_app(settings.streams)
        app.flow_control.resume()
        reader = CollectReader(app, settings.streams, "unit.collect")
        subscriber = reader.channel.clone(is_iterator=True)  # the agent
        returned = threading.Event()
        went_on: list[bool] = []
        queue = subscriber.queue
        put_nowait = queue.put_nowait

        def put_then_hold(item: Any) -> None:
            put_nowait(item)
            # The next thing the event loop runs holds it (the agent deciding) before it
            # could complete the hand-over's future: the reader must go on anyway.
            loop.call_soon(lambda: went_on.append(returned.wait(5)))

        queue.put_nowait = put_then_hold  # type: ignore[method-assign]

        def reader_thread() -> None:
            reader._hand_over(["batch"], loop)
            returned.set()

        thread = threading.Thread(target=reader_thread)
        thread.start()
        assert await asyncio.wait_for(subscriber.get(), 10) == ["batch"]
        thread.join(10)
        return went_on

    assert asyncio.run(run()) == [True], "the reader waited for the event loop to turn"


def test_the_agent_commits_the_next_offset_of_each_partition() -> None:
    class Msg:
        def __init__(self, p: int, o: int) -> None:
            self.p, self.o = p, o

        def topic(self) -> str:
            return "unit.collect"

        def partition(self) -> int:
            return self.p

        def offset(self) -> int:
            return self.o

        def key(self) -> bytes:
            return b"k%d" % self.o

        def value(self) -> bytes:
            return b"v%d" % self.o

    records, got = unpack([Msg(0, 5), Msg(1, 9), Msg(0, 6)])  # type: ignore[list-item]
    assert got == {("unit.collect", 0): 7, ("unit.collect", 1): 10}
    assert records == [
        (b"k5", b"v5", "unit.collect", 0, 5),
        (b"k9", b"v9", "unit.collect", 1, 9),
        (b"k6", b"v6", "unit.collect", 0, 6),
    ]


class Meta:
    def consumer_group_metadata(self) -> str:
        return "generation-2"


def _reader(calls: list[tuple[str, list[int]]]) -> CollectReader:
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-collect")
    return CollectReader(
        create_app(settings.streams),
        settings.streams,
        "unit.collect",
        restore=lambda p: calls.append(("restore", p)),
        drop=lambda p: calls.append(("drop", p)),
        on_lost=lambda p: calls.append(("lost", p)),
    )


def test_assigned_partitions_are_restored_before_they_are_read() -> None:
    calls: list[tuple[str, list[int]]] = []
    reader = _reader(calls)

    class C:
        def consumer_group_metadata(self) -> str:
            return "generation-1"

    parts = [TopicPartition("unit.collect", 2), TopicPartition("unit.collect", 0)]
    reader._on_assign(C(), parts)  # type: ignore[arg-type]
    assert reader.group_metadata() == "generation-1"
    assert calls == [("restore", [0, 2])]
    assert reader.assigned == {0, 2}


def test_a_revoke_commits_through_the_agent_before_the_partitions_move(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[int]]] = []
    reader = _reader(calls)
    reader.assigned = {0, 1}
    reader._loop = asyncio.new_event_loop()
    handed: list[object] = []

    def agent_commits(item: object, _loop: object) -> bool:
        handed.append(item)
        assert isinstance(item, Barrier)
        item.release(True)  # what the agent does once it has committed
        return True

    monkeypatch.setattr(reader, "_put", agent_commits)
    revoked = [TopicPartition("unit.collect", 0), TopicPartition("unit.collect", 1)]
    reader._on_revoke(Meta(), revoked)  # type: ignore[arg-type]
    assert len(handed) == 1, "one barrier: the agent committed what it held"
    assert calls == [], "committed, nothing aborted; the state waits for the new assignment"
    # Range rebalances eagerly: partition 0 comes back (its state is still good), 1 went
    # to another worker (dropped), 2 is new (restored before it is read).
    again = [TopicPartition("unit.collect", 0), TopicPartition("unit.collect", 2)]
    reader._on_assign(Meta(), again)  # type: ignore[arg-type]
    assert calls == [("drop", [1]), ("restore", [2])]
    assert reader.assigned == {0, 2}


def test_a_revoke_the_agent_cannot_commit_aborts(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, list[int]]] = []
    reader = _reader(calls)
    reader._loop = asyncio.new_event_loop()
    monkeypatch.setattr(reader, "_put", lambda item, loop: False)  # the agent is gone
    reader._on_revoke(Meta(), [TopicPartition("unit.collect", 3)])  # type: ignore[arg-type]
    assert calls == [("lost", [3]), ("drop", [3])]


def test_lost_partitions_are_reported() -> None:
    calls: list[tuple[str, list[int]]] = []
    _reader(calls)._on_lost(None, [TopicPartition("unit.collect", 1)])  # type: ignore[arg-type]
    assert calls == [("lost", [1])]


def test_the_reader_never_reads_past_a_batch_the_agent_did_not_take(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[str, list[int]]] = []
    reader = _reader(calls)
    reader.assigned = {0}
    reader._loop = asyncio.new_event_loop()

    class Msg:
        def error(self) -> None:
            return None

    class FakeConsumer:
        def __init__(self) -> None:
            self.consumed = 0
            self.closed = False

        def consume(self, n: int, timeout: float) -> list[Msg]:
            self.consumed += 1
            return [Msg()]

        def consumer_group_metadata(self) -> str:
            return "generation-3"

        def close(self) -> None:
            self.closed = True

    consumer = FakeConsumer()
    reader._consumer = consumer  # type: ignore[assignment]
    monkeypatch.setattr(reader, "_put", lambda item, loop: False)  # the agent refuses
    reader._run()
    assert consumer.consumed == 1, "read on after a batch was not taken"
    assert calls == [("lost", [0])] and consumer.closed


def test_a_batch_handed_over_survives_a_rebalance_of_fausts_own_group() -> None:
    """Faust clears channel queues when it resumes after a rebalance; the reader's channel
    keeps what it was handed (a plain channel, for contrast, loses it)."""
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-collect")

    async def run(make: Any) -> int:
        app = create_app(settings.streams)
        app.flow_control.resume()
        channel = make(app)
        subscriber = channel.clone(is_iterator=True)
        await channel.put(["batch"])
        app.flow_control.suspend()  # Faust's own group rebalances ...
        app.flow_control.resume()  # ... and resumes
        return int(subscriber.queue.qsize())

    assert asyncio.run(run(lambda app: KeepingChannel(app=app, maxsize=4))) == 1
    assert asyncio.run(run(lambda app: app.channel(maxsize=4))) == 0
