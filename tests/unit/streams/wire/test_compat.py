"""Backward compatibility of collection-spec updates (streams.wire.compat)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from streams.wire.compat import check_backward


def rec(*fields: dict[str, Any], name: str = "Person", **extra: Any) -> dict[str, Any]:
    return {
        "type": "record",
        "name": name,
        "namespace": "org.xiangyun.test",
        "fields": list(fields),
        **extra,
    }


def f(name: str, type_: Any, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": type_, **extra}


BASE = rec(
    f("citizen_id", "string"),
    f("name", "string"),
    f("age", "int"),
    f("nickname", ["null", "string"], default=None),
)


def evolve(change: Any) -> dict[str, Any]:
    new = copy.deepcopy(BASE)
    change(new)
    return new


def test_identical_schema_is_compatible() -> None:
    assert check_backward(BASE, copy.deepcopy(BASE)) == []


def test_added_optional_field_passes() -> None:
    new = evolve(lambda s: s["fields"].append(f("email", ["null", "string"], default=None)))
    assert check_backward(BASE, new) == []


def test_added_field_with_plain_default_passes() -> None:
    new = evolve(lambda s: s["fields"].append(f("score", "int", default=0)))
    assert check_backward(BASE, new) == []


def test_added_required_field_without_default_fails() -> None:
    new = evolve(lambda s: s["fields"].append(f("email", "string")))
    problems = check_backward(BASE, new)
    assert len(problems) == 1
    assert problems[0].startswith("email: field added without a default")


def test_removed_required_field_fails() -> None:
    new = evolve(lambda s: s["fields"].pop(1))  # name
    problems = check_backward(BASE, new)
    assert len(problems) == 1
    assert problems[0].startswith("name: required field removed")


def test_removed_optional_field_passes() -> None:
    new = evolve(lambda s: s["fields"].pop(3))  # nickname has a default
    assert check_backward(BASE, new) == []


def test_renamed_field_with_alias_passes_and_without_fails() -> None:
    def rename(alias: bool) -> dict[str, Any]:
        new = copy.deepcopy(BASE)
        new["fields"][1] = f("full_name", "string", **({"aliases": ["name"]} if alias else {}))
        return new

    assert check_backward(BASE, rename(alias=True)) == []
    problems = check_backward(BASE, rename(alias=False))
    assert any(p.startswith("full_name: field added without a default") for p in problems)
    assert any(p.startswith("name: required field removed") for p in problems)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("string", "int"),
        ("int", "string"),
        ("long", "int"),
        ("double", "float"),
        ("boolean", "int"),
        ("int", "boolean"),
        ("string", "long"),
    ],
)
def test_changed_type_fails(old: str, new: str) -> None:
    problems = check_backward(rec(f("v", old)), rec(f("v", new)))
    assert problems == [f"v: type changed from {old} to {new}"]


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    ],
)
def test_avro_promotions_pass(old: str, new: str) -> None:
    assert check_backward(rec(f("v", old)), rec(f("v", new))) == []


def color(*symbols: str, **extra: Any) -> dict[str, Any]:
    return {"type": "enum", "name": "Color", "symbols": list(symbols), **extra}


def test_enum_symbol_added_passes() -> None:
    assert (
        check_backward(
            rec(f("c", color("RED", "GREEN"))), rec(f("c", color("RED", "GREEN", "BLUE")))
        )
        == []
    )


def test_enum_symbol_removed_fails() -> None:
    problems = check_backward(
        rec(f("c", color("RED", "GREEN", "BLUE"))), rec(f("c", color("RED", "BLUE")))
    )
    assert problems == ["c: enum Color lost symbol(s) GREEN"]


def test_enum_symbol_removed_fails_even_with_enum_default() -> None:
    problems = check_backward(
        rec(f("c", color("RED", "GREEN"))), rec(f("c", color("RED", "OTHER", default="OTHER")))
    )
    assert problems == ["c: enum Color lost symbol(s) GREEN"]


def address(*fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "record", "name": "Address", "fields": list(fields)}


def test_nested_record_problems_carry_the_field_path() -> None:
    old = rec(f("home", address(f("city", "string"), f("street", "string"))))
    new = rec(f("home", address(f("city", "int"), f("zip", "string"))))
    problems = check_backward(old, new)
    assert sorted(problems) == sorted(
        [
            "home.city: type changed from string to int",
            "home.zip: field added without a default, so records written with the old schema "
            'cannot be read; give it a default (e.g. type ["null", ...] with default null)',
            "home.street: required field removed (it has no default in the version in force); "
            "keep it, or rename it with an alias",
        ]
    )


def test_nested_record_compatible_change_passes() -> None:
    old = rec(f("home", address(f("city", "string"))))
    new = rec(f("home", address(f("city", "string"), f("zip", ["null", "string"], default=None))))
    assert check_backward(old, new) == []


def test_named_type_reused_by_reference() -> None:
    old = rec(f("home", address(f("city", "string"))), f("work", "org.xiangyun.test.Address"))
    assert check_backward(old, copy.deepcopy(old)) == []
    # the new schema defines Address elsewhere and refers to it by name from "home"
    new = rec(
        f("past", {"type": "array", "items": address(f("city", "long"))}, default=[]),
        f("home", "Address"),
        f("work", "Address"),
    )
    problems = check_backward(old, new)
    # one problem per named type: "work" uses the Address already compared under "home"
    assert problems == ["home.city: type changed from string to long"]


def test_recursive_record_does_not_loop() -> None:
    node: dict[str, Any] = {
        "type": "record",
        "name": "Node",
        "fields": [f("value", "int"), f("next", ["null", "Node"], default=None)],
    }
    widened = copy.deepcopy(node)
    widened["fields"][0]["type"] = "long"
    assert check_backward(node, widened) == []
    narrowed = copy.deepcopy(node)
    narrowed["fields"][0]["type"] = "string"
    assert "value: type changed from int to string" in check_backward(node, narrowed)


def test_record_renamed_fails_unless_aliased() -> None:
    old = rec(f("v", "int"), name="Person")
    assert check_backward(old, rec(f("v", "int"), name="Citizen"))[0].startswith(
        "(top level): record Person renamed to Citizen"
    )
    assert check_backward(old, rec(f("v", "int"), name="Citizen", aliases=["Person"])) == []


def test_union_widened_passes() -> None:
    assert check_backward(rec(f("v", "string")), rec(f("v", ["null", "string"]))) == []
    assert check_backward(rec(f("v", ["null", "int"])), rec(f("v", ["null", "long"]))) == []
    assert (
        check_backward(rec(f("v", ["null", "int"])), rec(f("v", ["null", "string", "int"]))) == []
    )


def test_union_narrowed_fails() -> None:
    problems = check_backward(rec(f("v", ["null", "string"])), rec(f("v", "string")))
    assert problems == [
        "v: type changed from [null, string] to string, which cannot hold null values"
    ]
    problems = check_backward(
        rec(f("v", ["null", "string", "int"])), rec(f("v", ["null", "string"]))
    )
    assert problems == [
        "v: type changed from [null, string, int] to [null, string], which cannot hold int values"
    ]


def test_union_record_branch_reports_nested_problem() -> None:
    old = rec(f("home", ["null", address(f("city", "string"))], default=None))
    new = rec(f("home", ["null", address(f("city", "string"), f("zip", "string"))], default=None))
    problems = check_backward(old, new)
    assert len(problems) == 1 and problems[0].startswith("home.zip: field added without")


def test_arrays_and_maps_compare_items_and_values() -> None:
    assert (
        check_backward(
            rec(f("t", {"type": "array", "items": "int"})),
            rec(f("t", {"type": "array", "items": "long"})),
        )
        == []
    )
    assert check_backward(
        rec(f("t", {"type": "array", "items": "string"})),
        rec(f("t", {"type": "array", "items": "int"})),
    ) == ["t[]: type changed from string to int"]
    assert check_backward(
        rec(f("m", {"type": "map", "values": "string"})),
        rec(f("m", {"type": "map", "values": "boolean"})),
    ) == ["m{}: type changed from string to boolean"]
    assert check_backward(
        rec(f("t", {"type": "array", "items": "int"})),
        rec(f("t", {"type": "map", "values": "int"})),
    ) == ["t: type changed from array<int> to map<int>"]


def test_fixed_size_change_fails() -> None:
    old = rec(f("h", {"type": "fixed", "name": "Hash", "size": 16}))
    assert check_backward(old, copy.deepcopy(old)) == []
    new = rec(f("h", {"type": "fixed", "name": "Hash", "size": 32}))
    assert check_backward(old, new) == ["h: fixed Hash size changed 16 → 32"]


def test_logical_type_change_fails() -> None:
    old = rec(f("t", {"type": "long", "logicalType": "timestamp-millis"}))
    new = rec(f("t", {"type": "long", "logicalType": "timestamp-micros"}))
    assert check_backward(old, new) == [
        "t: logical type changed from timestamp-millis to timestamp-micros"
    ]


def test_invalid_schema_is_reported_not_raised() -> None:
    assert check_backward(BASE, rec(f("v", "strng")))[0].startswith("new schema is not valid Avro")
    assert check_backward({"type": "record"}, BASE)[0].startswith("old schema is not valid Avro")


def test_real_promotion_is_readable_by_fastavro() -> None:
    """The rule agrees with Avro itself for the cases Avro decides (int → long, added
    optional field): data written with the old schema reads with the new one."""
    import io

    import fastavro

    old = rec(f("v", "int"))
    new = rec(f("v", "long"), f("w", ["null", "string"], default=None))
    assert check_backward(old, new) == []
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(old), {"v": 7})
    buf.seek(0)
    got = fastavro.schemaless_reader(buf, fastavro.parse_schema(old), fastavro.parse_schema(new))
    assert got == {"v": 7, "w": None}
