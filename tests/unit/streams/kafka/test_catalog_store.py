"""CatalogStore without a Kafka broker: that it connects to nothing before start() and says
what to do when Kafka is away, how it applies the snapshot topic's records, gives specs,
refuses records too large for Kafka, and checks that a write is its own. The Kafka side
(writing, fencing, following, the change log) is tested against the real broker in
tests/integration."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.catalog.model import Catalog, CatalogError, Resource, Status, schema_file_loader
from streams.catalog.review import (
    DATA_BUREAU,
    MAX_SPEC_BYTES,
    CatalogBook,
    CatalogEvent,
    CatalogSnapshot,
    EntryVersion,
    ResourceState,
)
from streams.kafka.catalog_store import MAX_EVENT_BYTES, CatalogStore, CatalogUnavailable
from streams.kafka.config import KafkaConfig, StreamsConfig
from streams.kafka.topics import Topics
from streams.wire.codec import Schema

ROOT = Path(__file__).resolve().parents[4]
SCHEMAS = ROOT / "schemas" / "avro"
STARTER = Catalog.from_dir(ROOT / "catalog")
RESIDENT = "population.resident"


def config_at(bootstrap: str) -> StreamsConfig:
    return StreamsConfig(
        kafka=KafkaConfig(bootstrap=bootstrap),
        topic_prefix="unit-store",
        schema_dir=SCHEMAS,
        catalog_dir=ROOT / "catalog",
    )


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A TCP port that accepts connections and never answers: it sees whether a client
    connects, and no Kafka client gets anywhere with it."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.setblocking(False)
    try:
        yield sock
    finally:
        sock.close()


def connections(sock: socket.socket) -> int:
    n = 0
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


@pytest.fixture
def store(listener: socket.socket) -> Iterator[CatalogStore]:
    """A store whose Kafka does not answer; fed by hand through ``_apply``."""
    port = listener.getsockname()[1]
    s = CatalogStore(config_at(f"127.0.0.1:{port}"), timeout=0.5)
    try:
        yield s
    finally:
        s.close()


def starter_book(loader_root: Path = SCHEMAS) -> CatalogBook:
    book = CatalogBook(schema_file_loader(loader_root))
    book.bootstrap(list(STARTER), DATA_BUREAU, 1_000)
    return book


def feed(store: CatalogStore, states: list[ResourceState], offset: int = 0) -> None:
    for st in states:
        store._apply(st.id.encode(), CatalogSnapshot(st, offset).to_json())


# -- no Kafka until start ----------------------------------------------------------------------


def test_nothing_connects_until_start_and_start_says_what_to_do(
    store: CatalogStore, listener: socket.socket
) -> None:
    time.sleep(0.5)  # a client created here would have connected by now
    assert len(store.current()) == 0 and store.state(RESIDENT) is None
    assert store.states() == [] and store.errors == 0
    assert connections(listener) == 0
    began = time.monotonic()
    with pytest.raises(CatalogUnavailable) as info:
        store.start()
    assert time.monotonic() - began < 10  # the timeout bounds the wait
    message = str(info.value)
    assert store.topic in message
    assert "`xiangyun stack status`" in message and "`xiangyun catalog bootstrap`" in message
    time.sleep(0.2)
    assert connections(listener) >= 1  # start() is what went to Kafka
    store.close()


def test_a_command_without_kafka_is_unavailable_not_a_hang(store: CatalogStore) -> None:
    with pytest.raises(CatalogUnavailable, match="is Kafka up"):
        store.retire(RESIDENT, "gone")
    with pytest.raises(CatalogUnavailable, match=r"change log unit-store\.catalog\.changes"):
        store.history(RESIDENT)


def test_an_unreachable_port_is_unavailable_too() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    store = CatalogStore(config_at(f"127.0.0.1:{port}"), timeout=0.5)
    with store, pytest.raises(CatalogUnavailable, match="cannot read the catalog topic"):
        store.start()


# -- following the snapshot topic --------------------------------------------------------------


def test_snapshots_give_the_starter_catalog_in_force(store: CatalogStore) -> None:
    feed(store, starter_book().states())
    catalog = store.current()
    assert {r.id for r in catalog} == {r.id for r in STARTER}
    assert all(r.in_force for r in catalog)
    assert store.errors == 0 and store.applied == len(STARTER)


def test_each_change_publishes_a_new_catalog_and_leaves_the_old_one_alone(
    store: CatalogStore,
) -> None:
    book = starter_book()
    feed(store, book.states())
    before = store.current()
    book.retire(RESIDENT, DATA_BUREAU, "moved to a new registry", 2_000)
    feed(store, [book.state(RESIDENT)], offset=99)  # type: ignore[list-item]
    after = store.current()
    assert after is not before
    assert before.in_force(RESIDENT) is not None  # a reader's snapshot never changes
    assert after.in_force(RESIDENT) is None
    assert after.get(RESIDENT).status is Status.RETIRED  # type: ignore[union-attr]


def test_stale_and_duplicate_snapshots_do_not_change_the_catalog(store: CatalogStore) -> None:
    book = starter_book()
    old = book.state(RESIDENT)
    book.retire(RESIDENT, DATA_BUREAU, "gone", 2_000)
    feed(store, book.states())
    catalog = store.current()
    feed(store, [old])  # type: ignore[list-item]  # an older snapshot of the resource
    feed(store, book.states()[:3])  # the same snapshots again
    assert store.current() is catalog
    assert store.current().in_force(RESIDENT) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"population.resident", b"not json"),
        (b"population.resident", b'{"format": 99}'),
        (b"population.resident", None),  # tombstone: entries are retired, never deleted
        (b"other.key", "SNAPSHOT"),  # key is not the snapshot's resource id
        (b"population.resident", "EVENT"),  # a change-log record on the snapshot topic
        # a record of the old format (the whole history in every record)
        (b"population.resident", b'{"format": 1, "resource_id": "population.resident"}'),
    ],
)
def test_a_bad_record_is_counted_and_skipped(
    store: CatalogStore, key: bytes, value: bytes | str | None
) -> None:
    book = CatalogBook(schema_file_loader(SCHEMAS))
    event = book.submit(STARTER.get(RESIDENT), "220000-GA", 1)  # type: ignore[arg-type]
    if value == "SNAPSHOT":
        value = CatalogSnapshot(book.state(RESIDENT), 0).to_json()  # type: ignore[arg-type]
    elif value == "EVENT":
        value = event.to_json()
    assert value is None or isinstance(value, bytes)
    store._apply(key, value)
    assert store.errors == 1 and len(store.current()) == 0
    feed(store, starter_book().states())  # and the store goes on
    assert store.current().in_force(RESIDENT) is not None
    assert store.errors == 1


# -- specs -------------------------------------------------------------------------------------


def test_spec_is_the_one_stored_with_the_version_not_the_file(
    store: CatalogStore, tmp_path: Path
) -> None:
    root = tmp_path / "avro"
    for path in SCHEMAS.rglob("*.avsc"):
        target = root / path.relative_to(SCHEMAS)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    feed(store, starter_book(root).states())
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


# -- sizes -------------------------------------------------------------------------------------


def big_version(resource: Resource, number: int, status: Status, size: int) -> EntryVersion:
    spec = {"type": "record", "name": "Big", "doc": "x" * size, "fields": []}
    return EntryVersion(
        Resource.from_mapping({**resource.to_mapping(), "version": number, "status": status}),
        spec,
        "0" * 16,
    )


def test_a_snapshot_too_large_for_kafka_is_refused_before_writing() -> None:
    resident = STARTER.get(RESIDENT)
    assert resident is not None
    size = MAX_SPEC_BYTES * 2 // 3  # each spec passes; the two together do not fit a record
    state = ResourceState(
        RESIDENT,
        3,
        (
            big_version(resident, 1, Status.APPROVED, size),
            big_version(resident, 2, Status.SUBMITTED, size),
        ),
    )
    with pytest.raises(CatalogError, match=r"versions 1 and 2 with their specs.*over the"):
        CatalogStore._check_sizes([], [state])
    CatalogStore._check_sizes([], [ResourceState(RESIDENT, 3, state.versions[:1])])
    book = starter_book()
    CatalogStore._check_sizes([], book.states())  # the starter catalog is far below
    assert max(len(CatalogSnapshot(s, 0).to_json()) for s in book.states()) < MAX_EVENT_BYTES // 20


def test_catalog_topics_need_no_large_messages_and_the_change_log_is_kept() -> None:
    topics = Topics("p")
    config = topics.all()
    assert config[topics.catalog]["cleanup.policy"] == "compact"
    assert "max.message.bytes" not in config[topics.catalog]  # Kafka's default suffices
    assert topics.catalog_changes == "p.catalog.changes"
    assert config[topics.catalog_changes] == {
        "cleanup.policy": "delete",
        "retention.ms": "-1",
        "retention.bytes": "-1",
    }


# -- read-back verification --------------------------------------------------------------------


def test_verify_accepts_our_change_even_with_later_changes_on_top(store: CatalogStore) -> None:
    book = starter_book()
    feed(store, book.states(), offset=10)
    ours = book.state(RESIDENT)
    assert ours is not None
    store._verify([ours], {RESIDENT: 10})  # what the topic holds is ours
    book.retire(RESIDENT, DATA_BUREAU, "later change", 3_000)
    feed(store, [book.state(RESIDENT)], offset=12)  # type: ignore[list-item]
    store._verify([ours], {RESIDENT: 10})  # a later change, written after ours: still ours


def test_verify_refuses_when_another_writer_won(store: CatalogStore) -> None:
    resident = STARTER.get(RESIDENT)
    assert isinstance(resident, Resource)
    mine = CatalogBook(schema_file_loader(SCHEMAS))
    mine.submit(resident, "220000-GA", 1_000)
    theirs = CatalogBook(schema_file_loader(SCHEMAS))
    theirs.submit(resident, DATA_BUREAU, 1_001)  # same seq, another actor and time
    feed(store, theirs.states(), offset=5)
    with pytest.raises(CatalogError, match="changed concurrently"):
        store._verify(mine.states(), {RESIDENT: 6})  # same seq, another change
    theirs.approve(RESIDENT, DATA_BUREAU, "", 1_002)
    feed(store, theirs.states(), offset=4)  # later seq, but written before ours
    with pytest.raises(CatalogError, match=r"holds change #2, this change was #1"):
        store._verify(mine.states(), {RESIDENT: 6})


def test_verify_refuses_when_nothing_was_stored(store: CatalogStore) -> None:
    book = starter_book()
    ours = book.state(RESIDENT)
    assert ours is not None
    with pytest.raises(CatalogError, match="holds no change"):
        store._verify([ours], {RESIDENT: 0})


def test_events_are_what_the_change_log_takes(store: CatalogStore) -> None:
    """The store writes change-log records that parse back to the same events."""
    book = CatalogBook(schema_file_loader(SCHEMAS))
    events = book.bootstrap(list(STARTER), DATA_BUREAU, 1_000)
    for ev in events:
        assert CatalogEvent.from_json(ev.to_json()) == ev
        assert len(ev.to_json()) < MAX_EVENT_BYTES // 20
