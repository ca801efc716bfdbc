"""The Redis views of the pools on the real stack: materialize, read, survive a flush of
Redis while running, rebuild to the same digest; aborted transactions never appear.

The view of each test lives in a Redis database picked at random from 1..15 (never db 0,
which others share) under the test's own topic prefix; the test deletes its keys at the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from connectors.generator import SampleGenerator
from streams.catalog.model import Catalog
from streams.kafka.config import StreamsConfig
from streams.kafka.topics import Topics
from streams.views import Materializer, PoolView, digest_entries, entry_of, reader
from streams.wire.codec import SchemaRegistry, encode
from streams.wire.envelope import EnvelopeCodec, record_key
from xiangyun.settings import Settings

ACCEPTED_AT = 1_767_300_000_000


def wait_for(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def config(settings: Settings) -> Iterator[StreamsConfig]:
    db = random.randint(1, 15)
    s = dataclasses.replace(settings, redis_url=f"redis://127.0.0.1:6379/{db}")
    yield s.streams
    PoolView(s.streams).flush()  # the test's own keys only


def pool_records(
    generator: SampleGenerator, codec: EnvelopeCodec, catalog: Catalog, topics: Topics, n: int
) -> list[tuple[str, dict[str, Any]]]:
    """``n`` PoolRecords (topic, record) made from the generator's valid envelopes."""
    pools = {r.id: r.pool for r in catalog}
    out = []
    for i, sample in enumerate(generator.records(n)):
        env = codec.decode(sample.value)
        rec = {
            "resource_id": env.resource_id,
            "subject_id": env.subject_id,
            "version": env.version,
            "observed_at_ms": env.observed_at_ms,
            "content_fingerprint": hashlib.blake2b(env.payload, digest_size=8).digest(),
            "record_id": env.record_id,
            "provider": env.provider,
            "channel": env.channel.value,
            "region": env.region,
            "consent_ref": env.consent_ref,
            "accepted_at_ms": ACCEPTED_AT + i,
            "source_topic": topics.collect("220000-GA"),
            "source_partition": i % 4,
            "source_offset": i,
            "catalog_version": 1,
            "verification_count": i % 3,
            "payload": env.payload,
        }
        out.append((topics.pool(pools[env.resource_id]), rec))
    return out


class PoolWriter:
    """Writes pool records transactionally, as the ingest does; tracks what is committed."""

    def __init__(self, config: StreamsConfig, registry: SchemaRegistry) -> None:
        self.producer = Producer(config.kafka.transactional_producer(f"it-{uuid.uuid4().hex}"))
        self.producer.init_transactions(30)
        # the end a read_committed reader sees: it passes a transaction only once the
        # broker has written its markers, a moment after commit_transaction returned
        self.probe = Consumer(
            config.kafka.consumer(f"it-{uuid.uuid4().hex}", **{"isolation.level": "read_committed"})
        )
        self.written: dict[tuple[str, int], int] = {}
        self.schema = registry.by_name("org.xiangyun.PoolRecord")
        self.current: dict[tuple[str, str], dict[str, Any]] = {}

    def write(
        self,
        records: list[tuple[str, dict[str, Any] | tuple[str, str]]],
        commit: bool = True,
    ) -> None:
        """Records (a dict) or tombstones (resource, subject) in one transaction."""
        self.producer.begin_transaction()
        for topic, rec in records:
            if isinstance(rec, tuple):
                key, value = record_key(*rec), None
            else:
                key = record_key(rec["resource_id"], rec["subject_id"])
                value = encode(self.schema, rec)
            self.producer.produce(topic, key=key, value=value, on_delivery=self._delivered)
        if commit:
            self.producer.commit_transaction(30)
            self._wait_visible()
            for _topic, rec in records:
                if isinstance(rec, tuple):
                    self.current.pop(rec, None)
                else:
                    self.current[(rec["resource_id"], rec["subject_id"])] = rec
        else:
            self.producer.flush(30)
            self.producer.abort_transaction(30)

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        tp = (msg.topic() or "", msg.partition() or 0)
        self.written[tp] = max(self.written.get(tp, 0), (msg.offset() or 0) + 1)

    def _wait_visible(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        for (topic, partition), offset in self.written.items():
            tp = TopicPartition(topic, partition)
            while self.probe.get_watermark_offsets(tp, timeout=10, cached=False)[1] < offset:
                assert time.monotonic() < deadline, f"{topic}[{partition}] not committed"
                time.sleep(0.005)

    def digest(self) -> int:
        return digest_entries(entry_of(r) for r in self.current.values())


@pytest.fixture
def writer(config: StreamsConfig, registry: SchemaRegistry) -> Iterator[PoolWriter]:
    w = PoolWriter(config, registry)
    yield w
    w.probe.close()


@pytest.fixture
def records(generator, codec, catalog, topics) -> Callable[[int], list[tuple[str, Any]]]:
    return lambda n: pool_records(generator, codec, catalog, topics, n)


def _aborted(recs: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """Records that must never be seen: new subjects and new versions of existing ones."""
    out: list[tuple[str, Any]] = []
    for topic, rec in recs:
        out.append((topic, {**rec, "subject_id": "ABORTED-" + rec["subject_id"]}))
        out.append((topic, {**rec, "version": rec["version"] + 10**6, "provider": "ABORTED"}))
    return out


def test_materialize_get_freshness_and_aborted(
    config: StreamsConfig,
    registry: SchemaRegistry,
    writer: PoolWriter,
    records: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recs = records(600)
    writer.write(recs[:400])
    writer.write(_aborted(recs[:50]), commit=False)
    updates = [
        (t, {**r, "version": r["version"] + 1, "verification_count": 2}) for t, r in recs[:30]
    ]
    tombstones = [(t, (r["resource_id"], r["subject_id"])) for t, r in recs[30:40]]
    writer.write([*recs[400:], *updates, *tombstones])

    view = PoolView(config, registry)
    assert view.freshness().generation is None
    with Materializer(config, registry, batch_size=100) as m:
        progress = m.catch_up(timeout=60)
    assert progress.caught_up, progress.lag
    assert progress.records > 0

    fresh = view.freshness()
    assert fresh.current and fresh.behind == 0
    assert fresh.age_s is not None and fresh.age_s < 60
    assert view.digest() == writer.digest()

    # every record as committed; the aborted ones nowhere
    for (resource_id, subject_id), expected in writer.current.items():
        got = view.get(resource_id, subject_id)
        assert got is not None
        assert {k: got[k] for k in expected if k != "payload"} == {
            k: v for k, v in expected.items() if k != "payload"
        }
        assert got["payload_bytes"] == expected["payload"]
        assert got["payload_schema"] is not None and isinstance(got["payload"], dict)
    for _t, r in recs[:50]:
        assert view.get(r["resource_id"], "ABORTED-" + r["subject_id"]) is None
        got = view.get(r["resource_id"], r["subject_id"])
        assert got is None or got["provider"] != "ABORTED"
    for _t, (resource_id, subject_id) in tombstones:
        assert view.get(resource_id, subject_id) is None
    # many at once, in order, alike: found, tombstoned and never written, over chunks
    keys = [*writer.current, *(k for _t, k in tombstones), ("no.such_resource", "nobody")]
    monkeypatch.setattr(reader, "GET_CHUNK", 7)
    assert view.get_many(keys) == [view.get(*k) for k in keys]

    stats = view.stats()
    assert stats.records == len(writer.current)
    assert stats.memory_bytes > 0


def test_redis_flushed_while_materializing_is_replayed(
    config: StreamsConfig, registry: SchemaRegistry, writer: PoolWriter, records: Any
) -> None:
    recs = records(6000)
    for i in range(0, len(recs), 1000):
        writer.write(recs[i : i + 1000])
        if i == 2000:
            writer.write(_aborted(recs[i : i + 20]), commit=False)
    view = PoolView(config, registry)
    client = redis.Redis.from_url(config.redis_url)

    m = Materializer(config, registry, batch_size=50).start()
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            while not stop.is_set():
                m.run_once(0.2)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        wait_for(
            lambda: int(client.hget(view.layout.state, "applied_records") or 0) >= 500,
            what="the first records in Redis",
        )
        first = view.generation()
        # Redis loses everything of this view while the materializer runs (as FLUSHDB or a
        # restart without persistence would do): the private test db only, our keys only.
        assert view.flush() > 0
        # ... and more is committed meanwhile
        more = [(tp, {**r, "version": r["version"] + 7}) for tp, r in recs[:200]]
        writer.write(more)
        wait_for(lambda: view.freshness().current, timeout=120, what="the replay to catch up")
        assert not errors, errors
        assert view.generation() != first
        assert m.rebuilds >= 1
        assert view.digest() == writer.digest()
    finally:
        stop.set()
        t.join(10)
        m.stop()
    # nothing of the old generation is left behind
    assert all(
        view.layout.parse(k.decode()) is None
        or view.layout.parse(k.decode())[0] == view.generation()
        for k in client.scan_iter(match=view.layout.ns + ":*")
    )

    # a rebuild from scratch gives the same digest
    live = view.digest()
    view.flush()
    assert view.digest() == 0
    with Materializer(config, registry) as again:
        assert again.catch_up(timeout=120).caught_up
    assert view.digest() == live == writer.digest()


def test_restart_resumes_from_offsets_in_redis(
    config: StreamsConfig, registry: SchemaRegistry, writer: PoolWriter, records: Any
) -> None:
    recs = records(300)
    writer.write(recs[:150])
    view = PoolView(config, registry)
    with Materializer(config, registry) as m:
        assert m.catch_up(timeout=60).caught_up
        gen, applied = m.generation, m.applied
    writer.write(recs[150:])
    with Materializer(config, registry) as m:
        assert m.generation == gen  # resumed, not replayed
        assert all(m.applied[tp] == o for tp, o in applied.items())
        progress = m.catch_up(timeout=60)
    assert progress.caught_up and progress.rebuilds == 0
    assert progress.records == 150  # only the new records: exactly once
    assert view.digest() == writer.digest()


def test_a_stale_writer_is_refused_and_follows(
    config: StreamsConfig, registry: SchemaRegistry, writer: PoolWriter, records: Any
) -> None:
    """Two materializers on one view (two workers): the one whose offsets are no longer
    those in Redis has its batch refused, goes on from Redis's offsets, applies nothing twice."""
    recs = records(200)
    writer.write(recs[:100])
    view = PoolView(config, registry)
    with Materializer(config, registry) as first, Materializer(config, registry) as second:
        assert first.catch_up(timeout=60).caught_up
        writer.write(recs[100:])
        second._resync(second._read_state())  # second adopts first's generation and offsets
        assert second.generation == first.generation
        assert second.catch_up(timeout=60).caught_up
        # first still thinks the old offsets are applied: its next batch is refused
        got = wait_for(lambda: first.run_once(0.5), what="a batch for the stale writer")
        assert got == -1
        assert first.applied == second.applied
        assert first.catch_up(timeout=30).records == 0
    assert view.digest() == writer.digest()
    assert view.freshness().current
