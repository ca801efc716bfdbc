"""The sharing lists and approvals in Kafka: submit, review, history; a city list that would
lift a provincial restriction is refused; approvals granted, used and revoked are seen by a
second store within a second."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

import xiangyun_data
from streams.catalog.model import Catalog, schema_file_loader
from streams.catalog.review import DATA_BUREAU
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.policy_store import PolicyStore, catalog_fields
from streams.policy.approvals import Approval, ApprovalStatus
from streams.policy.decision import Request, decide, spec_fields
from streams.policy.legal import BULK_COPY, PolicyError, PolicyReason
from streams.policy.model import DemandEntry, ListKind, NegativeEntry, PolicyList
from streams.policy.review import PolicyAction, PolicySet
from xiangyun.settings import Settings


@pytest.fixture
def stores(settings: Settings) -> Iterator[tuple[PolicyStore, PolicyStore]]:
    writer = PolicyStore(settings.streams, timeout=20)
    reader = PolicyStore(settings.streams, timeout=20)
    try:
        writer.bootstrap()
        reader.start()
        yield writer, reader
    finally:
        writer.close()
        reader.close()


def _within(seconds: float, check: Callable[[], bool]) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < seconds, "not seen in time"
        time.sleep(0.02)
    return time.monotonic() - start


def test_bootstrap_submit_review_and_history(
    stores: tuple[PolicyStore, PolicyStore], settings: Settings
) -> None:
    writer, reader = stores
    assert "220000:negative@1" in reader.current().version
    assert writer.bootstrap() == []  # a second run writes nothing
    province = reader.current().lists[("220000", ListKind.NEGATIVE)]
    extra = NegativeEntry(
        "social_credit.administrative_penalty",
        "《中华人民共和国个人信息保护法》第二十八条",
        ("amount_yuan",),
    )
    update = PolicyList(ListKind.NEGATIVE, "220000", (*province.entries, extra))
    (sub,) = writer.submit(update, "220000-FGW")
    assert sub.version == 2
    # submitted is not in force
    assert reader.current().lists[("220000", ListKind.NEGATIVE)].version == 1
    with pytest.raises(PolicyError, match="only the data bureau"):
        writer.approve(update.key, actor="220000-FGW")
    writer.approve(update.key, "reviewed", actor=DATA_BUREAU)
    _within(1.0, lambda: "220000:negative@2" in reader.current().version)
    (sub,) = writer.submit(update, "220000-FGW")
    writer.reject(update.key, "no change")
    history = reader.history(update.key)
    assert history is not None
    assert [e.action for e in history.events] == [
        PolicyAction.SUBMITTED,
        PolicyAction.APPROVED,
        PolicyAction.SUBMITTED,
        PolicyAction.APPROVED,
        PolicyAction.SUBMITTED,
        PolicyAction.REJECTED,
    ]
    assert [v.version for v in history.versions] == [1, 2, 3]
    assert reader.state(update.key).in_force.version == 2  # type: ignore[union-attr]

    # decisions read the new list
    with CatalogStore(settings.streams) as cs:
        cs.start()
        d = reader.decide(
            Request("220000-TJ", "social_credit.administrative_penalty", "statistics"),
            cs.current(),
            fields_of=catalog_fields(cs),
        )
    assert d.allowed and "amount_yuan" in d.withheld and "220000:negative@2" in d.policy_version


def test_a_city_list_cannot_lift_a_provincial_restriction(
    stores: tuple[PolicyStore, PolicyStore],
) -> None:
    writer, reader = stores
    lifting = PolicyList(
        ListKind.DEMAND,
        "220100",
        (
            DemandEntry(
                "220100-MZ",
                "population.resident",
                "elderly_allowance",
                ("citizen_id", "name", "ethnicity"),
            ),
        ),
    )
    with pytest.raises(PolicyError, match="lift"):
        writer.submit(lifting, "220100-MZ")
    before = reader.state(lifting.key)
    assert before is not None and before.pending is None  # nothing was written
    # the shipped city list narrows the province's entry: 220100-MZ gets no address
    eff = reader.current().effective("220102")
    entry = eff.demand[("220100-MZ", "population.resident", "elderly_allowance")]
    assert "address" not in entry.fields
    assert any(n.fields == ("ethnicity",) for n in eff.negative)


def test_approvals_grant_use_revoke_seen_by_a_second_store(
    stores: tuple[PolicyStore, PolicyStore], settings: Settings
) -> None:
    writer, reader = stores
    now = writer.now_ms()
    approval = Approval(
        id="AP-test-1",
        requester="220000-TJ",
        resource="legal_person.enterprise",
        purpose="statistics",
        quota=2,
        expires_at_ms=now + 3_600_000,
        granted_by=DATA_BUREAU,
        granted_at_ms=now,
    )
    writer.grant(approval)
    assert _within(1.0, lambda: "AP-test-1" in reader.current().approvals) < 1.0
    assert writer.record_use("AP-test-1").uses == 1
    _within(1.0, lambda: reader.current().approvals["AP-test-1"].uses == 1)
    # the reader can count a use too: the single writer keeps the count exact
    assert reader.record_use("AP-test-1").uses == 2
    with pytest.raises(PolicyError, match="exhausted"):
        writer.record_use("AP-test-1")
    # an exchange claims the use before data goes out: a spent approval turns into a refusal
    with CatalogStore(settings.streams) as cs:
        cs.start()
        bulk = Request("220000-TJ", "legal_person.enterprise", "statistics", whole_pool=True)
        stale = PolicySet(reader.current().lists.values(), [approval])  # decided before
        d = decide(
            bulk, cs.current(), stale.effective, stale.approvals, now, fields_of=catalog_fields(cs)
        )
    assert d.allowed and d.approval_id == "AP-test-1"
    claimed = reader.claim(d)
    assert not claimed.allowed and claimed.reason is PolicyReason.APPROVAL_EXHAUSTED
    assert claimed.legal_basis == BULK_COPY
    writer.revoke("AP-test-1", "case closed")
    _within(
        1.0,
        lambda: (
            reader.current().approvals["AP-test-1"].status(reader.now_ms())
            is ApprovalStatus.REVOKED
        ),
    )
    history = reader.history("approval/AP-test-1")
    assert history is not None
    assert [e.action for e in history.events] == [
        PolicyAction.GRANTED,
        PolicyAction.USED,
        PolicyAction.USED,
        PolicyAction.REVOKED,
    ]
    # a bulk copy on the revoked approval is refused, citing the bulk-copy basis
    d = reader.decide(
        Request("220000-TJ", "legal_person.enterprise", "statistics", whole_pool=True),
        Catalog.from_dir(xiangyun_data.catalog_dir()),
        fields_of=spec_fields(schema_file_loader(xiangyun_data.schema_dir())),
    )
    assert not d.allowed and d.reason is PolicyReason.APPROVAL_REVOKED
    assert d.legal_basis == BULK_COPY
