"""The ingest agent under Faust's test context, with the real Runtime: decisions, the
transaction protocol (outputs and offsets commit together), failed commits, barriers and
internal errors. Only the producer is a recording stand-in (no broker in a unit test)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
from collections import Counter
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from connectors.generator import SampleGenerator
from streams.app import create_app
from streams.catalog.model import Catalog
from streams.core.consent import ConsentTerms, check_terms
from streams.core.reasons import Reason
from streams.ingest.agent import register_ingest
from streams.ingest.decision import OutcomeKind, file_spec_loader
from streams.ingest.runtime import (
    InternalErrors,
    Runtime,
    StaticCatalog,
    StaticUnits,
)
from streams.kafka.batch_reader import Barrier
from streams.kafka.topics import Topics
from streams.kafka.transaction import Transaction, TransactionFailed
from streams.units.model import UnitRegister
from streams.wire.codec import Schema, encode
from tests.unit.kafka_fakes import FakeMessage, FakeProducer
from xiangyun.settings import Settings

ROOT = Path(__file__).resolve().parents[4]


class TxnProducer(FakeProducer):
    """The part of a transactional confluent_kafka.Producer the runtime uses; records the
    transaction protocol and can fail a commit (no broker in a unit test)."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.open: list[tuple[str, bytes | None, int]] = []
        self.committed: list[tuple[str, bytes | None, int]] = []
        self.offsets: list[list[tuple[int, int]]] = []
        self.fail_commit = False

    def begin_transaction(self) -> None:
        assert not self.open, "a transaction begun inside another"
        self.log.append("begin")

    def produced(self, topic: str, value: bytes | None, partition: int, _on_delivery: Any) -> None:
        self.open.append((topic, value, partition))

    def send_offsets_to_transaction(self, offsets: Any, metadata: Any, _t: float) -> None:
        assert metadata == "group-metadata"
        self.offsets.append([(tp.partition, tp.offset) for tp in offsets])
        self.log.append("offsets")

    def commit_transaction(self, _t: float) -> None:
        if self.fail_commit:
            from confluent_kafka import KafkaError, KafkaException

            raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))
        self.log.append(f"commit:{len(self.open)}")
        self.committed += self.open
        self.open = []

    def abort_transaction(self, _t: float) -> None:
        self.log.append("abort")
        self.open = []


def make_runtime(settings: Settings) -> tuple[Runtime, TxnProducer]:
    config = settings.streams
    runtime = Runtime(
        config,
        catalog=StaticCatalog(
            Catalog.from_dir(settings.catalog_dir), file_spec_loader(settings.schema_dir)
        ),
        units=StaticUnits(UnitRegister.from_dir(settings.units_dir).approved()),
        consents=False,
    )
    producer = TxnProducer()
    runtime._txn = Transaction(producer, "ingest")  # type: ignore[arg-type]
    return runtime, producer


class Source:
    """The reader's side the agent uses: the channel, group metadata, idleness."""

    def __init__(self, app: Any) -> None:
        self.channel = app.channel()
        self.idle_answer = True

    def group_metadata(self) -> object:
        return "group-metadata"

    def idle(self) -> bool:
        return self.idle_answer


@pytest.fixture
def settings() -> Settings:
    # One partition: every key's home is partition 0, where the fake messages stand.
    return Settings.from_env(
        {}, topic_prefix="unit", app_id="unit-ingest", batch_size=50, partitions=1
    )


def _batches(sample: list[Any], size: int) -> list[list[FakeMessage]]:
    return [
        [FakeMessage(r.key, r.value, i + j) for j, r in enumerate(sample[i : i + size])]
        for i in range(0, len(sample), size)
    ]


def _run(settings: Settings, runtime: Runtime, items: list[Any], until: Any) -> list[BaseException]:
    fatal: list[BaseException] = []

    async def run() -> None:
        app = create_app(settings.streams)
        app.finalize()
        source = Source(app)
        register_ingest(app, runtime, source, on_fatal=fatal.append)
        agent = app.agents["ingest"]
        async with agent.test_context() as ctx:

            async def feed() -> None:
                for item in items:
                    await ctx.put(item)  # returns once the agent took the item

            # Fed alongside: an agent that ended takes no more items.
            feeding = asyncio.ensure_future(feed())
            deadline = asyncio.get_running_loop().time() + 10
            while not until() and not fatal:
                assert asyncio.get_running_loop().time() < deadline, "agent did not drain"
                await asyncio.sleep(0.02)
            if not fatal:
                await asyncio.wait_for(feeding, 10)
            feeding.cancel()
            await asyncio.gather(feeding, return_exceptions=True)

    asyncio.run(run())
    return fatal


def test_agent_commits_outputs_and_offsets_in_one_transaction(settings: Settings) -> None:
    runtime, producer = make_runtime(settings)
    gen = SampleGenerator(
        runtime.codec, runtime.catalog.current(), settings.schema_dir, seed=3, broken_share=0.2
    )
    sample = list(gen.records(120))
    batches = _batches(sample, 40)

    fatal = _run(settings, runtime, batches, lambda: len(producer.offsets) == 3)

    assert fatal == []
    # idle after each batch: one transaction per batch, its outputs and its offsets
    assert producer.log == ["begin", "offsets", "commit:40"] * 3
    assert producer.offsets == [[(0, 40)], [(0, 80)], [(0, 120)]]
    assert all(part == 0 for _, _, part in producer.committed), "outputs keep the source partition"
    topics = Topics.of(settings.streams)
    kinds = Counter(
        "accepted" if t in topics.pools.values() else t.rsplit(".", 1)[1]
        for t, _, _ in producer.committed
    )
    want = Counter(r.expected.split(":")[0] for r in sample)
    assert kinds == want


class SlowCommit:
    """Holds the producer's commit until released, as a busy broker does."""

    def __init__(self, producer: TxnProducer) -> None:
        self.started = threading.Event()
        self.release = threading.Event()
        commit = producer.commit_transaction

        def slow(t: float) -> None:
            self.started.set()
            assert self.release.wait(10), "the test never released the commit"
            commit(t)

        producer.commit_transaction = slow  # type: ignore[method-assign]


async def _until(cond: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + 10
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.01)


def _with_agent(
    settings: Settings, runtime: Runtime, steps: Callable[[Any, Source], Awaitable[None]]
) -> list[BaseException]:
    fatal: list[BaseException] = []

    async def run() -> None:
        app = create_app(settings.streams)
        app.finalize()
        source = Source(app)
        register_ingest(app, runtime, source, on_fatal=fatal.append)
        async with app.agents["ingest"].test_context() as ctx:
            await steps(ctx, source)

    asyncio.run(run())
    return fatal


def test_batches_waiting_behind_a_commit_are_decided_then_produced_after_it(
    settings: Settings,
) -> None:
    runtime, producer = make_runtime(settings)
    gen = SampleGenerator(
        runtime.codec, runtime.catalog.current(), settings.schema_dir, seed=8, broken_share=0.0
    )
    batches = _batches(list(gen.records(40)), 10)
    slow = SlowCommit(producer)
    decided: list[int] = []
    decide = runtime.decide
    runtime.decide = lambda records: (decided.append(len(records)), decide(records))[1]  # type: ignore[method-assign]

    async def steps(ctx: Any, source: Source) -> None:
        await asyncio.wait_for(ctx.put(batches[0]), 10)  # idle after it: produced and committing
        await _until(slow.started.is_set, "the first commit")
        source.idle_answer = False  # batches wait in the channel behind the commit
        await asyncio.wait_for(ctx.put(batches[1]), 10)
        await asyncio.wait_for(ctx.put(batches[2]), 10)
        await _until(lambda: len(decided) == 3, "three batches decided")
        # librdkafka takes no output during a commit: decided, held, nothing produced
        assert len(producer.open) == 10 and producer.log == ["begin", "offsets"]
        source.idle_answer = True
        slow.release.set()
        await asyncio.wait_for(ctx.put(batches[3]), 10)
        await _until(lambda: len(producer.offsets) == 2, "the second commit")

    assert _with_agent(settings, runtime, steps) == []
    assert producer.log == ["begin", "offsets", "commit:10", "begin", "offsets", "commit:30"]
    assert producer.offsets == [[(0, 10)], [(0, 40)]]
    assert len(producer.committed) == 40 and producer.open == []


def test_a_batch_decided_during_a_commit_is_committed_without_more_input(
    settings: Settings,
) -> None:
    """Nothing waits in the channel: the agent waits for the commit and produces at once
    (deciding ahead for a batch that may never come would hold this one forever)."""
    runtime, producer = make_runtime(settings)
    gen = SampleGenerator(
        runtime.codec, runtime.catalog.current(), settings.schema_dir, seed=9, broken_share=0.0
    )
    batches = _batches(list(gen.records(20)), 10)
    slow = SlowCommit(producer)

    async def steps(ctx: Any, _source: Source) -> None:
        await asyncio.wait_for(ctx.put(batches[0]), 10)
        await _until(slow.started.is_set, "the first commit")
        await asyncio.wait_for(ctx.put(batches[1]), 10)
        slow.release.set()
        await _until(lambda: len(producer.offsets) == 2, "the second commit")

    assert _with_agent(settings, runtime, steps) == []
    assert producer.offsets == [[(0, 10)], [(0, 20)]]
    assert producer.log[-1] == "commit:10" and producer.open == []


def test_a_failed_commit_is_fatal_and_nothing_is_committed(settings: Settings) -> None:
    runtime, producer = make_runtime(settings)
    producer.fail_commit = True
    gen = SampleGenerator(
        runtime.codec, runtime.catalog.current(), settings.schema_dir, seed=4, broken_share=0.0
    )
    batches = _batches(list(gen.records(30)), 30)

    fatal = _run(settings, runtime, batches, lambda: False)

    assert len(fatal) == 1 and isinstance(fatal[0], TransactionFailed)
    assert producer.committed == []
    assert "abort" in producer.log or producer.log[-1] == "offsets"


def test_a_barrier_commits_what_was_handed_over_before_it(settings: Settings) -> None:
    runtime, producer = make_runtime(settings)
    gen = SampleGenerator(
        runtime.codec, runtime.catalog.current(), settings.schema_dir, seed=5, broken_share=0.0
    )
    batches = _batches(list(gen.records(20)), 10)
    barrier = Barrier()

    fatal = _run(settings, runtime, [*batches, barrier], lambda: barrier.wait(0))

    assert fatal == [] and barrier.ok
    assert len(producer.committed) == 20 and producer.open == []


def test_a_failure_mid_batch_ends_the_worker_and_nothing_after_it_commits(
    settings: Settings,
) -> None:
    # Faust restarts a crashed agent: it would have taken the next batch and committed it,
    # with offsets past the batch it lost half-way through producing.
    runtime, producer = make_runtime(settings)
    gen = SampleGenerator(
        runtime.codec, runtime.catalog.current(), settings.schema_dir, seed=7, broken_share=0.0
    )
    batches = _batches(list(gen.records(30)), 10)
    produce = runtime.produce
    calls: list[int] = []

    def failing_second(outcomes: Any, offsets: Any) -> None:
        calls.append(len(outcomes))
        if len(calls) == 2:
            raise RuntimeError("the producer is gone")
        produce(outcomes, offsets)

    runtime.produce = failing_second  # type: ignore[method-assign]

    fatal = _run(settings, runtime, batches, lambda: False)

    assert [type(e) for e in fatal] == [RuntimeError]
    assert calls == [10, 10]  # the third batch was never produced
    assert producer.offsets == [[(0, 10)]]  # only the first batch committed


def test_too_many_internal_errors_in_a_row_stop_the_worker(settings: Settings) -> None:
    runtime, producer = make_runtime(settings)
    runtime.config = dataclasses.replace(runtime.config, max_internal_errors=3)

    def broken(*_a: Any, **_k: Any) -> Any:
        raise ZeroDivisionError("a bug, not bad data")

    runtime.ingestor._decide = broken  # type: ignore[method-assign]
    batches = _batches([type("R", (), {"key": b"k", "value": b"v"})()] * 5, 5)

    fatal = _run(settings, runtime, batches, lambda: False)

    assert len(fatal) == 1 and isinstance(fatal[0], InternalErrors)
    assert producer.committed == [], "records failing on our own bug are not committed as rejects"


def test_an_internal_error_is_reason_internal_not_bad_data(settings: Settings) -> None:
    runtime, _ = make_runtime(settings)

    def broken(*_a: Any, **_k: Any) -> Any:
        raise ZeroDivisionError("a bug")

    runtime.ingestor._decide = broken  # type: ignore[method-assign]
    out = runtime.ingestor.process(b"k", b"v", "t", 0, 1)
    assert out.reason is Reason.INTERNAL
    assert runtime.ingestor.internal_errors_in_a_row == 1


def test_a_batch_syncs_the_schema_topic_once_and_learns_late_schemas(settings: Settings) -> None:
    runtime, _ = make_runtime(settings)
    gen = SampleGenerator(
        runtime.codec, runtime.catalog.current(), settings.schema_dir, seed=3, broken_share=0.0
    )
    good = list(gen.records(5))
    # A writer schema the worker has not seen yet: published between reads of the topic.
    late = json.loads((settings.schema_dir / "payloads" / "resident.avsc").read_text())
    late["fields"].append({"name": "note", "type": ["null", "string"], "default": None})
    late_schema = Schema.parse(late)
    resident = next(r for r in good if r.expected == "accepted:population")
    env = runtime.codec.decode(resident.value)
    payload = runtime.codec.decode_payload(env)
    late_env = dataclasses.replace(env, payload=encode(late_schema, {**payload, "note": "x"}))
    garbage = [(b"k", b"\xc3\x01" + bytes([i]) * 8 + b"\x00") for i in range(3)]
    syncs = []

    def refresh() -> bool:
        syncs.append(1)
        runtime.codec.registry.add(late_schema)
        return True

    runtime.ingestor._refresh = refresh
    batch = [
        (k, v, "t", 0, i)
        for i, (k, v) in enumerate([*garbage, (late_env.key, runtime.codec.encode(late_env))])
    ]
    outcomes = runtime.ingestor.process_batch(batch)

    assert len(syncs) == 1, "one sync per batch, however many unknown fingerprints"
    assert [o.reason for o in outcomes[:3]] == [Reason.UNKNOWN_SCHEMA] * 3
    assert outcomes[3].kind is OutcomeKind.ACCEPTED
    assert runtime.ingestor._refresh is refresh


def test_after_a_batch_that_synced_the_schemas_the_next_begins_its_sync_as_it_starts(
    settings: Settings,
) -> None:
    runtime, _ = make_runtime(settings)
    late_schema = Schema.parse(
        {"type": "record", "name": "Late", "fields": [{"name": "x", "type": "long"}]}
    )
    calls: list[str] = []

    class Answer(Future[bool]):
        """The sync begun at the batch's start: the late schema is known once it ends."""

        def result(self, timeout: float | None = None) -> bool:
            calls.append("awaited")
            runtime.codec.registry.add(late_schema)
            return True

    class Schemas:
        def refresh(self, timeout: float = 5.0) -> bool:
            calls.append("inline")
            return True

        def refresh_soon(self, timeout: float = 5.0) -> Future[bool]:
            calls.append("ahead")
            return Answer()

    runtime.schema_topic = Schemas()  # type: ignore[assignment]
    unknown = (b"k", b"\xc3\x01" + late_schema.fingerprint.to_bytes(8, "little") + b"\x02")
    garbage = (b"k", b"\xc3\x01" + b"\x07" * 8 + b"\x00")

    def batch(*values: tuple[bytes, bytes]) -> list[Any]:
        return [(k, v, "t", 0, i) for i, (k, v) in enumerate(values)]

    first = runtime.decide(batch(garbage, garbage))
    assert calls == ["inline"], "the first batch syncs where it needs to, once"
    assert [o.reason for o in first] == [Reason.UNKNOWN_SCHEMA] * 2
    calls.clear()
    runtime.decide(batch(garbage, unknown))
    assert calls == ["ahead", "awaited"], "begun as the batch started, awaited where needed"
    assert late_schema.fingerprint in runtime.codec.registry, "learned through that sync"
    calls.clear()
    runtime.decide(batch())  # began one (the last batch needed it), needs none
    runtime.decide(batch())
    assert calls == ["ahead"], "a batch that needed no sync: the next one begins none"


def consent_sample(settings: Settings) -> tuple[Runtime, SampleGenerator]:
    """A runtime, and a generator of mostly elderly-allowance records (consent required)
    that keeps the consents they cite."""
    runtime, _ = make_runtime(settings)
    gen = SampleGenerator(
        runtime.codec,
        runtime.catalog.current(),
        settings.schema_dir,
        seed=4,
        broken_share=0.0,
        consents=True,
        weights={"220100.population.elderly_allowance": 50.0},
    )
    return runtime, gen


def test_a_batch_syncs_the_consents_once_and_learns_a_consent_published_just_before(
    settings: Settings,
) -> None:
    """A source system publishes a consent, then the record citing it: the record may reach
    the worker first. One sync of the consents topic per batch, then those records again."""
    runtime, gen = consent_sample(settings)
    records = list(gen.records(60))
    consents = {c.consent_id: c.terms() for c in gen.consents()}
    book: dict[str, ConsentTerms] = {}  # what the worker's book holds: nothing yet
    syncs: list[int] = []

    def check(ref: str | None, subject: str, resource: str, at_ms: int) -> Reason | None:
        if not ref:
            return Reason.CONSENT_MISSING
        return check_terms(book.get(ref), subject, resource, at_ms)

    def sync() -> None:
        syncs.append(1)
        book.update(consents)  # the topic read to its end

    runtime.ingestor.consent = check
    runtime.ingestor._refresh_consents = sync
    batch = [(r.key, r.value, "t", 0, i) for i, r in enumerate(records)]
    outcomes = runtime.ingestor.process_batch(batch)

    assert len(consents) > 5 and len(syncs) == 1, "one sync per batch, however many unknown"
    assert Reason.CONSENT_UNKNOWN not in {o.reason for o in outcomes}
    expected_in = [
        o.kind for r, o in zip(records, outcomes, strict=True) if r.expected.startswith("accepted")
    ]
    assert len(expected_in) > 5 and set(expected_in) == {OutcomeKind.ACCEPTED}
    # a reference that is on record nowhere stays unknown after the sync
    unknown = dataclasses.replace(
        runtime.codec.decode(next(r.value for r in records if b"elderly" in r.key)),
        consent_ref="CONSENT-NOWHERE",
    )
    out = runtime.ingestor.process_batch([(unknown.key, runtime.codec.encode(unknown), "t", 0, 0)])
    assert [o.reason for o in out] == [Reason.CONSENT_UNKNOWN] and len(syncs) == 2


def test_a_record_decided_after_a_sync_keeps_its_place_in_the_batch(settings: Settings) -> None:
    """v6 of a subject cites a consent published a moment ago, v5 after it a known one: v6
    is decided first (after the sync), v5 is then a duplicate of it. Deciding v5 first and
    v6 again after the batch wrote v6 before v5 in the pool, whose compaction kept v5."""
    runtime, gen = consent_sample(settings)
    record = next(r for r in gen.records(60) if b"elderly" in r.key and r.kind == "valid")
    terms = {c.consent_id: c.terms() for c in gen.consents()}
    old = runtime.codec.decode(record.value)
    assert old.consent_ref is not None
    book = {old.consent_ref: terms[old.consent_ref]}  # "CONSENT-NEW" reaches it by the sync
    newer = dataclasses.replace(old, version=old.version + 1, consent_ref="CONSENT-NEW")

    def check(ref: str | None, subject: str, resource: str, at_ms: int) -> Reason | None:
        return check_terms(book.get(ref or ""), subject, resource, at_ms)

    runtime.ingestor.consent = check
    runtime.ingestor._refresh_consents = lambda: book.update(
        {"CONSENT-NEW": terms[old.consent_ref]}  # type: ignore[index]
    )
    outcomes = runtime.ingestor.process_batch(
        [(old.key, runtime.codec.encode(newer), "t", 0, 0), (old.key, record.value, "t", 0, 1)]
    )
    assert [o.kind for o in outcomes] == [OutcomeKind.ACCEPTED, OutcomeKind.SUPERSEDED]
    assert outcomes[1].reason is Reason.DUPLICATE
