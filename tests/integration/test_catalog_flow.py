"""The catalog in Kafka against the real broker: bootstrap, the review workflow, and its effect
on a running worker (no restart), plus the `xiangyun catalog` command line.

Each test has its own topics (the ``settings`` fixture), whose catalog topic already holds
the starter catalog. Outcomes are read back by record key from the pool, verification and
rejected topics; every wait is bounded.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from connectors.producer import SourceProducer
from streams.catalog.model import Catalog, CatalogError, Resource, Status, schema_file_loader
from streams.catalog.review import CatalogEvent, CatalogSnapshot
from streams.core.channel import Channel
from streams.core.identifiers import make_citizen_id
from streams.core.pools import Pool
from streams.kafka.catalog_store import CatalogStore, _close
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import Topics
from streams.units.model import UnitRegister
from streams.wire.codec import Schema, SchemaRegistry, decode, encode
from streams.wire.envelope import Envelope, EnvelopeCodec
from xiangyun.outcomes import end_offsets
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings
from xiangyun_data import schema_dir, units_dir

from .conftest import pool_original

RESIDENT = "population.resident"
NEW_ID = "population.disability_certificate"
NEW_SPEC_PATH = "payloads/disability_certificate.avsc"
NEW_SPEC: dict[str, Any] = {
    "type": "record",
    "name": "DisabilityCertificate",
    "namespace": "org.xiangyun.payload",
    "doc": "Disability certificate (残疾人证): collection spec of " + NEW_ID,
    "fields": [
        {"name": "certificate_no", "type": "string"},
        {"name": "citizen_id", "type": "string"},
        {"name": "name", "type": "string"},
        {"name": "category", "type": "string"},
        {"name": "grade", "type": "int"},
        {"name": "issued_on", "type": "string"},
    ],
}
NEW_ENTRY: dict[str, Any] = {
    "id": NEW_ID,
    "name": "Disability certificates (残疾人证信息)",
    "department": "220000-CL",
    "provider": "220000-CL",
    "pool": "population",
    "schema": NEW_SPEC_PATH,
    "subject": "citizen_id",
    "field_rules": {
        "citizen_id": {"check": "citizen_id"},
        "category": {"enum": ["VISUAL", "HEARING", "SPEECH", "PHYSICAL", "INTELLECTUAL", "MENTAL"]},
        "grade": {"min": 1, "max": 4},
        "issued_on": {"check": "date"},
    },
    "update_frequency": "daily",
    "share": {
        "attribute": "conditional",
        "conditions": "social assistance and employment duties",
        "legal_basis": "Law on the Protection of Persons with Disabilities, art. 2",
    },
    "open": {"attribute": "not_open", "legal_basis": "Personal Information Protection Law"},
    "channels": ["DIRECT"],
    "region": "220000",
}
EFFECT_WITHIN_S = 15.0  # a catalog change must reach the running worker within this

Outcome = tuple[str, str | None]  # (topic, reason code if rejected)


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def spec_dir(tmp_path: Path) -> Path:
    """A schema directory holding only the new resource's collection spec."""
    root = tmp_path / "avro"
    (root / "payloads").mkdir(parents=True)
    (root / NEW_SPEC_PATH).write_text(json.dumps(NEW_SPEC), encoding="utf-8")
    return root


class Outcomes:
    """Reads the outcome topics from their current ends; finds a record's outcome by its
    key and bytes (a rejected record keeps its original bytes)."""

    def __init__(self, settings: Settings, topics: Topics, registry: SchemaRegistry) -> None:
        self.rejected_topic = topics.rejected
        self.rejected = registry.by_name("org.xiangyun.Rejected")
        self.pools = set(topics.pools.values())
        self.schema_dir = settings.schema_dir
        self.seen: dict[tuple[bytes, bytes], list[Outcome]] = {}
        self._c = Consumer(
            settings.kafka.consumer(
                f"catalog-it-{uuid.uuid4().hex[:8]}",
                **{"isolation.level": "read_committed"},
            )
        )
        start = end_offsets(settings, topics.outcomes)
        self._c.assign([TopicPartition(t, p, off) for (t, p), off in start.items()])

    def of(self, record: tuple[bytes, bytes], timeout: float = 30.0) -> Outcome:
        deadline = time.monotonic() + timeout
        while record not in self.seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no outcome for {record[0]!r} within {timeout}s"
            for m in self._c.consume(500, min(0.2, left)):
                if m.error():
                    continue
                topic, value = m.topic() or "", m.value() or b""
                reason = None
                if topic == self.rejected_topic:
                    body = decode(value, self.rejected)
                    reason, value = body["reason"], body["original_value"] or b""
                elif topic in self.pools:
                    value = pool_original(value, self.schema_dir)
                self.seen.setdefault((m.key() or b"", value), []).append((topic, reason))
        got = self.seen[record]
        assert len(got) == 1, f"{record[0]!r} has {len(got)} outcomes: {got}"
        return got[0]

    def close(self) -> None:
        self._c.close()


@pytest.fixture
def outcomes(settings: Settings, topics: Topics, registry: SchemaRegistry) -> Iterator[Outcomes]:
    o = Outcomes(settings, topics, registry)
    try:
        yield o
    finally:
        o.close()


class Records:
    """Envelopes for one resource, each about a new subject (so each has its own key)."""

    def __init__(self, codec: EnvelopeCodec, seed: int) -> None:
        self.codec = codec
        self.rng = random.Random(seed)
        self.n = 0

    def _citizen(self) -> str:
        birth = dt.date(1950, 1, 1) + dt.timedelta(days=self.rng.randrange(20_000))
        return make_citizen_id(self.rng, "220102", birth)

    def _wrap(
        self, resource_id: str, subject: str, payload: bytes, provider: str, region: str
    ) -> tuple[bytes, bytes]:
        self.n += 1
        env = Envelope(
            record_id=str(uuid.uuid4()),
            resource_id=resource_id,
            subject_id=subject,
            provider=provider,
            region=region,
            channel=Channel.DIRECT,
            observed_at_ms=int(time.time() * 1000),
            version=self.n,
            payload=payload,
        )
        return env.key, self.codec.encode(env)

    def resident(
        self, provider: str = "220000-GA", region: str = "220000", cid: str | None = None
    ) -> tuple[bytes, bytes]:
        cid = cid or self._citizen()
        payload = {
            "citizen_id": cid,
            "name": "张伟",
            "gender": "M" if int(cid[16]) % 2 else "F",
            "birth_date": f"{cid[6:10]}-{cid[10:12]}-{cid[12:14]}",
            "ethnicity": "汉族",
            "household_region": "220102",
            "address": None,
        }
        spec = self.codec.registry.by_name("org.xiangyun.payload.Resident")
        return self._wrap(RESIDENT, cid, encode(spec, payload), provider, region)

    def certificate(self, spec: Schema) -> tuple[bytes, bytes]:
        cid = self._citizen()
        payload = {
            "certificate_no": f"{cid}{self.rng.randrange(10, 100)}",
            "citizen_id": cid,
            "name": "李娜",
            "category": "PHYSICAL",
            "grade": 2,
            "issued_on": "2024-05-17",
        }
        return self._wrap(NEW_ID, cid, encode(spec, payload), "220000-CL", "220000")


#: the starter register, to publish each record through its provider's principal's topic
UNITS = UnitRegister.from_dir(units_dir()).approved()


def send(producer: SourceProducer, record: tuple[bytes, bytes]) -> tuple[bytes, bytes]:
    key, value = record
    provider = (
        EnvelopeCodec(SchemaRegistry.from_dir(schema_dir()), schema_dir()).decode(value).provider
    )
    principal = UNITS.principal_of(provider)
    assert principal is not None, provider
    producer.send(principal, key, value)
    producer.flush(30)
    return record


def until(
    make: Callable[[], tuple[bytes, bytes]],
    producer: SourceProducer,
    outcomes: Outcomes,
    want: Outcome,
    within: float = EFFECT_WITHIN_S,
) -> tuple[list[Outcome], float]:
    """Publish a new record (one after another) until one gets ``want``; the outcomes on
    the way and the seconds it took. Fails after ``within`` seconds."""
    began = time.monotonic()
    seen: list[Outcome] = []
    while True:
        got = outcomes.of(send(producer, make()))
        seen.append(got)
        took = time.monotonic() - began
        if got == want:
            return seen, took
        assert took < within, f"not {want} within {within}s; outcomes: {Counter(seen)}"
        time.sleep(0.25)


def rejected(topics: Topics, reason: str) -> Outcome:
    return (topics.rejected, reason)


def cli(settings: Settings, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIANGYUN_")}
    env.update(settings.describe())
    return subprocess.run(
        [sys.executable, "-m", "xiangyun", "catalog", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- bootstrap -------------------------------------------------------------------------------


def records_of(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    """Every committed record of a one-partition topic, in order: (key, value)."""
    consumer = Consumer(
        settings.kafka.consumer(
            f"catalog-it-{uuid.uuid4().hex[:8]}", **{"isolation.level": "read_committed"}
        )
    )
    try:
        end = end_offsets(settings, [topic])[(topic, 0)]
        consumer.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + 30
        while consumer.position([TopicPartition(topic, 0)])[0].offset < end:
            assert time.monotonic() < deadline, f"{topic} not read to {end} within 30s"
            for m in consumer.consume(500, 0.2):
                if not m.error():
                    out.append((m.key() or b"", m.value() or b""))
        return out
    finally:
        consumer.close()


def topic_config(settings: Settings, topic: str) -> dict[str, str]:
    admin = AdminClient(settings.kafka.admin())
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(30)
    return {k: str(v.value) for k, v in config.items()}


def test_bootstrap_loads_the_starter_catalog_once(settings: Settings) -> None:
    fresh = dataclasses.replace(settings, topic_prefix=f"{settings.topic_prefix}-boot")
    topics = Topics.of(fresh.streams)
    starter = Catalog.from_dir(fresh.catalog_dir)
    with CatalogStore(fresh.streams) as store:
        events = store.bootstrap()
        # every starter entry submitted by its department, then approved by the bureau
        assert sorted(ev.resource_id for ev in events) == sorted(
            [r.id for r in starter] + [r.id for r in starter]
        )
        assert {r.id for r in store.current() if r.in_force} == {r.id for r in starter}
        end = end_offsets(fresh, [topics.catalog, topics.catalog_changes])
        assert store.bootstrap() == []  # second run: nothing to do
    with CatalogStore(fresh.streams) as again:
        assert again.bootstrap() == []  # nor from another process's view of the topic
        rebuilt = again.current()  # the catalog rebuilt from Kafka alone
    # nothing was written, to either topic
    assert end_offsets(fresh, [topics.catalog, topics.catalog_changes]) == end
    for entry in starter:
        got = rebuilt.in_force(entry.id)
        assert got is not None and got.provider == entry.provider and got.version == 1
    # One change-log record per change, one snapshot per resource, written together.
    changes = records_of(fresh, topics.catalog_changes)
    assert [CatalogEvent.from_json(v) for _, v in changes] == events
    snapshots = [CatalogSnapshot.from_json(v) for _, v in records_of(fresh, topics.catalog)]
    assert sorted(s.resource_id for s in snapshots) == sorted(r.id for r in starter)
    for snap in snapshots:  # each names the offset of its resource's last change
        key, value = changes[snap.change_offset]
        assert key == snap.key and CatalogEvent.from_json(value).seq == snap.state.seq == 2
    # Normal limits: the catalog topics take no special message size; the log is kept.
    assert int(topic_config(fresh, topics.catalog)["max.message.bytes"]) <= 1_048_588
    log_config = topic_config(fresh, topics.catalog_changes)
    assert (log_config["cleanup.policy"], log_config["retention.ms"]) == ("delete", "-1")
    # The specs went to the schema topic: any consumer can decode payloads written with them.
    registry = SchemaRegistry()
    schemas = SchemaTopic(fresh.kafka, topics.schemas, registry).follow()
    try:
        for entry in starter:
            assert Schema.load(fresh.schema_dir / entry.schema).fingerprint in registry
    finally:
        schemas.close()


def test_history_comes_from_the_change_log_and_records_stay_small(
    settings: Settings, catalog_store: CatalogStore, spec_dir: Path
) -> None:
    """Many reviewed changes: show has them all, read from the change log, while each
    record written stays the size of the first ones and the snapshot holds no history."""
    topics = Topics.of(settings.streams)
    new = Resource.from_mapping(NEW_ENTRY)
    store = CatalogStore(settings.streams, schema_loader=schema_file_loader(spec_dir))
    with store:
        for i in range(6):
            store.submit(dataclasses.replace(new, name=f"Disability certificates {i}"))
            store.reject(NEW_ID, f"round {i}: legal basis needs the article")
        store.submit(new)
        store.approve(NEW_ID, "complete")
        state = store.state(NEW_ID)
        history = store.history(NEW_ID)
    assert state is not None and history is not None
    assert state.seq == history.seq == 14
    assert [v.resource.version for v in state.versions] == [7]  # bounded: no history
    assert [v.resource.version for v in history.versions] == list(range(1, 8))
    assert [c.reason for c in history.history if c.reason][:2] == [
        "round 0: legal basis needs the article",
        "round 1: legal basis needs the article",
    ]
    # The history is the change log's records of that key, in order.
    logged = [
        CatalogEvent.from_json(v)
        for k, v in records_of(settings, topics.catalog_changes)
        if k == NEW_ID.encode()
    ]
    assert tuple(ev.change for ev in logged) == history.history
    sizes = [len(ev.to_json()) for ev in logged]
    assert max(sizes[2:]) <= max(sizes[:2]) + 16  # later changes are no larger
    snaps = [v for k, v in records_of(settings, topics.catalog) if k == NEW_ID.encode()]
    assert len(snaps) == 14 and max(map(len, snaps)) <= len(snaps[1]) + 64
    assert "history" not in json.loads(snaps[-1])["state"]

    r = cli(settings, "show", NEW_ID)
    assert r.returncode == 0, r.stderr
    shown = r.stdout.split("history:", 1)[1]
    assert shown.count("rejected  v") == 6 and "approved  v7  submitted → approved" in shown
    assert "reason: round 5: legal basis needs the article" in shown
    assert "~ name: Disability certificates 0 → Disability certificates 1" in shown
    assert "v1   rejected" in r.stdout and "v7   approved" in r.stdout
    r = cli(settings, "show", NEW_ID, "--json")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["history"]) == 14


def test_a_writer_overtaken_by_another_writes_nothing(settings: Settings) -> None:
    """Two writers at once: the later one fences the earlier, whose change is refused with
    "changed concurrently, retry"; the topic holds one consistent history."""
    with CatalogStore(settings.streams) as slow, CatalogStore(settings.streams) as fast:
        slow.start()
        producer = slow._become_writer()  # slow reads the catalog, computes its change ...
        slow.sync()
        book = slow._book.copy()
        retire = book.retire(RESIDENT, "220000-ZSJ", "slow writer", 1)
        retired = book.state(RESIDENT)
        assert retired is not None
        # ... meanwhile another writer changes the same resource and commits.
        fast.retire(RESIDENT, "fast writer")
        end = end_offsets(settings, [fast.topic, fast.changes_topic])
        with pytest.raises(CatalogError, match="changed concurrently"):
            slow._write(producer, retire, [retired])
        _close(producer)
        # the slow change never landed, on either topic
        assert end_offsets(settings, [fast.topic, fast.changes_topic]) == end
        fast.sync()
        history = fast.history(RESIDENT)
        assert history is not None and history.history[-1].reason == "fast writer"
        assert [c.reason for c in history.history].count("slow writer") == 0
    with CatalogStore(settings.streams) as rebuilt:  # and a reader starting now sees the same
        state = rebuilt.start().state(RESIDENT)
        assert state is not None and state.seq == history.seq
        assert rebuilt.current().in_force(RESIDENT) is None


# -- the workflow's effect on a running worker -----------------------------------------------


def test_approved_resource_is_collected_by_the_running_worker(
    settings: Settings,
    topics: Topics,
    codec: EnvelopeCodec,
    producer: SourceProducer,
    outcomes: Outcomes,
    spec_dir: Path,
    worker: WorkerProcess,
) -> None:
    pid = worker.pid
    records = Records(codec, seed=1)
    spec = Schema.parse(NEW_SPEC)
    new = Resource.from_mapping(NEW_ENTRY)

    # Not in the catalog yet.
    assert outcomes.of(send(producer, records.certificate(spec))) == rejected(
        topics, "UNKNOWN_RESOURCE"
    )
    with CatalogStore(settings.streams, schema_loader=schema_file_loader(spec_dir)) as store:
        (submitted,) = store.submit(new)
        assert submitted.change.to_status is Status.SUBMITTED
        assert submitted.change.actor == "220000-CL"  # the department, by default
        # Submitted is not in force: refused, once the worker has seen the submission.
        seen, _ = until(
            lambda: records.certificate(spec),
            producer,
            outcomes,
            rejected(topics, "RESOURCE_NOT_IN_FORCE"),
        )
        assert set(seen) <= {
            rejected(topics, r) for r in ("UNKNOWN_RESOURCE", "RESOURCE_NOT_IN_FORCE")
        }

        approved = store.approve(NEW_ID, "complete, legal basis checked")
        assert approved.change.to_status is Status.APPROVED
        assert store.current().in_force(NEW_ID) is not None
        seen, took = until(
            lambda: records.certificate(spec),
            producer,
            outcomes,
            (topics.pool(Pool.POPULATION), None),
        )
    assert set(seen[:-1]) <= {rejected(topics, "RESOURCE_NOT_IN_FORCE")}
    print(f"approval took effect in the running worker after {took:.2f}s")
    # In force from now on, for every record; the worker was never restarted.
    for _ in range(3):
        sent = send(producer, records.certificate(spec))
        assert outcomes.of(sent) == (topics.pool(Pool.POPULATION), None)
    assert worker.pid == pid and worker.proc is not None and worker.proc.poll() is None


def test_retired_resource_is_refused_by_the_running_worker(
    settings: Settings,
    topics: Topics,
    codec: EnvelopeCodec,
    producer: SourceProducer,
    outcomes: Outcomes,
    catalog_store: CatalogStore,
    worker: WorkerProcess,
) -> None:
    records = Records(codec, seed=2)
    pool = (topics.pool(Pool.POPULATION), None)
    assert outcomes.of(send(producer, records.resident())) == pool

    event = catalog_store.retire(RESIDENT, "replaced by a new registry", actor="220000-ZSJ")
    assert event.change.to_status is Status.RETIRED
    seen, took = until(
        records.resident, producer, outcomes, rejected(topics, "RESOURCE_NOT_IN_FORCE")
    )
    assert set(seen[:-1]) <= {pool}  # accepted only until the worker saw the retirement
    print(f"retirement took effect in the running worker after {took:.2f}s")
    for _ in range(5):
        sent = send(producer, records.resident())
        assert outcomes.of(sent) == rejected(topics, "RESOURCE_NOT_IN_FORCE")
    assert worker.proc is not None and worker.proc.poll() is None


def test_record_from_a_unit_that_is_not_the_provider_is_verification_evidence(
    topics: Topics,
    codec: EnvelopeCodec,
    producer: SourceProducer,
    outcomes: Outcomes,
    catalog_store: CatalogStore,
    worker: WorkerProcess,
) -> None:
    resident = catalog_store.current().in_force(RESIDENT)
    assert resident is not None and resident.provider == "220000-GA"
    records = Records(codec, seed=3)
    cid = make_citizen_id(random.Random(30), "220102", dt.date(1980, 6, 1))
    # Changchun's public security bureau forwards the same person: evidence, not the truth.
    city = send(producer, records.resident(provider="220100-GA", region="220100", cid=cid))
    assert outcomes.of(city) == (topics.verification, None)
    # The authoritative provider's record of that person goes into the pool.
    own = send(producer, records.resident(cid=cid))
    assert outcomes.of(own) == (topics.pool(Pool.POPULATION), None)


def test_a_catalog_record_the_worker_cannot_read_does_not_stop_it(
    settings: Settings,
    topics: Topics,
    codec: EnvelopeCodec,
    producer: SourceProducer,
    outcomes: Outcomes,
    worker: WorkerProcess,
) -> None:
    raw = Producer(settings.kafka.producer())
    raw.produce(topics.catalog, b"{not a catalog event", RESIDENT.encode())
    raw.produce(topics.catalog, None, b"population.unknown")  # a tombstone
    assert raw.flush(30) == 0
    records = Records(codec, seed=4)
    # The catalog still holds what it held: the resident resource is in force.
    assert outcomes.of(send(producer, records.resident())) == (topics.pool(Pool.POPULATION), None)
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    deadline = time.monotonic() + 20
    text = ""
    while time.monotonic() < deadline:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
        if "xiangyun_catalog_bad_records 2.0" in text:
            break
        time.sleep(0.5)
    assert "xiangyun_catalog_bad_records 2.0" in text, text[-2000:]
    assert worker.proc is not None and worker.proc.poll() is None


# -- the command line ------------------------------------------------------------------------


def test_catalog_cli_round_trip(settings: Settings, tmp_path: Path, spec_dir: Path) -> None:
    entry_file = tmp_path / "disability.yaml"
    entry_file.write_text(yaml.safe_dump(NEW_ENTRY, allow_unicode=True), encoding="utf-8")

    r = cli(settings, "submit", str(entry_file), "--as", "220000-GA", "--schema-dir", str(spec_dir))
    assert r.returncode == 2, r.stderr
    assert "220000-GA may not submit population.disability_certificate" in r.stderr
    assert "department 220000-CL" in r.stderr

    r = cli(settings, "submit", str(entry_file), "--schema-dir", str(spec_dir))
    assert r.returncode == 0, r.stderr
    assert f"{NEW_ID}: version 1 submitted by 220000-CL" in r.stdout

    r = cli(settings, "review", NEW_ID, "--approve", "--reason", "complete")
    assert r.returncode == 0, r.stderr
    assert f"{NEW_ID}: version 1 approved by 220000-ZSJ" in r.stdout

    r = cli(settings, "review", NEW_ID, "--reject", "--reason", "too late")
    assert r.returncode == 2
    assert f"cannot reject {NEW_ID}: no version awaits review" in r.stderr

    r = cli(settings, "show", NEW_ID)
    assert r.returncode == 0, r.stderr
    assert "in force: version 1" in r.stdout
    history = r.stdout.split("history:", 1)[1]
    assert "220000-CL    submitted v1  submitted" in history
    assert "220000-ZSJ   approved  v1  submitted → approved" in history
    assert "reason: complete" in history
    assert "+ provider: 220000-CL" in history and "+ spec.fields.grade: int" in history

    r = cli(settings, "list")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:] if line}
    assert rows[NEW_ID][:6] == [NEW_ID, "approved", "1", "population", "220000-CL", "220000"]
    assert rows[RESIDENT][1] == "approved"  # the starter catalog is there too

    out = tmp_path / "catalog.jsonld"
    r = cli(settings, "export-dcat", "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["@type"] == "dcat:Catalog" and "dcat" in doc["@context"]
    datasets = {d["dct:identifier"]: d for d in doc["dcat:dataset"]}
    assert datasets[NEW_ID]["@type"] == "dcat:Dataset"
    assert datasets[NEW_ID]["xy:provider"] == "220000-CL"
    assert RESIDENT in datasets

    r = cli(settings, "retire", NEW_ID, "--reason", "merged into the resident registry")
    assert r.returncode == 0, r.stderr
    r = cli(settings, "list")
    assert NEW_ID not in r.stdout and "1 retired or rejected not shown" in r.stdout
    r = cli(settings, "list", "--all")
    assert any(line.split()[:2] == [NEW_ID, "retired"] for line in r.stdout.splitlines())
