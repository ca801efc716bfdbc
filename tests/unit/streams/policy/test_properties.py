"""Properties of the policy over generated lists, catalogs, approvals and requests:
no refusal (of a request or of a field) without a legal basis, ever; and a city's lists,
whatever they say, never give a department more than the province's do."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xiangyun_data
from streams.catalog.model import Catalog, ShareAttribute, Status, schema_file_loader
from streams.policy.approvals import Approval
from streams.policy.decision import Decision, Request, decide, spec_fields
from streams.policy.legal import PolicyError, PolicyReason
from streams.policy.masks import MaskKind
from streams.policy.model import (
    DemandEntry,
    Duty,
    ListKind,
    NegativeEntry,
    PolicyList,
    ResponsibilityEntry,
)
from streams.policy.review import PolicySet

NOW = 1_800_000_000_000
FIELDS = spec_fields(schema_file_loader(xiangyun_data.schema_dir()))
CATALOG = Catalog.from_dir(xiangyun_data.catalog_dir())
RESOURCES = sorted(r.id for r in CATALOG)
ALL_FIELDS = sorted({f for r in CATALOG for f in FIELDS(r)})
DEPTS = ["220000-GA", "220000-MZ", "220000-TJ", "220100-MZ", "220100-GA", "220200-SL"]
DUTIES = ["d1", "d2", "d3"]
BASIS = st.text(min_size=1, max_size=20).filter(lambda t: t.strip() != "")

fields = st.lists(st.sampled_from(ALL_FIELDS), min_size=1, max_size=5, unique=True).map(tuple)
masks = st.sampled_from(list(MaskKind))


@st.composite
def responsibility(draw: st.DrawFn, region: str) -> PolicyList:
    depts = [d for d in DEPTS if region == "220000" or d.startswith(region)] or DEPTS[:1]
    chosen = draw(st.lists(st.sampled_from(depts), unique=True, max_size=len(depts)))
    entries = tuple(
        ResponsibilityEntry(
            d,
            d,
            tuple(
                Duty(c, c, draw(BASIS))
                for c in draw(st.lists(st.sampled_from(DUTIES), min_size=1, unique=True))
            ),
        )
        for d in chosen
    )
    return PolicyList(ListKind.RESPONSIBILITY, region, entries, 1)


@st.composite
def demand_entry(draw: st.DrawFn) -> DemandEntry:
    fs = draw(fields)
    masked = draw(st.lists(st.sampled_from(fs), unique=True))
    return DemandEntry(
        draw(st.sampled_from(DEPTS)),
        draw(st.sampled_from(RESOURCES)),
        draw(st.sampled_from(DUTIES)),
        fs,
        {f: draw(masks) for f in masked},
    )


negative_entry = st.builds(
    NegativeEntry,
    st.sampled_from(RESOURCES),
    BASIS,
    st.one_of(st.just(()), fields),
)


@st.composite
def lists(draw: st.DrawFn, region: str) -> list[PolicyList]:
    out = [draw(responsibility(region))]
    demand = draw(st.lists(demand_entry(), max_size=8, unique_by=lambda e: e.key))
    out.append(PolicyList(ListKind.DEMAND, region, tuple(demand), 1))
    negative = draw(st.lists(negative_entry, max_size=4))
    out.append(PolicyList(ListKind.NEGATIVE, region, tuple(negative), 1))
    return out


@st.composite
def catalogs(draw: st.DrawFn) -> Catalog:
    cat = Catalog()
    for r in CATALOG:
        cat.put(
            replace(
                r,
                share=draw(st.sampled_from(list(ShareAttribute))),
                share_legal_basis=draw(st.sampled_from(["", "  ", "art. 1"])),
                status=draw(st.sampled_from([Status.APPROVED, Status.APPROVED, Status.RETIRED])),
            )
        )
    return cat


@st.composite
def approvals(draw: st.DrawFn) -> list[Approval]:
    out = []
    for i in range(draw(st.integers(0, 3))):
        quota = draw(st.integers(1, 3))
        out.append(
            Approval(
                id=f"A{i}",
                requester=draw(st.sampled_from(DEPTS)),
                resource=draw(st.sampled_from(RESOURCES)),
                purpose=draw(st.sampled_from(DUTIES)),
                quota=quota,
                expires_at_ms=NOW + draw(st.integers(-10, 10)) * 1000 + 1,
                granted_by="220000-ZSJ",
                granted_at_ms=NOW - 10**6,
                max_subjects=draw(st.one_of(st.none(), st.integers(1, 1000))),
                uses=draw(st.integers(0, quota)),
                revoked_at_ms=draw(st.one_of(st.none(), st.just(NOW - 1))),
            )
        )
    return out


requests = st.builds(
    Request,
    requester=st.one_of(st.sampled_from(DEPTS), st.text(max_size=12)),
    resource=st.one_of(st.sampled_from(RESOURCES), st.text(max_size=8)),
    purpose=st.one_of(st.sampled_from(DUTIES), st.sampled_from(["", "  ", "other"])),
    fields=st.one_of(
        st.none(), st.lists(st.sampled_from([*ALL_FIELDS, "nope"]), max_size=4).map(tuple)
    ),
    subjects=st.integers(0, 300),
    whole_pool=st.booleans(),
    approval_id=st.one_of(st.none(), st.sampled_from(["A0", "A1", "A9"])),
)


def _decide(
    policy: PolicySet, request: Request, catalog: Catalog, appr: list[Approval]
) -> Decision:
    return decide(
        request, catalog, policy.effective, appr, NOW, fields_of=FIELDS, bulk_threshold=100
    )


def _check(d: Decision) -> None:
    for basis in d.withheld.values():
        assert basis.strip()
    if not d.allowed:
        assert isinstance(d.reason, PolicyReason)
        assert d.legal_basis.strip(), d
        assert not d.returned


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    province=lists("220000"),
    city=lists("220100"),
    catalog=catalogs(),
    appr=approvals(),
    request=requests,
)
def test_no_refusal_without_a_legal_basis_and_no_city_lifts(
    province: list[PolicyList],
    city: list[PolicyList],
    catalog: Catalog,
    appr: list[Approval],
    request: Request,
) -> None:
    alone = PolicySet(province, appr)
    with_city = PolicySet([*province, *city], appr)
    base = _decide(alone, request, catalog, appr)
    mine = _decide(with_city, request, catalog, appr)
    _check(base)
    _check(mine)
    # Whatever the city's lists say, a department the province registers never gets more
    # with them than without: no field that was withheld or masked comes out clear.
    if request.requester in alone.effective("220100").responsibility and mine.allowed:
        assert base.allowed, (base, mine)
        assert set(mine.fields) <= set(base.fields)
        assert set(mine.returned) <= set(base.returned)


@given(st.sampled_from(list(PolicyReason)), st.text(alphabet=" \t\n\u3000", max_size=5))
def test_a_refusal_cannot_be_built_without_a_basis(reason: PolicyReason, blank: str) -> None:
    with pytest.raises(PolicyError, match="legal basis"):
        Decision(False, "220000-GA", "r", "d", "v", reason, blank)
    with pytest.raises(PolicyError, match="legal basis"):
        NegativeEntry("population.resident", blank)
