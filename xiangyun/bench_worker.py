"""The benchmark's baseline worker: the at-least-once ingest as it ran before exactly once,
with today's decision, in today's worker.

Everything but the ingest agent is the real worker (:func:`streams.app.run_worker`): the
same Faust app, the same reader thread handing batches over the same channel, the same
:class:`~streams.ingest.runtime.Runtime` deciding each batch. The agent is the one of
before: decide, produce every outcome with a delivery callback, wait for the flush, then
acknowledge the batch's offsets. No pool state (every version is an update), nothing is
restored on assignment, and no outcome is counted (the real agent counts each, 0.1 µs a
record: if anything, the baseline is favoured).

Not for production: outputs and offsets do not commit together, and nothing is
deduplicated. ``python -m xiangyun.bench_worker``, with the worker's settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import faust
from confluent_kafka import KafkaError, Producer

from streams.app import run_worker
from streams.ingest.pool_state import Verdict
from streams.ingest.runtime import Runtime, die
from streams.kafka.batch_reader import Barrier, Offsets, crash_only, unpack
from streams.kafka.config import idempotent_producer
from streams.kafka.transaction import produce_records
from xiangyun.settings import Settings

__all__ = [
    "AcknowledgingSource",
    "AtLeastOnceRuntime",
    "DeliveryError",
    "NoPoolState",
    "main",
    "register_at_least_once",
]


class NoPoolState:
    """The at-least-once path had no pool state: every version is an update."""

    def decide(self, _partition: int, _key: bytes, _state: bytes) -> tuple[Verdict, None]:
        return Verdict.UPDATE, None

    def undo(self, _partition: int, _key: bytes, _previous: bytes | None) -> None:
        pass


class AtLeastOnceRuntime(Runtime):
    """The worker's runtime without the pool state: nothing to restore or drop."""

    def start(self) -> AtLeastOnceRuntime:
        super().start()
        self.ingestor.state = NoPoolState()  # type: ignore[assignment]
        return self

    def restore(self, partitions: Sequence[int], timeout: float | None = None) -> int:
        return 0

    def drop(self, partitions: Sequence[int]) -> None:
        pass


class DeliveryError(RuntimeError):
    """Outputs of a batch were not delivered: its offsets must not be acknowledged."""


class AcknowledgingSource(Protocol):
    """What the agent needs of :class:`~streams.ingest.reader.CollectReader`."""

    channel: faust.ChannelT[Any]

    def acknowledge(self, offsets: Offsets) -> None: ...


def register_at_least_once(
    app: faust.App,
    runtime: Runtime,
    source: AcknowledgingSource,
    producer: Producer | None = None,
    on_fatal: Callable[[BaseException], object] = die,
) -> None:
    producer = producer or idempotent_producer(runtime.config.kafka)
    failures: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    def flush() -> None:
        left = producer.flush(60)
        if left or failures:
            raise DeliveryError(f"{left} outputs undelivered, failures: {failures[:5]}")

    @app.agent(source.channel, name="ingest")
    @crash_only(on_fatal)
    async def ingest(items: faust.StreamT[Any]) -> None:
        loop = asyncio.get_running_loop()
        async for item in items:
            if isinstance(item, Barrier):
                item.release(True)  # every batch before it is flushed (at least once)
                continue
            with runtime.metrics.batch_seconds.time():
                records, offsets = unpack(item)
                produce_records(producer, runtime.decide(records), on_delivery)
                # librdkafka waits without the GIL: the event loop goes on meanwhile.
                await loop.run_in_executor(None, flush)
                source.acknowledge(offsets)


def main() -> None:
    settings = Settings.from_env()
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_worker(settings.streams, AtLeastOnceRuntime(settings.streams), register_at_least_once)


if __name__ == "__main__":
    main()
