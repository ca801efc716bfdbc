"""The consent book without Kafka: what it does with each record of the consents topic,
the O(1) check, and its memory per consent."""

from __future__ import annotations

import random
import time
import tracemalloc
from pathlib import Path

from streams.core.consent import Consent
from streams.core.reasons import Reason
from streams.kafka.config import StreamsConfig
from streams.kafka.consent_store import BYTES_PER_CONSENT, ConsentBook
from streams.wire.codec import SchemaRegistry, encode

ROOT = Path(__file__).resolve().parents[4]
REGISTRY = SchemaRegistry.from_dir(ROOT / "schemas" / "avro")
SCHEMA = REGISTRY.by_name("org.xiangyun.Consent")
SUBJECT = "220102194503071234"
RESOURCE = "220100.population.elderly_allowance"
T0 = 1_767_225_600_000


def consent(cid: str = "C-1", **kw: object) -> Consent:
    fields: dict[str, object] = {
        "consent_id": cid,
        "subject_id": SUBJECT,
        "resource_id": RESOURCE,
        "granted_by": "220100-MZ",
        "scope": "elderly allowance",
        "granted_at_ms": T0,
    }
    fields.update(kw)
    return Consent(**fields)  # type: ignore[arg-type]


def book() -> ConsentBook:
    return ConsentBook(StreamsConfig(), registry=REGISTRY)  # nothing connects before start


def put(b: ConsentBook, c: Consent) -> None:
    b._apply(c.key, encode(SCHEMA, c.to_avro()))


def test_grant_withdraw_erase() -> None:
    b = book()
    assert b.check("C-1", SUBJECT, RESOURCE, T0) is Reason.CONSENT_UNKNOWN
    put(b, consent())
    assert b.check("C-1", SUBJECT, RESOURCE, T0) is None
    assert len(b) == 1 and "C-1" in b
    put(b, consent().withdrawn(T0 + 10))
    assert b.check("C-1", SUBJECT, RESOURCE, T0 + 9) is None
    assert b.check("C-1", SUBJECT, RESOURCE, T0 + 10) is Reason.CONSENT_WITHDRAWN
    put(b, consent())  # an old grant re-sent does not undo the withdrawal
    assert b.check("C-1", SUBJECT, RESOURCE, T0 + 10) is Reason.CONSENT_WITHDRAWN
    b._apply(b"C-1", None)  # erased
    assert b.check("C-1", SUBJECT, RESOURCE, T0) is Reason.CONSENT_UNKNOWN
    assert b.errors == 0 and b.applied == 4


def test_empty_reference_is_missing() -> None:
    assert book().check(None, SUBJECT, RESOURCE, T0) is Reason.CONSENT_MISSING
    assert book().check("", SUBJECT, RESOURCE, T0) is Reason.CONSENT_MISSING


def test_bad_records_are_counted_and_skipped() -> None:
    b = book()
    b._apply(b"C-1", b"not avro")
    b._apply(b"C-2", encode(SCHEMA, consent("C-1").to_avro()))  # key is not the consent id
    assert b.errors == 2 and len(b) == 0
    put(b, consent("C-3"))
    assert len(b) == 1


def test_memory_per_consent_is_what_the_doc_says() -> None:
    b = book()
    r = random.Random(1)
    consents = [
        consent(f"CONSENT-{r.getrandbits(48):012X}", subject_id=f"2201021945{i:08d}")
        for i in range(20_000)
    ]
    values = [(c.key, encode(SCHEMA, c.to_avro())) for c in consents]
    del consents
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for key, value in values:
            b._apply(key, value)
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    per = used / len(values)
    assert per <= BYTES_PER_CONSENT * 1.15, per


def test_check_is_a_lookup() -> None:
    b = book()
    for i in range(50_000):
        put(b, consent(f"C-{i}", subject_id=f"S{i}"))
    start = time.perf_counter()
    for i in range(50_000):
        assert b.check(f"C-{i}", f"S{i}", RESOURCE, T0) is None
    assert (time.perf_counter() - start) / 50_000 < 20e-6
