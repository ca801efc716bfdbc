"""Export of the catalog in force as DCAT-AP (JSON-LD) for data portals.

One ``dcat:Catalog`` with one ``dcat:Dataset`` per resource in force (approved). Controlled
values use the EU Publications Office authority tables that DCAT-AP prescribes:

* ``dct:accessRights`` from the open attribute: open → PUBLIC, restricted → RESTRICTED,
  not_open → NON_PUBLIC (access-right table);
* ``dct:accrualPeriodicity`` from the update frequency (frequency table; realtime is
  UPDATE_CONT, "continuously updated");
* ``dcat:theme``: the resource pool (a concept of this platform's pool scheme) and, where
  one fits, the EU data theme.

The version is given as ``dcat:version`` (DCAT 3 / DCAT-AP 3) and ``owl:versionInfo``
(DCAT-AP 2); ADMS has no ``adms:version`` property (only ``adms:versionNotes``). Terms
without a DCAT-AP equivalent (share attribute, legal bases, consent, provider) use the
platform's own ``xy:`` namespace below ``base_uri``.

Given the unit register, publishers and creators are named by their registered names
(``foaf:name`` 吉林省公安厅, the code as ``dct:identifier``); without it, by their codes.
"""

from __future__ import annotations

from typing import Any

from streams.catalog.model import Catalog, OpenAttribute, Resource, ShareAttribute
from streams.core.pools import Pool
from streams.core.regions import PROVINCE
from streams.units.model import UnitRegister
from streams.units.review import DATA_BUREAU

__all__ = [
    "ACCESS_RIGHTS",
    "CONTEXT",
    "DATA_THEMES",
    "DEFAULT_BASE_URI",
    "FREQUENCIES",
    "to_dcat_ap",
]

DEFAULT_BASE_URI = "https://data.jl.gov.cn/xiangyun/"
EU = "http://publications.europa.eu/resource/authority/"

ACCESS_RIGHTS: dict[OpenAttribute, str] = {
    OpenAttribute.OPEN: EU + "access-right/PUBLIC",
    OpenAttribute.RESTRICTED: EU + "access-right/RESTRICTED",
    OpenAttribute.NOT_OPEN: EU + "access-right/NON_PUBLIC",
}

FREQUENCIES: dict[str, str] = {
    "realtime": EU + "frequency/UPDATE_CONT",
    "hourly": EU + "frequency/HOURLY",
    "daily": EU + "frequency/DAILY",
    "weekly": EU + "frequency/WEEKLY",
    "monthly": EU + "frequency/MONTHLY",
    "quarterly": EU + "frequency/QUARTERLY",
    "semiannual": EU + "frequency/ANNUAL_2",
    "annual": EU + "frequency/ANNUAL",
    "irregular": EU + "frequency/IRREG",
}
UNKNOWN_FREQUENCY = EU + "frequency/UNKNOWN"

DATA_THEMES: dict[Pool, str] = {
    Pool.POPULATION: EU + "data-theme/SOCI",
    Pool.LEGAL_PERSON: EU + "data-theme/ECON",
    Pool.SPATIAL: EU + "data-theme/REGI",
    Pool.E_LICENCE: EU + "data-theme/GOVE",
    Pool.SOCIAL_CREDIT: EU + "data-theme/JUST",
    Pool.MACRO_ECONOMY: EU + "data-theme/ECON",
}

CONTEXT: dict[str, Any] = {
    "dcat": "http://www.w3.org/ns/dcat#",
    "dct": "http://purl.org/dc/terms/",
    "adms": "http://www.w3.org/ns/adms#",
    "foaf": "http://xmlns.com/foaf/0.1/",
    "owl": "http://www.w3.org/2002/07/owl#",
    "skos": "http://www.w3.org/2004/02/skos/core#",
    "xsd": "http://www.w3.org/2001/XMLSchema#",
}


def _ref(uri: str) -> dict[str, str]:
    return {"@id": uri}


def _agent(code: str, base: str, units: UnitRegister | None) -> dict[str, Any]:
    out: dict[str, Any] = {"@id": f"{base}agent/{code}", "@type": "foaf:Agent", "foaf:name": code}
    if units is not None:
        out["foaf:name"] = units.name_of(code)
        out["dct:identifier"] = code
    return out


def _dataset(r: Resource, base: str, units: UnitRegister | None = None) -> dict[str, Any]:
    pool = {
        "@id": f"{base}pool/{r.pool.value}",
        "@type": "skos:Concept",
        "skos:prefLabel": r.pool.value,
        "skos:inScheme": _ref(f"{base}pool"),
    }
    themes: list[dict[str, Any]] = [pool]
    if r.pool in DATA_THEMES:
        themes.append(_ref(DATA_THEMES[r.pool]))
    out: dict[str, Any] = {
        "@id": f"{base}dataset/{r.id}",
        "@type": "dcat:Dataset",
        "dct:identifier": r.id,
        "dct:title": r.name,
        "dct:description": r.description
        or (
            f"{r.name}: provided by {r.provider} under the responsibility of {r.department}, "
            f"collected into the {r.pool.value} pool"
        ),
        "dct:publisher": _agent(r.department, base, units),
        "dct:creator": _agent(r.provider, base, units),
        "dct:spatial": {
            "@id": f"{base}region/{r.region}",
            "@type": "dct:Location",
            "skos:notation": r.region,
        },
        "dcat:theme": themes,
        "dct:accessRights": _ref(ACCESS_RIGHTS[r.open]),
        "dct:accrualPeriodicity": _ref(FREQUENCIES.get(r.update_frequency, UNKNOWN_FREQUENCY)),
        "dct:conformsTo": {"@id": f"{base}schemas/{r.schema}", "@type": "dct:Standard"},
        "dcat:version": str(r.version),
        "owl:versionInfo": str(r.version),
        "xy:shareAttribute": r.share.value,
        "xy:openAttribute": r.open.value,
        "xy:consentRequired": r.consent_required,
        "xy:provider": r.provider,
        "xy:subjectKind": r.subject,
    }
    if r.share is ShareAttribute.CONDITIONAL:
        out["xy:shareConditions"] = r.share_conditions
    if r.share_legal_basis:
        out["xy:shareLegalBasis"] = r.share_legal_basis
    if r.open_legal_basis:
        out["xy:openLegalBasis"] = r.open_legal_basis
    return out


def to_dcat_ap(
    catalog: Catalog, base_uri: str = DEFAULT_BASE_URI, units: UnitRegister | None = None
) -> dict[str, Any]:
    """The resources in force in ``catalog`` as a DCAT-AP ``dcat:Catalog`` (JSON-LD),
    datasets ordered by identifier so the output is stable; ``units`` names the publishers
    by their registered names."""
    base = base_uri if base_uri.endswith("/") else base_uri + "/"
    context = {**CONTEXT, "xy": f"{base}ns#"}
    datasets = [_dataset(r, base, units) for r in sorted(catalog, key=lambda r: r.id) if r.in_force]
    bureau = units.in_force(DATA_BUREAU) if units is not None else None
    return {
        "@context": context,
        "@id": f"{base}catalog",
        "@type": "dcat:Catalog",
        "dct:title": "Jilin public data resource catalog (吉林省公共数据资源目录)",
        "dct:description": (
            "Public data resources in force on the Xiangyun platform: the "
            "provincial catalog and the cities' supplementary catalogs."
        ),
        "dct:publisher": {
            "@id": f"{base}agent/data-bureau",
            "@type": "foaf:Agent",
            "foaf:name": bureau.name
            if bureau is not None
            else "Jilin Provincial Government Services and Digitalization Bureau",
            **({"dct:identifier": DATA_BUREAU} if bureau is not None else {}),
        },
        "dct:spatial": {
            "@id": f"{base}region/{PROVINCE}",
            "@type": "dct:Location",
            "skos:notation": PROVINCE,
        },
        "dcat:themeTaxonomy": {
            "@id": f"{base}pool",
            "@type": "skos:ConceptScheme",
            "dct:title": "Xiangyun resource pools",
        },
        "dcat:dataset": datasets,
    }
