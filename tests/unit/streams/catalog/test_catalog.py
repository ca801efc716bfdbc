"""The catalog model, its validation rules and the review workflow (articles 14 to 18)."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streams.catalog.model import (
    Catalog,
    CatalogError,
    OpenAttribute,
    Resource,
    ShareAttribute,
    Status,
    data_items,
    load_entries,
    schema_file_loader,
)
from streams.catalog.review import (
    DATA_BUREAU,
    MAX_SPEC_BYTES,
    Action,
    CatalogBook,
    CatalogEvent,
    CatalogSnapshot,
    FieldChange,
    ResourceHistory,
)
from streams.catalog.validation import validate_entry
from streams.core.channel import Channel
from streams.core.pools import Pool
from streams.core.regions import PROVINCE

REPO = Path(__file__).resolve().parents[4]
BUREAU = DATA_BUREAU
GA = "220000-GA"


def field(name: str, type_: Any = "string", **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


def record(name: str, *fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "record",
        "name": name,
        "namespace": "org.xiangyun.test",
        "fields": list(fields),
    }


RESIDENT = record(
    "Resident",
    field("citizen_id"),
    field("name"),
    field("gender"),
    field("birth_date"),
    field("household_region"),
)
ENTERPRISE = record(
    "Enterprise",
    field("credit_code"),
    field("name"),
    field("registered_region"),
    field("legal_representative"),
)


@pytest.fixture
def schemas(tmp_path: Path) -> Path:
    root = tmp_path / "avro"
    write(root, "payloads/resident.avsc", RESIDENT)
    write(root, "payloads/enterprise.avsc", ENTERPRISE)
    return root


def write(root: Path, rel: str, schema: Any) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(schema) if not isinstance(schema, str) else schema)
    return rel


@pytest.fixture
def book(schemas: Path) -> CatalogBook:
    return CatalogBook(schema_file_loader(schemas))


def resident(**changes: Any) -> Resource:
    base = Resource(
        id="population.resident",
        name="Resident registration",
        department=GA,
        provider=GA,
        pool=Pool.POPULATION,
        schema="payloads/resident.avsc",
        subject="citizen_id",
        field_rules={"citizen_id": {"check": "citizen_id"}, "gender": {"enum": ["M", "F"]}},
        update_frequency="realtime",
        share=ShareAttribute.CONDITIONAL,
        share_conditions="statutory duties only",
        share_legal_basis="ID Card Law, art. 19",
        open=OpenAttribute.NOT_OPEN,
        open_legal_basis="PIPL, art. 34",
    )
    return replace(base, **changes)


def enterprise(**changes: Any) -> Resource:
    base = Resource(
        id="legal_person.enterprise",
        name="Enterprise registration",
        department="220000-SCJG",
        provider="220000-SCJG",
        pool=Pool.LEGAL_PERSON,
        schema="payloads/enterprise.avsc",
        subject="credit_code",
        field_rules={"credit_code": {"check": "credit_code"}},
    )
    return replace(base, **changes)


def refused(text: str) -> Any:
    """``pytest.raises`` for a CatalogError whose message contains ``text`` literally."""
    return pytest.raises(CatalogError, match=re.escape(text))


def refusal(entry: Resource, catalog: Catalog, schemas: Path, **kw: Any) -> str:
    with pytest.raises(CatalogError) as info:
        validate_entry(entry, catalog, schema_file_loader(schemas), **kw)
    return str(info.value)


# -- the model -------------------------------------------------------------------------------


def test_resource_mapping_round_trip_keeps_every_field() -> None:
    r = resident(
        description="who lives where",
        channels=frozenset({Channel.DIRECT, Channel.AGREEMENT}),
        consent_required=True,
        status=Status.APPROVED,
        version=3,
    )
    assert Resource.from_mapping(json.loads(json.dumps(r.to_mapping()))) == r
    assert "description" not in resident().to_mapping()  # unchanged shape when empty


def test_from_mapping_names_the_missing_field() -> None:
    raw = resident().to_mapping()
    del raw["provider"]
    with refused("population.resident: missing field 'provider'"):
        Resource.from_mapping(raw)


@pytest.mark.parametrize(
    ("path", "value", "valid"),
    [
        (("pool",), "populaton", "pool 'populaton' is not one of: population, legal_person, "),
        (("status",), "aproved", "status 'aproved' is not one of: draft, submitted, approved"),
        (("share", "attribute"), "shared", "share attribute 'shared' is not one of: uncond"),
        (("open", "attribute"), "closed", "open attribute 'closed' is not one of: open, restr"),
        (("channels",), ["EMAIL"], "channel 'EMAIL' is not one of: DIRECT, COMMISSIONED, AGR"),
    ],
)
def test_from_mapping_names_the_valid_values(path: tuple[str, ...], value: Any, valid: str) -> None:
    raw = resident().to_mapping()
    *parents, key = path
    target = raw
    for name in parents:
        target = target.setdefault(name, {})
    target[key] = value
    with refused(f"population.resident: {valid}"):
        Resource.from_mapping(raw)


def test_catalog_in_force_only_for_approved() -> None:
    c = Catalog([resident(status=Status.APPROVED), enterprise(status=Status.RETIRED)])
    assert c.in_force("population.resident") is not None
    assert c.in_force("legal_person.enterprise") is None
    assert c.get("legal_person.enterprise") is not None


# -- the starter catalog ---------------------------------------------------------------------


def test_starter_catalog_passes_every_rule_and_goes_in_force() -> None:
    entries = list(Catalog.from_dir(REPO / "catalog"))
    book = CatalogBook(schema_file_loader(REPO / "schemas" / "avro"))
    events = book.bootstrap(entries, BUREAU, 1_000)
    catalog = book.catalog()
    assert {r.id for r in catalog if r.in_force} == {e.id for e in entries}
    assert len(events) == 2 * len(entries)  # submitted + approved each
    assert book.bootstrap(entries, BUREAU, 2_000) == []  # idempotent: the book is the truth


def test_starter_city_entry_would_be_refused_without_its_city_prefix() -> None:
    (city,) = load_entries(REPO / "catalog" / "cities" / "220100.yaml")
    provincial = Catalog(load_entries(REPO / "catalog" / "provincial.yaml"))
    loader = schema_file_loader(REPO / "schemas" / "avro")
    validate_entry(city, provincial, loader)
    with refused("'220100.<name>'"):
        validate_entry(replace(city, id="population.elderly_allowance"), provincial, loader)


# -- share and open attributes ---------------------------------------------------------------


def test_valid_entry_passes(schemas: Path) -> None:
    validate_entry(resident(), Catalog(), schema_file_loader(schemas))


def test_conditional_share_without_legal_basis_is_refused(schemas: Path) -> None:
    msg = refusal(resident(share_legal_basis=""), Catalog(), schemas)
    assert "share attribute 'conditional' needs a legal basis (share.legal_basis)" in msg
    assert "population.resident refused" in msg


def test_conditional_share_without_conditions_is_refused(schemas: Path) -> None:
    msg = refusal(resident(share_conditions="  "), Catalog(), schemas)
    assert "share attribute 'conditional' needs its conditions (share.conditions)" in msg


def test_not_shared_without_legal_basis_is_refused(schemas: Path) -> None:
    msg = refusal(
        resident(share=ShareAttribute.NOT_SHARED, share_legal_basis=""), Catalog(), schemas
    )
    assert "share attribute 'not_shared' needs a legal basis" in msg


def test_not_shared_with_legal_basis_passes(schemas: Path) -> None:
    validate_entry(
        resident(share=ShareAttribute.NOT_SHARED, share_conditions=""),
        Catalog(),
        schema_file_loader(schemas),
    )


def test_not_shared_but_open_is_refused(schemas: Path) -> None:
    msg = refusal(
        resident(share=ShareAttribute.NOT_SHARED, open=OpenAttribute.OPEN, open_legal_basis=""),
        Catalog(),
        schemas,
    )
    assert "open attribute 'open' contradicts share attribute 'not_shared'" in msg


@pytest.mark.parametrize("attribute", [OpenAttribute.RESTRICTED, OpenAttribute.NOT_OPEN])
def test_restricted_or_not_open_without_legal_basis_is_refused(
    schemas: Path, attribute: OpenAttribute
) -> None:
    msg = refusal(resident(open=attribute, open_legal_basis=""), Catalog(), schemas)
    assert f"open attribute '{attribute.value}' needs a legal basis (open.legal_basis)" in msg


def test_unconditional_and_open_need_no_legal_basis(schemas: Path) -> None:
    validate_entry(enterprise(), Catalog(), schema_file_loader(schemas))


def test_unknown_update_frequency_is_refused(schemas: Path) -> None:
    assert "update_frequency 'sometimes': use one of realtime" in refusal(
        resident(update_frequency="sometimes"), Catalog(), schemas
    )


def test_all_problems_are_listed_at_once(schemas: Path) -> None:
    with pytest.raises(CatalogError) as info:
        validate_entry(
            resident(share_legal_basis="", open_legal_basis="", provider=" "),
            Catalog(),
            schema_file_loader(schemas),
        )
    assert len(info.value.problems) == 3
    assert "provider is empty" in info.value.problems


# -- the collection spec ---------------------------------------------------------------------


def test_missing_spec_file_is_refused(schemas: Path) -> None:
    msg = refusal(resident(schema="payloads/nope.avsc"), Catalog(), schemas)
    assert "collection spec 'payloads/nope.avsc' of population.resident: cannot be read" in msg


def test_spec_that_is_not_valid_avro_is_refused(schemas: Path) -> None:
    write(schemas, "payloads/bad.avsc", record("Bad", field("x", "strng")))
    msg = refusal(resident(schema="payloads/bad.avsc"), Catalog(), schemas)
    assert "not a valid Avro schema" in msg


def test_spec_that_is_not_json_is_refused(schemas: Path) -> None:
    write(schemas, "payloads/bad.avsc", "{not json")
    assert "cannot be read" in refusal(resident(schema="payloads/bad.avsc"), Catalog(), schemas)


def test_spec_that_is_not_a_record_is_refused(schemas: Path) -> None:
    write(schemas, "payloads/enum.avsc", {"type": "enum", "name": "E", "symbols": ["A"]})
    msg = refusal(resident(schema="payloads/enum.avsc"), Catalog(), schemas)
    assert "must be an Avro record schema, not 'enum'" in msg


@pytest.mark.parametrize("path", ["../outside.avsc", "/etc/passwd.avsc", "payloads/x.json"])
def test_spec_path_outside_schemas_is_refused(schemas: Path, path: str) -> None:
    assert "give a relative path of an .avsc file below schemas/avro/" in refusal(
        resident(schema=path), Catalog(), schemas
    )


def test_field_rule_on_unknown_field_is_refused(schemas: Path) -> None:
    msg = refusal(resident(field_rules={"nickname": {"min_length": 1}}), Catalog(), schemas)
    assert "field rule for 'nickname': payloads/resident.avsc has no such field" in msg


def test_field_rule_that_does_not_compile_is_refused(schemas: Path) -> None:
    msg = refusal(resident(field_rules={"gender": {"check": "horoscope"}}), Catalog(), schemas)
    assert "field rules: gender: unknown check 'horoscope'" in msg


def test_spec_without_the_subject_field_is_refused(schemas: Path) -> None:
    msg = refusal(resident(subject="passport_no"), Catalog(), schemas)
    assert "subject 'passport_no': payloads/resident.avsc has no field 'passport_no'" in msg


# -- one data, one source (article 16) -------------------------------------------------------


def test_data_items_exclude_identifiers_names_and_generic_fields() -> None:
    spec = record(
        "X",
        field("citizen_id"),
        field("name"),
        field("holder_id"),
        field("updated_at"),
        field("gender"),
        field("allowance"),
    )
    entry = resident(field_rules={"holder_id": {"check": "citizen_id"}})
    assert data_items(entry, spec) == {"gender", "allowance"}
    composite = replace(entry, subject="region_period")
    spec2 = record("G", field("region"), field("period"), field("value"))
    assert data_items(composite, spec2) == {"value"}


def test_second_source_for_collected_data_items_is_refused(schemas: Path) -> None:
    write(
        schemas,
        "payloads/copy.avsc",
        record(
            "Copy",
            field("citizen_id"),
            field("name"),
            field("gender"),
            field("birth_date"),
            field("school"),
        ),
    )
    catalog = Catalog([resident(status=Status.APPROVED)])
    copy = resident(
        id="education.pupil",
        department="220000-JYT",
        provider="220000-JYT",
        pool=Pool.THEMATIC,
        schema="payloads/copy.avsc",
    )
    msg = refusal(copy, catalog, schemas)
    assert (
        "data items birth_date, gender are already collected by population.resident "
        "from 220000-GA; obtain them by sharing"
    ) in msg


def test_second_source_check_ignores_resources_not_in_force(schemas: Path) -> None:
    write(schemas, "payloads/copy.avsc", record("Copy", field("citizen_id"), field("gender")))
    copy = resident(id="education.pupil", schema="payloads/copy.avsc")
    for status in (Status.SUBMITTED, Status.REJECTED, Status.RETIRED):
        validate_entry(copy, Catalog([resident(status=status)]), schema_file_loader(schemas))


def test_same_items_of_another_subject_kind_are_not_a_second_source(schemas: Path) -> None:
    write(schemas, "payloads/firm.avsc", record("Firm", field("credit_code"), field("gender")))
    firm = enterprise(id="legal_person.other", schema="payloads/firm.avsc")
    validate_entry(firm, Catalog([resident(status=Status.APPROVED)]), schema_file_loader(schemas))


def test_sharing_only_the_subjects_name_and_id_is_allowed(schemas: Path) -> None:
    write(
        schemas,
        "payloads/allowance.avsc",
        record("A", field("citizen_id"), field("name"), field("allowance_yuan")),
    )
    allowance = resident(
        id="social.allowance",
        schema="payloads/allowance.avsc",
        department="220000-MZ",
        provider="220000-MZ",
        pool=Pool.THEMATIC,
        field_rules={},
    )
    validate_entry(
        allowance, Catalog([resident(status=Status.APPROVED)]), schema_file_loader(schemas)
    )


def test_city_entry_collecting_provincial_items_is_refused(schemas: Path) -> None:
    write(schemas, "payloads/city.avsc", record("C", field("citizen_id"), field("gender")))
    city = resident(
        id="220100.population.local",
        region="220100",
        department="220100-GA",
        provider="220100-GA",
        schema="payloads/city.avsc",
    )
    msg = refusal(city, Catalog([resident(status=Status.APPROVED)]), schemas)
    assert "data items gender are already collected by population.resident from 220000-GA" in msg


def test_two_cities_may_collect_the_same_items_for_their_own_subjects(schemas: Path) -> None:
    write(schemas, "payloads/city.avsc", record("C", field("citizen_id"), field("allowance")))

    def city(code: str) -> Resource:
        return resident(
            id=f"{code}.social.allowance",
            region=code,
            department=f"{code}-MZ",
            provider=f"{code}-MZ",
            schema="payloads/city.avsc",
            field_rules={},
        )

    catalog = Catalog([replace(city("220100"), status=Status.APPROVED)])
    validate_entry(city("222400"), catalog, schema_file_loader(schemas))
    with refused("already collected by 220100.social.allowance"):
        validate_entry(
            replace(city("220100"), id="220100.social.allowance2"),
            catalog,
            schema_file_loader(schemas),
        )


# -- city supplementary catalogs ------------------------------------------------------------


def city_entry(**changes: Any) -> Resource:
    return resident(
        **{
            "id": "220100.population.local",
            "region": "220100",
            "department": "220100-GA",
            "provider": "220100-GA",
            **changes,
        }
    )


def test_city_entry_passes(schemas: Path) -> None:
    validate_entry(city_entry(), Catalog(), schema_file_loader(schemas))


def test_city_entry_shadowing_a_provincial_resource_is_refused(schemas: Path) -> None:
    catalog = Catalog([enterprise(status=Status.APPROVED)])
    msg = refusal(city_entry(id="220100.legal_person.enterprise"), catalog, schemas)
    assert (
        "id '220100.legal_person.enterprise' shadows provincial resource legal_person.enterprise"
    ) in msg


def test_city_entry_with_a_provincial_id_is_refused(schemas: Path) -> None:
    msg = refusal(city_entry(id="population.local"), Catalog(), schemas)
    assert "a city supplementary entry's id is '220100.<name>'" in msg


def test_city_entry_with_another_citys_prefix_is_refused(schemas: Path) -> None:
    assert "'220100.<name>'" in refusal(
        city_entry(id="222400.population.local"), Catalog(), schemas
    )


def test_city_entry_compiled_by_a_provincial_department_is_refused(schemas: Path) -> None:
    msg = refusal(city_entry(department="220000-GA"), Catalog(), schemas)
    assert "department '220000-GA': a city supplementary entry is compiled by a body" in msg


def test_unknown_region_is_refused(schemas: Path) -> None:
    msg = refusal(city_entry(id="110000.population.local", region="110000"), Catalog(), schemas)
    assert "region '110000': use 220000 (province) or a city code" in msg


def test_provincial_id_with_a_city_prefix_is_refused(schemas: Path) -> None:
    msg = refusal(resident(id="220100.population.resident", region=PROVINCE), Catalog(), schemas)
    assert "a provincial resource id must not start with a region code" in msg


# -- workflow ----------------------------------------------------------------------------------


def test_submit_then_approve_puts_the_entry_in_force(book: CatalogBook) -> None:
    ev = book.submit(resident(status=Status.APPROVED, version=9), GA, 1_000)
    assert ev.key == b"population.resident"
    assert ev.change.action is Action.SUBMITTED
    assert ev.change.to_status is Status.SUBMITTED and ev.change.from_status is None
    assert ev.change.version == 1  # the book numbers versions, not the submitter
    assert book.catalog().in_force("population.resident") is None
    assert book.catalog().get("population.resident").status is Status.SUBMITTED  # type: ignore[union-attr]
    ev = book.approve("population.resident", BUREAU, "complete", 2_000)
    assert ev.change.action is Action.APPROVED and ev.change.reason == "complete"
    in_force = book.catalog().in_force("population.resident")
    assert in_force is not None and in_force.version == 1 and in_force.status is Status.APPROVED


def test_reject_needs_a_reason_and_keeps_the_entry_out_of_force(book: CatalogBook) -> None:
    book.submit(resident(), GA, 1)
    with refused("give a reason to reject"):
        book.reject("population.resident", BUREAU, " ", 2)
    ev = book.reject("population.resident", BUREAU, "legal basis outdated", 2)
    assert ev.change.to_status is Status.REJECTED and ev.change.reason == "legal basis outdated"
    assert book.catalog().get("population.resident").status is Status.REJECTED  # type: ignore[union-attr]
    assert book.catalog().in_force("population.resident") is None
    ev = book.submit(resident(share_legal_basis="ID Card Law 2011, art. 19"), GA, 3)
    assert ev.change.version == 2
    assert (
        FieldChange("share.legal_basis", "ID Card Law, art. 19", "ID Card Law 2011, art. 19")
        in ev.change.diff
    )


def test_update_stays_out_of_force_until_approved(book: CatalogBook, schemas: Path) -> None:
    book.submit(resident(), GA, 1)
    book.approve("population.resident", BUREAU, "", 2)
    write(
        schemas,
        "payloads/resident2.avsc",
        record("Resident", *RESIDENT["fields"], field("email", ["null", "string"], default=None)),
    )
    ev = book.submit(resident(name="Residents", schema="payloads/resident2.avsc"), GA, 3)
    assert ev.change.version == 2 and ev.change.from_status is None
    diff = {d.field: (d.old, d.new) for d in ev.change.diff}
    assert diff["name"] == ("Resident registration", "Residents")
    assert diff["schema"] == ("payloads/resident.avsc", "payloads/resident2.avsc")
    assert diff["spec.fields.email"] == (None, ["null", "string"])
    assert "spec.fingerprint" in diff and "status" not in diff
    current = book.catalog().in_force("population.resident")
    assert current is not None and current.version == 1 and current.name == "Resident registration"

    ev = book.approve("population.resident", BUREAU, "ok", 4)
    assert ev.change.superseded_version == 1 and ev.entry is None  # no spec: none changed
    state = book.state("population.resident")
    assert state is not None  # the superseded version is history, not current state
    assert [(v.resource.version, v.resource.status) for v in state.versions] == [
        (2, Status.APPROVED)
    ]
    current = book.catalog().in_force("population.resident")
    assert current is not None and current.version == 2 and current.name == "Residents"


def test_incompatible_update_is_refused(book: CatalogBook, schemas: Path) -> None:
    book.submit(resident(), GA, 1)
    book.approve("population.resident", BUREAU, "", 2)
    cases = {
        "added.avsc": (
            record("Resident", *RESIDENT["fields"], field("email")),
            "email: field added without a default",
        ),
        "removed.avsc": (
            record("Resident", *RESIDENT["fields"][:-1]),
            "household_region: required field removed",
        ),
        "typed.avsc": (
            record("Resident", *RESIDENT["fields"][:-1], field("household_region", "int")),
            "household_region: type changed from string to int",
        ),
    }
    for name, (schema, problem) in cases.items():
        write(schemas, f"payloads/{name}", schema)
        with pytest.raises(CatalogError) as info:
            book.submit(resident(schema=f"payloads/{name}"), GA, 3)
        assert (
            "collection spec payloads/" + name + " is not backward compatible with "
            "version 1 in force (payloads/resident.avsc): " + problem
        ) in str(info.value)
    assert len(book.state("population.resident").versions) == 1  # type: ignore[union-attr]


def test_spec_edited_in_place_is_checked_against_the_spec_as_approved(
    book: CatalogBook, schemas: Path
) -> None:
    book.submit(resident(), GA, 1)
    book.approve("population.resident", BUREAU, "", 2)
    write(schemas, "payloads/resident.avsc", record("Resident", *RESIDENT["fields"][:-1]))
    with refused("household_region: required field removed"):
        book.submit(resident(name="edited"), GA, 3)


def test_update_cannot_change_subject_or_pool(book: CatalogBook) -> None:
    book.submit(resident(), GA, 1)
    book.approve("population.resident", BUREAU, "", 2)
    with refused("pool cannot change from 'population' to 'thematic'"):
        book.submit(resident(pool=Pool.THEMATIC), GA, 3)


def test_approval_checks_again_for_a_second_source(book: CatalogBook, schemas: Path) -> None:
    write(schemas, "payloads/copy.avsc", record("Copy", field("citizen_id"), field("gender")))
    book.submit(resident(), GA, 1)
    book.submit(
        resident(
            id="health.person",
            department="220000-WJW",
            provider="220000-WJW",
            schema="payloads/copy.avsc",
        ),
        "220000-WJW",
        2,
    )  # neither is in force yet: both submissions pass
    book.approve("population.resident", BUREAU, "", 3)
    with refused("data items gender are already collected by population.resident from 220000-GA"):
        book.approve("health.person", BUREAU, "", 4)
    assert book.state("health.person").pending.resource.status is Status.SUBMITTED  # type: ignore[union-attr]


def test_draft_then_submit_keeps_one_version(book: CatalogBook) -> None:
    ev = book.save_draft(resident(share_legal_basis=""), GA, 1)  # drafts are not validated
    assert ev.change.action is Action.DRAFTED and ev.change.to_status is Status.DRAFT
    ev = book.save_draft(resident(share_legal_basis="", name="v1b"), GA, 2)
    assert ev.change.version == 1 and ev.change.from_status is Status.DRAFT
    assert ev.change.diff == (FieldChange("name", "Resident registration", "v1b"),)
    with refused("needs a legal basis"):
        book.submit(resident(share_legal_basis=""), GA, 3)
    ev = book.submit(resident(), GA, 4)
    assert ev.change.version == 1 and ev.change.from_status is Status.DRAFT
    assert len(book.state("population.resident").versions) == 1  # type: ignore[union-attr]


def test_retire_takes_the_entry_out_of_force(book: CatalogBook) -> None:
    book.submit(resident(), GA, 1)
    book.approve("population.resident", BUREAU, "", 2)
    with refused("give a reason to retire"):
        book.retire("population.resident", BUREAU, "", 3)
    (ev,) = book.retire("population.resident", BUREAU, "merged into population.person", 3)
    assert ev.change.action is Action.RETIRED and ev.change.from_status is Status.APPROVED
    assert book.catalog().in_force("population.resident") is None
    assert book.catalog().get("population.resident").status is Status.RETIRED  # type: ignore[union-attr]
    with refused("cannot retire population.resident: it is retired"):
        book.retire("population.resident", BUREAU, "again", 4)
    ev = book.submit(resident(), GA, 5)  # a retired resource may be registered again
    assert ev.change.version == 2


def test_retire_also_closes_a_pending_update(book: CatalogBook) -> None:
    earlier = [
        book.submit(resident(), GA, 1),
        book.approve("population.resident", BUREAU, "", 2),
        book.submit(resident(name="update"), GA, 3),
    ]
    events = book.retire("population.resident", BUREAU, "obsolete", 4)
    assert [(e.change.version, e.change.seq) for e in events] == [(2, 4), (1, 5)]
    assert all(e.change.to_status is Status.RETIRED for e in events)
    history = ResourceHistory.replay("population.resident", [*earlier, *events])
    assert history is not None
    assert [v.resource.status for v in history.versions] == [Status.RETIRED, Status.RETIRED]
    state = book.state("population.resident")
    assert state is not None and [v.resource.version for v in state.versions] == [2]


@pytest.mark.parametrize("command", ["approve", "reject"])
def test_only_a_submitted_version_can_be_reviewed(book: CatalogBook, command: str) -> None:
    def review(at: int) -> None:
        getattr(book, command)("population.resident", BUREAU, "reason", at)

    with refused("no catalog entry 'population.resident'"):
        review(1)
    book.save_draft(resident(), GA, 2)
    with pytest.raises(CatalogError, match=r"no version awaits review .*version 1, draft"):
        review(3)
    book.submit(resident(), GA, 4)
    book.approve("population.resident", BUREAU, "", 5)
    with pytest.raises(CatalogError, match=r"no version awaits review .*version 1, approved"):
        review(6)


def test_a_second_submission_waits_for_the_review_of_the_first(book: CatalogBook) -> None:
    book.submit(resident(), GA, 1)
    with refused("version 1 awaits review"):
        book.submit(resident(name="again"), GA, 2)
    with refused("version 1 awaits review"):
        book.save_draft(resident(name="again"), GA, 2)


def test_retire_without_anything_to_retire(book: CatalogBook) -> None:
    book.submit(resident(), GA, 1)
    book.reject("population.resident", BUREAU, "no", 2)
    with refused("it is rejected and has no version in force"):
        book.retire("population.resident", BUREAU, "gone", 3)


def test_only_reviewers_review_and_departments_submit_their_own(book: CatalogBook) -> None:
    with refused("220000-SCJG may not submit population.resident"):
        book.submit(resident(), "220000-SCJG", 1)
    book.submit(resident(), GA, 1)
    with refused("220000-GA may not approve: only the data bureau"):
        book.approve("population.resident", GA, "self-approved", 2)
    book.approve("population.resident", BUREAU, "", 2)
    with refused("220000-SCJG may not update population.resident"):
        book.submit(resident(department="220000-SCJG"), "220000-SCJG", 3)
    with refused("may not retire a resource in force"):
        book.retire("population.resident", GA, "not needed", 4)


def test_department_may_withdraw_a_resource_never_approved(book: CatalogBook) -> None:
    book.submit(resident(), GA, 1)
    (ev,) = book.retire("population.resident", GA, "submitted by mistake", 2)
    assert ev.change.from_status is Status.SUBMITTED and ev.change.to_status is Status.RETIRED


def test_configured_reviewers(schemas: Path) -> None:
    book = CatalogBook(schema_file_loader(schemas), reviewers=["220100-ZSJ"])
    book.submit(city_entry(), "220100-GA", 1)
    with refused("may not approve"):
        book.approve("220100.population.local", BUREAU, "", 2)
    book.approve("220100.population.local", "220100-ZSJ", "", 2)


# -- history and events ----------------------------------------------------------------------


def run_lifecycle(book: CatalogBook, schemas: Path) -> list[CatalogEvent]:
    write(
        schemas,
        "payloads/resident2.avsc",
        record("Resident", *RESIDENT["fields"], field("email", ["null", "string"], default=None)),
    )
    return [
        book.submit(resident(), GA, 1_000),
        book.approve("population.resident", BUREAU, "complete", 2_000),
        book.submit(enterprise(), "220000-SCJG", 2_500),
        book.reject("legal_person.enterprise", BUREAU, "missing legal basis", 2_600),
        book.submit(resident(schema="payloads/resident2.avsc"), GA, 3_000),
        book.approve("population.resident", BUREAU, "adds email", 4_000),
        book.submit(enterprise(), "220000-SCJG", 4_500),
        book.approve("legal_person.enterprise", BUREAU, "", 4_600),
        *book.retire("legal_person.enterprise", BUREAU, "moved", 5_000),
    ]


def snapshots(book: CatalogBook) -> list[dict[str, Any]]:
    return [s.to_mapping() for s in book.states()]


def test_history_records_who_when_what(book: CatalogBook, schemas: Path) -> None:
    events = run_lifecycle(book, schemas)
    replayed = ResourceHistory.replay("population.resident", events)
    assert replayed is not None
    history = replayed.history
    assert [(c.seq, c.action, c.actor, c.at_ms, c.version) for c in history] == [
        (1, Action.SUBMITTED, GA, 1_000, 1),
        (2, Action.APPROVED, BUREAU, 2_000, 1),
        (3, Action.SUBMITTED, GA, 3_000, 2),
        (4, Action.APPROVED, BUREAU, 4_000, 2),
    ]
    first = {d.field: d for d in history[0].diff}
    assert first["id"] == FieldChange("id", None, "population.resident")
    assert first["share.legal_basis"].new == "ID Card Law, art. 19"
    assert history[1].diff == (FieldChange("status", "submitted", "approved"),)
    assert history[3].reason == "adds email" and history[3].superseded_version == 1
    assert [d.field for d in history[2].diff] == ["schema", "spec.fields.email", "spec.fingerprint"]
    # every version, with the spec it was submitted with
    assert [(v.resource.version, v.resource.status) for v in replayed.versions] == [
        (1, Status.SUPERSEDED),
        (2, Status.APPROVED),
    ]
    assert replayed.version(1).spec == RESIDENT
    assert replayed.in_force is not None and replayed.in_force.resource.version == 2


def test_only_a_change_of_version_carries_an_entry_and_spec(
    book: CatalogBook, schemas: Path
) -> None:
    for ev in run_lifecycle(book, schemas):
        if ev.change.action in (Action.SUBMITTED, Action.DRAFTED):
            assert ev.entry is not None and ev.entry.spec
            assert ev.entry.resource.version == ev.change.version
        else:
            assert ev.entry is None
            assert "spec" not in json.loads(ev.to_json())


def test_event_and_snapshot_json_round_trip(book: CatalogBook, schemas: Path) -> None:
    for ev in run_lifecycle(book, schemas):
        back = CatalogEvent.from_json(ev.to_json())
        assert back == ev
        assert json.loads(ev.to_json())["change"]["action"] == ev.change.action.value
    for state in book.states():
        snap = CatalogSnapshot(state, 41)
        back_snap = CatalogSnapshot.from_json(snap.to_json())
        assert back_snap.to_mapping() == snap.to_mapping() and back_snap.change_offset == 41
        assert "history" not in json.loads(snap.to_json())["state"]


def test_replaying_the_events_rebuilds_the_same_book(book: CatalogBook, schemas: Path) -> None:
    events = run_lifecycle(book, schemas)
    replayed = CatalogBook()
    for ev in events:
        assert replayed.apply(CatalogEvent.from_json(ev.to_json()))
    assert snapshots(replayed) == snapshots(book)
    assert {r.id: r for r in replayed.catalog()} == {r.id: r for r in book.catalog()}


def test_snapshots_rebuild_the_same_book(book: CatalogBook, schemas: Path) -> None:
    run_lifecycle(book, schemas)
    restored = CatalogBook()
    for state in book.states():  # Kafka keeps the last snapshot per key
        assert restored.restore(
            CatalogSnapshot.from_json(CatalogSnapshot(state, 0).to_json()).state
        )
    assert snapshots(restored) == snapshots(book)
    assert {r.id: r for r in restored.catalog()} == {r.id: r for r in book.catalog()}


def test_an_older_snapshot_and_the_later_events_rebuild_the_same_book(
    book: CatalogBook, schemas: Path
) -> None:
    events = run_lifecycle(book, schemas)
    # The snapshots as they were after the first four changes ...
    early = CatalogBook()
    for ev in events[:4]:
        early.apply(ev)
    rebuilt = CatalogBook()
    for state in early.states():
        rebuilt.restore(state)
    # ... then the change log from there on, read from its start again: what the book
    # already holds (duplicates, older changes) is skipped.
    applied = [rebuilt.apply(ev) for ev in events]
    assert applied == [False] * 4 + [True] * (len(events) - 4)
    assert snapshots(rebuilt) == snapshots(book)


def test_stale_or_duplicate_events_and_snapshots_are_ignored(
    book: CatalogBook, schemas: Path
) -> None:
    events = run_lifecycle(book, schemas)
    replayed = CatalogBook()
    for ev in events:
        replayed.apply(ev)
    before = snapshots(replayed)
    assert not replayed.apply(events[0])  # an older change of population.resident
    assert not replayed.apply(events[-1])  # the same change again
    old = CatalogBook()
    old.apply(events[0])
    assert not replayed.restore(old.states()[0])  # an older snapshot
    assert not replayed.restore(replayed.states()[0])  # the same snapshot again
    assert snapshots(replayed) == before


def test_history_replay_skips_duplicates_and_older_events(book: CatalogBook, schemas: Path) -> None:
    events = run_lifecycle(book, schemas)
    clean = ResourceHistory.replay("legal_person.enterprise", events)
    shuffled = [*events, events[2], *events[:5], events[-1]]  # duplicates, older ones late
    assert ResourceHistory.replay("legal_person.enterprise", shuffled) == clean
    assert clean is not None and [c.seq for c in clean.history] == [1, 2, 3, 4, 5]
    assert ResourceHistory.replay("no.such", events) is None


def test_a_missing_change_is_an_error_not_a_wrong_state(book: CatalogBook, schemas: Path) -> None:
    events = run_lifecycle(book, schemas)
    replayed = CatalogBook()
    replayed.apply(events[0])
    with refused("change #3 does not follow #1: changes #2 to #2 are missing"):
        replayed.apply(events[4])
    with refused("are missing"):
        ResourceHistory.replay("population.resident", [events[0], events[4]])


def test_an_event_that_does_not_fit_the_state_is_refused(book: CatalogBook) -> None:
    submitted = book.submit(resident(), GA, 1)
    approved = book.approve("population.resident", BUREAU, "", 2)
    other = CatalogBook()
    other.apply(submitted)
    moved = CatalogEvent(
        approved.resource_id, replace(approved.change, from_status=Status.DRAFT), None
    )
    with refused("moves version 1 from draft, but it is submitted"):
        other.apply(moved)


def test_a_replayed_book_goes_on_with_the_workflow(book: CatalogBook, schemas: Path) -> None:
    events = run_lifecycle(book, schemas)
    replayed = CatalogBook(schema_file_loader(schemas))
    for state in book.states():
        replayed.restore(state)
    ev = replayed.submit(enterprise(), "220000-SCJG", 6_000)
    assert ev.change.version == 3 and ev.change.seq == 6  # after 5 changes of enterprise
    assert len(events) == 9


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        b'{"format": 99}',
        b'{"format": 1, "resource_id": "x", "state": {"id": "x", "versions": [], "history": []}}',
        b'{"format": 2, "resource_id": "x"}',
        # a submission without the version it submits
        b'{"format": 2, "resource_id": "x", "entry": null, "change": {"seq": 1, '
        b'"action": "submitted", "actor": "a", "at_ms": 1, "version": 1, '
        b'"to_status": "submitted"}}',
    ],
)
def test_malformed_events_raise_catalog_error(raw: bytes) -> None:
    with pytest.raises(CatalogError):
        CatalogEvent.from_json(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"format": 2, "resource_id": "x", "change_offset": 0, '
        b'"state": {"id": "y", "seq": 1, "versions": []}}',
        b'{"format": 2, "resource_id": "x", "state": {"id": "x", "seq": 1, "versions": []}}',
    ],
)
def test_malformed_snapshots_raise_catalog_error(raw: bytes) -> None:
    with pytest.raises(CatalogError):
        CatalogSnapshot.from_json(raw)


def test_replay_only_book_cannot_take_submissions() -> None:
    with refused("no schema loader"):
        CatalogBook().submit(resident(), GA, 1)


def test_command_on_a_copy_leaves_the_book_unchanged(book: CatalogBook) -> None:
    copy = book.copy()
    ev = copy.submit(resident(), GA, 1)
    assert book.state("population.resident") is None
    assert book.apply(ev) and book.state("population.resident") == copy.state("population.resident")


def test_version_records_the_spec_and_its_codec_fingerprint(book: CatalogBook) -> None:
    from streams.wire.codec import Schema

    ev = book.submit(resident(), GA, 1)
    assert ev.entry is not None
    (version,) = book.state("population.resident").versions  # type: ignore[union-attr]
    assert version == ev.entry
    assert version.spec == RESIDENT
    assert version.fingerprint == f"{Schema.parse(RESIDENT).fingerprint:016x}"


def test_a_spec_too_large_for_a_catalog_record_is_refused(book: CatalogBook, schemas: Path) -> None:
    doc = "x" * (MAX_SPEC_BYTES + 1)
    write(schemas, "payloads/huge.avsc", {**RESIDENT, "doc": doc})
    with refused(f"over the {MAX_SPEC_BYTES:,} a catalog version may carry"):
        book.submit(resident(schema="payloads/huge.avsc"), GA, 1)
    with refused("payloads/huge.avsc is"):
        book.save_draft(resident(schema="payloads/huge.avsc"), GA, 1)
    assert book.state("population.resident") is None


# -- bounded records -------------------------------------------------------------------------


def sizes(book: CatalogBook, ev: CatalogEvent) -> tuple[int, int]:
    state = book.state(ev.resource_id)
    assert state is not None
    return len(ev.to_json()), len(CatalogSnapshot(state, 10**12).to_json())


def test_ten_thousand_reviewed_changes_do_not_grow_any_record(book: CatalogBook) -> None:
    """Submit/reject and submit/approve cycles: 10,000 changes of one resource. Every change
    record and snapshot after them is as large as after the first ten (up to the digits of
    growing numbers), and a snapshot holds at most two versions."""
    rid = "population.resident"
    largest_event = largest_snapshot = 0
    early: tuple[int, int] = (0, 0)
    at = 0
    while (state := book.state(rid)) is None or state.seq < 10_000:
        n = state.seq if state is not None else 0
        at += 1
        # Alternate between two wordings so every submission carries a real diff.
        entry = resident(name=f"Resident registration {'AB'[(n // 2) % 2]}")
        events = [book.submit(entry, GA, at)]
        if (n // 2) % 3 == 2:
            events.append(book.approve(rid, BUREAU, "complete", at))
        else:
            events.append(book.reject(rid, BUREAU, "legal basis needs the article", at))
        for ev in events:
            event_size, snapshot_size = sizes(book, ev)
            largest_event = max(largest_event, event_size)
            largest_snapshot = max(largest_snapshot, snapshot_size)
            if ev.seq == 10:
                early = (largest_event, largest_snapshot)
        state = book.state(rid)
        assert state is not None and len(state.versions) <= 2
    assert book.state(rid).seq == 10_000  # type: ignore[union-attr]
    assert book.state(rid).latest.resource.version == 5_000  # type: ignore[union-attr]
    # a version number grows from 1 to 4 digits and a seq from 2 to 5: a few bytes each
    assert largest_event - early[0] <= 16, (early, largest_event)
    assert largest_snapshot - early[1] <= 32, (early, largest_snapshot)
    assert largest_event < 4_096 and largest_snapshot < 8_192


@pytest.mark.parametrize("kind", [CatalogEvent, CatalogSnapshot])
def test_an_unreadable_catalog_record_says_why_once(kind: Any) -> None:
    with pytest.raises(CatalogError) as err:
        kind.from_mapping({"format": 9})
    assert "format 9" in str(err.value)
    assert "malformed" not in str(err.value)  # not wrapped in its own error again
