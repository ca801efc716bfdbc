"""The three sharing lists and a city's derivation from the province's.

- the **responsibility list** (共享责任清单): per department its duties (职责, each with its
  legal basis) and the resources it must provide, with the default mask of each field it
  provides (used when a field is given masked);
- the **demand list** (需求清单): what a department needs, for which duty, which fields
  (optionally some of them masked for that duty);
- the **negative list** (负面清单): resources or fields that may not be shared, each entry
  with its legal basis.

A :class:`PolicyList` is one version of one kind of list for one region: the province's
(``220000``) or a city's. A city's list holds the city's own entries; :func:`derive` builds
what applies to the city's departments from the province's lists and the city's, and it can
only add restrictions:

- negative list: the province's entries and the city's (a union: nothing the province
  forbids is ever missing);
- demand list: a city entry about a provincial resource must narrow a provincial entry of the
  same department, resource and duty (fields a subset of it) and then replaces it for that
  city; one that would grant more is a problem (:func:`derive` reports it, the review
  refuses it, and the effective list keeps only the intersection with the province);
  entries about the city's own resources (``C.<name>``) are the city's to add;
- responsibility list: the city adds its own departments (``C-...``); it cannot give a
  provincial department duties.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml

from streams.core.regions import CITIES, PROVINCE, REGIONS
from streams.policy.legal import PolicyError, require_basis
from streams.policy.masks import MaskKind

__all__ = [
    "DemandEntry",
    "Duty",
    "EffectiveLists",
    "ListKind",
    "NegativeEntry",
    "PolicyList",
    "Provision",
    "ResponsibilityEntry",
    "department_region",
    "derive",
    "load_lists",
]


class ListKind(StrEnum):
    RESPONSIBILITY = "responsibility"
    DEMAND = "demand"
    NEGATIVE = "negative"


def department_region(department: str) -> str:
    """The region code a department code starts with (``220100-MZ`` → ``220100``)."""
    region = department.split("-", 1)[0]
    if region not in REGIONS or "-" not in department or not department.split("-", 1)[1]:
        raise PolicyError(
            f"department {department!r} is not REGION-CODE, e.g. 220000-GA or 220100-MZ"
        )
    return region


def _strs(raw: Any, what: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str) or not isinstance(raw, Iterable):
        raise PolicyError(f"{what} must be a list of names")
    return tuple(str(x) for x in raw)


def _masks(raw: Any, what: str) -> Mapping[str, MaskKind]:
    if not raw:
        return {}
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{what} must map field names to masks, e.g. {{citizen_id: MASK_HASH}}")
    return {str(k): MaskKind.parse(v) for k, v in raw.items()}


@dataclass(frozen=True, slots=True)
class Duty:
    """One statutory duty of a department: a code requests name as their purpose."""

    code: str
    name: str
    legal_basis: str

    def __post_init__(self) -> None:
        if not self.code.strip():
            raise PolicyError("a duty needs a code (what requests name as their purpose)")
        object.__setattr__(
            self, "legal_basis", require_basis(self.legal_basis, f"duty {self.code}")
        )

    def to_mapping(self) -> dict[str, Any]:
        return {"code": self.code, "name": self.name, "legal_basis": self.legal_basis}

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Duty:
        return cls(str(raw["code"]), str(raw.get("name", "")), str(raw.get("legal_basis", "")))


@dataclass(frozen=True, slots=True)
class Provision:
    """A resource a department must provide, with the default mask of its fields."""

    resource: str
    default_masks: Mapping[str, MaskKind] = field(default_factory=dict)

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resource": self.resource}
        if self.default_masks:
            out["default_masks"] = {k: v.value for k, v in sorted(self.default_masks.items())}
        return out

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> Provision:
        r = str(raw["resource"])
        return cls(r, _masks(raw.get("default_masks"), f"default_masks of {r}"))


@dataclass(frozen=True, slots=True)
class ResponsibilityEntry:
    department: str
    name: str
    duties: tuple[Duty, ...]
    provides: tuple[Provision, ...] = ()

    def __post_init__(self) -> None:
        department_region(self.department)
        if not self.duties:
            raise PolicyError(f"{self.department}: a registered department has at least one duty")

    def duty(self, code: str) -> Duty | None:
        return next((d for d in self.duties if d.code == code), None)

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "department": self.department,
            "name": self.name,
            "duties": [d.to_mapping() for d in self.duties],
        }
        if self.provides:
            out["provides"] = [p.to_mapping() for p in self.provides]
        return out

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ResponsibilityEntry:
        return cls(
            str(raw["department"]),
            str(raw.get("name", "")),
            tuple(Duty.from_mapping(d) for d in raw.get("duties") or ()),
            tuple(Provision.from_mapping(p) for p in raw.get("provides") or ()),
        )


@dataclass(frozen=True, slots=True)
class DemandEntry:
    """``department`` needs ``fields`` of ``resource`` for its duty ``duty``; ``masks``
    names fields it gets masked for that duty (they must be among ``fields``)."""

    department: str
    resource: str
    duty: str
    fields: tuple[str, ...]
    masks: Mapping[str, MaskKind] = field(default_factory=dict)

    def __post_init__(self) -> None:
        department_region(self.department)
        if not self.fields:
            raise PolicyError(f"demand of {self.department} for {self.resource}: name its fields")
        extra = set(self.masks) - set(self.fields)
        if extra:
            raise PolicyError(
                f"demand of {self.department} for {self.resource}: masks name fields not in "
                f"its fields: {sorted(extra)}"
            )

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.department, self.resource, self.duty)

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "department": self.department,
            "resource": self.resource,
            "duty": self.duty,
            "fields": list(self.fields),
        }
        if self.masks:
            out["masks"] = {k: v.value for k, v in sorted(self.masks.items())}
        return out

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> DemandEntry:
        r = str(raw["resource"])
        return cls(
            str(raw["department"]),
            r,
            str(raw["duty"]),
            _strs(raw.get("fields"), f"fields of the demand for {r}"),
            _masks(raw.get("masks"), f"masks of the demand for {r}"),
        )


@dataclass(frozen=True, slots=True)
class NegativeEntry:
    """``resource`` (all of it when ``fields`` is empty, else those fields) may not be
    shared; the legal basis is required: an entry without one cannot be built."""

    resource: str
    legal_basis: str
    fields: tuple[str, ...] = ()
    note: str = ""

    def __post_init__(self) -> None:
        if not self.resource.strip():
            raise PolicyError("a negative-list entry names a resource")
        object.__setattr__(
            self,
            "legal_basis",
            require_basis(self.legal_basis, f"the negative-list entry for {self.resource}"),
        )

    @property
    def whole_resource(self) -> bool:
        return not self.fields

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {"resource": self.resource, "legal_basis": self.legal_basis}
        if self.fields:
            out["fields"] = list(self.fields)
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> NegativeEntry:
        r = str(raw["resource"])
        return cls(
            r,
            str(raw.get("legal_basis") or ""),
            _strs(raw.get("fields"), f"fields of the negative entry for {r}"),
            str(raw.get("note", "")),
        )


Entry = ResponsibilityEntry | DemandEntry | NegativeEntry
_ENTRY: dict[ListKind, Any] = {
    ListKind.RESPONSIBILITY: ResponsibilityEntry,
    ListKind.DEMAND: DemandEntry,
    ListKind.NEGATIVE: NegativeEntry,
}


@dataclass(frozen=True, slots=True)
class PolicyList:
    """One version of one list of one region. ``version`` 0 is a file not yet submitted."""

    kind: ListKind
    region: str
    entries: tuple[Entry, ...]
    version: int = 0
    description: str = ""

    def __post_init__(self) -> None:
        if self.region != PROVINCE and self.region not in CITIES:
            raise PolicyError(
                f"{self.kind} list: region {self.region!r} is neither the province "
                f"({PROVINCE}) nor one of its cities ({', '.join(CITIES)})"
            )
        kind = _ENTRY[self.kind]
        if not all(isinstance(e, kind) for e in self.entries):
            raise PolicyError(f"{self.kind} list holds entries of another kind")

    @property
    def key(self) -> str:
        """The list's key in the store: ``list/<region>/<kind>``."""
        return list_key(self.region, self.kind)

    @property
    def label(self) -> str:
        return f"{self.region}:{self.kind.value}@{self.version}"

    def with_version(self, version: int) -> PolicyList:
        return PolicyList(self.kind, self.region, self.entries, version, self.description)

    def to_mapping(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind.value,
            "region": self.region,
            "version": self.version,
            "entries": [e.to_mapping() for e in self.entries],
        }
        if self.description:
            out["description"] = self.description
        return out

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any], where: str = "policy list") -> PolicyList:
        try:
            try:
                kind = ListKind(raw["kind"])
            except ValueError:
                kinds = ", ".join(k.value for k in ListKind)
                raise PolicyError(f"kind {raw['kind']!r} is not one of: {kinds}") from None
            entries = raw.get("entries") or []
            if not isinstance(entries, list):
                raise PolicyError("entries must be a list")
            return cls(
                kind,
                str(raw["region"]),
                tuple(_ENTRY[kind].from_mapping(e) for e in entries),
                int(raw.get("version", 0)),
                str(raw.get("description", "")),
            )
        except PolicyError as exc:
            raise PolicyError(f"{where}: {exc}") from exc
        except KeyError as exc:
            raise PolicyError(f"{where}: missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError, AttributeError) as exc:
            raise PolicyError(f"{where}: {exc}") from exc


def list_key(region: str, kind: ListKind) -> str:
    return f"list/{region}/{kind.value}"


def load_lists(path: Path) -> list[PolicyList]:
    """The lists of one YAML/JSON file, or of every such file below a folder."""
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})
        if path.is_dir()
        else [path]
    )
    out: list[PolicyList] = []
    for p in files:
        try:
            raw = yaml.safe_load(p.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise PolicyError(f"{p}: cannot be read as YAML/JSON: {exc}") from exc
        items = raw if isinstance(raw, list) else [raw]
        if not all(isinstance(i, dict) for i in items):
            raise PolicyError(f"{p}: expected a policy list (kind, region, entries)")
        out.extend(PolicyList.from_mapping(i, str(p)) for i in items)
    return out


# -- derivation ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EffectiveLists:
    """What applies to the departments of ``region``: the province's lists, with a city's
    restrictions and additions when ``region`` is a city. ``versions`` names the list
    versions it was built from (``220000:demand@3``)."""

    region: str
    responsibility: Mapping[str, ResponsibilityEntry]
    demand: Mapping[tuple[str, str, str], DemandEntry]
    negative: tuple[NegativeEntry, ...]
    versions: tuple[str, ...]

    @property
    def version(self) -> str:
        return ",".join(self.versions) or "none"

    def negative_for(self, resource: str) -> list[NegativeEntry]:
        return [n for n in self.negative if n.resource == resource]

    def default_mask(self, resource: str, field_name: str) -> MaskKind:
        for entry in self.responsibility.values():
            for p in entry.provides:
                if p.resource == resource and field_name in p.default_masks:
                    return p.default_masks[field_name]
        return MaskKind.REDACT


def _own(region: str, name: str) -> bool:
    """True when ``name`` (a resource id or a department) belongs to city ``region``."""
    return name.startswith(f"{region}.") or name.startswith(f"{region}-")


def derive(
    province: Mapping[ListKind, PolicyList], city: Mapping[ListKind, PolicyList] | None = None
) -> tuple[EffectiveLists, list[str]]:
    """The lists for the departments of a city (or of the province when ``city`` is None or
    empty) and the problems of the city's lists: each is an attempt to lift a provincial
    restriction or to act for the province. The effective lists never lift one, problems or
    not: an offending city entry is cut back to what the province allows, or dropped."""
    problems: list[str] = []
    lists = [lst for lst in province.values() if lst is not None]
    for lst in lists:
        if lst.region != PROVINCE:
            raise PolicyError(f"{lst.label} is not a provincial list")
    city = city or {}
    regions = {lst.region for lst in city.values()}
    if len(regions) > 1 or PROVINCE in regions:
        raise PolicyError(f"the city lists given are of {sorted(regions)}, not of one city")
    region = regions.pop() if regions else PROVINCE

    resp: dict[str, ResponsibilityEntry] = {}
    demand: dict[tuple[str, str, str], DemandEntry] = {}
    negative: list[NegativeEntry] = []
    p_resp = province.get(ListKind.RESPONSIBILITY)
    p_demand = province.get(ListKind.DEMAND)
    p_neg = province.get(ListKind.NEGATIVE)
    for e in p_resp.entries if p_resp else ():
        assert isinstance(e, ResponsibilityEntry)
        resp[e.department] = e
    for e in p_demand.entries if p_demand else ():
        assert isinstance(e, DemandEntry)
        demand[e.key] = e
    for e in p_neg.entries if p_neg else ():
        assert isinstance(e, NegativeEntry)
        negative.append(e)

    c_resp = city.get(ListKind.RESPONSIBILITY)
    for e in c_resp.entries if c_resp else ():
        assert isinstance(e, ResponsibilityEntry)
        if not _own(region, e.department):
            problems.append(
                f"{region} responsibility list: {e.department} is not a department of {region}; "
                f"a city registers its own departments only (the province's are in the "
                f"provincial list)"
            )
            continue
        base_resp = resp.get(e.department)
        if base_resp is not None:
            extra = [d.code for d in e.duties if base_resp.duty(d.code) is None]
            if extra:
                problems.append(
                    f"{region} responsibility list: {e.department} is registered by the "
                    f"province; the city cannot give it duties {extra} the province does not"
                )
                continue
        resp[e.department] = e
    c_demand = city.get(ListKind.DEMAND)
    for e in c_demand.entries if c_demand else ():
        assert isinstance(e, DemandEntry)
        if _own(region, e.resource):
            demand[e.key] = e
            continue
        base = demand.get(e.key)
        if base is None:
            problems.append(
                f"{region} demand list: {e.department} for {e.resource} ({e.duty}) is not on "
                f"the provincial demand list; a city may narrow the province's demand entries, "
                f"never add one for a provincial resource (that would lift a restriction)"
            )
            continue
        wider = [f for f in e.fields if f not in base.fields]
        unmasked = [f for f in base.masks if f in e.fields and f not in e.masks]
        if wider or unmasked:
            problems.append(
                f"{region} demand list: {e.department} for {e.resource} ({e.duty}) would lift "
                f"a provincial restriction: fields {wider + unmasked} are not given "
                f"(or not given clear) by the provincial demand list"
            )
        fields = tuple(f for f in e.fields if f in base.fields)
        if fields:
            # Where the province masks a field, its mask stays (a city may only null it);
            # where the province gives it clear, the city may mask it.
            masks: dict[str, MaskKind] = {}
            for f in fields:
                if f in base.masks:
                    city_null = e.masks.get(f) is MaskKind.NULL
                    masks[f] = MaskKind.NULL if city_null else base.masks[f]
                elif f in e.masks:
                    masks[f] = e.masks[f]
            demand[e.key] = DemandEntry(e.department, e.resource, e.duty, fields, masks)
        else:
            del demand[e.key]
    c_neg = city.get(ListKind.NEGATIVE)
    for e in c_neg.entries if c_neg else ():
        assert isinstance(e, NegativeEntry)
        negative.append(e)

    versions = tuple(
        lst.label for lst in (p_resp, p_demand, p_neg, c_resp, c_demand, c_neg) if lst is not None
    )
    return EffectiveLists(region, resp, demand, tuple(negative), versions), problems


def check_city(
    province: Mapping[ListKind, PolicyList], city: Mapping[ListKind, PolicyList]
) -> None:
    """Raise :class:`PolicyError` when a city's lists would lift a provincial restriction."""
    _, problems = derive(province, city)
    if problems:
        raise PolicyError(
            "the city's lists would lift provincial restrictions: " + "; ".join(problems),
            problems,
        )


def entries_of(lists: Sequence[PolicyList], kind: ListKind) -> list[Entry]:
    return [e for lst in lists if lst.kind is kind for e in lst.entries]
