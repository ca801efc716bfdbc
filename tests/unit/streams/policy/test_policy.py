"""The sharing policy: lists, city derivation, decisions, masks and approvals (no Kafka)."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import replace

import pytest

import xiangyun_data
from streams.catalog.model import Catalog, ShareAttribute, Status, schema_file_loader
from streams.catalog.review import DATA_BUREAU
from streams.policy.approvals import Approval, ApprovalStatus
from streams.policy.decision import Decision, Request, decide, spec_fields
from streams.policy.legal import ARTICLE_24_DUTY, BULK_COPY, PolicyError, PolicyReason
from streams.policy.masks import MaskKind, apply_masks, mask_value
from streams.policy.model import (
    DemandEntry,
    ListKind,
    NegativeEntry,
    PolicyList,
    check_city,
    derive,
    load_lists,
)
from streams.policy.review import PolicyBook, PolicySet

KEY = b"k" * 32
NOW = 1_800_000_000_000
DAY = 86_400_000
FIELDS = spec_fields(schema_file_loader(xiangyun_data.schema_dir()))


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.from_dir(xiangyun_data.catalog_dir())


@pytest.fixture(scope="module")
def starter() -> list[PolicyList]:
    return load_lists(xiangyun_data.policy_dir())


@pytest.fixture
def policy(starter: list[PolicyList]) -> PolicySet:
    book = PolicyBook()
    book.bootstrap(starter, DATA_BUREAU, NOW - DAY)
    return book.policy()


def ask(policy: PolicySet, catalog: Catalog, **kw: object) -> Decision:
    req = Request(**kw)  # type: ignore[arg-type]
    return decide(
        req, catalog, policy.effective, policy.approvals, NOW, fields_of=FIELDS, bulk_threshold=100
    )


def refused(d: Decision, reason: PolicyReason) -> None:
    assert not d.allowed and d.reason is reason, d
    assert d.legal_basis.strip()
    assert not d.returned


# -- the starter lists ----------------------------------------------------------------------


def test_the_starter_lists_load_and_name_real_resources_and_fields(
    starter: list[PolicyList], catalog: Catalog
) -> None:
    kinds = {(lst.region, lst.kind) for lst in starter}
    assert {("220000", k) for k in ListKind} <= kinds
    resources = {r.id: r for r in catalog}
    for lst in starter:
        for e in lst.entries:
            if isinstance(e, DemandEntry | NegativeEntry):
                assert e.resource in resources, e
                assert set(e.fields) <= set(FIELDS(resources[e.resource])), e
    province = {lst.kind: lst for lst in starter if lst.region == "220000"}
    city = {lst.kind: lst for lst in starter if lst.region == "220100"}
    check_city(province, city)  # the shipped city lists only restrict


# -- decisions ------------------------------------------------------------------------------


def test_no_duty_is_refused_citing_article_24(policy: PolicySet, catalog: Catalog) -> None:
    d = ask(policy, catalog, requester="220000-MZ", resource="legal_person.enterprise")
    refused(d, PolicyReason.NO_DUTY)
    assert d.legal_basis == ARTICLE_24_DUTY and "第二十四条" in d.legal_basis


def test_unregistered_and_foreign_duties_are_refused(policy: PolicySet, catalog: Catalog) -> None:
    d = ask(
        policy,
        catalog,
        requester="220000-JY",
        resource="legal_person.enterprise",
        purpose="education",
    )
    refused(d, PolicyReason.UNREGISTERED_DEPARTMENT)
    d = ask(
        policy,
        catalog,
        requester="220000-MZ",
        resource="legal_person.enterprise",
        purpose="statistics",
    )
    refused(d, PolicyReason.DUTY_NOT_OF_REQUESTER)
    refused(
        ask(policy, catalog, requester="nonsense", resource="x", purpose="y"),
        PolicyReason.UNREGISTERED_DEPARTMENT,
    )


def test_unconditional_goes_to_any_registered_department_with_one_of_its_duties(
    policy: PolicySet, catalog: Catalog
) -> None:
    d = ask(
        policy,
        catalog,
        requester="220000-TJ",
        resource="legal_person.enterprise",
        purpose="statistics",
    )
    assert d.allowed and not d.masks and "credit_code" in d.fields
    assert "220000:negative@1" in d.policy_version


def test_unknown_and_not_in_force_resources_and_fields(policy: PolicySet, catalog: Catalog) -> None:
    kw = {"requester": "220000-TJ", "purpose": "statistics"}
    refused(ask(policy, catalog, resource="no.such", **kw), PolicyReason.UNKNOWN_RESOURCE)
    retired = catalog.with_entry(
        replace(catalog.get("legal_person.enterprise"), status=Status.RETIRED)  # type: ignore[arg-type]
    )
    refused(
        ask(policy, retired, resource="legal_person.enterprise", **kw),
        PolicyReason.RESOURCE_NOT_IN_FORCE,
    )
    refused(
        ask(policy, catalog, resource="legal_person.enterprise", fields=("salary",), **kw),
        PolicyReason.UNKNOWN_FIELD,
    )


def test_conditional_needs_a_demand_entry_and_masks_fields_outside_it(
    policy: PolicySet, catalog: Catalog
) -> None:
    d = ask(
        policy, catalog, requester="220000-TJ", resource="population.resident", purpose="statistics"
    )
    refused(d, PolicyReason.NO_DEMAND_ENTRY)
    assert d.legal_basis == "Resident Identity Card Law, art. 19"  # the catalog's basis
    d = ask(
        policy,
        catalog,
        requester="220000-RS",
        resource="population.resident",
        purpose="social_insurance",
    )
    assert d.allowed
    assert set(d.fields) == {"citizen_id", "name", "gender", "birth_date", "household_region"}
    # address is outside RS's demand: masked with the provider's default mask
    assert d.masks == {"address": MaskKind.NULL}
    # ethnicity is on the negative list: withheld, citing PIPL art. 28
    assert "第二十八条" in d.withheld["ethnicity"]


def test_demand_masks_apply_for_that_purpose(policy: PolicySet, catalog: Catalog) -> None:
    d = ask(
        policy,
        catalog,
        requester="220000-SCJG",
        resource="population.resident",
        purpose="market_registration",
        fields=("citizen_id", "name", "birth_date"),
    )
    assert d.allowed and d.fields == ("name",)
    assert d.masks == {"citizen_id": MaskKind.KEYED_HASH, "birth_date": MaskKind.YEAR_ONLY}


def test_negative_list_and_not_shared_refuse_citing_their_basis(catalog: Catalog) -> None:
    basis = "《中华人民共和国个人信息保护法》第二十八条"
    (resp,) = load_lists(xiangyun_data.policy_dir() / "responsibility.yaml")
    negative = (NegativeEntry("legal_person.enterprise", basis),)
    lists = [resp, PolicyList(ListKind.NEGATIVE, "220000", negative)]
    p = PolicySet([lst.with_version(1) for lst in lists])
    d = ask(
        p, catalog, requester="220000-TJ", resource="legal_person.enterprise", purpose="statistics"
    )
    refused(d, PolicyReason.NEGATIVE_LIST)
    assert d.legal_basis == basis
    hidden = catalog.with_entry(
        replace(
            catalog.get("spatial.land_parcel"),  # type: ignore[arg-type]
            share=ShareAttribute.NOT_SHARED,
            share_legal_basis="《测绘法》第三十四条",
        )
    )
    d = ask(p, hidden, requester="220000-TJ", resource="spatial.land_parcel", purpose="statistics")
    refused(d, PolicyReason.NOT_SHARED)
    assert d.legal_basis == "《测绘法》第三十四条"


def test_every_requested_field_negative_is_a_refusal(policy: PolicySet, catalog: Catalog) -> None:
    d = ask(
        policy,
        catalog,
        requester="220000-RS",
        resource="population.resident",
        purpose="social_insurance",
        fields=("ethnicity",),
    )
    refused(d, PolicyReason.NEGATIVE_LIST)
    assert "第二十八条" in d.legal_basis


def test_a_city_department_gets_the_city_restrictions(policy: PolicySet, catalog: Catalog) -> None:
    d = ask(
        policy,
        catalog,
        requester="220100-MZ",
        resource="population.resident",
        purpose="elderly_allowance",
    )
    assert d.allowed
    # the province gives 220100-MZ the address; Changchun narrowed it and negative-listed it
    assert "address" in d.withheld and "address" not in d.returned
    assert "220100:negative@1" in d.policy_version


# -- a city cannot lift ---------------------------------------------------------------------


def _city(kind: ListKind, *entries: object) -> PolicyList:
    return PolicyList(kind, "220100", tuple(entries), 1)  # type: ignore[arg-type]


def test_a_city_cannot_lift_a_provincial_restriction(policy: PolicySet) -> None:
    province = policy.of("220000")
    wider = DemandEntry(
        "220100-MZ", "population.resident", "elderly_allowance", ("citizen_id", "name", "ethnicity")
    )
    new = DemandEntry("220100-MZ", "legal_person.enterprise", "elderly_allowance", ("name",))
    unmask = DemandEntry(
        "220000-SCJG", "population.resident", "market_registration", ("citizen_id", "name")
    )
    for entry in (wider, new, unmask):
        with pytest.raises(PolicyError, match="lift"):
            check_city(province, {ListKind.DEMAND: _city(ListKind.DEMAND, entry)})
        eff, problems = derive(province, {ListKind.DEMAND: _city(ListKind.DEMAND, entry)})
        assert problems
        # and even so, the derived lists never give more than the province
        got = eff.demand.get(entry.key)
        base = province[ListKind.DEMAND]
        prov = next(
            (e for e in base.entries if isinstance(e, DemandEntry) and e.key == entry.key), None
        )
        if prov is None:
            assert got is None
        else:
            assert got is not None and set(got.fields) <= set(prov.fields)
            assert all(got.masks.get(f) for f in prov.masks if f in got.fields)
    # a city negative list can only add: the provincial entries are always there
    eff, problems = derive(province, {ListKind.NEGATIVE: _city(ListKind.NEGATIVE)})
    assert not problems
    assert any(n.fields == ("ethnicity",) for n in eff.negative)
    # a city cannot register (give duties to) a provincial department
    resp = load_lists(xiangyun_data.policy_dir() / "responsibility.yaml")[0].entries
    with pytest.raises(PolicyError, match="not a department of 220100"):
        check_city(province, {ListKind.RESPONSIBILITY: _city(ListKind.RESPONSIBILITY, resp[1])})


def test_the_review_refuses_a_lifting_city_list(starter: list[PolicyList]) -> None:
    book = PolicyBook()
    book.bootstrap([x for x in starter if x.region == "220000"], DATA_BUREAU, NOW)
    lifting = _city(
        ListKind.DEMAND,
        DemandEntry("220100-MZ", "population.resident", "elderly_allowance", ("ethnicity",)),
    )
    with pytest.raises(PolicyError, match="lift"):
        book.submit(lifting, "220100-MZ", NOW)
    narrowing = _city(
        ListKind.DEMAND,
        DemandEntry("220100-MZ", "population.resident", "elderly_allowance", ("citizen_id",)),
    )
    ev = book.submit(narrowing, "220100-MZ", NOW)
    assert ev.version == 1
    with pytest.raises(PolicyError, match="only the data bureau"):
        book.approve(ev.key, "220100-MZ", "", NOW)
    book.approve(ev.key, DATA_BUREAU, "ok", NOW)
    assert book.policy().effective("220100").demand[narrowing.entries[0].key].fields == (  # type: ignore[union-attr]
        "citizen_id",
    )


def test_negative_entries_and_refusals_cannot_be_built_without_a_basis() -> None:
    with pytest.raises(PolicyError, match="legal basis"):
        NegativeEntry("population.resident", "  ")
    with pytest.raises(PolicyError, match="legal basis"):
        Decision(False, "220000-GA", "r", "d", "v", PolicyReason.NO_DUTY, "")
    with pytest.raises(PolicyError, match="reason code"):
        Decision(False, "220000-GA", "r", "d", "v", None, "basis")
    with pytest.raises(PolicyError, match="legal basis"):
        Decision(True, "220000-GA", "r", "d", "v", withheld={"f": ""})


# -- bulk copies and approvals --------------------------------------------------------------


def _approval(**kw: object) -> Approval:
    base: dict[str, object] = dict(
        id="A-1",
        requester="220000-TJ",
        resource="legal_person.enterprise",
        purpose="statistics",
        quota=2,
        expires_at_ms=NOW + DAY,
        granted_by=DATA_BUREAU,
        granted_at_ms=NOW - DAY,
    )
    base.update(kw)
    return Approval(**base)  # type: ignore[arg-type]


def test_bulk_copies_need_an_active_matching_approval(policy: PolicySet, catalog: Catalog) -> None:
    kw = {"requester": "220000-TJ", "resource": "legal_person.enterprise", "purpose": "statistics"}
    assert ask(policy, catalog, subjects=100, **kw).allowed
    d = ask(policy, catalog, subjects=101, **kw)
    refused(d, PolicyReason.BULK_NEEDS_APPROVAL)
    assert d.legal_basis == BULK_COPY
    refused(ask(policy, catalog, whole_pool=True, **kw), PolicyReason.BULK_NEEDS_APPROVAL)

    with_a = PolicySet(policy.lists.values(), [_approval()])
    d = ask(with_a, catalog, whole_pool=True, **kw)
    assert d.allowed and d.approval_id == "A-1"
    small = PolicySet(policy.lists.values(), [_approval(max_subjects=500)])
    assert ask(small, catalog, subjects=500, **kw).approval_id == "A-1"
    refused(ask(small, catalog, subjects=501, **kw), PolicyReason.BULK_NEEDS_APPROVAL)
    refused(
        ask(small, catalog, subjects=501, approval_id="A-1", **kw), PolicyReason.APPROVAL_MISMATCH
    )
    for a, reason in (
        (_approval(expires_at_ms=NOW), PolicyReason.APPROVAL_EXPIRED),
        (_approval(revoked_at_ms=NOW - 1, revoked_by=DATA_BUREAU), PolicyReason.APPROVAL_REVOKED),
        (_approval(uses=2), PolicyReason.APPROVAL_EXHAUSTED),
    ):
        refused(ask(PolicySet(policy.lists.values(), [a]), catalog, whole_pool=True, **kw), reason)


def test_approval_quota_expiry_and_revocation() -> None:
    a = _approval()
    assert a.status(NOW) is ApprovalStatus.ACTIVE and a.scope == "pool"
    a = a.used(NOW).used(NOW)
    assert a.uses == 2 and a.status(NOW) is ApprovalStatus.EXHAUSTED
    with pytest.raises(PolicyError, match="exhausted"):
        a.used(NOW)
    assert _approval().status(NOW + DAY) is ApprovalStatus.EXPIRED
    r = _approval().revoked(DATA_BUREAU, "misuse", NOW)
    assert r.status(NOW) is ApprovalStatus.REVOKED
    with pytest.raises(PolicyError, match="revoked"):
        r.used(NOW)
    with pytest.raises(PolicyError, match="already revoked"):
        r.revoked(DATA_BUREAU, "again", NOW)
    with pytest.raises(PolicyError, match="quota"):
        _approval(quota=0)
    with pytest.raises(PolicyError, match="duty"):
        _approval(purpose=" ")
    assert Approval.from_mapping(r.to_mapping()) == r


def test_the_book_grants_revokes_and_counts_uses() -> None:
    book = PolicyBook()
    with pytest.raises(PolicyError, match="only the data bureau"):
        book.grant(_approval(granted_by="220000-TJ"), NOW)
    book.grant(_approval(), NOW)
    with pytest.raises(PolicyError, match="exists already"):
        book.grant(_approval(), NOW)
    assert book.use("A-1", "exchange", NOW).approval.uses == 1  # type: ignore[union-attr]
    book.use("A-1", "exchange", NOW)
    with pytest.raises(PolicyError, match="exhausted"):
        book.use("A-1", "exchange", NOW)
    ev = book.revoke("A-1", DATA_BUREAU, "no longer needed", NOW)
    assert ev.seq == 4 and book.policy().approvals["A-1"].status(NOW) is ApprovalStatus.REVOKED


# -- masks ----------------------------------------------------------------------------------


def test_every_mask() -> None:
    rec = {
        "id": "22010219900517123X",
        "name": "Li Lei",
        "born": "1990-05-17",
        "n": 42,
        "none": None,
        "cn": "张三丰",
    }
    assert mask_value("Li Lei 99", MaskKind.REDACT) == "Xx Xxx nn"
    assert mask_value("张三丰", MaskKind.REDACT) == "***"
    assert mask_value("22010219900517123X", MaskKind.SHOW_LAST_4) == "nnnnnnnnnnnnnn123X"
    assert mask_value("22010219900517123X", MaskKind.SHOW_FIRST_4) == "2201nnnnnnnnnnnnnX"
    assert mask_value("1990-05-17", MaskKind.YEAR_ONLY) == "1990-01-01"
    assert mask_value("2024-07", MaskKind.YEAR_ONLY) == "2024-01"
    assert mask_value("not a date", MaskKind.YEAR_ONLY) is None
    assert mask_value("x", MaskKind.NULL) is None and mask_value(None, MaskKind.REDACT) is None
    assert mask_value(42, MaskKind.REDACT) == "nn"
    out = apply_masks(
        rec, {"id": MaskKind.KEYED_HASH, "born": MaskKind.YEAR_ONLY, "missing": MaskKind.NULL}, KEY
    )
    assert out["id"] == hmac.new(KEY, rec["id"].encode(), hashlib.sha256).hexdigest()  # type: ignore[union-attr]
    assert out["born"] == "1990-01-01" and out["name"] == "Li Lei" and "missing" not in out
    assert rec["id"] == "22010219900517123X"  # the input is left alone
    assert {MaskKind.parse(k).value for k in ("MASK_HASH", "keyed_hash", "KEYED_HASH")} == {
        "MASK_HASH"
    }


def test_a_keyed_hash_needs_the_platform_key() -> None:
    for key in (None, b"", b"short"):
        with pytest.raises(PolicyError, match="platform key"):
            apply_masks({"id": "1"}, {"id": MaskKind.KEYED_HASH}, key)


def test_the_keyed_hash_cannot_be_brute_forced_without_the_key() -> None:
    """Over a small id space, a bare SHA-256 digest gives the id back by enumeration; the
    keyed hash matches no candidate's bare digest, nor one under a guessed key."""
    region, birth = "220102", "19900517"
    space = [f"{region}{birth}{seq:03d}" for seq in range(1000)]
    secret = "22010219900517123"
    masked = mask_value(secret, MaskKind.KEYED_HASH, KEY)
    bare = {hashlib.sha256(c.encode()).hexdigest(): c for c in space}
    assert bare[hashlib.sha256(secret.encode()).hexdigest()] == secret  # bare: reversible
    assert masked not in bare  # keyed: differs from every bare digest
    guessed = {mask_value(c, MaskKind.KEYED_HASH, b"g" * 32): c for c in space}
    assert masked not in guessed
    # with the key it is a stable pseudonym (two departments can match records on it)
    assert masked == mask_value(secret, MaskKind.KEYED_HASH, KEY)
