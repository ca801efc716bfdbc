"""Collection spec field rules: every rule kind, hostile input, subjects, caching."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

from streams.catalog.model import Catalog, Resource
from streams.catalog.spec import (
    MAX_STRING,
    SpecError,
    check_fields,
    check_subject,
    compile_rules,
    hostile_problem,
    subject_of,
)
from streams.core.pools import Pool

ROOT = Path(__file__).resolve().parents[4]
CATALOG = Catalog.from_dir(ROOT / "catalog")


def _resource(rid: str) -> Resource:
    r = CATALOG.get(rid)
    assert r is not None, rid
    return r


RESIDENT = _resource("population.resident")
GDP = _resource("macro_economy.gdp_quarterly")
PENALTY = _resource("social_credit.administrative_penalty")
ENTERPRISE = _resource("legal_person.enterprise")
ELDERLY = _resource("220100.population.elderly_allowance")
LAND = _resource("spatial.land_parcel")


def resident(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "citizen_id": "11010519491231002X",
        "name": "张三",
        "gender": "M",
        "birth_date": "1949-12-31",
        "ethnicity": "汉族",
        "household_region": "220102",
        "address": None,
    }
    base.update(over)
    return base


def adhoc(rules: dict[str, Any], *, rid: str = "test.adhoc", version: int = 1) -> Resource:
    return Resource(
        id=rid,
        name="adhoc",
        department="220000-X",
        provider="220000-X",
        pool=Pool.THEMATIC,
        schema="payloads/x.avsc",
        subject="thing_id",
        field_rules=rules,
        version=version,
    )


# ---- the starter catalog's rules ------------------------------------------------------------


def test_valid_resident_passes() -> None:
    assert check_fields(RESIDENT, resident()) is None
    assert check_fields(RESIDENT, resident(address="吉林省长春市南关区人民大街1号")) is None


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"citizen_id": "110105194912310021"}, "citizen_id: bad check character"),
        ({"citizen_id": "11010519491231002x"}, "citizen_id: bad format"),
        ({"birth_date": "1999-02-30"}, "birth_date: not a real date YYYY-MM-DD"),
        ({"birth_date": "19990228"}, "birth_date: not a real date YYYY-MM-DD"),
        ({"household_region": "220199"}, "household_region: not a known Jilin region code"),
        ({"household_region": "210100"}, "household_region: not a known Jilin region code"),
        ({"gender": "X"}, "gender: not one of F, M"),
        ({"gender": "m"}, "gender: not one of F, M"),
        ({"name": ""}, "name: shorter than 1 characters"),
        ({"name": "张" * 65}, "name: longer than 64 characters"),
        ({"name": 42}, "name: has no length"),
    ],
)
def test_resident_rule_failures(over: dict[str, Any], message: str) -> None:
    problem = check_fields(RESIDENT, resident(**over))
    assert problem is not None and problem.startswith(message), problem


def test_missing_ruled_field_fails_and_null_skips() -> None:
    payload = resident()
    del payload["household_region"]
    assert check_fields(RESIDENT, payload) == "household_region: missing"
    # a null value (optional field left empty) skips its rules
    assert check_fields(RESIDENT, resident(household_region=None)) is None


def test_pattern_must_match_the_whole_value() -> None:
    gdp = {
        "region": "220100",
        "period": "2026Q3",
        "indicator": "GDP",
        "value": 5000.0,
        "unit": "100M_CNY",
        "published_on": "2026-10-20",
    }
    assert check_fields(GDP, gdp) is None
    for bad in ("2026Q5", "2026q3", "26Q3", "2026Q3 ", "2026Q3\n", "x2026Q3"):
        assert check_fields(GDP, {**gdp, "period": bad}) == "period: does not match pattern", bad


def test_enum_severity() -> None:
    rec = {
        "record_no": "XY1",
        "credit_code": "91350100M000100Y43",
        "subject_name": "某公司",
        "decision_no": "长市监处罚〔2025〕1号",
        "penalty_type": "FINE",
        "severity": "SERIOUS",
        "amount_yuan": 1000.0,
        "decided_on": "2025-03-01",
        "authority": "长春市市场监督管理局",
    }
    assert check_fields(PENALTY, rec) is None
    assert check_fields(PENALTY, {**rec, "severity": "FATAL"}) == (
        "severity: not one of GENERAL, MINOR, SERIOUS"
    )
    assert check_fields(PENALTY, {**rec, "credit_code": "91350100M000100Y44"}) == (
        "credit_code: bad check character"
    )


def test_min_max_numbers() -> None:
    parcel = {
        "parcel_id": "220102001001GB00001",
        "region": "220102",
        "land_use": "0701",
        "area_m2": 0.01,
        "right_holder": "某公司",
        "right_type": "STATE_CONSTRUCTION_USE",
    }
    assert check_fields(LAND, parcel) is None
    assert check_fields(LAND, {**parcel, "area_m2": 0.0}) == "area_m2: below minimum 0.01"
    assert check_fields(LAND, {**parcel, "area_m2": -5}) == "area_m2: below minimum 0.01"
    assert check_fields(LAND, {**parcel, "area_m2": "12"}) == "area_m2: not a finite number"
    assert check_fields(LAND, {**parcel, "area_m2": True}) == "area_m2: not a finite number"
    r = adhoc({"n": {"min": 1, "max": 10}})
    assert check_fields(r, {"n": 10}) is None
    assert check_fields(r, {"n": 11}) == "n: above maximum 10"
    assert check_fields(r, {"n": 0}) == "n: below minimum 1"


# ---- hostile input --------------------------------------------------------------------------


def test_long_strings_fail_without_a_rule() -> None:
    assert check_fields(RESIDENT, resident(ethnicity="汉" * MAX_STRING)) is None
    assert check_fields(RESIDENT, resident(ethnicity="汉" * (MAX_STRING + 1))) == (
        f"ethnicity: longer than {MAX_STRING} characters"
    )
    huge = check_fields(RESIDENT, resident(name="x" * 1_000_000))
    assert huge == f"name: longer than {MAX_STRING} characters"


@pytest.mark.parametrize(
    "bad", ["\x00", "\u202e", "\u202a", "\u2066", "\u2069", "\x1b", "\x7f", "\x85", "\ud800"]
)
def test_control_bidi_and_surrogate_characters_fail(bad: str) -> None:
    problem = check_fields(RESIDENT, resident(address=f"长春市{bad}南关区"))
    assert problem == "address: control, bidi override or surrogate character"
    # even in a field without any rule
    assert check_fields(RESIDENT, resident(ethnicity=f"汉{bad}族")) is not None


def test_ordinary_whitespace_and_scripts_pass() -> None:
    ok = "吉林省延吉市\t인민로 1호\r\nYanji, 사무실 2"
    assert check_fields(RESIDENT, resident(address=ok)) is None


@pytest.mark.parametrize("x", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_fail_anywhere(x: float) -> None:
    allowance = {
        "citizen_id": "11010519491231002X",
        "name": "王五",
        "month": "2025-01",
        "allowance_yuan": x,
        "region": "220102",
    }
    assert check_fields(ELDERLY, allowance) == "allowance_yuan: not a finite number"
    assert hostile_problem({"value": x}) == "value: not a finite number"


def test_hostile_nested_values() -> None:
    assert (
        hostile_problem({"tags": ["ok", "bad\x00"]})
        == "tags[]: control, bidi override or surrogate character"
    )
    assert hostile_problem({"m": {"k": "v" * (MAX_STRING + 1)}}) is not None
    assert hostile_problem({"m": {"k\u202e": "v"}}) == "m: hostile map key"
    assert hostile_problem({"m": {"k": ["x", 1.5, None]}}) is None


def test_messages_never_echo_the_value() -> None:
    secret = "SECRET-VALUE-" + "y" * 10
    for payload in (
        resident(name=secret + "\x00"),
        resident(citizen_id=secret),
        resident(household_region=secret),
        resident(gender=secret),
    ):
        problem = check_fields(RESIDENT, payload)
        assert problem is not None and "SECRET" not in problem


def test_not_a_mapping() -> None:
    assert check_fields(RESIDENT, ["not", "a", "record"]) == "payload: not a record"  # type: ignore[arg-type]


# ---- rule compilation and caching -----------------------------------------------------------


@pytest.mark.parametrize(
    "rules",
    [
        {"f": {"check": "passport"}},
        {"f": {"regex": "x"}},
        {"f": {"pattern": "("}},
        {"f": {"pattern": 5}},
        {"f": {"enum": []}},
        {"f": {"enum": "MF"}},
        {"f": {"min_length": -1}},
        {"f": {"max_length": "64"}},
        {"f": {"min_length": 5, "max_length": 2}},
        {"f": {"min": "zero"}},
        {"f": {"min": math.nan}},
        {"f": {"min": 5, "max": 1}},
        {"f": "check: date"},
    ],
)
def test_bad_rules_raise_on_compile_and_fail_records_without_raising(rules: Any) -> None:
    r = adhoc(rules, rid=f"test.bad.{abs(hash(repr(rules)))}")
    with pytest.raises(SpecError):
        compile_rules(r)
    problem = check_fields(r, {"f": "x"})
    assert problem is not None and problem.startswith("spec: ")


def test_every_starter_catalog_entry_compiles() -> None:
    for resource in CATALOG:
        compile_rules(resource)


def test_cache_is_keyed_by_version_and_notices_changed_rules() -> None:
    v1 = adhoc({"f": {"enum": ["A"]}}, rid="test.cache")
    assert check_fields(v1, {"f": "A"}) is None
    v2 = dataclasses.replace(v1, version=2, field_rules={"f": {"enum": ["B"]}})
    assert check_fields(v2, {"f": "A"}) == "f: not one of B"
    assert check_fields(v1, {"f": "A"}) is None
    # same id and version, different rules (a test or a bad reload): not served stale
    v1b = dataclasses.replace(v1, field_rules={"f": {"enum": ["C"]}})
    assert check_fields(v1b, {"f": "A"}) == "f: not one of C"


# ---- subjects -------------------------------------------------------------------------------


def test_check_subject_by_kind() -> None:
    assert check_subject(RESIDENT, "11010519491231002X") is None
    assert check_subject(RESIDENT, "110105194912310021") == "subject: bad check character"
    assert check_subject(RESIDENT, "") == "subject: not 18 characters"
    assert check_subject(ENTERPRISE, "91350100M000100Y43") is None
    assert check_subject(ENTERPRISE, "91350100M000100Y44") == "subject: bad check character"
    assert check_subject(GDP, "220100:2026Q3") is None
    assert check_subject(GDP, "") == "subject: empty"
    assert check_subject(GDP, "x" * 129) == "subject: longer than 128 characters"
    assert check_subject(GDP, "x" * 128) is None
    assert check_subject(GDP, "220100\x00:2026Q3") == "subject: not printable"
    assert check_subject(GDP, "220100\u202e:2026Q3") == "subject: not printable"
    assert check_subject(GDP, 5) == "subject: not a string"  # type: ignore[arg-type]


def test_subject_of() -> None:
    assert subject_of(RESIDENT, resident()) == "11010519491231002X"
    assert subject_of(GDP, {"region": "220100", "period": "2026Q3"}) == "220100:2026Q3"
    assert subject_of(GDP, {"region": "220100"}) is None
    assert subject_of(RESIDENT, {"name": "x"}) is None


# ---- the hostile screen's fast path agrees with the full walk --------------------------------


def test_every_hostile_character_is_unprintable() -> None:
    # The fast path takes a printable string as free of hostile characters.
    from streams.catalog.spec import _HOSTILE

    hostile = [c for c in map(chr, range(0x110000)) if _HOSTILE.match(c)]
    assert len(hostile) == 2119
    assert not any(c.isprintable() for c in hostile)


class _Text(str):
    pass


@pytest.mark.parametrize(
    "payload",
    [
        resident(),
        resident(address="长春市\n南关区\u3000人民大街"),  # unprintable, yet not hostile
        resident(address="长春市\n南关区\x00"),
        resident(address="x" * MAX_STRING, name="y" * MAX_STRING),  # long together, fine apart
        resident(address="x" * (MAX_STRING + 1)),
        resident(address=_Text("ok")),
        resident(address=_Text("\u202e")),
        {"a": 1.5, "b": math.nan, "c": "\x00"},
        {"a": True, "b": None, "c": b"\x00", "d": 7, "e": "\x7f"},
        {"a": ["x", "\x00"], "b": "\x01"},
        {"a": {"k": "v"}, "b": "\u2066"},
        {},
    ],
)
def test_hostile_fast_path_agrees_with_the_full_walk(payload: dict[str, Any]) -> None:
    from streams.catalog.spec import _first_hostile

    assert hostile_problem(payload) == _first_hostile(payload)
