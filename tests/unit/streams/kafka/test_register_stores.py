"""The unit register's, the policy's and the consents' stores without a Kafka broker: each
says in its own words what to do when Kafka is away, and the unit and policy stores apply
their snapshot topics and check that a write is their own as the catalog's store does
(tests/unit/streams/kafka/test_catalog_store.py); they share that code
(streams/kafka/register_store.py). The Kafka side is tested in tests/integration."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from streams.kafka.config import KafkaConfig, StreamsConfig
from streams.kafka.consent_store import ConsentBook, ConsentsUnavailable
from streams.kafka.policy_store import PolicyStore, PolicyUnavailable
from streams.kafka.register_store import FollowedTopic
from streams.kafka.units_store import UnitsStore, UnitsUnavailable
from streams.policy.legal import PolicyError
from streams.policy.model import load_lists
from streams.policy.review import PolicyBook, StateRecord
from streams.units.model import UnitError, UnitRegister
from streams.units.review import DATA_BUREAU, UnitBook, UnitSnapshot, UnitState

ROOT = Path(__file__).resolve().parents[4]
GA = "220000-GA"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]  # closed again: nothing listens there
    return port


def config_at(port: int) -> StreamsConfig:
    return StreamsConfig(
        kafka=KafkaConfig(bootstrap=f"127.0.0.1:{port}"),
        topic_prefix="register-store",
        schema_dir=ROOT / "schemas" / "avro",
        units_dir=ROOT / "units",
        policy_dir=ROOT / "policy",
    )


@pytest.fixture
def units() -> Iterator[UnitsStore]:
    with UnitsStore(config_at(closed_port()), timeout=0.5) as store:
        yield store


@pytest.fixture
def policy() -> Iterator[PolicyStore]:
    with PolicyStore(config_at(closed_port()), timeout=0.5) as store:
        yield store


def starter_units() -> UnitBook:
    book = UnitBook()
    book.bootstrap(list(UnitRegister.from_dir(ROOT / "units")), DATA_BUREAU, 1_000)
    return book


def feed(store: UnitsStore, states: list[UnitState], offset: int = 0) -> None:
    for st in states:
        store._apply(st.code.encode(), UnitSnapshot(st, offset).to_json())


@pytest.mark.parametrize(
    ("make", "unavailable", "words"),
    [
        (UnitsStore, UnitsUnavailable, "cannot read the unit register topic"),
        (PolicyStore, PolicyUnavailable, "cannot read the policy topic"),
        (ConsentBook, ConsentsUnavailable, "cannot read the consents topic"),
    ],
)
def test_each_store_says_in_its_own_words_that_kafka_is_away(
    make: type[FollowedTopic], unavailable: type[Exception], words: str
) -> None:
    store = make(config_at(closed_port()), timeout=0.5)  # type: ignore[call-arg]
    try:  # not `with`: the consents are read on entering
        with pytest.raises(unavailable, match=words) as info:
            store.start()
    finally:
        store.close()
    assert store.topic in str(info.value) and "`xiangyun stack status`" in str(info.value)


def test_a_unit_command_without_kafka_is_unavailable_not_a_hang(units: UnitsStore) -> None:
    with pytest.raises(UnitsUnavailable, match=r"`xiangyun units bootstrap`"):
        units.approve(GA, "ok")


def test_unit_snapshots_give_the_register_and_bad_records_are_counted(
    units: UnitsStore, caplog: pytest.LogCaptureFixture
) -> None:
    book = starter_units()
    feed(units, book.states())
    assert len(units.current()) == len(book.states()) and units.current().registered(GA)
    assert units.applied == len(book.states()) and units.errors == 0
    before = units.current()
    feed(units, book.states())  # the same changes again: nothing changes
    assert units.current() is before and units.applied == len(book.states())
    units._apply(GA.encode(), None)
    units._apply(b"220000-XX", UnitSnapshot(book.states()[0], 0).to_json())
    assert units.errors == 2
    assert "unit topic register-store.units" in caplog.text
    assert "units are never deleted" in caplog.text and "the snapshot's unit code" in caplog.text
    assert units.state(GA) == book.state(GA)


def test_unit_verify_names_the_register_and_its_show_command(units: UnitsStore) -> None:
    book = starter_units()
    ours = book.state(GA)
    assert ours is not None
    feed(units, book.states(), offset=10)
    units._verify([ours], {GA: 10})  # what the topic holds is ours
    with pytest.raises(UnitError, match=r"the register holds change #2, this change was #2"):
        units._verify([ours], {GA: 11})  # the same change number, written elsewhere
    with (
        UnitsStore(config_at(closed_port())) as empty,
        pytest.raises(UnitError, match=rf"holds no change.*`xiangyun units show {GA}`"),
    ):
        empty._verify([ours], {GA: 10})


def test_policy_snapshots_give_the_lists_in_force(policy: PolicyStore) -> None:
    book = PolicyBook()
    book.bootstrap(load_lists(ROOT / "policy"), DATA_BUREAU, 1_000)
    for st in book.states():
        policy._apply(st.key.encode(), StateRecord(st, 0).to_json())
    assert policy.errors == 0 and policy.applied == len(book.states())
    assert policy.current().version == book.policy().version != "none"
    stale = book.states()[0]
    assert policy.state(stale.key) == stale
    policy._verify([stale], {})  # the stored state holds our change
    with pytest.raises(PolicyError, match=f"{stale.key} changed concurrently"):
        policy._verify([replace(stale, seq=stale.seq + 1)], {})  # ours is not there
