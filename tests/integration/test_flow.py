"""The first flow against the real broker: source system → collect topic → worker → pools."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import redis
import yaml
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from connectors.generator import SampleGenerator
from connectors.producer import SourceProducer
from streams.kafka.lag import GroupLag
from streams.kafka.topics import Topics
from streams.wire.codec import Schema, SchemaRegistry, decode, encode
from streams.wire.envelope import EnvelopeCodec
from xiangyun.outcomes import collect_lag, read_ledger, wait_for_no_lag
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings
from xiangyun.stack import PROMETHEUS_CONFIG

from .conftest import pool_original

Record = tuple[str, bytes | None, bytes | None]


def read_outcomes(
    settings: Settings, topics: Topics, n: int, timeout: float = 60.0, distinct: bool = False
) -> list[Record]:
    """Every record in the outcome topics, from the beginning, until ``n`` (distinct
    key and value pairs with ``distinct``) or a timeout."""
    c = Consumer(
        settings.kafka.consumer(
            f"read-{uuid.uuid4().hex[:6]}",
            **{"isolation.level": "read_committed"},
        )
    )
    pools = set(topics.pools.values())
    parts = []
    for t in topics.outcomes:
        meta = c.list_topics(t, timeout=10).topics[t]
        parts += [TopicPartition(t, p, OFFSET_BEGINNING) for p in meta.partitions]
    c.assign(parts)
    out: list[Record] = []
    pairs: set[tuple[bytes | None, bytes | None]] = set()
    deadline = time.monotonic() + timeout
    try:
        while (len(pairs) if distinct else len(out)) < n and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                if not m.error():
                    topic, value = m.topic() or "", m.value()
                    if topic in pools and value is not None:
                        value = pool_original(value, settings.schema_dir)
                    out.append((topic, m.key(), value))
                    pairs.add((m.key(), value))
    finally:
        c.close()
    return out


def test_services_answer(base_settings: Settings) -> None:
    admin = AdminClient(base_settings.kafka.admin())
    assert admin.list_topics(timeout=10).brokers, "Kafka has no broker"
    assert redis.Redis.from_url(base_settings.redis_url).ping()
    url = f"http://127.0.0.1:{base_settings.prometheus_port}/api/v1/status/config"
    with urllib.request.urlopen(url, timeout=5) as resp:
        config = json.load(resp)["data"]["yaml"]
    assert "job_name: xiangyun-worker" in config


def test_valid_records_reach_their_pools(
    settings: Settings,
    topics: Topics,
    generator: SampleGenerator,
    producer: SourceProducer,
    worker: WorkerProcess,
) -> None:
    sample = list(generator.records(300))
    producer.send_all(((r.principal, r.key, r.value) for r in sample), progress=False)

    got = read_outcomes(settings, topics, len(sample))

    assert len(got) == len(sample)
    pool_topic = {f"accepted:{p.value}": t for p, t in topics.pools.items()}
    where = {(k, v): t for t, k, v in got}
    for r in sample:
        assert where[(r.key, r.value)] == pool_topic[r.expected], r.expected
    assert len({t for t, _, _ in got}) >= 6, "all six base pools receive records"


def test_bad_input_is_rejected_with_reason_and_original_bytes(
    settings: Settings,
    topics: Topics,
    codec: EnvelopeCodec,
    registry: SchemaRegistry,
    generator: SampleGenerator,
    producer: SourceProducer,
    worker: WorkerProcess,
) -> None:
    broken = SampleGenerator(
        codec, generator.catalog, settings.schema_dir, seed=9, broken_share=1.0, consents=True
    )
    producer.register(broken.extra_schemas)
    sample = list(broken.records(len(broken.kinds) * 2))
    # Their consents are on record: each broken record fails on what its kind breaks.
    producer.consents.grant(broken.consents())  # type: ignore[attr-defined]
    producer.consents.flush()  # type: ignore[attr-defined]
    # Bytes no producer would send, and a record without a key.
    raw = [(None, b"\x00"), (b"k", b"\xc3\x01" + b"\xff" * 8), (b"k", b"\xc3\x01short")]
    producer.send_all(
        [*((r.principal, r.key, r.value) for r in sample), *(("220000-GA", *x) for x in raw)],
        progress=False,
    )
    # The worker keeps running: a valid record after the bad ones is still accepted.
    good = next(iter(generator.records(1)))
    producer.send_all([(good.principal, good.key, good.value)], progress=False)

    total = len(sample) + len(raw) + 1
    got = read_outcomes(settings, topics, total)

    assert len(got) == total
    rejected = registry.by_name("org.xiangyun.Rejected")
    reasons = {}
    for t, _k, v in got:
        if t == topics.rejected:
            rec = decode(v or b"", rejected)
            reasons[(rec["original_key"], rec["original_value"])] = rec["reason"]
            assert topics.principal_of(rec["source_topic"]) is not None
            assert rec["source_offset"] >= 0
    for r in sample:
        assert f"rejected:{reasons[(r.key, r.value)]}" == r.expected, r.kind
    assert reasons[(None, b"\x00")] == "MALFORMED"
    assert reasons[(b"k", b"\xc3\x01" + b"\xff" * 8)] == "UNKNOWN_SCHEMA"
    assert reasons[(b"k", b"\xc3\x01short")] == "MALFORMED"
    accepted = [t for t, k, v in got if (k, v) == (good.key, good.value)]
    assert accepted == [{f"accepted:{p.value}": t for p, t in topics.pools.items()}[good.expected]]
    assert worker.proc is not None and worker.proc.poll() is None, "worker died on bad input"


def test_schema_published_after_worker_start_is_learned(
    settings: Settings,
    topics: Topics,
    codec: EnvelopeCodec,
    registry: SchemaRegistry,
    generator: SampleGenerator,
    producer: SourceProducer,
    worker: WorkerProcess,
) -> None:
    # A source system upgrades its writer schema (a new optional field) while the worker runs.
    spec = json.loads((settings.schema_dir / "payloads" / "legal_person.avsc").read_text())
    spec["fields"].append({"name": "website", "type": ["null", "string"], "default": None})
    writer = Schema.parse(spec)
    template = next(r for r in generator.records(50) if r.expected == "accepted:legal_person")
    env = codec.decode(template.value)
    payload = codec.decode_payload(env)
    payload["website"] = "https://example.gov.cn"
    new_env = dataclasses.replace(env, payload=encode(writer, payload))

    # Precondition, from the running worker itself: before the schema is published, it
    # rejects a record written with it as UNKNOWN_SCHEMA (after its one sync with the topic).
    probe = dataclasses.replace(new_env, record_id=str(uuid.uuid4()))
    producer.send_all([("220000-SCJG", probe.key, codec.encode(probe))], progress=False)
    [(topic, _, value)] = read_outcomes(settings, topics, 1)
    assert topic == topics.rejected, topic
    assert decode(value or b"", registry.by_name("org.xiangyun.Rejected"))["reason"] == (
        "UNKNOWN_SCHEMA"
    )

    producer.register([writer])
    producer.send_all([("220000-SCJG", new_env.key, codec.encode(new_env))], progress=False)

    got = read_outcomes(settings, topics, 2)

    resource = generator.catalog.get(env.resource_id)
    assert resource is not None
    pool = topics.pool(resource.pool)
    assert sorted(t for t, _, _ in got) == sorted([topics.rejected, pool])
    assert [t for t, _, v in got if v != value] == [pool]


def test_worker_killed_mid_stream_gives_each_record_exactly_one_outcome(
    settings: Settings,
    topics: Topics,
    generator: SampleGenerator,
    producer: SourceProducer,
) -> None:
    sample = list(generator.records(60_000))
    producer.send_all(((r.principal, r.key, r.value) for r in sample), progress=False)
    first = WorkerProcess(settings, name=f"victim-{settings.app_id}").start()
    try:
        deadline = time.monotonic() + 60
        while (
            time.monotonic() < deadline
            and (done := first.metric("xiangyun_ingest_records_total{")) < 1
        ):
            time.sleep(0.01)
        first.kill()  # SIGKILL mid-stream, an open transaction left behind
    finally:
        first.stop()
    assert 0 < done < len(sample), "the kill did not land mid-stream"
    with WorkerProcess(settings, name=f"survivor-{settings.app_id}"):
        assert wait_for_no_lag(settings, topics, timeout=120) == 0
    ledger = read_ledger(settings, topics)
    assert sum(high - low for low, high in ledger.collected.values()) == len(sample)
    assert ledger.missing() == [], "records without an outcome after SIGKILL"
    assert ledger.doubled() == {}, "records with two outcomes after SIGKILL"


def test_prometheus_scrapes_the_worker(settings: Settings, free_port: int, tmp_path: Path) -> None:
    """The local stack's Prometheus configuration scrapes a worker. A Prometheus of this test
    runs it, the worker job pointed at this test's worker on a free port: no other process
    on the default port 9108 can answer in its place, and this worker needs no fixed port."""
    assert shutil.which("prometheus"), "prometheus is missing: `xiangyun stack up` installs it"
    target = f"127.0.0.1:{settings.metrics_port}"
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    jobs["xiangyun-worker"]["static_configs"] = [
        {**sc, "targets": [target]} for sc in jobs["xiangyun-worker"]["static_configs"]
    ]
    for rules in config.get("rule_files", []):
        shutil.copy(PROMETHEUS_CONFIG.parent / rules, tmp_path / rules)
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    query = urllib.parse.urlencode({"query": 'xiangyun_worker_up{job="xiangyun-worker"}'})
    url = f"http://127.0.0.1:{free_port}/api/v1/query?{query}"
    with (tmp_path / "prometheus.log").open("w") as log:
        prometheus = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{free_port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        with WorkerProcess(settings, name=f"scraped-{settings.app_id}"):
            deadline = time.monotonic() + 40
            result: list[dict[str, Any]] = []
            while time.monotonic() < deadline and not result:
                try:
                    with urllib.request.urlopen(url, timeout=5) as resp:
                        result = json.load(resp)["data"]["result"]
                except OSError:  # Prometheus is still starting
                    pass
                time.sleep(0.5)
    finally:
        prometheus.terminate()
        prometheus.wait(timeout=30)
    log_tail = (tmp_path / "prometheus.log").read_text()[-2000:]
    assert result, f"Prometheus did not scrape xiangyun_worker_up from {target}\n{log_tail}"
    assert [(r["metric"]["instance"], r["value"][1]) for r in result] == [(target, "1")]


def test_demo_command_adds_up(settings: Settings) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIANGYUN_")}
    env.update(settings.describe(reveal=True))
    done = subprocess.run(
        [sys.executable, "-m", "xiangyun", "demo", "--records", "1000", "--no-stack"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # 1,000 records and every 30th subject's current version sent once more
    published = re.search(r"records published\s+([\d,]+)", done.stdout)
    assert published is not None and 1_000 < int(published[1].replace(",", "")) < 1_040
    assert re.search(r"DUPLICATE\s+(\d+)\s+expected \1", done.stdout), done.stdout
    assert "OK: every record has exactly one outcome" in done.stdout


def test_group_lag_counts_what_the_worker_has_not_committed(
    settings: Settings,
    topics: Topics,
    generator: SampleGenerator,
    producer: SourceProducer,
) -> None:
    sample = list(generator.records(500))
    producer.send_all(((r.principal, r.key, r.value) for r in sample), progress=False)
    assert collect_lag(settings, topics) == 500
    worker = WorkerProcess(settings, name=f"lag-{settings.app_id}").start()
    try:
        assert wait_for_no_lag(settings, topics, timeout=60) == 0
    finally:
        began = time.monotonic()
        code = worker.stop(timeout=30)
    # A stop is a stop, not a kill: the readers waited a minute for barriers no agent took.
    assert code == 0, worker.log_tail()
    assert time.monotonic() - began < 15


def test_group_lag_is_right_while_a_transaction_holds_offsets(settings: Settings) -> None:
    # A busy worker always has a transaction open; asking for "stable" offsets, the broker
    # answered every partition in it without an offset, and the lag read as the whole topic.
    topic = f"{settings.topic_prefix}.lag-probe"
    admin = AdminClient(settings.kafka.admin())
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    plain = Producer(settings.kafka.producer())
    for i in range(10):
        plain.produce(topic, b"v", str(i).encode())
    assert plain.flush(30) == 0
    group = f"{settings.app_id}.lag-probe"
    consumer = Consumer(settings.kafka.consumer(group, **{"enable.auto.commit": False}))
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    while not consumer.consume(10, 1.0):
        assert time.monotonic() < deadline, "nothing read"
    txn = Producer(settings.kafka.transactional_producer(f"{group}.txn"))
    txn.init_transactions(30)

    def offsets_in_a_transaction(offset: int) -> None:
        txn.begin_transaction()
        txn.send_offsets_to_transaction(
            [TopicPartition(topic, 0, offset)], consumer.consumer_group_metadata(), 30
        )

    lag = GroupLag(settings.kafka)
    try:
        offsets_in_a_transaction(4)
        assert lag.of(group, topic.__eq__) == {(topic, 0): 10}  # nothing committed yet
        txn.commit_transaction(30)
        # Its markers are written just after the commit returns.
        deadline = time.monotonic() + 30
        while lag.of(group, topic.__eq__) != {(topic, 0): 6}:
            assert time.monotonic() < deadline, "the committed offset never showed"
            time.sleep(0.05)
        offsets_in_a_transaction(9)  # open: what it covers is still lag
        assert lag.of(group, topic.__eq__) == {(topic, 0): 6}
        txn.abort_transaction(30)
        assert lag.of(group, topic.__eq__) == {(topic, 0): 6}
    finally:
        consumer.close()
