"""The register of participating units (参与单位名录), article 22: who may be named as the
department responsible for or the provider of a catalog resource.

A :class:`Unit` is one body taking part in the exchange: its code, its name in Chinese, its
:class:`UnitKind`, its parent unit, its region and its duties (the entries of the
responsibility list it owns). :func:`validate_unit` is the check a unit passes before the
data bureau may register it; :class:`UnitRegister` is the in-memory index the catalog asks
"is this a registered unit" (:meth:`UnitRegister.registered`). No Kafka here.

Unit codes are ``<region>-<TAG>``: the GB/T 2260 code of the unit's region, a hyphen and an
upper-case tag naming the body (``220000-GA`` the provincial public security department,
``220100-MZ`` Changchun's civil affairs bureau, ``220102-MZ`` the civil affairs bureau of
Nanguan district, ``220100-ZF`` the Changchun city government). A commissioned third party
(受委托的第三方) is coded below the unit that commissions it, ``<parent code>.<TAG>``
(``220000-ZRZY.CHY`` a surveying institute commissioned by the natural resources
department). Source systems are not units: ``220000-GA/huji`` is the household-registration
system of unit ``220000-GA`` (:func:`unit_of_source`).

Rules :func:`validate_unit` enforces (each refusal names what to fix):

* the code has the form above and starts with the unit's region; the region is a known
  Jilin region code (:mod:`streams.core.regions`);
* a *provincial department* has region 220000 and no parent; a *city* (the nine
  prefecture-level governments) has a city code as region and no parent;
* a *city department*'s parent is its city (same region);
* a *district or county body* has a county-level region; its parent is the city it lies in
  or a department of that city, or a body of the same district or county;
* a *commissioned third party*'s code extends its parent's code, its parent is a unit that is
  not itself a third party, and it has its parent's region;
* the parent is registered (in force); an update of a unit in force keeps its kind.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from streams.core.regions import CITIES, PROVINCE, REGIONS, city_of, is_region

__all__ = [
    "CODE_PATTERN",
    "KIND_ORDER",
    "PRINCIPAL_KINDS",
    "Unit",
    "UnitError",
    "UnitKind",
    "UnitRegister",
    "UnitStatus",
    "load_units",
    "unit_of_source",
    "validate_unit",
]

#: ``<region>-<TAG>`` and, for a commissioned third party, ``<region>-<TAG>.<TAG>``
CODE_PATTERN = re.compile(r"^(\d{6})-([A-Z][A-Z0-9]{0,15})(?:\.([A-Z][A-Z0-9]{0,15}))?$")
MAX_NAME = 100
MAX_DUTY = 200


class UnitError(ValueError):
    """A unit or a change of the register that cannot be accepted; the message says why.

    ``problems`` lists every reason when a unit fails several checks at once.
    """

    def __init__(self, message: str, problems: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.problems: tuple[str, ...] = tuple(problems) or (message,)


class UnitKind(StrEnum):
    PROVINCIAL_DEPARTMENT = "provincial_department"  # 省级部门
    CITY = "city"  # 市（州）人民政府
    CITY_DEPARTMENT = "city_department"  # 市（州）级部门
    DISTRICT = "district"  # 县（市、区）及其部门
    THIRD_PARTY = "third_party"  # 受委托的第三方


#: the kinds of unit that collect in their own name and have a collect topic of their own
PRINCIPAL_KINDS = frozenset({UnitKind.PROVINCIAL_DEPARTMENT, UnitKind.CITY})


class UnitStatus(StrEnum):
    SUBMITTED = "submitted"
    APPROVED = "approved"  # registered
    REJECTED = "rejected"
    SUPERSEDED = "superseded"  # was in force until a newer version was approved


@dataclass(frozen=True, slots=True)
class Unit:
    """One unit taking part in the exchange."""

    code: str
    name: str
    kind: UnitKind
    region: str
    parent: str | None = None
    duties: tuple[str, ...] = ()
    status: UnitStatus = UnitStatus.SUBMITTED
    version: int = 1

    @property
    def in_force(self) -> bool:
        return self.status is UnitStatus.APPROVED

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Unit:
        """Build from a YAML/JSON entry; a missing or bad field raises :class:`UnitError`."""
        code = str(raw.get("code", "?"))
        try:
            kind_raw = raw["kind"]
            try:
                kind = UnitKind(kind_raw)
            except ValueError:
                valid = ", ".join(k.value for k in UnitKind)
                raise ValueError(f"kind {kind_raw!r} is not one of: {valid}") from None
            status_raw = raw.get("status", "submitted")
            try:
                status = UnitStatus(status_raw)
            except ValueError:
                valid = ", ".join(s.value for s in UnitStatus)
                raise ValueError(f"status {status_raw!r} is not one of: {valid}") from None
            duties = raw.get("duties") or []
            if isinstance(duties, str) or not isinstance(duties, list):
                raise ValueError("duties must be a list of responsibility-list entries")
            parent = raw.get("parent")
            return cls(
                code=str(raw["code"]),
                name=str(raw["name"]),
                kind=kind,
                region=str(raw["region"]),
                parent=str(parent) if parent else None,
                duties=tuple(str(d) for d in duties),
                status=status,
                version=int(raw.get("version", 1)),
            )
        except KeyError as exc:
            raise UnitError(f"unit {code}: missing field {exc.args[0]!r}") from exc
        except (ValueError, TypeError, AttributeError) as exc:
            raise UnitError(f"unit {code}: {exc}") from exc

    def to_mapping(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "kind": self.kind.value,
            "region": self.region,
            "parent": self.parent,
            "duties": list(self.duties),
            "status": self.status.value,
            "version": self.version,
        }


def load_units(path: Path) -> list[Unit]:
    """Units of one YAML or JSON file (a list of units, or a single unit)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise UnitError(f"{path}: not valid YAML/JSON: {exc}") from exc
    items = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(i, dict) for i in items):
        raise UnitError(f"{path}: expected a list of units")
    return [Unit.from_mapping(i) for i in items]


def unit_of_source(source: str) -> str:
    """The unit code of a source system name (``220000-GA/huji`` → ``220000-GA``)."""
    return source.split("/", 1)[0]


class UnitRegister:
    """Index of units by code: per code the version in force, else the latest one."""

    def __init__(self, units: Iterable[Unit] = ()) -> None:
        self._units: dict[str, Unit] = {}
        self._principals: dict[str, str | None] = {}  # filled lazily; a register never changes
        for u in units:
            self._units[u.code] = u

    def get(self, code: str) -> Unit | None:
        return self._units.get(code)

    def in_force(self, code: str) -> Unit | None:
        u = self._units.get(code)
        return u if u is not None and u.in_force else None

    def registered(self, code: str) -> bool:
        """True if ``code`` is a unit in force: the one question the catalog and the
        ingest ask of the register."""
        return self.in_force(code) is not None

    def name_of(self, code: str) -> str:
        """The registered name of ``code``; the code itself for an unregistered one."""
        u = self.in_force(code)
        return u.name if u is not None else code

    def children(self, code: str) -> list[Unit]:
        return sorted((u for u in self._units.values() if u.parent == code), key=lambda u: u.code)

    def principal_of(self, code: str) -> str | None:
        """The collecting principal (采集主体) ``code`` publishes through: itself if it is a
        provincial department or a city, else the first such unit up its parents. None
        for a unit not in force, or one whose chain of parents breaks off."""
        cache = self._principals
        if code in cache:
            return cache[code]
        found: str | None = None
        seen: set[str] = set()
        current = self.in_force(code)
        while current is not None and current.code not in seen:
            if current.kind in PRINCIPAL_KINDS:
                found = current.code
                break
            seen.add(current.code)
            current = self.in_force(current.parent) if current.parent else None
        cache[code] = found
        return found

    def principals(self) -> list[str]:
        """Every collecting principal in force: each has a collect topic of its own."""
        return sorted(
            u.code for u in self._units.values() if u.in_force and u.kind in PRINCIPAL_KINDS
        )

    def accountable_of(self, code: str) -> str | None:
        """Who answers for a record ``code`` collected: a commissioned third party's
        commissioning unit, else the unit itself (article 17: commissioning does not move
        the responsibility)."""
        u = self.in_force(code)
        if u is None:
            return None
        return u.parent if u.kind is UnitKind.THIRD_PARTY else u.code

    def with_unit(self, unit: Unit) -> UnitRegister:
        """A new register holding ``unit`` in place of its code's current one (copy on write)."""
        other = UnitRegister()
        other._units = {**self._units, unit.code: unit}
        return other

    def approved(self) -> UnitRegister:
        """Every unit in force as it stands (a starter register read from files, as the
        data bureau's bootstrap approves it): for tests and the sample generator."""
        return UnitRegister(replace(u, status=UnitStatus.APPROVED) for u in self._units.values())

    def __iter__(self) -> Iterator[Unit]:
        return iter(list(self._units.values()))

    def __len__(self) -> int:
        return len(self._units)

    def __contains__(self, code: object) -> bool:
        return isinstance(code, str) and self.registered(code)

    @classmethod
    def from_dir(cls, root: Path) -> UnitRegister:
        """Every ``*.yaml``, ``*.yml`` and ``*.json`` below ``root`` (the starter register)."""
        files = sorted(p for p in root.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})
        return cls(u for p in files for u in load_units(p))


#: the order in which a starter register is loaded: parents before their children
KIND_ORDER: tuple[UnitKind, ...] = (
    UnitKind.PROVINCIAL_DEPARTMENT,
    UnitKind.CITY,
    UnitKind.CITY_DEPARTMENT,
    UnitKind.DISTRICT,
    UnitKind.THIRD_PARTY,
)


def validate_unit(unit: Unit, register: UnitRegister) -> None:
    """Raise :class:`UnitError` naming everything to fix before ``unit`` may be registered.

    ``register`` is the register as it stands: the parent must be in force there, and its
    in-force version of ``unit.code`` (if any) is the version being updated."""
    problems = _own_problems(unit)
    if not problems:
        problems += _parent_problems(unit, register)
    current = register.in_force(unit.code)
    if current is not None and current.kind is not unit.kind:
        problems.append(
            f"kind cannot change from {current.kind.value!r} to {unit.kind.value!r} in an "
            f"update of a registered unit; register a new unit instead"
        )
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise UnitError(f"unit {unit.code} refused:\n{listed}", problems)


def _own_problems(u: Unit) -> list[str]:
    out: list[str] = []
    if not u.name.strip():
        out.append("name is empty: give the unit's name in Chinese, e.g. 吉林省公安厅")
    elif len(u.name) > MAX_NAME:
        out.append(f"name is {len(u.name)} characters, over {MAX_NAME}")
    seen: set[str] = set()
    for d in u.duties:
        if not d.strip() or len(d) > MAX_DUTY:
            out.append(f"duty {d!r:.60}: give a non-empty entry of at most {MAX_DUTY} characters")
        elif d in seen:
            out.append(f"duty {d!r} is listed twice")
        seen.add(d)
    if not is_region(u.region):
        out.append(
            f"region {u.region!r}: use a Jilin region code (GB/T 2260), e.g. {PROVINCE} for "
            f"the province, 220100 for 长春市, 220102 for 南关区"
        )
        return out
    m = CODE_PATTERN.match(u.code)
    third = u.kind is UnitKind.THIRD_PARTY
    example = f"{u.region}-GA.ABC" if third else f"{u.region}-GA"
    if m is None:
        out.append(
            f"code {u.code!r}: use '<region code>-<TAG>' in upper-case letters and digits, "
            f"e.g. {example!r}"
            + (" (a commissioned third party: '<parent code>.<TAG>')" if third else "")
        )
        return out
    if m.group(1) != u.region:
        out.append(f"code {u.code!r} must start with the unit's region code {u.region}")
    if third != (m.group(3) is not None):
        out.append(
            f"code {u.code!r}: a commissioned third party is coded '<parent code>.<TAG>', "
            f"e.g. {example!r}"
            if third
            else f"code {u.code!r}: only a commissioned third party has a '.<TAG>' suffix; "
            f"use e.g. {example!r}"
        )
    county = not u.region.endswith("00")
    expected = {
        UnitKind.PROVINCIAL_DEPARTMENT: u.region == PROVINCE,
        UnitKind.CITY: u.region in CITIES,
        UnitKind.CITY_DEPARTMENT: u.region in CITIES,
        UnitKind.DISTRICT: county,
        UnitKind.THIRD_PARTY: True,
    }[u.kind]
    if not expected:
        where = {
            UnitKind.PROVINCIAL_DEPARTMENT: f"the province ({PROVINCE})",
            UnitKind.CITY: f"a city or prefecture ({', '.join(CITIES)})",
            UnitKind.CITY_DEPARTMENT: f"a city or prefecture ({', '.join(CITIES)})",
            UnitKind.DISTRICT: "a district or county (a code not ending in 00, e.g. 220102)",
        }[u.kind]
        out.append(
            f"region {u.region} ({REGIONS[u.region]}): a unit of kind {u.kind.value!r} has "
            f"the region of {where}"
        )
    if u.kind in (UnitKind.PROVINCIAL_DEPARTMENT, UnitKind.CITY) and u.parent:
        out.append(f"a unit of kind {u.kind.value!r} has no parent (got {u.parent!r})")
    if u.kind not in (UnitKind.PROVINCIAL_DEPARTMENT, UnitKind.CITY) and not u.parent:
        out.append(f"parent is empty: a unit of kind {u.kind.value!r} names its parent unit")
    if u.parent == u.code:
        out.append("a unit cannot be its own parent")
    return out


def _parent_problems(u: Unit, register: UnitRegister) -> list[str]:
    if u.parent is None:
        return []
    parent = register.in_force(u.parent)
    if parent is None:
        return [
            f"parent {u.parent!r} is not a registered unit: register it first (its parent or "
            f"the data bureau submits it, the data bureau approves it)"
        ]
    k, pk = u.kind, parent.kind
    if k is UnitKind.CITY_DEPARTMENT:
        ok = pk is UnitKind.CITY and parent.region == u.region
        want = f"the city {u.region} ({REGIONS[u.region]}) itself, e.g. {u.region}-ZF"
    elif k is UnitKind.DISTRICT:
        city = city_of(u.region)
        ok = (pk in (UnitKind.CITY, UnitKind.CITY_DEPARTMENT) and parent.region == city) or (
            pk is UnitKind.DISTRICT and parent.region == u.region
        )
        want = (
            f"the city {city} ({REGIONS[city]}) or one of its departments, "
            f"or a body of {u.region} ({REGIONS[u.region]})"
        )
    else:  # third party
        ok = pk is not UnitKind.THIRD_PARTY and u.code.startswith(f"{parent.code}.")
        want = "the unit that commissions it (not a third party), its code extending the parent's"
        if ok and parent.region != u.region:
            return [
                f"region {u.region}: a commissioned third party has its parent's region "
                f"{parent.region}"
            ]
    if ok:
        return []
    return [
        f"parent {parent.code} ({parent.name}, {pk.value}, region {parent.region}) cannot be "
        f"the parent of a unit of kind {k.value!r}: its parent is {want}"
    ]
