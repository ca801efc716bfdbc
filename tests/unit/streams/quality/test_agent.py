"""The quality agent's reading of outcome and verification records, without Kafka."""

from __future__ import annotations

import json
from pathlib import Path

from connectors.generator import SampleGenerator
from monitoring.metrics import QualityMetrics
from streams.catalog.model import Catalog
from streams.ingest.decision import Ingestor, OutcomeKind, file_spec_loader
from streams.ingest.runtime import StaticCatalog
from streams.kafka.config import StreamsConfig
from streams.kafka.topics import Topics
from streams.quality.agent import QualityAgent
from streams.quality.figures import UNDECODABLE, UNKNOWN
from streams.wire.codec import SchemaRegistry
from streams.wire.envelope import EnvelopeCodec

ROOT = Path(__file__).resolve().parents[4]
SCHEMAS = ROOT / "schemas" / "avro"
CATALOG = Catalog.from_dir(ROOT / "catalog")
NOW = 1_800_000_000_000


class Msg:
    def __init__(self, topic: str, key: bytes | None, value: bytes | None, at: int = NOW):
        self._t, self._k, self._v, self._at = topic, key, value, at

    def topic(self) -> str:
        return self._t

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def timestamp(self) -> tuple[int, int]:
        return (1, self._at)

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 0

    def error(self) -> None:
        return None


def setup() -> tuple[QualityAgent, Ingestor, SampleGenerator, Topics]:
    registry = SchemaRegistry.from_dir(SCHEMAS)
    codec = EnvelopeCodec(registry, SCHEMAS)
    config = StreamsConfig(topic_prefix="q")
    topics = Topics.of(config)
    ingestor = Ingestor(
        codec,
        lambda: CATALOG,
        topics,
        SCHEMAS,
        spec_of=file_spec_loader(SCHEMAS),
        clock_ms=lambda: NOW,
    )
    agent = QualityAgent(
        config,
        registry,
        StaticCatalog(CATALOG, file_spec_loader(SCHEMAS)),
        metrics=QualityMetrics(),
        clock_ms=lambda: NOW,
    )
    gen = SampleGenerator(
        codec,
        CATALOG,
        SCHEMAS,
        seed=3,
        broken_share=0.2,
        evidence_share=0.2,
        start_ms=NOW - 10_000,
    )
    return agent, ingestor, gen, topics


def test_outcomes_of_a_generated_stream_are_counted_per_resource_and_unit() -> None:
    agent, ingestor, gen, _ = setup()
    kinds: dict[str, int] = {}
    for rec in gen.records(500):
        out = ingestor.process(rec.key, rec.value, "q.collect", 0, 0)
        kinds[out.kind.value] = kinds.get(out.kind.value, 0) + 1
        agent._outcome(Msg(out.topic, out.key, out.value), NOW)  # type: ignore[arg-type]
    assert agent.bad_records == 0
    rows = agent.book.rows(NOW)
    assert sum(r.window.records for r in rows) == 500
    assert sum(r.window.rejected for r in rows) == kinds[OutcomeKind.REJECTED.value]
    units = {r.unit for r in rows}
    resources = {r.resource for r in rows}
    assert UNDECODABLE in resources  # garbage, truncated, unknown envelope schema
    assert UNKNOWN in resources  # a resource the catalog does not hold
    assert resources - {UNDECODABLE, UNKNOWN} <= {r.id for r in CATALOG}
    known_units = {u for r in CATALOG for u in (r.provider, r.department)}
    assert units - {UNDECODABLE, UNKNOWN} <= known_units
    resident = next(r for r in rows if r.resource == "population.resident" and r.unit != UNKNOWN)
    assert resident.window.completeness_required == 1.0
    assert resident.window.timeliness == 1.0


def test_verification_results_and_conflicts() -> None:
    agent, *_ = setup()
    agent._verification_result(Msg("q.verified", b"population.resident|X", b"{}"), NOW)  # type: ignore[arg-type]
    agent._verification_result(Msg("q.verified", b"nope|X", b"{}"), NOW)  # type: ignore[arg-type]
    conflict = json.dumps({"status": "open"}).encode()
    for _ in range(2):  # the same conflict read twice counts once
        agent._verification_result(  # type: ignore[arg-type]
            Msg("q.conflicts.220000-GA", b"population.resident|Y", conflict), NOW
        )
    agent._verification_result(  # type: ignore[arg-type]
        Msg("q.conflicts.220000-GA", b"population.resident|Z", conflict), NOW
    )
    assert len(agent._open) == 2
    agent._verification_result(  # type: ignore[arg-type]
        Msg(
            "q.conflicts.resolutions",
            b"r1",
            json.dumps({"conflict_key": "population.resident|Y"}).encode(),
        ),
        NOW,
    )
    agent._verification_result(Msg("q.conflicts.220000-GA", b"population.resident|Z", None), NOW)  # type: ignore[arg-type]
    assert agent._open == {}
    agent._verification_result(Msg("q.conflicts.220000-GA", b"k", b"not json"), NOW)  # type: ignore[arg-type]
    assert agent.bad_records == 1
    agent.book.open_conflicts = {}
    (row,) = [r for r in agent.book.rows(NOW) if r.resource == "population.resident"]
    # one agreement, two conflicts opened (both since closed)
    assert row.window.consistency == 1 / 3 and row.open_conflicts == 0
