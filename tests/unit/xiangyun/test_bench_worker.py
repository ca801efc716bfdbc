"""The benchmark's at-least-once baseline agent: every outcome produced and flushed before
its batch is acknowledged; a failed delivery acknowledges nothing and ends the worker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from connectors.generator import SampleGenerator
from streams.app import create_app
from streams.kafka.batch_reader import Barrier, Offsets
from tests.unit.kafka_fakes import FakeProducer
from tests.unit.streams.ingest.test_agent import _batches, make_runtime
from xiangyun.bench_worker import DeliveryError, NoPoolState, register_at_least_once
from xiangyun.settings import Settings


class Producer(FakeProducer):
    """An idempotent producer's part the agent uses; records what is produced and flushed."""

    def __init__(self, log: list[Any], fail: bool = False) -> None:
        self.log = log
        self.fail = fail
        self.queued: list[tuple[str, int]] = []

    def produced(self, topic: str, value: bytes | None, partition: int, on_delivery: Any) -> None:
        assert on_delivery is not None, "every output's delivery is reported"
        self.queued.append((topic, partition))
        if self.fail:
            from confluent_kafka import KafkaError

            on_delivery(KafkaError(KafkaError._MSG_TIMED_OUT), None)

    def flush(self, _t: float) -> int:
        self.log.append(("flush", len(self.queued)))
        self.queued = []
        return 0


class Source:
    def __init__(self, app: Any, log: list[Any]) -> None:
        self.channel = app.channel()
        self.log = log

    def acknowledge(self, offsets: Offsets) -> None:
        self.log.append(("ack", dict(offsets)))


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({}, topic_prefix="unit", app_id="unit-alo", partitions=1)


def _run(settings: Settings, items: list[Any], fail: bool = False) -> tuple[list[Any], list[Any]]:
    runtime, _ = make_runtime(settings)
    runtime.ingestor.state = NoPoolState()  # type: ignore[assignment]
    log: list[Any] = []
    fatal: list[BaseException] = []

    async def run() -> None:
        app = create_app(settings.streams)
        app.finalize()
        register_at_least_once(
            app,
            runtime,
            Source(app, log),
            producer=Producer(log, fail),  # type: ignore[arg-type]
            on_fatal=fatal.append,
        )
        async with app.agents["ingest"].test_context() as ctx:
            for item in items:
                await ctx.put(item)
                if fatal:
                    break
            batches = sum(1 for i in items if not isinstance(i, Barrier))
            deadline = asyncio.get_running_loop().time() + 10
            while not fatal and sum(1 for e in log if e[0] == "ack") < batches:
                assert asyncio.get_running_loop().time() < deadline, "agent did not drain"
                await asyncio.sleep(0.01)

    asyncio.run(run())
    return log, fatal


def _sample(settings: Settings, n: int) -> list[Any]:
    runtime, _ = make_runtime(settings)
    gen = SampleGenerator(
        runtime.codec, runtime.catalog.current(), settings.schema_dir, seed=9, broken_share=0.2
    )
    return list(gen.records(n))


def test_each_batch_is_flushed_whole_before_its_offsets_are_acknowledged(
    settings: Settings,
) -> None:
    batches = _batches(_sample(settings, 60), 20)
    log, fatal = _run(settings, batches)
    assert fatal == []
    topic = batches[0][0].topic()
    assert log == [
        ("flush", 20),
        ("ack", {(topic, 0): 20}),
        ("flush", 20),
        ("ack", {(topic, 0): 40}),
        ("flush", 20),
        ("ack", {(topic, 0): 60}),
    ]


def test_a_failed_delivery_acknowledges_nothing_and_ends_the_worker(settings: Settings) -> None:
    batches = _batches(_sample(settings, 10), 10)
    log, fatal = _run(settings, batches, fail=True)
    assert len(fatal) == 1 and isinstance(fatal[0], DeliveryError)
    assert [e for e in log if e[0] == "ack"] == []


def test_a_barrier_is_released_at_once_behind_the_batches_before_it(settings: Settings) -> None:
    barrier = Barrier()
    batches = _batches(_sample(settings, 10), 10)
    log, fatal = _run(settings, [*batches, barrier])
    assert fatal == [] and barrier.wait(5)
    assert log[-1][0] == "ack"
