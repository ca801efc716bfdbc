"""Multi-source verification without Kafka: the comparison rule and the verifier's
decision and state (in-memory store)."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import pytest

from connectors.generator import SampleGenerator
from streams.catalog.model import Catalog
from streams.kafka.topics import Topics
from streams.verification.compare import (
    conflict_id,
    differing_fields,
    display,
    is_code,
    normalise,
)
from streams.verification.decision import SOURCE_HEADER, Output, Verifier
from streams.verification.store import MemoryStore, RocksStore
from streams.wire.codec import Schema, SchemaRegistry, decode, encode, read_fingerprint
from streams.wire.envelope import Envelope, EnvelopeCodec
from xiangyun.settings import Settings

SETTINGS = Settings.from_env({})
TOPICS = Topics("unit")
POOL = TOPICS.pools[next(iter(TOPICS.pools))]
PROVIDER, CITY = "220000-GA", "220100-GA"


# -- the comparison rule ---------------------------------------------------------------------
def test_text_is_trimmed_and_codes_compare_without_case() -> None:
    assert normalise("name", "  张  三 ") == "张 三"
    assert normalise("citizen_id", "22010119900101123x") == "22010119900101123X"
    assert normalise("name", "Zhang") != normalise("name", "ZHANG")  # names keep their case
    assert normalise("address", "   ") is None and normalise("address", None) is None
    assert is_code("credit_code") and is_code("household_region_code") and is_code("licence_no")
    assert not is_code("name") and not is_code("address")


def test_only_shared_data_fields_are_compared() -> None:
    truth = {"name": "A", "gender": "M", "address": "x", "version": 3, "updated_at": "t1"}
    seen = {"name": " A ", "gender": "F", "version": 9, "updated_at": "t2", "extra": 1}
    # version and updated_at are bookkeeping; address and extra are on one side only
    assert differing_fields(truth, seen) == ["gender"]
    assert differing_fields({"n": 1}, {"n": 1.0}) == []
    assert differing_fields({"a": [" x "]}, {"a": ["x"]}) == []
    assert display("张三") == '"张三"' and display(None) == "null"


def test_conflict_ids_are_deterministic_and_distinct() -> None:
    a = conflict_id(b"r|s", 3, "e1")
    assert a == conflict_id(b"r|s", 3, "e1")
    assert len({a, conflict_id(b"r|s", 4, "e1"), conflict_id(b"r|s", 3, "e2")}) == 3


# -- the decision ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry() -> SchemaRegistry:
    return SchemaRegistry.from_dir(SETTINGS.schema_dir)


@pytest.fixture(scope="module")
def codec(registry: SchemaRegistry) -> EnvelopeCodec:
    return EnvelopeCodec(registry, SETTINGS.schema_dir)


@pytest.fixture(scope="module")
def base(codec: EnvelopeCodec) -> Envelope:
    catalog = Catalog.from_dir(SETTINGS.catalog_dir)
    gen = SampleGenerator(codec, catalog, SETTINGS.schema_dir, seed=3, broken_share=0.0)
    for r in gen.records(500):
        env = codec.decode(r.value)
        if env.resource_id == "population.resident":
            return env
    raise AssertionError("no resident record")


def verifier(registry: SchemaRegistry, pending_max: int = 100) -> Verifier:
    v = Verifier(
        TOPICS,
        SETTINGS.schema_dir,
        registry,
        registered=lambda code: code in {PROVIDER, CITY, "220200-GA"},
        pending_max=pending_max,
        clock_ms=lambda: 1_000,
    )
    v.open(0, MemoryStore())
    return v


def pool_value(registry: SchemaRegistry, env: Envelope) -> bytes:
    schema = registry.by_name("org.xiangyun.PoolRecord")
    return encode(
        schema,
        {
            "resource_id": env.resource_id,
            "subject_id": env.subject_id,
            "version": env.version,
            "observed_at_ms": env.observed_at_ms,
            "content_fingerprint": b"\0" * 8,
            "record_id": env.record_id,
            "provider": env.provider,
            "channel": env.channel.value,
            "region": env.region,
            "consent_ref": env.consent_ref,
            "accepted_at_ms": env.observed_at_ms,
            "source_topic": "unit.collect",
            "source_partition": 0,
            "source_offset": 0,
            "catalog_version": 1,
            "verification_count": 0,
            "payload": env.payload,
        },
    )


def fields_of(registry: SchemaRegistry, env: Envelope) -> dict[str, Any]:
    writer = registry.get(read_fingerprint(env.payload))
    assert writer is not None
    return dict(decode(env.payload, writer))


def changed(registry: SchemaRegistry, env: Envelope, **fields: Any) -> Envelope:
    writer = registry.get(read_fingerprint(env.payload))
    assert writer is not None
    payload = {**decode(env.payload, writer), **fields}
    return dataclasses.replace(env, payload=encode(writer, payload))


def evidence(codec: EnvelopeCodec, env: Envelope, unit: str = CITY) -> bytes:
    return codec.encode(
        dataclasses.replace(env, provider=unit, region=unit[:6], record_id=str(uuid.uuid4()))
    )


def only(outputs: list[Output], topic: str) -> list[Output]:
    return [o for o in outputs if o.topic == topic]


def verified_of(registry: SchemaRegistry, out: Output) -> dict[str, Any]:
    assert out.value is not None
    rec: dict[str, Any] = decode(out.value, registry.by_name("org.xiangyun.Verified"))
    return rec


def test_agreement_counts_each_verifier_once_and_a_new_version_resets(
    registry: SchemaRegistry, codec: EnvelopeCodec, base: Envelope
) -> None:
    v = verifier(registry)
    assert v.process(POOL, 0, 10, pool_value(registry, base)) == []
    # Same facts, other whitespace.
    same = changed(registry, base, name=f"  {fields_of(registry, base)['name']} ")
    out = v.process(TOPICS.verification, 0, 1, evidence(codec, same))
    assert [verified_of(registry, o)["count"] for o in out] == [1]
    assert verified_of(registry, out[0])["verifiers"] == [CITY]
    assert v.process(TOPICS.verification, 0, 2, evidence(codec, base)) == [], "counted once"
    out = v.process(TOPICS.verification, 0, 3, evidence(codec, base, "220200-GA"))
    rec = verified_of(registry, out[0])
    assert (rec["count"], rec["verifiers"], rec["version"]) == (
        2,
        [CITY, "220200-GA"],
        base.version,
    )
    newer = dataclasses.replace(
        changed(registry, base, address="elsewhere"), version=base.version + 1
    )
    out = v.process(POOL, 0, 11, pool_value(registry, newer))
    rec = verified_of(registry, out[0])
    assert (rec["count"], rec["verifiers"], rec["version"]) == (0, [], base.version + 1)
    assert v.take_tally() == {"agree": 3, "reset": 1}


def test_disagreement_raises_a_conflict_with_both_values(
    registry: SchemaRegistry, codec: EnvelopeCodec, base: Envelope
) -> None:
    v = verifier(registry)
    v.process(POOL, 0, 10, pool_value(registry, base))
    other = changed(registry, base, ethnicity="满族" if "汉" in str(base.payload) else "汉族")
    truth = fields_of(registry, base)
    value = evidence(codec, other)
    (out,) = v.process(
        TOPICS.verification, 0, 5, value, [(SOURCE_HEADER, b"\0\0\0\x02" + (77).to_bytes(8, "big"))]
    )
    assert out.topic == TOPICS.conflicts(PROVIDER)
    c = decode(out.value or b"", registry.by_name("org.xiangyun.Conflict"))
    ev = codec.decode(value)
    assert c["conflict_id"] == conflict_id(base.key, base.version, ev.record_id)
    assert out.key == c["conflict_id"].encode()
    assert c["fields"] == ["ethnicity"] and c["status"] == "open"
    assert c["authoritative"]["values"] == {"ethnicity": display(truth["ethnicity"])}
    assert c["authoritative"]["provider"] == PROVIDER and c["authoritative"]["pool_offset"] == 10
    assert c["evidence"]["provider"] == CITY and c["evidence"]["record_id"] == ev.record_id
    assert (c["evidence"]["source_partition"], c["evidence"]["source_offset"]) == (2, 77)
    assert v.verified(0, base.key) is None


def test_evidence_before_the_authoritative_value_waits_and_is_bounded(
    registry: SchemaRegistry, codec: EnvelopeCodec, base: Envelope
) -> None:
    v = verifier(registry, pending_max=2)
    first = evidence(codec, base)
    out = v.process(TOPICS.verification, 0, 1, first)
    assert [(o.topic, o.value) for o in out] == [(TOPICS.verification_pending, first)]
    v.process(TOPICS.verification, 0, 2, evidence(codec, base, "220200-GA"))
    unknown = evidence(codec, base, "999999-XX")
    assert v.process(TOPICS.verification, 0, 3, unknown) == [], "unregistered: ignored"
    other = dataclasses.replace(base, subject_id="x", record_id="r")
    out = v.process(TOPICS.verification, 0, 4, evidence(codec, other))
    dropped = [o for o in out if o.value is None]
    assert len(dropped) == 1 and dropped[0].key.startswith(base.key), "the oldest is dropped"
    assert len(v.pending(0)) == 2
    out = v.process(POOL, 0, 10, pool_value(registry, base))
    assert [o.value for o in only(out, TOPICS.verification_pending)] == [None]
    (rec,) = [verified_of(registry, o) for o in only(out, TOPICS.verified)]
    assert rec["verifiers"] == ["220200-GA"]
    assert [p.key for p in v.pending(0)] == [other.key]
    assert v.take_tally() == {"pending": 3, "unregistered": 1, "dropped": 1, "agree": 1}


def test_state_is_restored_from_what_was_written(
    registry: SchemaRegistry, codec: EnvelopeCodec, base: Envelope, tmp_path: Any
) -> None:
    v = verifier(registry)
    v.process(TOPICS.verification, 0, 1, evidence(codec, dataclasses.replace(base, subject_id="y")))
    v.process(POOL, 0, 10, pool_value(registry, base))
    out = v.process(TOPICS.verification, 0, 2, evidence(codec, base))
    again = verifier(registry)
    again.open(0, RocksStore(tmp_path / "0"))
    again.restore_pool(POOL, 0, 10, pool_value(registry, base))
    for o in out:
        again.restore_verified(0, o.key, o.value)
    (pending,) = v.pending(0)
    again.restore_pending(0, pending.key + b"|" + pending.record_id.encode(), pending.value, None)
    assert again.verified(0, base.key) == v.verified(0, base.key)
    assert again.authority(0, base.key) == v.authority(0, base.key)
    assert [p.key for p in again.pending(0)] == [pending.key]
    assert again.process(TOPICS.verification, 0, 3, evidence(codec, base)) == []  # CITY again
    again.close([0])
    assert not (tmp_path / "0").exists()


def test_the_provider_cannot_verify_itself(
    registry: SchemaRegistry, codec: EnvelopeCodec, base: Envelope
) -> None:
    v = verifier(registry)
    v.process(POOL, 0, 10, pool_value(registry, base))
    assert v.process(TOPICS.verification, 0, 1, evidence(codec, base, PROVIDER)) == []
    assert v.take_tally() == {"self": 1}


def test_a_schema_is_parsed_once(registry: SchemaRegistry) -> None:
    assert isinstance(registry.by_name("org.xiangyun.ConflictResolution"), Schema)


# -- conflicts ------------------------------------------------------------------------------
def _conflict(cid: str, provider: str, raised: int) -> dict[str, Any]:
    return {
        "conflict_id": cid,
        "resource_id": "population.resident",
        "subject_id": "s",
        "authoritative": {"provider": provider, "values": {}},
        "evidence": {"provider": CITY, "values": {}},
        "fields": ["address"],
        "raised_at_ms": raised,
        "status": "open",
    }


def test_open_conflicts_per_unit_and_their_age() -> None:
    from streams.verification.conflicts import ConflictBook

    book = ConflictBook()
    book.conflicts = {
        "a": _conflict("a", PROVIDER, 1_000),
        "b": _conflict("b", PROVIDER, 5_000),
        "c": _conflict("c", "220000-MZ", 9_000),
    }
    book.resolutions = {"a": {"status": "dismissed"}}
    assert book.open_by_unit(11_000) == {PROVIDER: (1, 6.0), "220000-MZ": (1, 2.0)}
    book.resolutions["b"] = {"status": "accepted"}
    assert book.open_by_unit(11_000) == {PROVIDER: (0, 0.0), "220000-MZ": (1, 2.0)}
    del book.resolutions["b"]
    assert [c["conflict_id"] for c in book.listing(PROVIDER)] == ["a", "b"]
    assert [c["conflict_id"] for c in book.listing(open_only=True)] == ["b", "c"]
    assert book.view("a")["status"] == "dismissed"  # type: ignore[index]
    assert book.view("zz") is None


def test_the_resolve_command_needs_a_decision_a_reason_and_a_unit() -> None:
    from xiangyun.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(
        ["conflicts", "resolve", "ID", "--dismiss", "--reason", "r", "--as", PROVIDER]
    )
    assert (args.dismiss, args.accept, args.unit, args.reason) == (True, False, PROVIDER, "r")
    for argv in (
        ["conflicts", "resolve", "ID", "--reason", "r", "--as", PROVIDER],
        ["conflicts", "resolve", "ID", "--accept", "--dismiss", "--reason", "r", "--as", "x"],
        ["conflicts", "resolve", "ID", "--accept", "--as", PROVIDER],
        ["conflicts", "resolve", "ID", "--accept", "--reason", "r"],
    ):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)
    args = parser.parse_args(["conflicts", "list", "--unit", PROVIDER, "--open"])
    assert (args.unit, args.open) == (PROVIDER, True)
