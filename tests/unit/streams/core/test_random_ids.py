"""Random identifiers: uuid4 in form, unique, and one read of the system's randomness for many."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from streams.core.random_ids import RandomIds


def test_each_id_is_a_version_4_uuid_in_hex() -> None:
    ids = RandomIds(per_read=3)
    for _ in range(100):
        value = ids.hex()
        parsed = uuid.UUID(value)
        assert parsed.hex == value
        assert parsed.version == 4
        assert parsed.variant == uuid.RFC_4122


def test_the_system_randomness_is_read_once_for_many_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    system = os.urandom

    def urandom(n: int) -> bytes:
        reads.append(n)
        return system(n)

    monkeypatch.setattr(os, "urandom", urandom)
    ids = RandomIds(per_read=10)
    values = [ids.hex() for _ in range(25)]
    assert reads == [160, 160, 160]
    assert len(set(values)) == 25


def test_ids_drawn_from_many_threads_never_repeat() -> None:
    ids = RandomIds(per_read=7)
    drawn: list[list[str]] = [[] for _ in range(8)]

    def draw(into: list[str]) -> None:
        for _ in range(2_000):
            into.append(ids.hex())

    threads = [threading.Thread(target=draw, args=(d,)) for d in drawn]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [v for d in drawn for v in d]
    assert len(everything) == 16_000
    assert len(set(everything)) == 16_000


def test_a_read_of_no_ids_is_refused() -> None:
    with pytest.raises(ValueError, match="per_read"):
        RandomIds(per_read=0)


def test_a_forked_child_never_repeats_its_parents_ids() -> None:
    ids = RandomIds()
    ids.hex()  # the buffer is filled before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, to the parent
        try:
            os.write(write, ids.hex().encode())
        finally:
            os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child != ids.hex()
