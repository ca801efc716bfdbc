"""DCAT-AP (JSON-LD) export of the catalog in force (streams.catalog.dcat)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from streams.catalog.dcat import to_dcat_ap
from streams.catalog.model import Catalog, OpenAttribute, Resource, ShareAttribute, Status
from streams.core.pools import Pool

REPO = Path(__file__).resolve().parents[4]
BASE = "https://data.jl.gov.cn/xiangyun/"
EU = "http://publications.europa.eu/resource/authority/"


def entry(**changes: Any) -> Resource:
    base = Resource(
        id="population.resident",
        name="Resident registration",
        department="220000-GA",
        provider="220000-GA",
        pool=Pool.POPULATION,
        schema="payloads/resident.avsc",
        subject="citizen_id",
        update_frequency="realtime",
        share=ShareAttribute.CONDITIONAL,
        share_conditions="duties",
        share_legal_basis="ID Card Law, art. 19",
        open=OpenAttribute.NOT_OPEN,
        open_legal_basis="PIPL, art. 34",
        status=Status.APPROVED,
        version=2,
    )
    return replace(base, **changes)


def datasets(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["dct:identifier"]: d for d in doc["dcat:dataset"]}


def test_catalog_node() -> None:
    doc = to_dcat_ap(Catalog([entry()]))
    assert doc["@type"] == "dcat:Catalog"
    assert doc["@id"] == BASE + "catalog"
    ctx = doc["@context"]
    assert ctx["dcat"] == "http://www.w3.org/ns/dcat#"
    assert ctx["dct"] == "http://purl.org/dc/terms/"
    assert ctx["adms"] == "http://www.w3.org/ns/adms#"
    assert ctx["xy"] == BASE + "ns#"
    for key in ("dct:title", "dct:description", "dct:publisher", "dcat:dataset"):
        assert doc[key], key  # the mandatory DCAT-AP catalog properties
    json.dumps(doc)  # plain JSON


def test_dataset_properties() -> None:
    d = datasets(to_dcat_ap(Catalog([entry()])))["population.resident"]
    assert d["@type"] == "dcat:Dataset"
    assert d["@id"] == BASE + "dataset/population.resident"
    assert d["dct:title"] == "Resident registration"
    assert d["dct:description"]
    assert d["dct:publisher"]["@id"] == BASE + "agent/220000-GA"
    assert d["dct:publisher"]["@type"] == "foaf:Agent"
    assert d["dct:spatial"]["@id"] == BASE + "region/220000"
    assert d["dcat:theme"][0]["@id"] == BASE + "pool/population"
    assert {"@id": EU + "data-theme/SOCI"} in d["dcat:theme"]
    assert d["dct:accessRights"] == {"@id": EU + "access-right/NON_PUBLIC"}
    assert d["dct:accrualPeriodicity"] == {"@id": EU + "frequency/UPDATE_CONT"}
    assert d["dct:conformsTo"]["@id"] == BASE + "schemas/payloads/resident.avsc"
    assert d["dcat:version"] == "2" and d["owl:versionInfo"] == "2"
    assert d["xy:shareAttribute"] == "conditional"
    assert d["xy:shareLegalBasis"] == "ID Card Law, art. 19"
    assert d["xy:openLegalBasis"] == "PIPL, art. 34"


@pytest.mark.parametrize(
    ("attribute", "uri"),
    [
        (OpenAttribute.OPEN, "PUBLIC"),
        (OpenAttribute.RESTRICTED, "RESTRICTED"),
        (OpenAttribute.NOT_OPEN, "NON_PUBLIC"),
    ],
)
def test_access_rights_follow_the_open_attribute(attribute: OpenAttribute, uri: str) -> None:
    d = datasets(to_dcat_ap(Catalog([entry(open=attribute)])))["population.resident"]
    assert d["dct:accessRights"] == {"@id": EU + "access-right/" + uri}


@pytest.mark.parametrize(
    ("frequency", "code"),
    [
        ("realtime", "UPDATE_CONT"),
        ("hourly", "HOURLY"),
        ("daily", "DAILY"),
        ("weekly", "WEEKLY"),
        ("monthly", "MONTHLY"),
        ("quarterly", "QUARTERLY"),
        ("semiannual", "ANNUAL_2"),
        ("annual", "ANNUAL"),
        ("irregular", "IRREG"),
        ("whenever", "UNKNOWN"),
    ],
)
def test_frequency_follows_the_update_frequency(frequency: str, code: str) -> None:
    d = datasets(to_dcat_ap(Catalog([entry(update_frequency=frequency)])))["population.resident"]
    assert d["dct:accrualPeriodicity"] == {"@id": EU + "frequency/" + code}


def test_only_resources_in_force_are_exported() -> None:
    catalog = Catalog(
        [
            entry(),
            entry(id="a.submitted", status=Status.SUBMITTED),
            entry(id="a.retired", status=Status.RETIRED),
            entry(id="a.superseded", status=Status.SUPERSEDED),
        ]
    )
    assert list(datasets(to_dcat_ap(catalog))) == ["population.resident"]


def test_city_dataset_has_the_city_region() -> None:
    city = entry(id="220100.population.local", region="220100", department="220100-MZ")
    d = datasets(to_dcat_ap(Catalog([city])))["220100.population.local"]
    assert d["dct:spatial"]["@id"] == BASE + "region/220100"
    assert d["dct:publisher"]["foaf:name"] == "220100-MZ"


def test_base_uri_without_trailing_slash() -> None:
    doc = to_dcat_ap(Catalog([entry()]), "https://example.org/x")
    assert doc["@id"] == "https://example.org/x/catalog"
    assert doc["dcat:dataset"][0]["@id"] == "https://example.org/x/dataset/population.resident"


def _compact_iris(node: Any) -> set[str]:
    """Every ``prefix:`` used as a key or an ``@type`` value."""
    out: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k != "@context":
                if not k.startswith("@"):
                    out.add(k.split(":", 1)[0])
                if k == "@type":
                    out.add(str(v).split(":", 1)[0])
                out |= _compact_iris(v)
    elif isinstance(node, list):
        for v in node:
            out |= _compact_iris(v)
    return out


def test_every_prefix_used_is_in_the_context() -> None:
    catalog = Catalog.from_dir(REPO / "catalog")
    doc = to_dcat_ap(catalog)
    assert _compact_iris(doc) <= set(doc["@context"])
    assert len(doc["dcat:dataset"]) == sum(1 for r in catalog if r.in_force) == 9
    ids = [d["dct:identifier"] for d in doc["dcat:dataset"]]
    assert ids == sorted(ids)
