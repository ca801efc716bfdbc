"""Integration fixtures: the real local stack, and per-test topics, group and metrics port.

The stack is started if it is not running (``Stack.up`` is idempotent). A service that
cannot be reached fails the test: integration tests never skip or fall back. Each test's
unit register and catalog topics hold the starter register and catalog (``settings``
bootstraps them), as after
`xiangyun stack up`: a worker only follows the catalog topic.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from connectors.consent import ConsentPublisher
from connectors.generator import SampleGenerator
from connectors.producer import SourceProducer
from streams.catalog.model import Catalog
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import Topics, ensure_topics
from streams.kafka.units_store import UnitsStore
from streams.wire.codec import SchemaRegistry
from streams.wire.envelope import EnvelopeCodec
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings
from xiangyun.stack import Stack


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in item.path.parts:
            item.add_marker(pytest.mark.integration)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def free_port() -> int:
    return _free_port()


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    settings = Settings.from_env()
    try:
        statuses = Stack(settings).up()
    except Exception as exc:  # the message says what to install or start
        pytest.fail(f"the local stack could not start: {exc}")
    down = [s.name for s in statuses if not s.answering]
    if down:
        pytest.fail(f"services not answering: {down}; run `xiangyun stack up`")
    return settings


@pytest.fixture
def settings(base_settings: Settings) -> Iterator[Settings]:
    """Settings of one test: its own topics (the starter catalog loaded into its catalog
    topic), consumer group and metrics port."""
    run = uuid.uuid4().hex[:8]
    s = dataclasses.replace(
        base_settings,
        topic_prefix=f"it-{run}",
        app_id=f"it-{run}",
        metrics_port=_free_port(),
        batch_size=500,
    )
    ensure_topics(s.streams)
    # The catalog checks departments and providers against the unit register: units first.
    with UnitsStore(s.streams) as units:
        units.bootstrap()
        # Every principal publishes to a collect topic of its own.
        ensure_topics(s.streams, principals=units.current().principals())
    with CatalogStore(s.streams) as store:
        store.bootstrap()
    yield s
    _delete_topics(s, f"it-{run}")


def _delete_topics(settings: Settings, stem: str) -> None:
    """Delete every topic of one test (its prefix, Faust's topics of its app id): a broker
    holds a few open files per partition, and a test creates about two hundred."""
    admin = AdminClient(settings.kafka.admin())
    names = [t for t in admin.list_topics(timeout=10).topics if t.startswith(stem)]
    if names:
        for fut in admin.delete_topics(names, operation_timeout=30).values():
            with contextlib.suppress(KafkaException):  # already gone
                fut.result(30)


@pytest.fixture
def catalog_store(settings: Settings) -> Iterator[CatalogStore]:
    """The test's catalog in Kafka (starter catalog loaded), following its topic."""
    store = CatalogStore(settings.streams)
    try:
        store.bootstrap()  # already done by ``settings``: writes nothing
        yield store
    finally:
        store.close()


@pytest.fixture
def topics(settings: Settings) -> Topics:
    return Topics.of(settings.streams)


@pytest.fixture
def registry(settings: Settings) -> SchemaRegistry:
    return SchemaRegistry.from_dir(settings.schema_dir)


@pytest.fixture
def codec(registry: SchemaRegistry, settings: Settings) -> EnvelopeCodec:
    return EnvelopeCodec(registry, settings.schema_dir)


@pytest.fixture
def catalog(settings: Settings) -> Catalog:
    return Catalog.from_dir(settings.catalog_dir)


@pytest.fixture
def generator(codec: EnvelopeCodec, catalog: Catalog, settings: Settings) -> SampleGenerator:
    return SampleGenerator(
        codec, catalog, settings.schema_dir, seed=5, broken_share=0.0, consents=True
    )


@pytest.fixture
def producer(
    settings: Settings, topics: Topics, registry: SchemaRegistry, generator: SampleGenerator
) -> SourceProducer:
    p = ConsentingProducer(
        settings.streams, SchemaTopic(settings.kafka, topics.schemas, registry), generator
    )
    p.register([*registry, *generator.extra_schemas])
    return p


class ConsentingProducer(SourceProducer):
    """A source system that records its subjects' consents before the records citing them
    (article 18): the consents the generator's records cite go out first."""

    def __init__(self, config: Any, schema_topic: SchemaTopic, generator: SampleGenerator) -> None:
        super().__init__(config, schema_topic)
        self.generator = generator
        self.consents = ConsentPublisher(config)

    def send_all(self, records: Any, **kwargs: Any) -> int:
        records = list(records)  # generate first: the consents they cite are then known
        self.consents.grant(self.generator.consents())
        self.consents.flush()
        return super().send_all(records, **kwargs)


@pytest.fixture
def worker(settings: Settings) -> Iterator[WorkerProcess]:
    w = WorkerProcess(settings, name=f"worker-{settings.app_id}").start()
    try:
        yield w
    finally:
        w.stop()


def pool_original(value: bytes, schema_dir: Path) -> bytes:
    """The envelope a pool record was accepted from, re-encoded from its provenance: a
    pool record keeps every field of the fact, so this equals the bytes collected."""
    from streams.core.channel import Channel
    from streams.wire.codec import decode
    from streams.wire.envelope import Envelope

    registry = SchemaRegistry.from_dir(schema_dir)
    rec = decode(value, registry.by_name("org.xiangyun.PoolRecord"))
    env = Envelope(
        rec["record_id"],
        rec["resource_id"],
        rec["subject_id"],
        rec["provider"],
        rec["region"],
        Channel(rec["channel"]),
        rec["observed_at_ms"],
        rec["version"],
        rec["payload"],
        rec["consent_ref"],
    )
    return EnvelopeCodec(registry, schema_dir).encode(env)
