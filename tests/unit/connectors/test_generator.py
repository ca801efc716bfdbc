"""The sample generator: valid records really are valid, broken ones really fail as promised."""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from connectors.generator import BROKEN_KINDS, SampleGenerator, SampleRecord, counts
from streams.catalog.model import Catalog, Resource
from streams.catalog.spec import check_fields, check_subject, subject_of
from streams.core.channel import Channel
from streams.core.identifiers import is_valid_citizen_id, is_valid_credit_code, is_valid_date
from streams.core.reasons import Reason
from streams.core.regions import city_of, is_region
from streams.ingest.decision import Ingestor, OutcomeKind, file_spec_loader
from streams.ingest.pool_state import PoolState, StateTable
from streams.kafka.topics import Topics
from streams.units.model import Unit, UnitKind, UnitRegister, UnitStatus
from streams.wire.codec import CodecError, Schema, SchemaRegistry, decode, encode, read_fingerprint
from streams.wire.envelope import Envelope, EnvelopeCodec
from xiangyun_data import units_dir

ROOT = Path(__file__).resolve().parents[3]
SCHEMAS = ROOT / "schemas" / "avro"
CATALOG = Catalog.from_dir(ROOT / "catalog")


def make(seed: int = 7, share: float = 0.05, **kw: Any) -> tuple[SampleGenerator, EnvelopeCodec]:
    codec = EnvelopeCodec(SchemaRegistry(), SCHEMAS)
    return SampleGenerator(codec, CATALOG, SCHEMAS, seed=seed, broken_share=share, **kw), codec


def spec_of(resource_id: str) -> Schema:
    resource = CATALOG.get(resource_id)
    assert resource is not None
    return Schema.load(SCHEMAS / resource.schema)


UNITS = UnitRegister.from_dir(units_dir()).approved()


def one_ingest(codec: EnvelopeCodec, state: StateTable | None = None) -> Ingestor:
    """The real ingest decision, with the starter catalog and unit register."""
    return Ingestor(
        codec,
        lambda: CATALOG,
        Topics("t"),
        SCHEMAS,
        spec_of=file_spec_loader(SCHEMAS),
        units=lambda: UNITS,
        pool_state=state,
    )


def label(out: Any) -> str:
    """An outcome as the generator's ``expected`` names it."""
    if out.kind is OutcomeKind.ACCEPTED:
        assert out.pool is not None
        return f"accepted:{out.pool.value}"
    if out.kind is OutcomeKind.VERIFICATION:
        return "verification"
    assert out.reason is not None
    return f"{out.kind.value}:{out.reason.value}"


def classify(codec: EnvelopeCodec, rec: SampleRecord) -> tuple[str, str]:
    """The outcome the real ingest decision gives a record, and its detail."""
    ingestor = one_ingest(codec)
    # Through the collect topic of the principal the generator says publishes it.
    out = ingestor.process(rec.key, rec.value, Topics("t").collect(rec.principal))
    detail = ""
    if out.kind is OutcomeKind.REJECTED:
        detail = decode(out.value, ingestor._rejected_schema)["detail"]
    return label(out), detail


@pytest.fixture(scope="module")
def stream() -> tuple[list[SampleRecord], EnvelopeCodec, SampleGenerator]:
    gen, codec = make(seed=11, share=0.2)
    return list(gen.records(6000)), codec, gen


def test_every_record_gets_its_expected_outcome(stream: Any) -> None:
    records, codec, _ = stream
    wrong = []
    for rec in records:
        outcome, detail = classify(codec, rec)
        if outcome != rec.expected:
            wrong.append((rec.kind, rec.expected, outcome, detail[:80]))
    assert not wrong, wrong[:10]


def test_every_kind_and_every_resource_occurs(stream: Any) -> None:
    records, _, gen = stream
    assert set(gen.kinds) == set(BROKEN_KINDS)
    assert {r.kind for r in records} == {"valid", *BROKEN_KINDS}
    accepted = {r.expected for r in records if r.kind == "valid"}
    assert accepted == {f"accepted:{r.pool.value}" for r in CATALOG if r.in_force}
    for rec in records:
        expected = "accepted" if rec.kind == "valid" else f"rejected:{BROKEN_KINDS[rec.kind]}"
        assert rec.expected.startswith(expected)


def test_valid_records_are_valid_to_the_standards(stream: Any) -> None:
    records, codec, _ = stream
    seen: Counter[str] = Counter()
    for rec in records:
        if rec.kind != "valid":
            continue
        env = codec.decode(rec.value)
        resource = CATALOG.get(env.resource_id)
        assert resource is not None and resource.in_force
        assert rec.key == env.key
        # The provider, or (COMMISSIONED) the third party it commissioned for the resource.
        assert UNITS.accountable_of(env.provider) == resource.provider
        assert (env.provider != resource.provider) == (env.channel is Channel.COMMISSIONED)
        assert env.region == resource.region
        assert env.channel in resource.channels
        assert (env.consent_ref is not None) == resource.consent_required
        if env.consent_ref is not None:
            assert env.consent_ref.startswith("CONSENT-")
        spec = spec_of(resource.id)
        assert read_fingerprint(env.payload) == spec.fingerprint  # written with the spec
        payload = decode(env.payload, spec)
        assert check_fields(resource, payload) is None
        assert check_subject(resource, env.subject_id) is None
        assert subject_of(resource, payload) == env.subject_id
        # the generator's fast writers are byte-identical to the codec
        assert codec.encode(env) == rec.value
        assert encode(spec, payload) == env.payload
        seen[resource.id] += 1
        if resource.id == "population.resident":
            assert is_valid_citizen_id(payload["citizen_id"])
            assert payload["birth_date"].replace("-", "") == payload["citizen_id"][6:14]
            assert payload["gender"] == ("M" if int(payload["citizen_id"][16]) % 2 else "F")
            assert is_region(payload["household_region"])
        elif resource.id == "legal_person.enterprise":
            assert is_valid_credit_code(payload["credit_code"])
            assert payload["credit_code"][2:8] == payload["registered_region"]
            assert is_valid_date(payload["established_on"])
        elif resource.id == "220100.population.elderly_allowance":
            assert city_of(payload["region"]) == "220100"
            assert int(payload["month"][:4]) - int(payload["citizen_id"][6:10]) >= 78
        elif resource.id == "macro_economy.gdp_quarterly":
            assert env.subject_id == f"{payload['region']}:{payload['period']}"
    # population is the biggest share
    assert seen.most_common(1)[0][0] == "population.resident"


def test_versions_and_times_increase_and_ids_are_unique(stream: Any) -> None:
    records, codec, _ = stream
    envs = []
    for rec in records:
        with contextlib.suppress(CodecError):
            envs.append(codec.decode(rec.value))
    versions = [e.version for e in envs]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    times = [e.observed_at_ms for e in envs]
    assert times == sorted(times)
    assert len({e.record_id for e in envs}) == len(envs)


def test_some_valid_records_update_an_earlier_subject(stream: Any) -> None:
    records, codec, _ = stream
    keys = Counter(codec.decode(r.value).key for r in records if r.kind == "valid")
    assert sum(1 for n in keys.values() if n > 1) > 50
    # an update never repeats the content of the version before it
    last: dict[bytes, bytes] = {}
    for rec in records:
        if rec.kind == "valid":
            env = codec.decode(rec.value)
            assert last.get(env.key) != env.payload
            last[env.key] = env.payload


def test_several_sources_per_resource(stream: Any) -> None:
    records, codec, _ = stream
    by_resource: dict[str, set[str]] = {}
    for rec in records:
        if rec.kind == "valid":
            by_resource.setdefault(codec.decode(rec.value).resource_id, set()).add(rec.source)
    for rid, sources in by_resource.items():
        assert len(sources) >= 3, rid
    assert "220000-GA/huji" in by_resource["population.resident"]
    assert "220100-MZ/platform" in by_resource["220100.population.elderly_allowance"]


# ---- each broken kind fails the way its reason says ---------------------------------------


def _first(records: list[SampleRecord], kind: str) -> list[SampleRecord]:
    out = [r for r in records if r.kind == kind]
    assert out, kind
    return out


def _codec_reason(codec: EnvelopeCodec, data: bytes) -> Reason:
    with pytest.raises(CodecError) as info:
        codec.decode(data)
    return info.value.reason


def test_garbage_is_malformed(stream: Any) -> None:
    records, codec, _ = stream
    for rec in _first(records, "garbage"):
        assert rec.value[:2] != b"\xc3\x01"
        assert _codec_reason(codec, rec.value) is Reason.MALFORMED


def test_unknown_envelope_fingerprint(stream: Any) -> None:
    records, codec, _ = stream
    for rec in _first(records, "unknown_envelope_schema"):
        assert rec.value[:2] == b"\xc3\x01"
        assert read_fingerprint(rec.value) not in codec.registry
        assert _codec_reason(codec, rec.value) is Reason.UNKNOWN_SCHEMA
        # the body itself is a good envelope: only the fingerprint is wrong
        fixed = codec.schema.header + rec.value[10:]
        assert codec.decode(fixed).key == rec.key


def test_truncated_is_undecodable(stream: Any) -> None:
    records, codec, _ = stream
    for rec in _first(records, "truncated"):
        assert len(rec.value) > 10 and read_fingerprint(rec.value) == codec.schema.fingerprint
        assert _codec_reason(codec, rec.value) is Reason.UNDECODABLE


@pytest.mark.parametrize("kind", ["missing_field", "wrong_type"])
def test_incompatible_payload_writers(stream: Any, kind: str) -> None:
    records, codec, gen = stream
    extra = {s.fingerprint: s for s in gen.extra_schemas}
    for rec in _first(records, kind):
        env = codec.decode(rec.value)
        writer = codec.registry.writer_of(env.payload)
        assert writer.fingerprint in extra  # registered, so its fingerprint is known
        spec = spec_of(env.resource_id)
        assert writer.name == spec.name and writer.fingerprint != spec.fingerprint
        decode(env.payload, writer)  # fine with its own writer schema
        with pytest.raises(CodecError) as info:
            codec.decode_payload(env, spec)
        assert info.value.reason is Reason.SCHEMA_MISMATCH
        spec_fields = {f["name"]: f["type"] for f in spec.parsed["fields"]}
        writer_fields = {f["name"]: f["type"] for f in writer.parsed["fields"]}
        if kind == "missing_field":
            missing = set(spec_fields) - set(writer_fields)
            assert len(missing) == 1
            assert not any("default" in f for f in spec.parsed["fields"] if f["name"] in missing)
        else:
            assert set(spec_fields) == set(writer_fields)
            changed = [n for n in spec_fields if spec_fields[n] != writer_fields[n]]
            assert len(changed) == 1


def test_extra_schemas_do_not_shadow_the_specs_by_name(stream: Any) -> None:
    _, codec, gen = stream
    assert gen.extra_schemas
    for schema in gen.extra_schemas:
        assert codec.registry.get(schema.fingerprint) is schema
        assert codec.registry.by_name(schema.name).fingerprint != schema.fingerprint


def test_unknown_resource(stream: Any) -> None:
    records, codec, _ = stream
    for rec in _first(records, "unknown_resource"):
        env = codec.decode(rec.value)
        assert CATALOG.get(env.resource_id) is None


FIELD_KINDS = {
    "bad_check_char": "bad check character",
    "huge_string": "longer than",
    "hostile_chars": "control, bidi override or surrogate character",
    "impossible_date": "not a real date",
    "unknown_region": "not a known Jilin region code",
    "bad_enum": "not one of",
    "non_finite": "not a finite number",
}


@pytest.mark.parametrize("kind", sorted(FIELD_KINDS))
def test_field_rule_kinds(stream: Any, kind: str) -> None:
    records, codec, _ = stream
    for rec in _first(records, kind):
        env = codec.decode(rec.value)
        resource = CATALOG.get(env.resource_id)
        assert resource is not None
        assert check_subject(resource, env.subject_id) is None  # only the payload is bad
        payload = codec.decode_payload(env, spec_of(resource.id))
        problem = check_fields(resource, payload)
        assert problem is not None and FIELD_KINDS[kind] in problem, problem
        field = problem.split(":", 1)[0]
        assert field != resource.subject


def test_huge_strings_stay_far_below_kafka_limits(stream: Any) -> None:
    records, _, _ = stream
    for rec in _first(records, "huge_string"):
        assert 4096 < len(rec.value) < 100_000


def test_invalid_subject(stream: Any) -> None:
    records, codec, _ = stream
    for rec in _first(records, "invalid_subject"):
        env = codec.decode(rec.value)
        resource = CATALOG.get(env.resource_id)
        assert resource is not None and resource.subject in ("citizen_id", "credit_code")
        assert check_subject(resource, env.subject_id) == "subject: bad check character"
        # the payload carries the same bad identifier
        payload = codec.decode_payload(env, spec_of(resource.id))
        assert subject_of(resource, payload) == env.subject_id


def test_unknown_payload_schema(stream: Any) -> None:
    records, codec, _ = stream
    for rec in _first(records, "unknown_payload_schema"):
        env = codec.decode(rec.value)
        with pytest.raises(CodecError) as info:
            codec.decode_payload(env)
        assert info.value.reason is Reason.UNKNOWN_SCHEMA


def test_invalid_utf8(stream: Any) -> None:
    records, codec, _ = stream
    for rec in _first(records, "invalid_utf8"):
        env = codec.decode(rec.value)
        with pytest.raises(UnicodeDecodeError):
            env.payload[10:].decode("utf-8")
        with pytest.raises(CodecError) as info:
            codec.decode_payload(env, spec_of(env.resource_id))
        assert info.value.reason is Reason.UNDECODABLE


def test_envelope_level_kinds(stream: Any) -> None:
    records, codec, _ = stream
    for rec in _first(records, "consent_missing"):
        env = codec.decode(rec.value)
        resource = CATALOG.get(env.resource_id)
        assert resource is not None and resource.consent_required and env.consent_ref is None
    for rec in _first(records, "channel_not_allowed"):
        env = codec.decode(rec.value)
        resource = CATALOG.get(env.resource_id)
        assert resource is not None and env.channel not in resource.channels
    for rec in _first(records, "region_mismatch"):
        env = codec.decode(rec.value)
        assert not env.region.startswith("22")
    for rec in _first(records, "key_mismatch"):
        env = codec.decode(rec.value)
        assert rec.key != env.key and rec.key.startswith(env.resource_id.encode() + b"|")


# ---- determinism, share, counts, speed ----------------------------------------------------


def test_same_seed_same_bytes_other_seed_other_bytes() -> None:
    a = list(make(seed=3)[0].records(800))
    b = list(make(seed=3)[0].records(800))
    c = list(make(seed=4)[0].records(800))
    assert a == b
    assert [r.value for r in a] != [r.value for r in c]


def test_records_continues_the_stream() -> None:
    gen, codec = make(seed=5)
    first = list(gen.records(300))
    second = list(gen.records(300))
    assert list(make(seed=5)[0].records(600)) == first + second
    ids = [codec.decode(r.value).record_id for r in first + second if r.kind == "valid"]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("share", [0.0, 0.01, 0.05, 0.3, 1.0])
def test_broken_share_is_respected(share: float) -> None:
    records = list(make(share=share)[0].records(4000))
    broken = sum(1 for r in records if r.kind != "valid")
    assert abs(broken - share * 4000) <= 1
    assert all(r.expected.startswith("rejected:") for r in records if r.kind != "valid")


def test_kinds_cycle_evenly_and_can_be_restricted() -> None:
    gen, _ = make(share=0.5, kinds=["garbage", "consent_missing"])
    records = list(gen.records(1000))
    assert Counter(r.kind for r in records) == {
        "valid": 500,
        "garbage": 250,
        "consent_missing": 250,
    }
    with pytest.raises(ValueError):
        make(kinds=["no_such_kind"])
    with pytest.raises(ValueError):
        make(share=1.5)


def test_counts() -> None:
    records = list(make(share=0.1)[0].records(2000))
    c = counts(records)
    assert sum(c.values()) == 2000
    assert sum(n for k, n in c.items() if k.startswith("rejected:")) == 200
    assert c["accepted:population"] == sum(
        1 for r in records if r.expected == "accepted:population"
    )


def test_registry_built_from_the_schema_dir_works_too() -> None:
    codec = EnvelopeCodec(SchemaRegistry.from_dir(SCHEMAS), SCHEMAS)
    gen = SampleGenerator(codec, CATALOG, SCHEMAS, seed=2, broken_share=0.3)
    for rec in gen.records(500):
        assert classify(codec, rec)[0] == rec.expected


def test_generation_is_fast_enough() -> None:
    gen, _ = make()
    start = time.perf_counter()
    n = sum(1 for _ in gen.records(20_000))
    rate = n / (time.perf_counter() - start)
    assert rate > 5_000, rate  # lenient for slow CI; ~45 000/s on one core of a dev box


def test_envelope_round_trip_type(stream: Any) -> None:
    records, codec, _ = stream
    env = codec.decode(next(r for r in records if r.kind == "valid").value)
    assert isinstance(env, Envelope)


def test_weights_steer_the_mix() -> None:
    gen, codec = make(share=0.0, weights={r.id: 0.0 for r in CATALOG} | {"spatial.land_parcel": 1})
    ids = {codec.decode(r.value).resource_id for r in gen.records(300)}
    assert ids == {"spatial.land_parcel"}
    with pytest.raises(ValueError):
        make(weights={r.id: 0.0 for r in CATALOG})


def test_generic_builder_for_a_spec_without_a_dedicated_one(tmp_path: Path) -> None:
    schema = {
        "type": "record",
        "name": "Well",
        "namespace": "org.xiangyun.payload",
        "fields": [
            {"name": "well_id", "type": "string"},
            {"name": "region", "type": "string"},
            {"name": "drilled_on", "type": "string"},
            {"name": "kind", "type": "string"},
            {"name": "depth_m", "type": "double"},
            {"name": "owner", "type": "string"},
            {"name": "note", "type": ["null", "string"], "default": None},
        ],
    }
    (tmp_path / "payloads").mkdir()
    (tmp_path / "payloads" / "well.avsc").write_text(json.dumps(schema))
    resource = Resource.from_mapping(
        {
            "id": "220100.spatial.well",
            "name": "wells",
            "department": "220100-SL",
            "provider": "220100-SL",
            "pool": "thematic",
            "schema": "payloads/well.avsc",
            "subject": "well_id",
            "region": "220100",
            "field_rules": {
                "region": {"check": "region"},
                "drilled_on": {"check": "date"},
                "kind": {"enum": ["IRRIGATION", "DRINKING"]},
                "depth_m": {"min": 5, "max": 300},
                "owner": {"min_length": 2, "max_length": 20},
            },
            "status": "approved",
        }
    )
    codec = EnvelopeCodec(SchemaRegistry(), SCHEMAS)
    water = Unit(
        "220100-SL",
        "长春市水利局",
        UnitKind.CITY_DEPARTMENT,
        "220100",
        "220100-ZF",
        status=UnitStatus.APPROVED,
    )
    gen = SampleGenerator(
        codec,
        Catalog([resource]),
        tmp_path,
        seed=1,
        broken_share=0.2,
        units=UNITS.with_unit(water),
    )
    assert gen.resources == (resource,) and not gen.skipped
    spec = Schema.load(tmp_path / "payloads" / "well.avsc")
    outcomes: Counter[str] = Counter()
    for rec in gen.records(400):
        if rec.kind != "valid":
            outcomes[rec.kind] += 1
            continue
        env = codec.decode(rec.value)
        payload = decode(env.payload, spec)
        assert check_fields(resource, payload) is None
        assert env.subject_id == payload["well_id"] and env.region == "220100"
    assert sum(outcomes.values()) == 80
    assert "consent_missing" not in outcomes  # no resource needs consent


def test_resource_with_unsatisfiable_rules_is_skipped(tmp_path: Path) -> None:
    schema = {
        "type": "record",
        "name": "Odd",
        "namespace": "org.xiangyun.payload",
        "fields": [{"name": "code", "type": "string"}],
    }
    (tmp_path / "odd.avsc").write_text(json.dumps(schema))
    odd = Resource.from_mapping(
        {
            "id": "odd",
            "name": "odd",
            "department": "220000-X",
            "provider": "220000-X",
            "pool": "thematic",
            "schema": "odd.avsc",
            "subject": "code",
            "field_rules": {"code": {"pattern": "^Z[0-9]{3}$"}},
            "status": "approved",
        }
    )
    codec = EnvelopeCodec(SchemaRegistry(), SCHEMAS)
    with pytest.raises(ValueError):
        SampleGenerator(codec, Catalog([odd]), tmp_path)


def test_evidence_from_non_providers_is_verification_for_the_real_ingest() -> None:
    gen, codec = make(seed=4, share=0.0, evidence_share=0.5)
    records = list(gen.records(400))
    evidence = [r for r in records if r.expected == "verification"]
    assert 150 < len(evidence) < 250
    for rec in records:
        assert classify(codec, rec)[0] == rec.expected
    providers = {codec.decode(r.value).provider for r in evidence}
    assert all(not p.startswith("220000-") for p in providers)


def test_no_evidence_share_keeps_the_stream_unchanged() -> None:
    a, _ = make(seed=4)
    b, _ = make(seed=4, evidence_share=0.0)
    assert [r.value for r in a.records(200)] == [r.value for r in b.records(200)]


def test_consents_match_the_references_and_leave_the_stream_unchanged() -> None:
    from streams.core.consent import check_terms

    gen, codec = make(
        seed=4, share=0.05, consents=True, weights={"220100.population.elderly_allowance": 50.0}
    )
    plain, _ = make(seed=4, share=0.05, weights={"220100.population.elderly_allowance": 50.0})
    records = list(gen.records(600))
    assert [r.value for r in records] == [r.value for r in plain.records(600)]
    consents = {c.consent_id: c for c in gen.consents()}
    assert gen.consents() == []  # drained
    cited = []
    for rec in records:
        if rec.kind != "valid":
            continue
        env = codec.decode(rec.value)
        resource = CATALOG.get(env.resource_id)
        assert resource is not None
        if not resource.consent_required:
            assert env.consent_ref is None
            continue
        assert env.consent_ref is not None
        c = consents[env.consent_ref]
        assert c.granted_by == resource.provider
        reason = check_terms(c.terms(), env.subject_id, env.resource_id, env.observed_at_ms)
        assert reason is None
        cited.append(env.consent_ref)
    assert len(cited) > 50


def test_consents_need_the_flag() -> None:
    gen, _ = make(seed=4)
    with pytest.raises(ValueError, match="consents=True"):
        gen.consents()


@pytest.mark.parametrize("seed", [0, 3])
def test_a_stream_through_one_ingest_ends_as_expected(seed: int) -> None:
    # One ingest with its pool state for the whole stream, as a worker decides it: a newer
    # version of a subject must differ from the subject's current version, or the ingest
    # rightly calls it a DUPLICATE where the generator expected it accepted.
    gen, codec = make(seed=seed, share=0.05)
    ingestor = one_ingest(codec, PoolState())
    wrong: Counter[tuple[str, str]] = Counter()
    for rec in gen.records(20_000):
        got = label(ingestor.process(rec.key, rec.value, Topics("t").collect(rec.principal), 0, 0))
        if got != rec.expected:
            wrong[(rec.expected, got)] += 1
    assert not wrong, wrong
