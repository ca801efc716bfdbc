"""Consent at collection (article 18), through a real worker: a record of a resource that
requires consent is taken only when its consent reference names a consent on record for that
subject and resource, in force at the observed time; each failure has its own reason."""

from __future__ import annotations

import dataclasses
import uuid

from connectors.consent import ConsentPublisher
from connectors.generator import SampleGenerator
from connectors.producer import SourceProducer
from streams.core.consent import Consent
from streams.kafka.topics import Topics
from streams.wire.envelope import Envelope, EnvelopeCodec
from xiangyun.outcomes import read_ledger, wait_for_no_lag
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings

ALLOWANCE = "220100.population.elderly_allowance"  # the starter catalog's consent resource


def test_consent_granted_unknown_expired_withdrawn_and_mismatched(
    settings: Settings,
    topics: Topics,
    codec: EnvelopeCodec,
    catalog: object,
    producer: SourceProducer,
) -> None:
    gen = SampleGenerator(
        codec,
        catalog,  # type: ignore[arg-type]
        settings.schema_dir,
        seed=17,
        broken_share=0.0,
        weights={r.id: 1.0 if r.id == ALLOWANCE else 0.0 for r in catalog},  # type: ignore[attr-defined]
    )
    sample = [r for r in gen.records(200) if r.key.startswith(ALLOWANCE.encode())]
    subjects: dict[bytes, tuple[str, Envelope]] = {}
    for r in sample:
        subjects.setdefault(r.key, (r.principal, codec.decode(r.value)))
    (principal, a), (_, b), (_, c), (_, d), (_, e) = list(subjects.values())[:5]
    t = a.observed_at_ms

    def consent(env: Envelope, **kw: object) -> Consent:
        fields: dict[str, object] = {
            "consent_id": f"CONSENT-{uuid.uuid4().hex[:12].upper()}",
            "subject_id": env.subject_id,
            "resource_id": ALLOWANCE,
            "granted_by": "220100-MZ",
            "scope": "elderly allowance assessment",
            "granted_at_ms": t - 86_400_000,
        }
        fields.update(kw)
        return Consent(**fields)  # type: ignore[arg-type]

    good = consent(a)
    expired = consent(b, expires_at_ms=t - 3_600_000)
    withdrawn = consent(c)
    other_subject = consent(a)  # on record, but for a's subject, cited by d
    with ConsentPublisher(settings.streams) as publisher:
        publisher.grant([good, expired, withdrawn, other_subject])
        publisher.withdraw(withdrawn, t - 60_000)  # withdrawn before c's record was observed

    def cite(env: Envelope, ref: str) -> bytes:
        return codec.encode(dataclasses.replace(env, consent_ref=ref, record_id=str(uuid.uuid4())))

    cases = [
        ("on record, in force", a, cite(a, good.consent_id), ("accepted", "")),
        ("expired", b, cite(b, expired.consent_id), ("rejected", "CONSENT_EXPIRED")),
        ("withdrawn", c, cite(c, withdrawn.consent_id), ("rejected", "CONSENT_WITHDRAWN")),
        ("another subject's", d, cite(d, other_subject.consent_id),
         ("rejected", "CONSENT_MISMATCH")),
        ("unknown", e, cite(e, "CONSENT-NOSUCHTHING"), ("rejected", "CONSENT_UNKNOWN")),
        ("none", e, cite(e, ""), ("rejected", "CONSENT_MISSING")),
    ]  # fmt: skip
    producer.send_all(((principal, env.key, value) for _, env, value, _ in cases), progress=False)
    with WorkerProcess(settings, name=f"consent-{settings.app_id}"):
        assert wait_for_no_lag(settings, topics, timeout=90) == 0
    ledger = read_ledger(settings, topics)
    assert ledger.missing() == [] and ledger.doubled() == {}
    by_value = _outcomes_by_value(settings, ledger)
    for label, _, value, expected in cases:
        assert by_value[value] == expected, label


def _outcomes_by_value(settings: Settings, ledger: object) -> dict[bytes, tuple[str, str]]:
    from confluent_kafka import Consumer, TopicPartition

    out: dict[bytes, tuple[str, str]] = {}
    c = Consumer(settings.kafka.consumer(f"c-{uuid.uuid4().hex[:6]}"))
    try:
        for (t, p, o), answers in ledger.outcomes.items():  # type: ignore[attr-defined]
            c.assign([TopicPartition(t, p, o)])
            [m] = c.consume(1, 10)
            out[m.value() or b""] = answers[0]
    finally:
        c.close()
    return out
