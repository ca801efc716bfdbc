"""What a worker holds while it runs: the schema registry, the catalog, the ingest decision,
the output producer and the metrics. Built explicitly, started explicitly: no import-time
side effects, no module globals.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from confluent_kafka import KafkaError, Producer

from monitoring.metrics import Metrics
from streams.catalog.model import SCHEMA_ROOT, Catalog, Resource
from streams.ingest.decision import Ingestor, Outcome, SpecOf, file_spec_loader
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.config import StreamsConfig, idempotent_producer
from streams.kafka.lag import group_lag
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import Topics, ensure_topics
from streams.wire.codec import Schema, SchemaRegistry
from streams.wire.envelope import EnvelopeCodec

__all__ = ["CatalogSource", "DeliveryError", "Runtime", "StaticCatalog"]

log = logging.getLogger(__name__)


class CatalogSource(Protocol):
    """Where a worker reads the catalog: :class:`~streams.kafka.catalog_store.CatalogStore`
    (the catalog topic, the default) or :class:`StaticCatalog` (unit tests)."""

    errors: int  # catalog records that could not be applied

    def start(self) -> object: ...
    def current(self) -> Catalog: ...
    def spec(self, resource: Resource) -> Schema: ...
    def close(self) -> None: ...


class StaticCatalog:
    """A catalog fixed at start, its specs read from files (unit tests only: a worker
    follows the catalog topic)."""

    errors = 0

    def __init__(self, catalog: Catalog, spec_of: SpecOf | None = None) -> None:
        self._catalog = catalog
        self._spec_of = spec_of or file_spec_loader(SCHEMA_ROOT)

    def start(self) -> StaticCatalog:
        return self

    def current(self) -> Catalog:
        return self._catalog

    def spec(self, resource: Resource) -> Schema:
        return self._spec_of(resource)

    def close(self) -> None:
        return None


class DeliveryError(RuntimeError):
    """Outputs could not be written to Kafka; the batch is not acknowledged."""


class Runtime:
    def __init__(
        self,
        config: StreamsConfig,
        catalog: CatalogSource | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.topics = Topics.of(config)
        self.registry = SchemaRegistry.from_dir(config.schema_dir)
        self.codec = EnvelopeCodec(self.registry, config.schema_dir)
        self.schema_topic = SchemaTopic(config.kafka, self.topics.schemas, self.registry)
        # The worker only follows the catalog topic; loading the starter catalog into it is
        # `xiangyun stack up`'s, the demo's, the benchmark's or `xiangyun catalog bootstrap`'s.
        self.catalog: CatalogSource = catalog or CatalogStore(config)
        self.metrics = metrics or Metrics()
        catalog_source = self.catalog
        self.metrics.catalog_errors.set_function(lambda: catalog_source.errors)  # at scrape time
        self.ingestor = Ingestor(
            self.codec,
            self.catalog.current,
            self.topics,
            config.schema_dir,
            spec_of=self.catalog.spec,
            refresh_schemas=self.schema_topic.refresh,
        )
        self._producer: Producer | None = None
        self._failures: list[str] = []

    def start(self) -> Runtime:
        ensure_topics(self.config, self.topics)
        self.schema_topic.follow()
        self.catalog.start()
        if not len(self.catalog.current()):
            log.warning(
                "catalog topic %s is empty: every record is refused as UNKNOWN_RESOURCE until "
                "the catalog is loaded (`xiangyun catalog bootstrap`)",
                self.topics.catalog,
            )
        self._producer = idempotent_producer(self.config.kafka)
        self.metrics.up.set(1)
        return self

    def close(self) -> None:
        self.metrics.up.set(0)
        if self._producer is not None:
            self._producer.flush(30)
        self.schema_topic.close()
        self.catalog.close()

    # -- the batch path ----------------------------------------------------------------
    def decide(
        self, messages: Iterable[tuple[bytes | None, bytes | None, str, int, int]]
    ) -> list[Outcome]:
        return self.ingestor.process_batch(messages)

    def emit(self, outcomes: Sequence[Outcome]) -> None:
        """Queue outputs; call :meth:`flush` before acknowledging their inputs."""
        assert self._producer is not None, "Runtime.start() first"
        produce = self._producer.produce
        tally: Counter[tuple[str, str, str]] = Counter()
        for out in outcomes:
            while True:
                try:
                    produce(out.topic, out.value, out.key, on_delivery=self._on_delivery)
                    break
                except BufferError:  # local queue full: let librdkafka drain it
                    self._producer.poll(0.05)
            tally[
                (
                    out.kind.value,
                    out.pool.value if out.pool else "",
                    out.reason.value if out.reason else "",
                )
            ] += 1
        self.metrics.count(tally)
        self.metrics.batch_records.observe(len(outcomes))

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._failures.append(str(err))

    def flush(self, timeout: float = 60.0) -> None:
        assert self._producer is not None
        left = self._producer.flush(timeout)
        if left or self._failures:
            failures, self._failures = self._failures[:5], []
            raise DeliveryError(f"{left} outputs undelivered, failures: {failures}")

    async def flush_async(self, timeout: float = 60.0) -> None:
        # librdkafka waits without the GIL: the event loop keeps fetching meanwhile.
        await asyncio.get_running_loop().run_in_executor(None, self.flush, timeout)

    # -- operations --------------------------------------------------------------------
    def report(self, group: str) -> None:
        self.metrics.catalog_in_force.set(sum(1 for r in self.catalog.current() if r.in_force))
        self.metrics.schemas.set(len(self.registry))
        for (topic, part), n in group_lag(self.config.kafka, self.topics.collect, group).items():
            self.metrics.lag.labels(topic, str(part)).set(n)


def die_on_delivery_failure(exc: BaseException, on_exit: Callable[[], None] | None = None) -> None:
    """Crash-only: outputs that cannot be delivered mean the inputs must be read again."""
    log.critical("delivery failed, exiting without acknowledging the batch: %s", exc)
    if on_exit is not None:
        on_exit()
    os._exit(70)
