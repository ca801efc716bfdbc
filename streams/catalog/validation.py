"""Validation of catalog entries (目录审核规则), articles 14 to 16 and 22: see
:mod:`streams.catalog.model` for the rules; :func:`validate_entry` is the check an entry passes
before it may go in force. Given the unit register, it also refuses an entry whose department
or provider is not a registered unit (article 22: a named, answerable body)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from streams.catalog.model import (
    SUBJECT_KEY_FIELDS,
    UPDATE_FREQUENCIES,
    Catalog,
    CatalogError,
    OpenAttribute,
    Resource,
    SchemaLoader,
    ShareAttribute,
    data_items,
    field_names,
    load_spec,
)
from streams.catalog.spec import SpecError, compile_rules
from streams.core.regions import CITIES, PROVINCE
from streams.units.model import UnitKind, UnitRegister
from streams.wire.compat import check_backward

__all__ = ["validate_entry"]

_ID = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
_CITY_ID = re.compile(r"^(\d{6})\.(.+)$")
_SUBJECT = re.compile(r"^[a-z][a-z0-9_]*$")


def _given(spec: Mapping[str, Any]) -> SchemaLoader:
    return lambda _path: spec


def _regions_overlap(a: str, b: str) -> bool:
    return a == b or PROVINCE in (a, b)


def validate_entry(
    entry: Resource,
    catalog: Catalog,
    schema_loader: SchemaLoader,
    *,
    specs: Mapping[str, Mapping[str, Any]] | None = None,
    spec: Mapping[str, Any] | None = None,
    units: UnitRegister | None = None,
) -> None:
    """Raise :class:`CatalogError` naming everything to fix before ``entry`` may go in force.

    ``catalog`` is the catalog as it stands (its in-force version of ``entry.id``, if any,
    is the version being updated). ``specs`` gives the collection specs of in-force
    resources by resource id as they were approved; a resource missing there has its spec
    read with ``schema_loader``. Pass them when a spec file may have been edited in place,
    or the compatibility check would compare the new file with itself. ``spec`` is the
    entry's own spec when it is already known (e.g. the one recorded at submission), else
    it is read with ``schema_loader``. ``units`` is the unit register: the department and the
    provider must be units in force there (not commissioned third parties, which collect on
    a department's behalf); without it (a bare book in tests) units are not checked.
    """
    problems = _attribute_problems(entry) + _region_problems(entry, catalog)
    if units is not None:
        problems += _unit_problems(entry, units)
    try:
        spec = load_spec(entry, schema_loader if spec is None else _given(spec))
    except CatalogError as exc:
        problems.append(str(exc))
        spec = None
    if spec is not None:
        problems += _field_problems(entry, spec)
        problems += _update_problems(entry, spec, catalog, schema_loader, specs or {})
        problems += _duplicate_problems(entry, spec, catalog, schema_loader, specs or {})
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise CatalogError(f"catalog entry {entry.id} refused:\n{listed}", problems)


def _attribute_problems(e: Resource) -> list[str]:
    out: list[str] = []
    if e.region == PROVINCE and not _CITY_ID.match(e.id) and not _ID.match(e.id):
        out.append(f"id {e.id!r}: use lower-case dotted words such as 'population.resident'")
    for label, value in (("name", e.name), ("department", e.department), ("provider", e.provider)):
        if not value.strip():
            out.append(f"{label} is empty")
    if not _SUBJECT.match(e.subject):
        out.append(f"subject {e.subject!r}: name the kind of subject identifier, e.g. citizen_id")
    if e.update_frequency not in UPDATE_FREQUENCIES:
        out.append(
            f"update_frequency {e.update_frequency!r}: use one of {', '.join(UPDATE_FREQUENCIES)}"
        )
    if not e.channels:
        out.append("channels is empty: allow at least one collection channel")
    if e.share is ShareAttribute.CONDITIONAL:
        if not e.share_conditions.strip():
            out.append("share attribute 'conditional' needs its conditions (share.conditions)")
        if not e.share_legal_basis.strip():
            out.append("share attribute 'conditional' needs a legal basis (share.legal_basis)")
    if e.share is ShareAttribute.NOT_SHARED:
        if not e.share_legal_basis.strip():
            out.append(
                "share attribute 'not_shared' needs a legal basis (share.legal_basis): "
                "sharing is the rule, refusal needs a law (article 24)"
            )
        if e.open is not OpenAttribute.NOT_OPEN:
            out.append(
                f"open attribute {e.open.value!r} contradicts share attribute "
                f"'not_shared': data not shared between departments cannot be opened"
            )
    if e.open is not OpenAttribute.OPEN and not e.open_legal_basis.strip():
        out.append(f"open attribute {e.open.value!r} needs a legal basis (open.legal_basis)")
    return out


def _region_problems(e: Resource, catalog: Catalog) -> list[str]:
    if e.region == PROVINCE:
        if _CITY_ID.match(e.id):
            return [
                f"id {e.id!r}: a provincial resource id must not start with a region code; "
                f"ids '<city code>.<name>' belong to city supplementary catalogs"
            ]
        return []
    if e.region not in CITIES:
        return [
            f"region {e.region!r}: use {PROVINCE} (province) or a city code "
            f"({', '.join(sorted(CITIES))})"
        ]
    out: list[str] = []
    m = _CITY_ID.match(e.id)
    if m is None or m.group(1) != e.region or not _ID.match(m.group(2)):
        out.append(
            f"id {e.id!r}: a city supplementary entry's id is '{e.region}.<name>', "
            f"e.g. '{e.region}.population.elderly_allowance'"
        )
    else:
        local = m.group(2)
        shadowed = catalog.get(local)
        if shadowed is not None and shadowed.region == PROVINCE:
            out.append(
                f"id {e.id!r} shadows provincial resource {local} (provided by "
                f"{shadowed.provider}): a supplementary catalog only adds data the "
                f"provincial catalog lacks; use {local} by sharing"
            )
    if not e.department.startswith(f"{e.region}-"):
        out.append(
            f"department {e.department!r}: a city supplementary entry is compiled by a "
            f"body of that city, coded '{e.region}-...'"
        )
    return out


def _unit_problems(e: Resource, units: UnitRegister) -> list[str]:
    out: list[str] = []
    for label, code in (("department", e.department), ("provider", e.provider)):
        if not code.strip():
            continue  # reported as empty
        unit = units.in_force(code)
        if unit is None:
            known = units.get(code)
            state = f" (it is {known.status.value}, not approved)" if known is not None else ""
            out.append(
                f"{label} {code!r} is not a registered unit{state}: name a unit of the "
                f"register (`xiangyun units list`), or have it registered first "
                f"(`xiangyun units submit FILE`, approved by the data bureau)"
            )
        elif unit.kind is UnitKind.THIRD_PARTY:
            out.append(
                f"{label} {code!r} ({unit.name}) is a commissioned third party: it collects "
                f"on behalf of {unit.parent}, which stays responsible (article 17); name "
                f"{unit.parent} and allow the COMMISSIONED channel"
            )
    return out


def _field_problems(e: Resource, spec: Mapping[str, Any]) -> list[str]:
    fields = set(field_names(spec))
    listed = ", ".join(sorted(fields))
    out = [
        f"subject {e.subject!r}: {e.schema} has no field {name!r}, so a record cannot be "
        f"matched to its subject (fields: {listed})"
        for name in SUBJECT_KEY_FIELDS.get(e.subject, (e.subject,))
        if name not in fields
    ]
    out += [
        f"field rule for {name!r}: {e.schema} has no such field (fields: {listed})"
        for name in e.field_rules
        if name not in fields
    ]
    try:
        compile_rules(e)
    except SpecError as exc:
        out.append(f"field rules: {exc}")
    return out


def _spec_of(
    r: Resource, loader: SchemaLoader, specs: Mapping[str, Mapping[str, Any]]
) -> Mapping[str, Any]:
    known = specs.get(r.id)
    return known if known is not None else load_spec(r, loader)


def _update_problems(
    e: Resource,
    spec: Mapping[str, Any],
    catalog: Catalog,
    loader: SchemaLoader,
    specs: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    current = catalog.in_force(e.id)
    if current is None:
        return []
    out = [
        f"{label} cannot change from {old!r} to {new!r} in an update of a resource in "
        f"force; retire {e.id} and register a new resource instead"
        for label, old, new in (
            ("subject", current.subject, e.subject),
            ("pool", current.pool.value, e.pool.value),
            ("region", current.region, e.region),
        )
        if old != new
    ]
    try:
        old_spec = _spec_of(current, loader, specs)
    except CatalogError as exc:
        return [*out, f"cannot check compatibility with version {current.version} in force: {exc}"]
    out += [
        f"collection spec {e.schema} is not backward compatible with version "
        f"{current.version} in force ({current.schema}): {p}"
        for p in check_backward(old_spec, spec)
    ]
    return out


def _duplicate_problems(
    e: Resource,
    spec: Mapping[str, Any],
    catalog: Catalog,
    loader: SchemaLoader,
    specs: Mapping[str, Mapping[str, Any]],
) -> list[str]:
    mine = data_items(e, spec)
    out: list[str] = []
    for other in sorted(catalog, key=lambda r: r.id):
        if (
            other.id == e.id
            or not other.in_force
            or other.subject != e.subject
            or not _regions_overlap(other.region, e.region)
        ):
            continue
        try:
            theirs = data_items(other, _spec_of(other, loader, specs))
        except CatalogError as exc:
            out.append(f"cannot check for a second source against {other.id}: {exc}")
            continue
        common = sorted(mine & theirs)
        if common:
            out.append(
                f"data items {', '.join(common)} are already collected by {other.id} "
                f"from {other.provider}; obtain them by sharing (article 16: collect "
                f"once, share for use) instead of collecting them again"
            )
    return out
