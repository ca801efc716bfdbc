"""The ingest agent under Faust's test context: each batch is decided, emitted and flushed
before its offsets are stored. Runtime and batch source are recording stand-ins (unit test)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from connectors.generator import SampleGenerator
from monitoring.metrics import Metrics
from streams.app import create_app
from streams.catalog.model import Catalog
from streams.core.reasons import Reason
from streams.ingest.agent import register_ingest
from streams.ingest.decision import Ingestor, Outcome, OutcomeKind, file_spec_loader
from streams.kafka.topics import Topics
from streams.wire.codec import Schema, SchemaRegistry, encode
from streams.wire.envelope import EnvelopeCodec
from xiangyun.settings import Settings

ROOT = Path(__file__).resolve().parents[4]


class RecordingRuntime:
    """Decides with the real Ingestor; records what would be produced and flushed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics = Topics.of(settings.streams)
        self.metrics = Metrics()
        registry = SchemaRegistry.from_dir(settings.schema_dir)
        self.codec = EnvelopeCodec(registry, settings.schema_dir)
        self.catalog = Catalog.from_dir(settings.catalog_dir)
        self.ingestor = Ingestor(
            self.codec,
            lambda: self.catalog,
            self.topics,
            settings.schema_dir,
            spec_of=file_spec_loader(settings.schema_dir),
        )
        self.emitted: list[Outcome] = []
        self.flushed: list[int] = []
        self.pending: list[Outcome] = []

    def decide(self, messages: Any) -> list[Outcome]:
        return [self.ingestor.process(*m) for m in messages]

    def emit(self, outcomes: list[Outcome]) -> None:
        self.pending.extend(outcomes)

    async def flush_async(self) -> None:
        self.flushed.append(len(self.pending))
        self.emitted.extend(self.pending)
        self.pending.clear()


class FakeMessage:
    """The part of confluent_kafka.Message the agent reads."""

    def __init__(self, key: bytes, value: bytes, offset: int) -> None:
        self._kv = (key, value)
        self._offset = offset

    def key(self) -> bytes:
        return self._kv[0]

    def value(self) -> bytes:
        return self._kv[1]

    def topic(self) -> str:
        return "unit.collect"

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset


class RecordingSource:
    def __init__(self, app: Any, runtime: RecordingRuntime) -> None:
        self.channel = app.channel()
        self.runtime = runtime
        self.done_at: list[tuple[int, int]] = []  # (last offset, outputs flushed so far)

    def done(self, messages: list[FakeMessage]) -> None:
        assert not self.runtime.pending, "offsets stored before the outputs were flushed"
        self.done_at.append((messages[-1].offset(), len(self.runtime.emitted)))


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({}, topic_prefix="unit", app_id="unit-ingest", batch_size=50)


def test_agent_routes_each_record_and_flushes_every_batch(settings: Settings) -> None:
    runtime = RecordingRuntime(settings)
    gen = SampleGenerator(
        runtime.codec, runtime.catalog, settings.schema_dir, seed=3, broken_share=0.2
    )
    sample = list(gen.records(120))

    batches = [
        [FakeMessage(r.key, r.value, i + j) for j, r in enumerate(sample[i : i + 40])]
        for i in range(0, len(sample), 40)
    ]

    async def run() -> RecordingSource:
        app = create_app(settings.streams)
        app.finalize()
        source = RecordingSource(app, runtime)
        register_ingest(app, runtime, source)  # type: ignore[arg-type]
        agent = app.agents["ingest"]
        async with agent.test_context() as ctx:
            for batch in batches:
                await ctx.put(batch)
            deadline = asyncio.get_running_loop().time() + 10
            while len(source.done_at) < len(batches):
                assert asyncio.get_running_loop().time() < deadline, "agent did not drain"
                await asyncio.sleep(0.02)
        return source

    source = asyncio.run(run())
    assert runtime.flushed == [40, 40, 40]
    assert source.done_at == [(39, 40), (79, 80), (119, 120)]
    got = [
        f"rejected:{o.reason.value}" if o.reason else f"{o.kind.value}:{o.pool.value}"  # type: ignore[union-attr]
        for o in runtime.emitted
    ]
    assert sorted(got) == sorted(r.expected for r in sample)


def test_a_batch_syncs_the_schema_topic_once_and_learns_late_schemas(settings: Settings) -> None:
    runtime = RecordingRuntime(settings)
    gen = SampleGenerator(
        runtime.codec, runtime.catalog, settings.schema_dir, seed=3, broken_share=0.0
    )
    good = list(gen.records(5))
    # A writer schema the worker has not seen yet: published between reads of the topic.
    late = json.loads((settings.schema_dir / "payloads" / "resident.avsc").read_text())
    late["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    late_schema = Schema.parse(late)
    resident = next(r for r in good if r.expected == "accepted:population")
    env = runtime.codec.decode(resident.value)
    payload = runtime.codec.decode_payload(env)
    late_env = dataclasses.replace(env, payload=encode(late_schema, {**payload, "note": "x"}))
    garbage = [(b"k", b"\xc3\x01" + bytes([i]) * 8 + b"\x00") for i in range(3)]
    syncs = []

    def refresh() -> bool:
        syncs.append(1)
        runtime.codec.registry.add(late_schema)
        return True

    runtime.ingestor._refresh = refresh
    batch = [
        (k, v, "t", 0, i)
        for i, (k, v) in enumerate([*garbage, (late_env.key, runtime.codec.encode(late_env))])
    ]
    outcomes = runtime.ingestor.process_batch(batch)

    assert len(syncs) == 1, "one sync per batch, however many unknown fingerprints"
    assert [o.reason for o in outcomes[:3]] == [Reason.UNKNOWN_SCHEMA] * 3
    assert outcomes[3].kind is OutcomeKind.ACCEPTED
    assert runtime.ingestor._refresh is refresh
