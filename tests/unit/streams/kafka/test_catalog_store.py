"""CatalogStore without Kafka: how it applies the catalog topic's records, publishes
snapshots, gives specs, and checks that a write is its own. The Kafka side (writing,
fencing, following) is tested against the real broker in tests/integration."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.catalog.model import Catalog, CatalogError, Resource, Status, schema_file_loader
from streams.catalog.review import DATA_BUREAU, CatalogBook, CatalogEvent
from streams.ingest.runtime import CatalogSource, StaticCatalog
from streams.kafka.catalog_store import MAX_EVENT_BYTES, CatalogStore
from streams.kafka.topics import CATALOG_MAX_MESSAGE_BYTES, Topics
from streams.wire.codec import Schema
from xiangyun.settings import Settings

ROOT = Path(__file__).resolve().parents[4]
SCHEMAS = ROOT / "schemas" / "avro"
STARTER = Catalog.from_dir(ROOT / "catalog")
RESIDENT = "population.resident"


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env({}, topic_prefix="unit-store")


@pytest.fixture
def store(settings: Settings) -> CatalogStore:
    return CatalogStore(settings.streams)  # never started: no Kafka


def starter_events(loader_root: Path = SCHEMAS) -> list[CatalogEvent]:
    book = CatalogBook(schema_file_loader(loader_root))
    return book.bootstrap(list(STARTER), DATA_BUREAU, 1_000)


def feed(store: CatalogStore, events: list[CatalogEvent]) -> None:
    for ev in events:
        store._apply(ev.key, ev.to_json())


def test_constructing_a_store_touches_no_kafka(store: CatalogStore) -> None:
    assert len(store.current()) == 0 and store.errors == 0
    store.close()  # closing a store never started is fine


def test_replayed_topic_gives_the_starter_catalog_in_force(store: CatalogStore) -> None:
    feed(store, starter_events())
    catalog = store.current()
    assert {r.id for r in catalog} == {r.id for r in STARTER}
    assert all(r.in_force for r in catalog)
    assert store.errors == 0


def test_each_change_publishes_a_new_snapshot_and_leaves_the_old_one_alone(
    store: CatalogStore,
) -> None:
    events = starter_events()
    feed(store, events)
    before = store.current()
    book = CatalogBook(schema_file_loader(SCHEMAS))
    for ev in events:
        book.apply(ev)
    retired = book.retire(RESIDENT, DATA_BUREAU, "moved to a new registry", 2_000)
    feed(store, [retired])
    after = store.current()
    assert after is not before
    assert before.in_force(RESIDENT) is not None  # a reader's snapshot never changes
    assert after.in_force(RESIDENT) is None
    assert after.get(RESIDENT).status is Status.RETIRED  # type: ignore[union-attr]


def test_stale_and_duplicate_records_do_not_change_the_snapshot(store: CatalogStore) -> None:
    events = starter_events()
    feed(store, events)
    snapshot = store.current()
    feed(store, events[:3])  # replayed again, e.g. an uncompacted topic read twice
    assert store.current() is snapshot


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"population.resident", b"not json"),
        (b"population.resident", b'{"format": 99}'),
        (b"population.resident", None),  # tombstone: entries are retired, never deleted
        (b"other.key", "EVENT"),  # key is not the event's resource id
    ],
)
def test_a_bad_record_is_counted_and_skipped(
    store: CatalogStore, key: bytes, value: bytes | str | None
) -> None:
    events = starter_events()
    if value == "EVENT":
        value = events[0].to_json()
    assert value is None or isinstance(value, bytes)
    store._apply(key, value)
    assert store.errors == 1
    feed(store, events)  # and the store goes on
    assert store.current().in_force(RESIDENT) is not None
    assert store.errors == 1


def test_spec_is_the_one_stored_with_the_version_not_the_file(
    store: CatalogStore, tmp_path: Path
) -> None:
    root = tmp_path / "avro"
    for path in SCHEMAS.rglob("*.avsc"):
        target = root / path.relative_to(SCHEMAS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    feed(store, starter_events(root))
    resident = store.current().in_force(RESIDENT)
    assert resident is not None
    spec = store.spec(resident)
    on_disk = Schema.load(SCHEMAS / resident.schema)
    assert spec.fingerprint == on_disk.fingerprint
    # Editing the file afterwards changes nothing for the running catalog.
    edited = json.loads((root / resident.schema).read_text(encoding="utf-8"))
    edited["fields"].append({"name": "email", "type": ["null", "string"], "default": None})
    (root / resident.schema).write_text(json.dumps(edited), encoding="utf-8")
    assert store.spec(resident) is spec
    assert store.spec(resident).fingerprint == on_disk.fingerprint


def test_spec_of_an_unknown_resource_is_a_catalog_error(store: CatalogStore) -> None:
    stray = next(iter(STARTER))
    with pytest.raises(CatalogError, match="not in the catalog"):
        store.spec(stray)


def test_verify_accepts_our_change_even_with_later_changes_on_top(store: CatalogStore) -> None:
    events = starter_events()
    feed(store, events)
    ours = [e for e in events if e.resource_id == RESIDENT]
    store._verify(ours)  # what the topic holds is ours
    book = CatalogBook(schema_file_loader(SCHEMAS))
    for ev in events:
        book.apply(ev)
    feed(store, [book.retire(RESIDENT, DATA_BUREAU, "later change", 3_000)])
    store._verify(ours)  # our change is the start of what it holds: still ours


def test_verify_refuses_when_another_writer_won(store: CatalogStore) -> None:
    resident = STARTER.get(RESIDENT)
    assert isinstance(resident, Resource)
    mine = CatalogBook(schema_file_loader(SCHEMAS)).submit(resident, "220000-GA", 1_000)
    theirs = CatalogBook(schema_file_loader(SCHEMAS)).submit(
        resident, DATA_BUREAU, 1_001
    )  # same seq, another actor
    feed(store, [theirs])
    with pytest.raises(CatalogError, match="changed concurrently"):
        store._verify([mine])


def test_catalog_topic_takes_events_larger_than_one_mebibyte() -> None:
    config = Topics("p").all()[Topics("p").catalog]
    assert config["cleanup.policy"] == "compact"
    assert int(config["max.message.bytes"]) == CATALOG_MAX_MESSAGE_BYTES > 1_048_576
    assert MAX_EVENT_BYTES < CATALOG_MAX_MESSAGE_BYTES


def test_both_catalog_sources_fit_the_protocol(store: CatalogStore) -> None:
    sources: list[CatalogSource] = [store, StaticCatalog(STARTER)]
    for source in sources:
        assert source.errors == 0
    resident = STARTER.get(RESIDENT)
    assert resident is not None
    assert StaticCatalog(STARTER).spec(resident).name == "org.xiangyun.payload.Resident"
