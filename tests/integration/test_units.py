"""The unit register in Kafka: round trip with history, the catalog refusing an unregistered
provider, and the DCAT-AP export naming publishers by their registered names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from streams.catalog.model import CatalogError, Resource
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.units_store import UnitsStore
from streams.units.model import Unit, UnitError, UnitRegister, UnitStatus
from streams.units.review import DATA_BUREAU
from xiangyun.settings import Settings

NEW_UNIT = {
    "code": "220100-JY",
    "name": "长春市教育局",
    "kind": "city_department",
    "region": "220100",
    "parent": "220100-ZF",
    "duties": ["education.school_roll"],
}


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIANGYUN_")}
    env.update(settings.describe())
    return subprocess.run(
        [sys.executable, "-m", "xiangyun", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_store_round_trip_with_history(settings: Settings) -> None:
    starter = UnitRegister.from_dir(settings.units_dir)
    with UnitsStore(settings.streams) as store:
        assert store.bootstrap() == []  # the fixture loaded it already
        assert sum(1 for u in store.current() if u.in_force) == len(starter)
        submitted = store.submit(Unit.from_mapping(NEW_UNIT))
        assert submitted[0].change.actor == "220100-ZF"  # the parent, by default
        assert not store.current().registered("220100-JY")
        with pytest.raises(UnitError, match="may not approve"):
            store.approve("220100-JY", "ok", actor="220100-ZF")
        store.approve("220100-JY", "school data joins the exchange")
        assert store.current().registered("220100-JY")
        store.submit(Unit.from_mapping({**NEW_UNIT, "name": "长春市教育局X"}), "220100-JY")
        store.reject("220100-JY", "not the official name")
    with UnitsStore(settings.streams) as again:  # rebuilt from Kafka alone
        again.start()
        u = again.current().in_force("220100-JY")
        assert u is not None and u.name == "长春市教育局" and u.version == 1
        state = again.state("220100-JY")
        assert state is not None and state.latest.status is UnitStatus.REJECTED
        history = again.history("220100-JY")
    assert history is not None
    assert [(c.action.value, c.actor) for c in history.history] == [
        ("submitted", "220100-ZF"),
        ("approved", DATA_BUREAU),
        ("submitted", "220100-JY"),
        ("rejected", DATA_BUREAU),
    ]
    assert history.history[3].reason == "not the official name"


def test_catalog_refuses_an_unregistered_provider_until_it_is_registered(
    settings: Settings,
) -> None:
    with CatalogStore(settings.streams) as catalog:
        catalog.start()
        resident = catalog.current().in_force("population.resident")
        assert isinstance(resident, Resource)
        other = Resource.from_mapping(
            {
                **resident.to_mapping(),
                "id": "220100.population.school_roll",
                "name": "School roll (学籍信息)",
                "region": "220100",
                "department": "220100-JY",
                "provider": "220100-JY",
                "status": "draft",
            }
        )
        with pytest.raises(CatalogError) as info:
            catalog.submit(other)
        message = str(info.value)
        assert "provider '220100-JY' is not a registered unit" in message
        assert "`xiangyun units submit FILE`" in message
        assert catalog.state(other.id) is None  # nothing was written
        with UnitsStore(settings.streams) as units:
            units.submit(Unit.from_mapping(NEW_UNIT))
            units.approve("220100-JY", "registered for its catalog entry")
        # the catalog store reads the register as it stands when it validates
        with pytest.raises(CatalogError) as info:
            catalog.submit(other)
        assert "not a registered unit" not in str(info.value)  # other problems remain


def test_dcat_export_names_publishers(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "catalog.jsonld"
    r = cli(settings, "catalog", "export-dcat", "--out", str(out))
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text(encoding="utf-8"))
    by_id = {d["dct:identifier"]: d for d in doc["dcat:dataset"]}
    assert by_id["population.resident"]["dct:publisher"]["foaf:name"] == "吉林省公安厅"
    assert by_id["222400.legal_person.border_trade_permit"]["dct:creator"]["foaf:name"] == (
        "延边朝鲜族自治州商务局"
    )
    r = cli(settings, "units", "show", "220000-GA")
    assert r.returncode == 0, r.stderr
    assert "吉林省公安厅" in r.stdout and "population.resident" in r.stdout
    r = cli(settings, "units", "list", "--kind", "city")
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 10, r.stdout
    r = cli(settings, "units", "review", "220000-XX", "--approve", "--reason", "x")
    assert r.returncode == 2 and "no unit '220000-XX'" in r.stderr
