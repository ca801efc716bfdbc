"""Who sends what, on the real broker: collection by principal (article 20, 22).

Each principal publishes to its own collect topic; a record is taken only from a registered
unit under that principal, in that unit's region, at the partition Kafka's partitioner
gives its key; a city's district body collecting for a provincial resource reaches the
provincial pool with the city as origin; COMMISSIONED names the registered third party.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
import uuid

from confluent_kafka import Producer

from connectors.generator import SampleGenerator, SampleRecord
from connectors.producer import SourceProducer
from streams.core.channel import Channel
from streams.kafka.partitioner import partition_for
from streams.kafka.topics import Topics
from streams.views import PoolView
from streams.wire.codec import SchemaRegistry, decode
from streams.wire.envelope import Envelope, EnvelopeCodec
from xiangyun.outcomes import read_ledger, wait_for_no_lag
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings


def _first(generator: SampleGenerator, pool: str, n: int = 3000) -> SampleRecord:
    return next(r for r in generator.records(n) if r.expected == f"accepted:{pool}")


def _another(generator: SampleGenerator, pool: str, not_key: bytes) -> SampleRecord:
    return next(
        r for r in generator.records(3000) if r.expected == f"accepted:{pool}" and r.key != not_key
    )


def test_each_principal_answers_for_its_own_units(
    settings: Settings,
    topics: Topics,
    generator: SampleGenerator,
    producer: SourceProducer,
    codec: EnvelopeCodec,
    registry: SchemaRegistry,
) -> None:
    resident = _first(generator, "population")
    parcel = _first(generator, "spatial")
    other = _another(generator, "population", resident.key)  # a subject the city collects
    env: Envelope = codec.decode(resident.value)
    city_env: Envelope = codec.decode(other.value)
    land: Envelope = codec.decode(parcel.value)

    def fresh(e: Envelope, **change: object) -> bytes:
        change.setdefault("record_id", str(uuid.uuid4()))
        return codec.encode(dataclasses.replace(e, **change))  # type: ignore[arg-type]

    city, district = "220100-ZF", "220102-GA"  # Changchun; its Nanguan police collect residents
    r, pl = resident.key, parcel.key
    third = "220000-ZRZY.CHY"
    commissioned = Channel.COMMISSIONED
    cases = [
        # (label, principal, key, value, expected kind, expected reason)
        ("provider itself", "220000-GA", r, fresh(env, version=10), "accepted", ""),
        ("unregistered", "220000-GA", r, fresh(env, provider="220000-XX"), "rejected",
         "UNREGISTERED_PROVIDER"),
        ("wrong principal", city, r, fresh(env, version=11), "rejected",
         "PROVIDER_NOT_IN_PRINCIPAL"),
        ("bad record id", "220000-GA", r, fresh(env, record_id="not-a-uuid"), "rejected",
         "INVALID_RECORD_ID"),
        ("outside region", city, r, fresh(env, provider=district, region="220200"), "rejected",
         "REGION_MISMATCH"),
        ("city aggregation", city, other.key,
         fresh(city_env, provider=district, region="220102"), "accepted", ""),
        ("commissioned by itself", "220000-ZRZY", pl,
         fresh(land, provider="220000-ZRZY", channel=commissioned),
         "rejected", "COMMISSION_MISMATCH"),
        ("commissioned third party", "220000-ZRZY", pl,
         fresh(land, provider=third, channel=commissioned, version=20), "accepted", ""),
        ("evidence from a city unit", city, r, fresh(env, provider="220100-GA", region="220100"),
         "verification", ""),
    ]  # fmt: skip
    for _, principal, key, value, _, _ in cases:
        producer.send(principal, key, value)
    producer.flush(30)
    # A source that partitions its own way: the key's home is elsewhere.
    home = partition_for(resident.key, settings.partitions)
    raw = Producer(settings.kafka.producer())
    raw.produce(
        topics.collect("220000-GA"),
        fresh(env, version=30),
        resident.key,
        partition=(home + 1) % settings.partitions,
    )
    assert raw.flush(30) == 0

    view = PoolView(settings.streams)
    with WorkerProcess(settings, name=f"principals-{settings.app_id}"):
        assert wait_for_no_lag(settings, topics, timeout=90) == 0
        deadline = time.monotonic() + 60
        while not view.freshness().current or view.generation() is None:
            assert time.monotonic() < deadline, "the Redis view did not catch up"
            time.sleep(0.2)
        # The city reads its own share of the provincial pool, and only that.
        env_vars = {k: v for k, v in os.environ.items() if not k.startswith("XIANGYUN_")}
        env_vars.update(settings.describe(reveal=True))
        listed = subprocess.run(
            [sys.executable, "-m", "xiangyun", "pools", "list", "population.resident",
             "--region", "220100", "--json"],
            env=env_vars, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert listed.returncode == 0, listed.stderr
        share = [json.loads(line) for line in listed.stdout.splitlines()]
        assert [(x["subject_id"], x["provider"], x["principal"]) for x in share] == [
            (city_env.subject_id, district, city)
        ]
    view.flush()
    ledger = read_ledger(settings, topics)
    assert ledger.published == len(cases) + 1
    assert ledger.missing() == [] and ledger.doubled() == {}
    by_value: dict[bytes, tuple[str, str]] = {}
    pool_schema = registry.by_name("org.xiangyun.PoolRecord")
    rejected_schema = registry.by_name("org.xiangyun.Rejected")
    origins: dict[str, str] = {}
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        settings.kafka.consumer(
            f"p-{uuid.uuid4().hex[:6]}", **{"isolation.level": "read_committed"}
        )
    )
    try:
        for (t, p, o), answers in ledger.outcomes.items():
            c.assign([TopicPartition(t, p, o)])
            [m] = c.consume(1, 10)
            by_value[m.value() or b""] = answers[0]
    finally:
        c.close()
    for label, _, _, value, kind, reason in cases:
        assert by_value[value] == (kind, reason), label
    wrong = [a for v, a in by_value.items() if a == ("rejected", "WRONG_PARTITION")]
    assert len(wrong) == 1, "the record at the wrong partition is rejected, not decided"
    # The city's record reached the provincial pool with the city as its origin.
    c = Consumer(
        settings.kafka.consumer(
            f"q-{uuid.uuid4().hex[:6]}", **{"isolation.level": "read_committed"}
        )
    )
    try:
        pool = topics.pools[next(p for p in topics.pools if p.value == "population")]
        c.assign([TopicPartition(pool, p, 0) for p in range(settings.partitions)])
        for m in c.consume(100, 10):
            rec = decode(m.value() or b"", pool_schema)
            origins[rec["provider"]] = rec["principal"]
    finally:
        c.close()
    assert origins == {"220000-GA": "220000-GA", district: city}
    del rejected_schema
