"""Ingest agent (采集汇聚): collect topic → pool, verification or rejected topic.

Batches of events are decided, their outputs produced and flushed; only then does Faust
acknowledge the inputs, so a worker killed at any point re-reads what it had not written.
"""

from __future__ import annotations

import faust

from streams.runtime import DeliveryError, Runtime, die_on_delivery_failure

__all__ = ["register_ingest"]


def register_ingest(app: faust.App, runtime: Runtime) -> None:
    collect = app.topic(runtime.topics.collect, key_type=bytes, value_type=bytes)
    batch_size = runtime.settings.batch_size
    metrics = runtime.metrics

    @app.agent(collect, name="ingest")
    async def ingest(stream: faust.StreamT[bytes]) -> None:
        take = stream.take_events  # type: ignore[attr-defined]
        async for events in take(batch_size, within=0.05):
            with metrics.batch_seconds.time():
                outcomes = runtime.decide(
                    (
                        e.message.key,
                        e.message.value,
                        e.message.topic,
                        e.message.partition,
                        e.message.offset,
                    )
                    for e in events
                )
                runtime.emit(outcomes)
                try:
                    await runtime.flush_async()
                except DeliveryError as exc:
                    die_on_delivery_failure(exc)
