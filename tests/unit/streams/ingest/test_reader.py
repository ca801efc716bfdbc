"""The collect reader's hand-over to the agent (no Kafka: the consumer is never started)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from streams.app import create_app
from streams.ingest.reader import CollectReader
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


def test_done_queues_the_next_offset_of_each_partition() -> None:
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-collect")

    class Msg:
        def __init__(self, p: int, o: int) -> None:
            self.p, self.o = p, o

        def topic(self) -> str:
            return "unit.collect"

        def partition(self) -> int:
            return self.p

        def offset(self) -> int:
            return self.o

    reader = CollectReader(create_app(settings.streams), settings.streams, "unit.collect")
    reader.done([Msg(0, 5), Msg(1, 9), Msg(0, 6)])  # type: ignore[list-item]
    stored = reader._to_store.get_nowait()
    assert sorted((tp.partition, tp.offset) for tp in stored) == [(0, 7), (1, 10)]
