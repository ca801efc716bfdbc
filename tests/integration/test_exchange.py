"""The exchange (共享交换) on the real broker and Redis, with a real worker: answers with
provenance and masks, refusals citing their legal basis, bulk copies and approvals,
TIMEOUT, malformed requests, retries, subscriptions, and every answer with its access-log
entry — also when the worker is killed with SIGKILL while requests stream in."""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from connectors.exchange_client import ExchangeClient
from connectors.generator import SampleGenerator, SampleRecord
from connectors.producer import SourceProducer
from streams.audit.entry import EntryCodec
from streams.audit.log import AccessLog
from streams.catalog.review import DATA_BUREAU
from streams.core.pools import Pool
from streams.exchange.messages import (
    Answer,
    AnswerDecision,
    Delivery,
    ExchangeCodec,
)
from streams.kafka.policy_store import PolicyStore
from streams.kafka.topics import Topics
from streams.policy.approvals import Approval
from streams.policy.legal import ARTICLE_24_DUTY, BULK_COPY, PIPL_28, REGISTERED_DEPARTMENTS
from streams.views.reader import PoolView
from streams.wire.codec import read_fingerprint
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings

MASK_KEY = "exchange-test-key-" + "k" * 16
RESIDENT = "population.resident"
ENTERPRISE = "legal_person.enterprise"
MARRIAGE = "e_licence.marriage_certificate"


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
def xsettings(settings: Settings) -> Iterator[Settings]:
    """The test's settings with a mask key (keyed-hash masks) and the starter policy."""
    s = dataclasses.replace(settings, policy_mask_key=MASK_KEY, policy_bulk_threshold=3)
    with PolicyStore(s.streams, timeout=20) as store:
        store.bootstrap()
    yield s
    PoolView(s.streams).flush()  # the test's own keys only


@pytest.fixture
def clients(xsettings: Settings) -> Iterator[dict[str, ExchangeClient]]:
    """Clients of the departments the tests ask as (topics made before the worker starts,
    so the worker's first assignment holds them)."""
    made: dict[str, ExchangeClient] = {}
    for dept in ("220000-MZ", "220000-SCJG", "220000-FGW", "220000-RS", "220000-GA", DATA_BUREAU):
        made[dept] = ExchangeClient(xsettings.streams, dept, official=f"officer-{dept}")
    yield made
    for c in made.values():
        c.close()


@pytest.fixture
def xworker(xsettings: Settings, clients: dict[str, ExchangeClient]) -> Iterator[WorkerProcess]:
    w = WorkerProcess(xsettings, name=f"worker-{xsettings.app_id}").start()
    try:
        wait_for(lambda: exchange_active(w), 60, "the exchange to take its lease")
        yield w
    finally:
        w.stop()


def exchange_active(worker: WorkerProcess) -> bool:
    import urllib.request

    url = f"http://127.0.0.1:{worker.settings.metrics_port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return b"xiangyun_exchange_active 1.0" in resp.read()
    except OSError:
        return False


def load_pools(
    settings: Settings, producer: SourceProducer, generator: SampleGenerator, n: int = 400
) -> dict[str, list[str]]:
    """Valid sample records through the worker into the pools and the Redis view; the
    subject ids per resource."""
    records: list[SampleRecord] = [r for r in generator.records(n) if r.kind == "valid"]
    producer.send_all([(r.principal, r.key, r.value) for r in records], progress=False)
    producer.flush()
    by_resource: dict[str, list[str]] = {}
    for r in records:
        if r.expected.startswith("accepted:"):
            resource, _, subject = r.key.decode().partition("|")
            by_resource.setdefault(resource, []).append(subject)
    view = PoolView(settings.streams)
    # Every subject, not the last one sent: partitions are processed independently,
    # so the last record sent is not the last one in the view.
    pending = {(res, s) for res, subs in by_resource.items() for s in subs}

    def all_in_view() -> bool:
        pending.difference_update([(res, s) for res, s in pending if view.get(res, s) is not None])
        return not pending

    wait_for(all_in_view, 90, "the pool records in the Redis view")
    return {res: list(dict.fromkeys(subs)) for res, subs in by_resource.items()}


def read_all(settings: Settings, topic: str) -> list[tuple[bytes, bytes]]:
    """Every committed record of ``topic`` (all partitions), as (key, value)."""
    c = Consumer(
        settings.kafka.consumer(
            f"read-{uuid.uuid4().hex[:6]}",
            **{"isolation.level": "read_committed", "enable.partition.eof": True},
        )
    )
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for p in parts:
            hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False)[1]
            if hi:
                ends[p] = hi
        out: list[tuple[bytes, bytes]] = []
        if not ends:
            return out
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + 60
        while ends and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                err = m.error()
                if err is not None:
                    eof = err.code() == KafkaError._PARTITION_EOF
                    if eof and (m.offset() or 0) >= ends.get(m.partition() or 0, 0):
                        ends.pop(m.partition() or 0, None)
                    continue
                out.append((m.key() or b"", m.value() or b""))
                if (m.offset() or 0) + 1 >= ends.get(m.partition() or 0, 0):
                    ends.pop(m.partition() or 0, None)
        assert not ends, f"{topic} not read to its end: {ends}"
        return out
    finally:
        c.close()


def last_position(settings: Settings, topic: str, key: bytes) -> TopicPartition:
    """The partition of ``key``'s last committed record in ``topic``, and the offset after
    that record (what a consumer that has read it commits)."""
    c = Consumer(
        settings.kafka.consumer(
            f"read-{uuid.uuid4().hex[:6]}",
            **{"isolation.level": "read_committed", "enable.partition.eof": True},
        )
    )
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        left, found = set(parts), None
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for m in c.consume(1000, 0.5):
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        left.discard(m.partition() or 0)
                    continue
                if m.key() == key:
                    found = TopicPartition(topic, m.partition() or 0, (m.offset() or 0) + 1)
        assert not left and found is not None, f"{key!r} not found in {topic}"
        return found
    finally:
        c.close()


def access_entries(settings: Settings) -> dict[str, Any]:
    log = AccessLog(settings.streams)
    codec = EntryCodec(settings.schema_dir)
    entries = [codec.decode_entry(v) for _, v in log.read_entries()]
    assert [e.seq for e in entries] == list(range(len(entries))), "the log's numbers have gaps"
    return {e.decision_id: e for e in entries}


def reply_answers(settings: Settings, dept: str) -> list[Answer]:
    codec = ExchangeCodec(settings.schema_dir)
    out = []
    for _, v in read_all(settings, Topics.of(settings.streams).reply(dept)):
        if read_fingerprint(v) == codec.answer_schema.fingerprint:
            out.append(codec.decode_answer(v))
    return out


# -- tests ------------------------------------------------------------------------------------


def test_answers_refusals_masks_and_the_access_log(
    xsettings: Settings,
    clients: dict[str, ExchangeClient],
    xworker: WorkerProcess,
    producer: SourceProducer,
    generator: SampleGenerator,
) -> None:
    subjects = load_pools(xsettings, producer, generator)
    residents = subjects[RESIDENT][:2]
    mz, scjg, fgw = clients["220000-MZ"], clients["220000-SCJG"], clients["220000-FGW"]
    answers: list[Answer] = []

    # Conditional, with a demand entry: the demand's fields clear, the rest masked or withheld.
    a = mz.request(RESIDENT, residents, "social_assistance", case_id="CASE-1")
    answers.append(a)
    assert a.decision is AnswerDecision.ALLOWED, a.message
    assert a.reason == "OK" and "社会救助暂行办法" in a.legal_basis
    assert [r.subject_id for r in a.records] == residents
    rec = a.records[0]
    assert rec.found and rec.provenance is not None
    assert rec.provenance["provider"] == "220000-GA"
    assert ".collect." in rec.provenance["source_topic"]
    assert {"citizen_id", "name", "address"} <= set(rec.fields)
    assert "ethnicity" not in rec.fields and "ethnicity" in a.withheld  # negative list
    assert PIPL_28[:20] in a.withheld["ethnicity"]
    assert "article 24" in a.usage_terms and "no onward transfer" in a.usage_terms
    assert a.policy_version.startswith("220000:") and a.catalog_version.startswith(RESIDENT)
    view = PoolView(xsettings.streams).get(RESIDENT, residents[0])
    assert view is not None
    assert rec.fields["citizen_id"] == view["payload"]["citizen_id"]  # clear
    assert a.view_applied_at_ms is not None and a.view_lag_records is not None

    # Conditional with masks: market registration gets a keyed hash of the identity number.
    b = scjg.request(RESIDENT, residents[:1], "market_registration", fields=["citizen_id", "name"])
    answers.append(b)
    assert b.decision is AnswerDecision.ALLOWED, b.message
    assert b.masks == {"citizen_id": "MASK_HASH"}
    hashed = b.records[0].fields["citizen_id"]
    assert hashed is not None and len(hashed) == 64 and hashed != view["payload"]["citizen_id"]
    assert set(b.records[0].fields) == {"citizen_id", "name"}

    # Unconditional: every field, clear.
    firm = subjects[ENTERPRISE][0]
    c = fgw.request(ENTERPRISE, [firm], "credit_supervision")
    answers.append(c)
    assert c.decision is AnswerDecision.ALLOWED and not c.masks and c.records[0].found
    # A subject the pool does not hold: found false, no fields.
    d = fgw.request(ENTERPRISE, ["91220000MA00000000"], "credit_supervision")
    answers.append(d)
    assert d.allowed and not d.records[0].found and not d.records[0].fields

    # Refusals, each with its legal basis.
    e = mz.request(RESIDENT, residents[:1], "social_assistance", fields=["ethnicity"])
    f = fgw.request(RESIDENT, residents[:1], "credit_supervision")  # conditional, no demand
    g = mz.request(RESIDENT, residents[:1], "")  # no duty
    h = mz.request(RESIDENT, residents[:1], "statistics")  # not a duty of MZ
    i = clients["220000-RS"].request(RESIDENT, residents[:1], "social_insurance")
    answers += [e, f, g, h, i]
    assert (e.decision, e.reason) == (AnswerDecision.REFUSED, "NEGATIVE_LIST")
    assert PIPL_28[:20] in e.legal_basis and not e.records
    assert (f.reason, f.legal_basis) == ("NO_DEMAND_ENTRY", "Resident Identity Card Law, art. 19")
    assert (g.reason, g.legal_basis) == ("NO_DUTY", ARTICLE_24_DUTY)
    assert h.reason == "DUTY_NOT_OF_REQUESTER" and "第三十四条" in h.legal_basis
    # 220000-RS is on the responsibility list but not a unit in force in the register.
    assert (i.reason, i.legal_basis) == ("UNREGISTERED_DEPARTMENT", REGISTERED_DEPARTMENTS)
    assert all(x.decision is AnswerDecision.REFUSED and x.legal_basis for x in (e, f, g, h, i))

    # not_shared: the catalog's share attribute, read by the exchange when it decides.
    # (A not_shared resource is refused with the catalog's basis: see the unit tests.)

    entries = access_entries(xsettings)
    for ans in answers:
        entry = entries[ans.decision_id]
        assert entry.request_id == ans.request_id
        assert entry.decision.value == {"TIMEOUT": "TIMED_OUT"}.get(
            ans.decision.value, ans.decision.value
        )
        assert entry.legal_basis == ans.legal_basis
    assert entries[a.decision_id].requester == "220000-MZ"
    assert entries[a.decision_id].case_id == "CASE-1"
    assert entries[a.decision_id].official == "officer-220000-MZ"
    assert tuple(entries[a.decision_id].subjects) == tuple(residents)
    assert {m.field for m in entries[b.decision_id].fields_masked} == {"citizen_id"}


def test_bulk_approvals_timeout_malformed_and_retries(
    xsettings: Settings,
    clients: dict[str, ExchangeClient],
    xworker: WorkerProcess,
    producer: SourceProducer,
    generator: SampleGenerator,
) -> None:
    subjects = load_pools(xsettings, producer, generator)
    firms = subjects[ENTERPRISE][:5]
    assert len(firms) == 5
    fgw = clients["220000-FGW"]

    # 5 subjects > the threshold of 3: a bulk copy.
    no = fgw.request(ENTERPRISE, firms, "credit_supervision")
    assert (no.reason, no.legal_basis) == ("BULK_NEEDS_APPROVAL", BULK_COPY)
    with PolicyStore(xsettings.streams, timeout=20) as store:
        now = store.now_ms()
        store.grant(
            Approval(
                id="AP-FGW-1",
                requester="220000-FGW",
                resource=ENTERPRISE,
                purpose="credit_supervision",
                quota=2,
                expires_at_ms=now + 86_400_000,
                granted_by=DATA_BUREAU,
                granted_at_ms=now,
                max_subjects=10,
            )
        )
        yes = fgw.request(ENTERPRISE, firms, "credit_supervision", approval_id="AP-FGW-1")
        assert yes.allowed, yes.message
        assert yes.approval_id == "AP-FGW-1" and len(yes.records) == 5
        store.sync()
        assert store.current().approvals["AP-FGW-1"].uses == 1  # the quota counted
        again = fgw.request(ENTERPRISE, firms, "credit_supervision", approval_id="AP-FGW-1")
        assert again.allowed
        spent = fgw.request(ENTERPRISE, firms, "credit_supervision", approval_id="AP-FGW-1")
        assert (spent.reason, spent.legal_basis) == ("APPROVAL_EXHAUSTED", BULK_COPY)
        store.grant(
            Approval(
                id="AP-FGW-2",
                requester="220000-FGW",
                resource=ENTERPRISE,
                purpose="credit_supervision",
                quota=5,
                expires_at_ms=now + 86_400_000,
                granted_by=DATA_BUREAU,
                granted_at_ms=now,
                max_subjects=10,
            )
        )
        store.revoke("AP-FGW-2", "test")
        revoked = fgw.request(ENTERPRISE, firms, "credit_supervision", approval_id="AP-FGW-2")
        assert (revoked.reason, revoked.legal_basis) == ("APPROVAL_REVOKED", BULK_COPY)

    # TIMEOUT: the request reached the exchange past its deadline.
    late = fgw.request(ENTERPRISE, firms[:1], "credit_supervision", deadline_s=-1)
    assert late.decision is AnswerDecision.TIMEOUT and not late.records

    # Malformed: undecodable bytes, and a request missing its official.
    fgw.send_raw(b"\xc3\x01not avro at all", b"bad-1")
    bad = fgw.expect("bad-1").result(30)
    assert (bad.decision, bad.reason) == (AnswerDecision.MALFORMED, "MALFORMED")
    req = fgw.build(ENTERPRISE, firms[:1], "credit_supervision", official=" ")
    missing = fgw.ask(req)
    assert missing.decision is AnswerDecision.MALFORMED and "official" in missing.message

    # A retry (same request id) gets the first answer, byte for byte, logged as a retry.
    first_req = fgw.build(ENTERPRISE, firms[:1], "credit_supervision")
    # Sent once each: a resend of the client's own (no answer within its timeout on a busy
    # machine) would be logged as one more retry.
    first = fgw.ask(first_req, timeout=60, retries=0)
    second = fgw.ask(first_req, timeout=60, retries=0)
    assert second == first
    entries = access_entries(xsettings)
    retry = [e for e in entries.values() if e.decision_id.startswith(first.decision_id + ":retry")]
    assert len(retry) == 1 and retry[0].reason == "RETRY:OK"
    for ans in (no, yes, again, spent, revoked, late, bad, missing, first):
        assert ans.decision_id in entries
    assert entries[bad.decision_id].decision.value == "MALFORMED"
    assert entries[late.decision_id].decision.value == "TIMED_OUT"
    # A request on the topic of a department that does not exist is logged, not answered.
    topics = Topics.of(xsettings.streams)
    assert topics.request_pattern.startswith("^")


def test_a_subscription_gets_changes_until_revoked(
    xsettings: Settings,
    clients: dict[str, ExchangeClient],
    xworker: WorkerProcess,
    producer: SourceProducer,
    generator: SampleGenerator,
    codec: Any,
    registry: Any,
) -> None:
    from tests.integration.test_pools import variant

    records = [r for r in generator.records(300) if r.expected == "accepted:population"][:2]
    producer.send_all([(r.principal, r.key, r.value) for r in records], progress=False)
    producer.flush()
    view = PoolView(xsettings.streams)
    subs = [r.key.decode().partition("|")[2] for r in records]
    wait_for(lambda: all(view.get(RESIDENT, s) for s in subs), 60, "residents in the view")
    mz = clients["220000-MZ"]
    ok = mz.subscribe(RESIDENT, "social_assistance", subjects=[subs[0]])
    assert ok.allowed and ok.subscription_id, ok.message
    # A change of the subscribed subject reaches the department, masked per the policy.
    env = codec.decode(records[0].value)
    change = variant(codec, registry, records[0], version=env.version + 1, content=" 2号")
    other = codec.decode(records[1].value)
    producer.send_all(
        [
            (
                records[1].principal,
                records[1].key,
                variant(codec, registry, records[1], version=other.version + 1, content=" x"),
            ),
            (records[0].principal, records[0].key, change),
        ],
        progress=False,
    )
    producer.flush()
    got: Delivery = mz.deliveries.get(timeout=60)
    assert got.subscription_id == ok.subscription_id and got.decision is AnswerDecision.ALLOWED
    assert got.record is not None and got.record.subject_id == subs[0]
    assert got.record.fields["address"] is not None and got.record.fields["address"].endswith("2号")
    assert "ethnicity" not in got.record.fields
    assert mz.deliveries.empty()  # the other subject is not subscribed
    # The data bureau revokes it: no later change is delivered.
    revoked = clients[DATA_BUREAU].unsubscribe(ok.subscription_id, "test")
    assert revoked.allowed and revoked.subscription_id == ok.subscription_id
    reply_topic = Topics.of(xsettings.streams).reply("220000-MZ")
    replies_before = len(read_all(xsettings, reply_topic))
    producer.send_all(
        [
            (
                records[0].principal,
                records[0].key,
                variant(codec, registry, records[0], version=env.version + 2, content=" 3号"),
            )
        ],
        progress=False,
    )
    producer.flush()
    wait_for(lambda: view.get(RESIDENT, subs[0])["version"] == env.version + 2, 60, "v+2")
    # The exchange has read v+2 in the pool (its offsets commit in the transactions of what
    # it sends): had it delivered v+2, the delivery would be on the reply topic now.
    pool_topic = Topics.of(xsettings.streams).pools[Pool.POPULATION]
    last = last_position(xsettings, pool_topic, records[0].key)
    probe = Consumer(
        xsettings.kafka.consumer(
            xsettings.streams.exchange_group, **{"isolation.level": "read_uncommitted"}
        )
    )
    try:
        wait_for(
            lambda: probe.committed([last], timeout=10)[0].offset >= last.offset,
            60,
            "the exchange to read v+2 in the pool",
        )
    finally:
        probe.close()
    assert len(read_all(xsettings, reply_topic)) == replies_before
    assert mz.deliveries.empty()
    entries = access_entries(xsettings)
    assert got.decision_id in entries and entries[got.decision_id].reason == "DELIVERY:OK"
    assert ok.decision_id in entries and revoked.decision_id in entries


def test_sigkill_mid_stream_loses_no_answer_and_doubles_none(
    xsettings: Settings,
    clients: dict[str, ExchangeClient],
    xworker: WorkerProcess,
    producer: SourceProducer,
    generator: SampleGenerator,
) -> None:
    subjects = load_pools(xsettings, producer, generator, n=200)
    firm = subjects[ENTERPRISE][0]
    fgw = clients["220000-FGW"]
    sent: list[str] = []
    total = 600
    for i in range(total):
        req = fgw.build(ENTERPRISE, [firm], "credit_supervision", deadline_s=600)
        fgw.send(req)
        sent.append(req.request_id)
        if i == total // 3:
            fgw._producer.flush(10)
            wait_for(lambda: fgw.answers_seen > 0, 60, "the first answers")
            xworker.kill()
        if i % 50 == 0:
            time.sleep(0.01)
    fgw._producer.flush(10)
    again = WorkerProcess(xsettings, name=f"worker-{xsettings.app_id}-2").start()
    try:
        wait_for(
            lambda: (
                len({a.request_id for a in reply_answers(xsettings, "220000-FGW")} & set(sent))
                == total
            ),
            120,
            "every request answered",
        )
        answers = [a for a in reply_answers(xsettings, "220000-FGW") if a.request_id in set(sent)]
        per_id = Counter(a.request_id for a in answers)
        assert set(per_id) == set(sent), "an answer was lost"
        assert max(per_id.values()) == 1, f"doubled: {[k for k, n in per_id.items() if n > 1][:3]}"
        entries = access_entries(xsettings)
        assert all(a.decision_id in entries for a in answers)
        by_request = Counter(e.request_id for e in entries.values() if e.request_id in set(sent))
        assert by_request == per_id, "one entry per answer, none without"
    finally:
        again.stop()
