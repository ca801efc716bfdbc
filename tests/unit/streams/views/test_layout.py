"""The pool view's key layout, value encoding and digest (no Redis, no Kafka)."""

from __future__ import annotations

import hashlib
import random
import struct
from typing import Any

import pytest

from streams.views.layout import (
    BUCKETS,
    Entry,
    Layout,
    bucket_of,
    decode_record,
    digest_entries,
    encode_record,
    entry_digest,
    entry_of,
    record_context_id,
)

PAYLOAD = b"\xc3\x01" + struct.pack("<Q", 0x1234) + b"\x0cpayload-body"


def record(**over: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "resource_id": "population.resident",
        "subject_id": "220102199003071234",
        "version": 3,
        "observed_at_ms": 1_767_225_600_000,
        "content_fingerprint": hashlib.blake2b(PAYLOAD, digest_size=8).digest(),
        "record_id": "5cc2e8dd-b254-425d-a037-61a27b525515",
        "provider": "220000-GA",
        "principal": "220000-GA",
        "channel": "DIRECT",
        "region": "220000",
        "consent_ref": None,
        "accepted_at_ms": 1_767_225_601_500,
        "source_topic": "xy.collect.220000-GA",
        "source_partition": 2,
        "source_offset": 123_456,
        "catalog_version": 1,
        "verification_count": 0,
        "payload": PAYLOAD,
    }
    rec.update(over)
    return rec


def roundtrip(rec: dict[str, Any]) -> dict[str, Any]:
    value, _cid, ctx = encode_record(rec)
    return decode_record(rec["resource_id"], rec["subject_id"], value, ctx)


@pytest.mark.parametrize(
    "over",
    [
        {},
        {"record_id": "not-a-uuid"},
        {"record_id": "5CC2E8DD-B254-425D-A037-61A27B525515"},  # not canonical: kept as text
        {"record_id": ""},
        {"consent_ref": "CONSENT-1"},
        {"payload": b"raw bytes, not single-object"},
        {"payload": b""},
        {"accepted_at_ms": 1_000, "observed_at_ms": 2_000},  # accepted "before" observed
        {"version": -1, "source_offset": 2**62, "verification_count": 7},
        {"subject_id": "带:冒号|和中文"},
    ],
)
def test_value_roundtrips_to_the_same_pool_record(over: dict[str, Any]) -> None:
    rec = record(**over)
    assert roundtrip(rec) == rec


def test_value_is_compact() -> None:
    rec = record()
    value, cid, ctx = encode_record(rec)
    assert record_context_id(value) == cid
    # no resource, subject, provider, topic or payload header in the value; uuid as 16 bytes
    assert b"population" not in value and b"220000-GA" not in value and b"xy.collect" not in value
    assert len(value) < len(rec["payload"]) + 60
    # the shared context is the same for every record of one source
    assert encode_record(record(subject_id="x", version=9))[1:] == (cid, ctx)
    assert encode_record(record(provider="220100-GA"))[1] != cid


def test_a_foreign_value_is_refused() -> None:
    value, _cid, ctx = encode_record(record())
    with pytest.raises(ValueError):
        decode_record("r", "s", b"\x02" + value[1:], ctx)


def test_key_layout() -> None:
    layout = Layout.of("xy")
    assert layout.state == "xy.pools:state"
    key = layout.record_key("g1", "population.resident", "S1")
    assert key == f"xy.pools:g1:r:population.resident:{bucket_of('S1'):02x}"
    assert layout.parse(key) == ("g1", "r", "population.resident")
    assert layout.parse(layout.context_key("g1")) == ("g1", "ctx", "")
    assert layout.parse(layout.resources_key("g1")) == ("g1", "res", "")
    assert layout.parse(layout.state) is None
    assert layout.parse("xy.other:g1:r:a:00") is None
    assert layout.parse("xy.poolsX:g1:ctx") is None
    field = layout.offset_field("xy.pool.population", 3)
    assert layout.parse_offset_field(field) == ("xy.pool.population", 3)
    assert layout.parse_offset_field("applied_at_ms") is None
    assert layout.gen_prefix("g1") == "xy.pools:g1:"


def test_buckets_are_stable_and_spread() -> None:
    assert bucket_of("220102199003071234") == bucket_of("220102199003071234")
    rnd = random.Random(1)
    seen = {bucket_of(str(rnd.getrandbits(60))) for _ in range(5000)}
    assert seen == set(range(BUCKETS))


def test_digest_is_order_independent_and_sensitive() -> None:
    entries = [entry_of(record(subject_id=f"S{i}", version=i)) for i in range(50)]
    shuffled = entries[:]
    random.Random(3).shuffle(shuffled)
    d = digest_entries(entries)
    assert d == digest_entries(shuffled)
    assert 0 <= d < 2**64
    assert digest_entries([]) == 0
    assert d != digest_entries(entries[1:])
    assert d == (digest_entries(entries[:10]) + digest_entries(entries[10:])) % 2**64
    changed = [*entries[:-1], entry_of(record(subject_id="S49", version=50))]
    assert digest_entries(changed) != d
    # the context is part of the content: same value, another provenance, another digest
    e = entries[0]
    assert entry_digest(Entry(e.resource_id, e.subject_id, e.value, e.context + b"x")) != (
        entry_digest(e)
    )
    # parts are length-prefixed: moving a byte between resource and subject changes it
    assert entry_digest(Entry("ab", "c", b"", b"")) != entry_digest(Entry("a", "bc", b"", b""))
