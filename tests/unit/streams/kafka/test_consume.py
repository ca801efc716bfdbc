"""read_available: a batch of what is there, no waiting once one message has come."""

from __future__ import annotations

from typing import Any

from streams.kafka.consume import read_available


class Queue:
    """A consumer's local queue: ``arrivals`` come one per poll (None: the timeout passed)."""

    def __init__(self, ready: list[str], arrivals: list[str | None]) -> None:
        self.ready, self.arrivals = ready, arrivals
        self.calls: list[tuple[str, int, float]] = []

    def consume(self, n: int, timeout: float) -> list[str]:
        self.calls.append(("consume", n, timeout))
        out, self.ready = self.ready[:n], self.ready[n:]
        return out

    def poll(self, timeout: float) -> str | None:
        self.calls.append(("poll", 1, timeout))
        first = self.arrivals.pop(0) if self.arrivals else None
        if first is not None:  # what came with it is in the queue now
            self.ready += [f"{first}+{i}" for i in range(3)]
        return first


def read(q: Queue, n: int, timeout: float = 0.1) -> list[Any]:
    return read_available(q, n, timeout)  # type: ignore[arg-type]


def test_what_is_there_is_taken_without_waiting() -> None:
    q = Queue(["a", "b", "c"], [])
    assert read(q, 2) == ["a", "b"]
    assert q.calls == [("consume", 2, 0)]


def test_with_nothing_there_the_first_arrival_ends_the_wait() -> None:
    q = Queue([], ["x"])
    assert read(q, 10) == ["x", "x+0", "x+1", "x+2"]
    assert q.calls == [("consume", 10, 0), ("poll", 1, 0.1), ("consume", 9, 0)]


def test_no_arrival_within_the_timeout_is_an_empty_batch() -> None:
    assert read(Queue([], [None]), 10) == []


def test_a_batch_of_one_is_one_message() -> None:
    assert read(Queue([], ["x"]), 1) == ["x"]
    assert read(Queue(["a", "b"], []), 1) == ["a"]
