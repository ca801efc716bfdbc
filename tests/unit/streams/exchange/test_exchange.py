"""The exchange's decisions without Kafka: decision → answer, masks, withheld fields,
refusals with their basis, retries answered from the decisions store, malformed requests,
subscriptions matched against pool changes."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import itertools
from collections.abc import Mapping
from typing import Any

import pytest

import xiangyun_data
from streams.audit.entry import AccessEntry, Decision
from streams.catalog.model import Catalog, ShareAttribute, schema_file_loader
from streams.catalog.review import DATA_BUREAU
from streams.exchange.core import Exchange, Output, Step, decision_key, region_matches
from streams.exchange.messages import (
    AnswerDecision,
    ExchangeCodec,
    ExchangeRequest,
    RequestKind,
    SubscriptionStatus,
)
from streams.kafka.topics import Topics
from streams.policy.decision import Decision as PolicyDecision
from streams.policy.decision import FieldSource, Request, decide, spec_fields
from streams.policy.legal import ARTICLE_24_DUTY, CATALOG_ONLY, PIPL_28, REGISTERED_DEPARTMENTS
from streams.policy.model import load_lists
from streams.policy.review import PolicyBook, PolicySet
from streams.units.model import UnitRegister, UnitStatus

NOW = 1_800_000_000_000
DAY = 86_400_000
KEY = "unit-test-mask-key-0123456789"
FIELDS = spec_fields(schema_file_loader(xiangyun_data.schema_dir()))
TOPICS = Topics("t")
RESIDENT = "population.resident"
PERSON = {
    "citizen_id": "220102199001011234",
    "name": "Zhang San",
    "gender": "M",
    "birth_date": "1990-01-01",
    "ethnicity": "Han",
    "household_region": "220102",
    "address": "Changchun, Renmin St 1",
}


class FakePolicy:
    def __init__(self, policy: PolicySet) -> None:
        self.policy = policy
        self.claims = 0

    def current(self) -> PolicySet:
        return self.policy

    def decide(
        self,
        request: Request,
        catalog: Catalog,
        *,
        fields_of: FieldSource,
        now_ms: int | None = None,
    ) -> PolicyDecision:
        return decide(
            request,
            catalog,
            self.policy.effective,
            self.policy.approvals,
            NOW,
            fields_of=fields_of,
            bulk_threshold=3,
        )

    def claim(self, decision: PolicyDecision) -> PolicyDecision:
        if decision.approval_id is not None:
            self.claims += 1
        return decision


def pool_record(subject: str, payload: Mapping[str, Any], **kw: Any) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "resource_id": RESIDENT,
        "subject_id": subject,
        "version": 3,
        "observed_at_ms": NOW - 5000,
        "record_id": "r-1",
        "provider": "220000-GA",
        "channel": "DIRECT",
        "region": "220102",
        "accepted_at_ms": NOW - 4000,
        "source_topic": "t.collect",
        "source_partition": 1,
        "source_offset": 42,
        "catalog_version": 1,
        "verification_count": 2,
        "payload": dict(payload),
    }
    rec.update(kw)
    return rec


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_dir(xiangyun_data.catalog_dir())


@pytest.fixture(scope="module")
def policy_set() -> PolicySet:
    book = PolicyBook()
    book.bootstrap(load_lists(xiangyun_data.policy_dir()), DATA_BUREAU, NOW - DAY)
    return book.policy()


@pytest.fixture(scope="module")
def units() -> UnitRegister:
    starter = UnitRegister.from_dir(xiangyun_data.units_dir())
    return UnitRegister(dataclasses.replace(u, status=UnitStatus.APPROVED) for u in starter)


@pytest.fixture
def codec() -> ExchangeCodec:
    return ExchangeCodec(xiangyun_data.schema_dir())


@pytest.fixture
def exchange(
    catalog: Catalog, policy_set: PolicySet, units: UnitRegister, codec: ExchangeCodec
) -> Exchange:
    view = {(RESIDENT, "S1"): pool_record("S1", PERSON)}
    ids = (f"d{i}" for i in itertools.count())
    pools: dict[bytes, dict[str, Any]] = {}
    ex = Exchange(
        TOPICS,
        codec,
        FakePolicy(policy_set),
        lambda: catalog,
        FIELDS,
        lambda: units,
        lambda keys: [view.get(k) for k in keys],
        freshness=lambda: (NOW - 100, 0),
        decode_pool=lambda v: pools[v],
        mask_key=KEY,
        clock=lambda: NOW,
        new_id=lambda: next(ids),
    )
    ex.pools = pools  # type: ignore[attr-defined]  # what the fake pool topic holds
    return ex


def ask(
    ex: Exchange,
    dept: str,
    *,
    raw: bytes | None = None,
    offset: int = 0,
    partition: int = 2,
    **kw: Any,
) -> Step:
    fields: dict[str, Any] = {
        "request_id": "R1",
        "resource_id": RESIDENT,
        "subjects": ("S1",),
        "purpose": "social_assistance",
        "official": "officer-1",
        "deadline_ms": NOW + 10_000,
    }
    fields.update(kw)
    value = raw if raw is not None else ex.codec.encode_request(ExchangeRequest(**fields))
    return ex.handle(fields["request_id"].encode(), value, TOPICS.request(dept), partition, offset)


def parts(step: Step) -> tuple[list[Output], list[AccessEntry]]:
    outs = [o for o in step.out if isinstance(o, Output)]
    entries = [e for e in step.out if isinstance(e, AccessEntry)]
    return outs, entries


def answer_of(ex: Exchange, step: Step, dept: str) -> Any:
    outs, _ = parts(step)
    (reply,) = [o for o in outs if o.topic == TOPICS.reply(dept)]
    return ex.codec.decode_answer(reply.value)


def test_allowed_answer_masks_withholds_and_carries_provenance(exchange: Exchange) -> None:
    step = ask(exchange, "220000-MZ", case_id="C-7")
    outs, entries = parts(step)
    a = answer_of(exchange, step, "220000-MZ")
    assert (a.decision, a.reason, a.requester) == (AnswerDecision.ALLOWED, "OK", "220000-MZ")
    assert "社会救助暂行办法" in a.legal_basis  # the duty's basis
    (rec,) = a.records
    assert rec.found and rec.fields["citizen_id"] == PERSON["citizen_id"]
    assert "ethnicity" not in rec.fields and a.withheld["ethnicity"].startswith(PIPL_28[:20])
    assert rec.provenance["provider"] == "220000-GA" and rec.provenance["source_offset"] == 42
    assert rec.provenance["verification_count"] == 2
    assert (a.view_applied_at_ms, a.view_lag_records) == (NOW - 100, 0)
    assert "no onward transfer" in a.usage_terms and a.catalog_version == f"{RESIDENT}@1"
    # The answer, its decision record (same partition as the request) and one entry.
    decision = next(o for o in outs if o.topic == TOPICS.exchange_decisions)
    assert decision.partition == 2 and decision.key == decision_key("220000-MZ", "R1")
    (entry,) = entries
    assert (entry.decision_id, entry.decision, entry.case_id) == (
        a.decision_id,
        Decision.ALLOWED,
        "C-7",
    )
    assert entry.subjects == ("S1",) and entry.data_as_of_ms == NOW - 5000
    assert step.answers == [("ALLOWED", "OK")]


def test_masks_as_the_demand_entry_says(exchange: Exchange) -> None:
    step = ask(
        exchange, "220000-SCJG", purpose="market_registration", fields=("citizen_id", "name")
    )
    a = answer_of(exchange, step, "220000-SCJG")
    assert a.masks == {"citizen_id": "MASK_HASH"}
    want = hmac.new(KEY.encode(), PERSON["citizen_id"].encode(), hashlib.sha256).hexdigest()
    assert a.records[0].fields == {"citizen_id": want, "name": "Zhang San"}
    (entry,) = parts(step)[1]
    assert [(m.field, m.mask) for m in entry.fields_masked] == [("citizen_id", "MASK_HASH")]


def test_a_keyed_hash_without_the_key_is_refused_not_sent_clear(exchange: Exchange) -> None:
    exchange.mask_key = ""
    a = answer_of(
        exchange,
        ask(exchange, "220000-SCJG", purpose="market_registration", fields=("citizen_id",)),
        "220000-SCJG",
    )
    assert (a.decision, a.reason, a.legal_basis) == (
        AnswerDecision.REFUSED,
        "MASK_UNAVAILABLE",
        PIPL_28,
    )
    assert not a.records


@pytest.mark.parametrize(
    ("dept", "changes", "reason", "basis"),
    [
        ("220000-MZ", {"purpose": ""}, "NO_DUTY", ARTICLE_24_DUTY),
        ("220000-MZ", {"fields": ("ethnicity",)}, "NEGATIVE_LIST", PIPL_28),
        ("220000-MZ", {"resource_id": "no.such"}, "UNKNOWN_RESOURCE", CATALOG_ONLY),
        ("220000-FGW", {"purpose": "credit_supervision"}, "NO_DEMAND_ENTRY", "Resident"),
        (
            "220000-RS",
            {"purpose": "social_insurance"},
            "UNREGISTERED_DEPARTMENT",
            REGISTERED_DEPARTMENTS,
        ),
        ("220000-MZ", {"subjects": ("S1", "S2", "S3", "S4")}, "BULK_NEEDS_APPROVAL", "第二十六条"),
    ],
)
def test_refusals_cite_their_legal_basis(
    exchange: Exchange, dept: str, changes: dict[str, Any], reason: str, basis: str
) -> None:
    step = ask(exchange, dept, **changes)
    a = answer_of(exchange, step, dept)
    assert (a.decision, a.reason) == (AnswerDecision.REFUSED, reason)
    assert basis[:20] in a.legal_basis and not a.records
    (entry,) = parts(step)[1]
    assert (entry.decision, entry.reason, entry.legal_basis) == (
        Decision.REFUSED,
        reason,
        a.legal_basis,
    )


def test_not_shared_is_refused_with_the_catalogs_basis(
    exchange: Exchange, catalog: Catalog
) -> None:
    resource = catalog.get(RESIDENT)
    assert resource is not None
    closed = dataclasses.replace(
        resource, share=ShareAttribute.NOT_SHARED, share_legal_basis="Some Law, art. 9"
    )
    exchange.catalog = lambda: Catalog([*(r for r in catalog if r.id != RESIDENT), closed])
    a = answer_of(exchange, ask(exchange, "220000-MZ"), "220000-MZ")
    assert (a.reason, a.legal_basis) == ("NOT_SHARED", "Some Law, art. 9")


def test_timeout_past_the_deadline(exchange: Exchange) -> None:
    step = ask(exchange, "220000-MZ", deadline_ms=NOW - 1)
    a = answer_of(exchange, step, "220000-MZ")
    assert a.decision is AnswerDecision.TIMEOUT and not a.records
    assert parts(step)[1][0].decision is Decision.TIMED_OUT


def test_a_retry_gets_the_first_answer_and_is_logged_as_a_retry(exchange: Exchange) -> None:
    first = ask(exchange, "220000-MZ", offset=5)
    again = ask(exchange, "220000-MZ", offset=9, purpose="something else entirely")
    one, two = (
        next(o for o in parts(s)[0] if o.topic == TOPICS.reply("220000-MZ")) for s in (first, again)
    )
    assert one.value == two.value  # byte for byte: never decided twice
    assert not [o for o in parts(again)[0] if o.topic == TOPICS.exchange_decisions]
    (entry,) = parts(again)[1]
    a = exchange.codec.decode_answer(one.value)
    assert entry.decision_id == f"{a.decision_id}:retry:2:9" and entry.reason == "RETRY:OK"
    assert again.retries == 1 and again.answers == [("ALLOWED", "RETRY")]
    # Another department's request with the same id is its own request.
    other = answer_of(
        exchange, ask(exchange, "220000-SCJG", purpose="market_registration"), "220000-SCJG"
    )
    assert other.decision_id != a.decision_id


def another(
    exchange: Exchange,
    catalog: Catalog,
    policy_set: PolicySet,
    units: UnitRegister,
    read: Any,
    **kw: Any,
) -> Exchange:
    """A second exchange like the fixture's, reading the view through ``read``."""
    return Exchange(
        TOPICS,
        exchange.codec,
        FakePolicy(policy_set),
        lambda: catalog,
        FIELDS,
        lambda: units,
        read,
        clock=lambda: NOW,
        **kw,
    )


def test_a_batch_reads_the_view_once_and_answers_as_one_by_one(
    exchange: Exchange, catalog: Catalog, policy_set: PolicySet, units: UnitRegister
) -> None:
    view = {(RESIDENT, s): pool_record(s, {**PERSON, "name": s}) for s in ("S1", "S2")}
    reads: list[list[tuple[str, str]]] = []

    def one_more(read: Any) -> Exchange:
        return another(exchange, catalog, policy_set, units, read, new_id=lambda: "d")

    def read(keys: Any) -> list[Any]:
        reads.append(list(keys))
        return [view.get(k) for k in keys]

    batch = one_more(read)
    ask(batch, "220000-MZ", request_id="R0")  # decided before the batch

    def msg(request_id: str, subjects: tuple[str, ...], **kw: Any) -> Any:
        req = ExchangeRequest(
            request_id, RESIDENT, subjects, "social_assistance", "o", NOW + 10_000, **kw
        )
        value = batch.codec.encode_request(req)
        return (request_id.encode(), value, TOPICS.request("220000-MZ"), 2, 5)

    steps = batch.handle_batch(
        [
            msg("R1", ("S1", "S2")),
            msg("R0", ("S1",)),  # a retry reads nothing
            msg("R2", ("S2", "S3")),
            msg("R1", ("S1", "S2")),  # a retry within the batch
            msg("R3", ("S1",), kind=RequestKind.SUBSCRIBE),  # a subscription reads nothing
            (b"R4", b"junk", TOPICS.request("220000-MZ"), 2, 6),
        ]
    )
    assert reads[1:] == [[(RESIDENT, "S1"), (RESIDENT, "S2"), (RESIDENT, "S3")]]
    answers = [answer_of(batch, s, "220000-MZ") for s in steps]
    assert [a.request_id for a in answers] == ["R1", "R0", "R2", "R1", "R3", "R4"]
    assert [s.retries for s in steps] == [0, 1, 0, 1, 0, 0]
    assert answers[3] == answers[0]
    assert [(r.subject_id, r.found, r.fields.get("name")) for r in answers[2].records] == [
        ("S2", True, "S2"),
        ("S3", False, None),
    ]
    assert answers[5].decision is AnswerDecision.MALFORMED
    # the same answers as one message at a time
    alone = one_more(read)
    assert answer_of(alone, alone.handle(*msg("R2", ("S2", "S3"))), "220000-MZ") == answers[2]


def test_retries_are_answered_from_the_restored_store(
    exchange: Exchange, catalog: Catalog, policy_set: PolicySet, units: UnitRegister
) -> None:
    step = ask(exchange, "220000-MZ")
    stored = [(o.key, o.value) for o in parts(step)[0] if o.topic == TOPICS.exchange_decisions]
    fresh = another(exchange, catalog, policy_set, units, lambda keys: [None] * len(keys))
    assert fresh.restore_decisions(stored) == 1
    retry = ask(fresh, "220000-MZ", offset=3)
    assert retry.retries == 1
    assert answer_of(fresh, retry, "220000-MZ") == answer_of(exchange, step, "220000-MZ")
    fresh.drop_decisions({"220000-MZ"})
    assert not fresh.decisions


def test_malformed_requests(exchange: Exchange) -> None:
    bad = ask(exchange, "220000-MZ", raw=b"\xc3\x01\x00\x00\x00\x00\x00\x00\x00\x00junk")
    a = answer_of(exchange, bad, "220000-MZ")
    assert (a.decision, a.request_id) == (AnswerDecision.MALFORMED, "R1")  # from the key
    assert parts(bad)[1][0].decision is Decision.MALFORMED
    no_official = ask(exchange, "220000-MZ", request_id="R2", official="")
    assert "official" in answer_of(exchange, no_official, "220000-MZ").message
    # A topic that names no department: nothing to answer, the entry alone.
    step = exchange.handle(b"k", b"x", "t.request.nobody", 0, 7)
    outs, (entry,) = parts(step)
    assert outs == [] and entry.decision is Decision.MALFORMED
    assert entry.requester == "t.request.nobody"


def test_the_requester_is_the_topic(exchange: Exchange) -> None:
    # Whatever the request says, MZ's topic makes MZ the requester.
    step = ask(exchange, "220000-MZ", official="220000-GA")
    assert answer_of(exchange, step, "220000-MZ").requester == "220000-MZ"


def test_subscription_delivery_and_revocation(exchange: Exchange) -> None:
    step = ask(exchange, "220000-MZ", kind=RequestKind.SUBSCRIBE)
    a = answer_of(exchange, step, "220000-MZ")
    assert a.allowed and a.subscription_id in exchange.subscriptions
    assert any(o.topic == TOPICS.exchange_subscriptions for o in parts(step)[0])
    pools = exchange.pools  # type: ignore[attr-defined]
    pools[b"v1"] = pool_record("S1", {**PERSON, "address": "new"}, accepted_at_ms=NOW)
    pools[b"v0"] = pool_record("S1", PERSON, accepted_at_ms=NOW - 1)  # before it was made
    pools[b"v2"] = pool_record("S2", PERSON, accepted_at_ms=NOW)  # not subscribed
    pool = TOPICS.pool(next(iter(TOPICS.pools)))
    assert exchange.handle(f"{RESIDENT}|S1".encode(), b"v0", pool, 0, 1).out == []
    assert exchange.handle(f"{RESIDENT}|S2".encode(), b"v2", pool, 0, 2).out == []
    got = exchange.handle(f"{RESIDENT}|S1".encode(), b"v1", pool, 0, 3)
    (out,) = [o for o in parts(got)[0]]
    delivery = exchange.codec.decode_delivery(out.value)
    assert delivery.decision is AnswerDecision.ALLOWED and delivery.pool_offset == 3
    assert delivery.record is not None and delivery.record.fields["address"] == "new"
    assert "ethnicity" not in delivery.record.fields
    (entry,) = parts(got)[1]
    assert entry.reason == "DELIVERY:OK" and entry.decision_id == delivery.decision_id
    # Another department cannot end it; the data bureau can.
    sid = a.subscription_id
    no = answer_of(
        exchange,
        ask(
            exchange,
            "220000-GA",
            request_id="U1",
            kind=RequestKind.UNSUBSCRIBE,
            subscription_id=sid,
            resource_id="",
            subjects=(),
            purpose="household_registration",
        ),
        "220000-GA",
    )
    assert no.reason == "UNKNOWN_SUBSCRIPTION"
    revoke = ask(
        exchange,
        DATA_BUREAU,
        request_id="U2",
        kind=RequestKind.REVOKE_SUBSCRIPTION,
        subscription_id=sid,
        resource_id="",
        subjects=(),
        purpose="",
    )
    assert answer_of(exchange, revoke, DATA_BUREAU).allowed
    ended = next(o for o in parts(revoke)[0] if o.topic == TOPICS.exchange_subscriptions)
    assert exchange.codec.decode_subscription(ended.value).status is SubscriptionStatus.REVOKED
    assert exchange.handle(f"{RESIDENT}|S1".encode(), b"v1", pool, 0, 4).out == []


def test_a_region_subscription_is_a_bulk_copy(exchange: Exchange) -> None:
    a = answer_of(
        exchange,
        ask(exchange, "220000-MZ", kind=RequestKind.SUBSCRIBE, subjects=(), region="220100"),
        "220000-MZ",
    )
    assert a.reason == "BULK_NEEDS_APPROVAL"
    assert region_matches("220100", "220102") and not region_matches("220200", "220102")
    assert region_matches("220000", "220102")


def test_a_batch_citing_approvals_reads_the_policy_to_its_end_once_first(
    exchange: Exchange, catalog: Catalog, policy_set: PolicySet, units: UnitRegister
) -> None:
    """An approval granted or revoked a moment before the request that cites it counts:
    the exchange's copy of the policy is brought up to date before the batch is decided."""
    events: list[str] = []

    def read(keys: Any) -> list[Any]:
        events.append("decide")
        return [None for _ in keys]

    ex = another(
        exchange, catalog, policy_set, units, read, sync_policy=lambda: events.append("sync")
    )

    def msg(request_id: str, **kw: Any) -> Any:
        req = ExchangeRequest(
            request_id, RESIDENT, ("S1",), "social_assistance", "o", NOW + 10_000, **kw
        )
        return (
            request_id.encode(),
            ex.codec.encode_request(req),
            TOPICS.request("220000-MZ"),
            2,
            5,
        )

    ex.handle_batch([msg("R1", approval_id="AP-1"), msg("R2", approval_id="AP-2"), msg("R3")])
    assert events == ["sync", "decide"]  # once per batch, before anything is decided
    ex.handle_batch([msg("R4"), msg("R5")])
    assert events == ["sync", "decide", "decide"]  # no approval cited: no round trip
