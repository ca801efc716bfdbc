"""The unit register (streams.units): validation rules, the review workflow, the starter
register against the generator and the catalog, and the catalog's check of its units."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from connectors.generator import SampleGenerator
from streams.catalog.dcat import to_dcat_ap
from streams.catalog.model import Catalog, CatalogError, Resource, schema_file_loader
from streams.catalog.review import CatalogBook
from streams.core.regions import CITIES
from streams.units.model import (
    Unit,
    UnitError,
    UnitKind,
    UnitRegister,
    UnitStatus,
    unit_of_source,
    validate_unit,
)
from streams.units.review import (
    DATA_BUREAU,
    UnitBook,
    UnitEvent,
    UnitHistory,
    UnitSnapshot,
    UnitState,
)
from streams.wire.codec import SchemaRegistry
from streams.wire.envelope import EnvelopeCodec

ROOT = Path(__file__).resolve().parents[4]
STARTER_UNITS = UnitRegister.from_dir(ROOT / "units")
STARTER_CATALOG = Catalog.from_dir(ROOT / "catalog")
SCHEMAS = ROOT / "schemas" / "avro"


def starter_book() -> UnitBook:
    book = UnitBook()
    book.bootstrap(list(STARTER_UNITS), DATA_BUREAU, 1_000)
    return book


REGISTER = starter_book().register()


def unit(**kw: Any) -> Unit:
    base: dict[str, Any] = {
        "code": "220100-JY",
        "name": "长春市教育局",
        "kind": "city_department",
        "region": "220100",
        "parent": "220100-ZF",
    }
    return Unit.from_mapping({**base, **kw})


def problems(u: Unit, register: UnitRegister = REGISTER) -> str:
    with pytest.raises(UnitError) as info:
        validate_unit(u, register)
    return "\n".join(info.value.problems)


# -- validation ------------------------------------------------------------------------------


def test_a_good_city_department_passes() -> None:
    validate_unit(unit(), REGISTER)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"code": "220100-jy"}, "'<region code>-<TAG>'"),
        ({"code": "220100JY"}, "'<region code>-<TAG>'"),
        ({"code": "220200-JY"}, "must start with the unit's region code 220100"),
        ({"code": "220100-JY.X"}, "only a commissioned third party"),
        ({"region": "990100", "code": "990100-JY"}, "use a Jilin region code"),
        ({"name": " "}, "name is empty"),
        ({"parent": None}, "parent is empty"),
        ({"parent": "220100-XX"}, "'220100-XX' is not a registered unit"),
        ({"parent": "220200-ZF"}, "its parent is the city 220100"),
        ({"parent": "220100-GA"}, "its parent is the city 220100"),
        ({"duties": ["a", "a"]}, "listed twice"),
        ({"kind": "provincial_department"}, "has the region of the province"),
    ],
)
def test_invalid_units_are_refused_with_what_to_fix(fields: dict[str, Any], expected: str) -> None:
    assert expected in problems(unit(**fields))


def test_kind_specific_parents() -> None:
    dept = {"code": "220000-JY", "name": "吉林省教育厅", "kind": "provincial_department"}
    validate_unit(unit(**dept, region="220000", parent=None), REGISTER)
    assert "has no parent" in problems(unit(**dept, region="220000", parent="220000-GA"))
    city = unit(code="220100-ZF", name="长春市人民政府", kind="city", parent=None)
    validate_unit(city, UnitRegister())
    # a district body: below its city, a department of its city, or a body of its district
    district = {"code": "220102-JY", "name": "南关区教育局", "kind": "district", "region": "220102"}
    validate_unit(unit(**district, parent="220100-ZF"), REGISTER)
    validate_unit(unit(**district, parent="220100-MZ"), REGISTER)
    assert "its parent is the city 220100" in problems(unit(**district, parent="220200-ZF"))
    assert "has the region of a district" in problems(
        unit(**{**district, "region": "220100", "code": "220100-JY"}, parent="220100-ZF")
    )
    # a commissioned third party extends its parent's code and has its region
    third = {"name": "某测绘公司", "kind": "third_party", "region": "220000"}
    validate_unit(unit(**third, code="220000-ZRZY.XY", parent="220000-ZRZY"), REGISTER)
    assert "<parent code>.<TAG>" in problems(unit(**third, code="220000-XY", parent="220000-ZRZY"))
    assert "code extending the parent's" in problems(
        unit(**third, code="220000-GA.XY", parent="220000-ZRZY")
    )
    # a third party does not commission another: its code cannot extend a third party's
    assert "(a commissioned third party: '<parent code>.<TAG>')" in problems(
        unit(**third, code="220000-ZRZY.CHY.X", parent="220000-ZRZY.CHY")
    )


def test_an_update_keeps_its_kind() -> None:
    moved = unit(code="220100-MZ", name="长春市民政局", kind="district", region="220100")
    assert "kind cannot change" in problems(moved)


def test_bad_files_say_what_is_wrong() -> None:
    with pytest.raises(UnitError, match="kind 'town' is not one of"):
        unit(kind="town")
    with pytest.raises(UnitError, match="missing field 'name'"):
        Unit.from_mapping({"code": "220100-X", "kind": "city", "region": "220100"})
    assert unit_of_source("220000-GA/huji") == "220000-GA"


# -- the review workflow ---------------------------------------------------------------------


def test_submit_approve_update_reject_with_history() -> None:
    book = starter_book()
    events = [book.submit(unit(duties=["education.school"]), "220100-ZF", 2_000)]
    assert book.register().get("220100-JY").status is UnitStatus.SUBMITTED  # type: ignore[union-attr]
    assert not book.register().registered("220100-JY")
    with pytest.raises(UnitError, match="may not approve"):
        book.approve("220100-JY", "220100-ZF", "", 2_001)
    events.append(book.approve("220100-JY", DATA_BUREAU, "needed", 2_002))
    assert book.register().registered("220100-JY")
    # an update by the unit itself; the version in force stays until approved
    events.append(book.submit(unit(name="长春市教育局（新）"), "220100-JY", 2_003))
    assert book.register().name_of("220100-JY") == "长春市教育局"
    with pytest.raises(UnitError, match="awaits review"):
        book.submit(unit(), "220100-JY", 2_004)
    with pytest.raises(UnitError, match="give a reason"):
        book.reject("220100-JY", DATA_BUREAU, " ", 2_005)
    events.append(book.reject("220100-JY", DATA_BUREAU, "name is not official", 2_006))
    events.append(book.submit(unit(name="长春市教育局"), "220100-JY", 2_007))
    events.append(book.approve("220100-JY", DATA_BUREAU, "ok", 2_008))
    state = book.state("220100-JY")
    assert state is not None and state.seq == 6 and len(state.versions) <= 2
    assert state.in_force is not None and state.in_force.version == 3
    history = UnitHistory.replay("220100-JY", [UnitEvent.from_json(e.to_json()) for e in events])
    assert history is not None and [c.action.value for c in history.history] == [
        "submitted",
        "approved",
        "submitted",
        "rejected",
        "submitted",
        "approved",
    ]
    assert history.history[2].diff["name"] == ("长春市教育局", "长春市教育局（新）")
    assert [v.status.value for v in history.versions] == ["superseded", "rejected", "approved"]
    assert history.history[5].superseded_version == 1
    # a snapshot round-trips and restores; an older one does not overwrite
    snap = UnitSnapshot.from_json(UnitSnapshot(state, 42).to_json())
    assert snap.state == state and snap.change_offset == 42
    other = UnitBook()
    assert other.restore(state) and not other.restore(UnitState(state.code, 1, state.versions))


def test_only_the_parent_the_unit_or_the_bureau_submits() -> None:
    book = starter_book()
    with pytest.raises(UnitError, match="may not submit 220100-JY"):
        book.submit(unit(), "220000-GA", 1)
    book.submit(unit(), DATA_BUREAU, 1)


def test_bootstrap_is_idempotent_and_loads_parents_first() -> None:
    book = UnitBook()
    events = book.bootstrap(list(STARTER_UNITS), DATA_BUREAU, 1)
    assert len(events) == 2 * len(STARTER_UNITS)
    assert all(u.in_force for u in book.register())
    assert book.bootstrap(list(STARTER_UNITS), DATA_BUREAU, 2) == []


def test_malformed_records_are_unit_errors() -> None:
    for raw in (b"not json", b'{"format": 9}', b'{"format": 1, "code": "x"}'):
        with pytest.raises(UnitError):
            UnitEvent.from_json(raw)
        with pytest.raises(UnitError):
            UnitSnapshot.from_json(raw)


# -- the starter register --------------------------------------------------------------------


def test_the_starter_register_has_the_province_s_units() -> None:
    kinds = {k: [u for u in STARTER_UNITS if u.kind is k] for k in UnitKind}
    assert {u.region for u in kinds[UnitKind.CITY]} == set(CITIES)
    assert REGISTER.name_of("222400-ZF") == "延边朝鲜族自治州人民政府"
    assert REGISTER.name_of("220000-GA") == "吉林省公安厅"
    assert REGISTER.name_of(DATA_BUREAU) == "吉林省政务服务和数字化建设管理局"
    assert all(u.parent for u in kinds[UnitKind.THIRD_PARTY])


def test_every_catalog_department_and_provider_is_registered() -> None:
    for r in STARTER_CATALOG:
        for code in (r.department, r.provider):
            assert REGISTER.registered(code), (r.id, code)
        owner = REGISTER.in_force(r.provider)
        assert owner is not None and r.id in owner.duties, r.id


def test_every_generator_unit_is_registered() -> None:
    """Providers, forwarding source systems and the units of verification evidence."""
    registry = SchemaRegistry.from_dir(SCHEMAS)
    gen = SampleGenerator(
        EnvelopeCodec(registry, SCHEMAS),
        STARTER_CATALOG,
        SCHEMAS,
        seed=3,
        broken_share=0.0,
        evidence_share=0.5,
    )
    codes = {unit_of_source(s) for p in gen._plans for s in p.sources}
    codes |= {r.provider for r in gen.resources}
    for rec in gen.records(3_000):
        codes.add(unit_of_source(rec.source))
        codes.add(gen.codec.decode(rec.value).provider)
    # evidence comes from every city's counterpart of each provincial provider
    provincial = {r.provider.split("-", 1)[1] for r in gen.resources if r.region == "220000"}
    codes |= {f"{c}-{d}" for c in CITIES for d in provincial}
    missing = sorted(c for c in codes if not REGISTER.registered(c))
    assert not missing, missing
    assert len(codes) >= 70


# -- the catalog checks its units ------------------------------------------------------------


def entry(**kw: Any) -> Resource:
    resident = STARTER_CATALOG.get("population.resident")
    assert resident is not None
    return dataclasses.replace(resident, **kw)


def test_the_catalog_refuses_an_unregistered_department_or_provider() -> None:
    book = CatalogBook(schema_file_loader(SCHEMAS), units=lambda: REGISTER)
    book.bootstrap(list(STARTER_CATALOG), DATA_BUREAU, 1)
    with pytest.raises(CatalogError) as info:
        book.submit(entry(provider="220000-XX", department="220000-XX"), DATA_BUREAU, 2)
    text = str(info.value)
    assert "provider '220000-XX' is not a registered unit" in text
    assert "department '220000-XX' is not a registered unit" in text
    assert "`xiangyun units submit FILE`" in text and "`xiangyun units list`" in text
    with pytest.raises(CatalogError, match="is a commissioned third party"):
        book.submit(entry(provider="220000-ZRZY.CHY"), DATA_BUREAU, 3)
    # a submitted (not yet approved) unit is not registered either
    new = unit(code="220000-YY", region="220000", kind="provincial_department", parent=None)
    pending = UnitRegister([*REGISTER, new])
    book.units = lambda: pending
    with pytest.raises(CatalogError, match="it is submitted, not approved"):
        book.submit(entry(provider="220000-YY"), DATA_BUREAU, 4)
    # the same entry passes without the check (a bare book)
    bare = CatalogBook(schema_file_loader(SCHEMAS))
    bare.submit(entry(provider="220000-XX", department="220000-XX"), DATA_BUREAU, 5)


def test_the_starter_catalog_loads_against_the_starter_register() -> None:
    book = CatalogBook(schema_file_loader(SCHEMAS), units=lambda: REGISTER)
    events = book.bootstrap(list(STARTER_CATALOG), DATA_BUREAU, 1)
    assert len(events) == 2 * len(STARTER_CATALOG)


def test_dcat_names_publishers_by_their_registered_names() -> None:
    book = CatalogBook(schema_file_loader(SCHEMAS))
    book.bootstrap(list(STARTER_CATALOG), DATA_BUREAU, 1)
    doc = to_dcat_ap(book.catalog(), units=REGISTER)
    by_id = {d["dct:identifier"]: d for d in doc["dcat:dataset"]}
    publisher = by_id["population.resident"]["dct:publisher"]
    assert publisher["foaf:name"] == "吉林省公安厅" and publisher["dct:identifier"] == "220000-GA"
    assert (
        by_id["220100.population.elderly_allowance"]["dct:creator"]["foaf:name"] == "长春市民政局"
    )
    assert doc["dct:publisher"]["foaf:name"] == "吉林省政务服务和数字化建设管理局"
    plain = to_dcat_ap(book.catalog())  # without the register: codes, as before
    assert plain["dcat:dataset"][0]["dct:publisher"]["foaf:name"].startswith("22")
