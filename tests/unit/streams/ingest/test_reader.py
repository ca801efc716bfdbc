"""The collect reader's hand-over to the agent (no Kafka: the consumer is never started)."""

from __future__ import annotations

import asyncio

from streams.app import create_app
from streams.ingest.reader import CollectReader
from xiangyun.settings import Settings


def test_a_batch_waits_for_the_agent_instead_of_being_dropped() -> None:
    settings = Settings.from_env({}, topic_prefix="unit", app_id="unit-collect")

    async def run() -> object:
        app = create_app(settings.streams)
        reader = CollectReader(app, settings.streams, "unit.collect")
        delivery = asyncio.ensure_future(reader._deliver(["batch"]))  # type: ignore[list-item]
        await asyncio.sleep(0.1)
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
