"""Conflicts and their resolution (多源校核): reading every providing unit's conflict topic
with the resolutions topic, resolving one, and the open-conflict metrics.

A conflict is open until the resolutions topic holds its answer: ``accepted`` (the provider
agrees with the evidence; a new authoritative version follows through the ingest) or
``dismissed`` with a reason. Only the provider the conflict was raised with, or the data
bureau, may resolve it; an unknown conflict, or one already resolved, is refused.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from monitoring.metrics import VerificationMetrics
from streams.kafka.config import StreamsConfig, idempotent_producer
from streams.kafka.topics import Topics
from streams.units.review import DATA_BUREAU
from streams.wire.codec import CodecError, Schema, SchemaRegistry, decode, encode

__all__ = [
    "STATUSES",
    "ConflictBook",
    "ConflictRefused",
    "ConflictStore",
    "ConflictTracker",
]

log = logging.getLogger(__name__)

#: what a resolution may say
STATUSES = frozenset({"accepted", "dismissed"})


class ConflictRefused(ValueError):
    """A resolution that may not be written: the message says why."""


@dataclass(slots=True)
class ConflictBook:
    """Conflicts by id (the Conflict record as decoded) and resolutions by id."""

    conflicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    resolutions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def status(self, conflict_id: str) -> str:
        res = self.resolutions.get(conflict_id)
        return str(res["status"]) if res is not None else "open"

    def view(self, conflict_id: str) -> dict[str, Any] | None:
        """The conflict with its current status and resolution (None if unknown)."""
        c = self.conflicts.get(conflict_id)
        if c is None:
            return None
        return {
            **c,
            "status": self.status(conflict_id),
            "resolution": self.resolutions.get(conflict_id),
        }

    def listing(self, unit: str | None = None, open_only: bool = False) -> list[dict[str, Any]]:
        out = []
        for cid in self.conflicts:
            v = self.view(cid)
            assert v is not None
            if unit is not None and v["authoritative"]["provider"] != unit:
                continue
            if open_only and v["status"] != "open":
                continue
            out.append(v)
        return sorted(out, key=lambda v: (v["raised_at_ms"], v["conflict_id"]))

    def open_by_unit(self, now_ms: int) -> dict[str, tuple[int, float]]:
        """Per providing unit with conflicts: open conflicts and the oldest one's age in
        seconds ((0, 0.0) once all are resolved)."""
        out: dict[str, tuple[int, float]] = {}
        for cid, c in self.conflicts.items():
            unit = c["authoritative"]["provider"]
            n, age = out.get(unit, (0, 0.0))
            if cid in self.resolutions:
                out[unit] = (n, age)
                continue
            out[unit] = (n + 1, max(age, max(0, now_ms - c["raised_at_ms"]) / 1000))
        return out

    def apply(self, topics: Topics, registry: SchemaRegistry, m: Message) -> None:
        topic, key, value = m.topic() or "", (m.key() or b"").decode(), m.value()
        target = self.resolutions if topic == topics.conflict_resolutions else self.conflicts
        if value is None:
            target.pop(key, None)
            return
        try:
            target[key] = decode(value, registry.writer_of(value))
        except CodecError as exc:
            log.warning("conflicts: unreadable record %s@%s: %s", topic, m.offset(), exc)


def _schemas(config: StreamsConfig) -> tuple[SchemaRegistry, Schema]:
    registry = SchemaRegistry.from_dir(config.schema_dir)
    return registry, registry.by_name("org.xiangyun.ConflictResolution")


class ConflictStore:
    """Reads the conflict and resolution topics to their end; writes resolutions."""

    def __init__(
        self,
        config: StreamsConfig,
        *,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
        timeout: float = 30.0,
    ) -> None:
        self.config = config
        self.topics = Topics.of(config)
        self.registry, self._resolution = _schemas(config)
        self._clock_ms = clock_ms
        self.timeout = timeout

    def read(self) -> ConflictBook:
        c = Consumer(
            self.config.kafka.consumer(
                f"{self.config.app_id}.conflicts-{uuid.uuid4().hex[:8]}",
                **{"isolation.level": "read_committed", "enable.partition.eof": True},
            )
        )
        book = ConflictBook()
        try:
            meta = c.list_topics(timeout=self.timeout).topics
            names = [t for t in meta if self.topics.is_conflicts(t)]
            names.append(self.topics.conflict_resolutions)
            ends = {}
            for t in names:
                if t not in meta:
                    continue
                for p in meta[t].partitions:
                    high = c.get_watermark_offsets(TopicPartition(t, p), timeout=self.timeout)[1]
                    if high > 0:
                        ends[(t, p)] = high
            for m in _to_end(c, ends, self.timeout):
                book.apply(self.topics, self.registry, m)
        finally:
            c.close()
        return book

    def resolve(
        self, conflict_id: str, status: str, reason: str, resolved_by: str
    ) -> dict[str, Any]:
        """Write a resolution; :class:`ConflictRefused` when it may not be written."""
        if status not in STATUSES:
            raise ConflictRefused(f"status {status!r}: accepted or dismissed")
        if not reason.strip():
            raise ConflictRefused("a resolution needs a reason")
        book = self.read()
        conflict = book.conflicts.get(conflict_id)
        if conflict is None:
            raise ConflictRefused(f"no conflict {conflict_id!r}: refused")
        provider = conflict["authoritative"]["provider"]
        if resolved_by not in (provider, DATA_BUREAU):
            raise ConflictRefused(
                f"{resolved_by} may not resolve conflict {conflict_id}: only its provider "
                f"{provider} or the data bureau {DATA_BUREAU} may"
            )
        if conflict_id in book.resolutions:
            raise ConflictRefused(f"conflict {conflict_id} is already {book.status(conflict_id)}")
        resolution = {
            "conflict_id": conflict_id,
            "provider": provider,
            "status": status,
            "reason": reason.strip()[:2000],
            "resolved_by": resolved_by,
            "at_ms": self._clock_ms(),
        }
        producer = idempotent_producer(self.config.kafka)
        failures: list[str] = []

        def delivered(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                failures.append(str(err))

        producer.produce(
            self.topics.conflict_resolutions,
            encode(self._resolution, resolution),
            conflict_id.encode(),
            on_delivery=delivered,
        )
        if producer.flush(self.timeout) or failures:
            raise RuntimeError(f"resolution not written: {failures or 'timeout'}")
        return resolution


def _to_end(c: Consumer, ends: dict[tuple[str, int], int], timeout: float) -> Iterator[Message]:
    if not ends:
        return
    left = dict(ends)
    c.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, p in left])
    deadline = time.monotonic() + timeout
    while left:
        if time.monotonic() > deadline:
            raise TimeoutError(f"conflict topics not read to their end: {sorted(left)[:3]}")
        for m in c.consume(10_000, 0.5):
            tp = (m.topic() or "", m.partition() or 0)
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    left.pop(tp, None)
                continue
            yield m
            if (m.offset() or 0) + 1 >= left.get(tp, 0):
                left.pop(tp, None)


class ConflictTracker:
    """Follows every conflict topic and the resolutions (read committed) for the open
    conflict metrics: :meth:`report` takes in what arrived and sets the gauges."""

    def __init__(self, config: StreamsConfig) -> None:
        self.config = config
        self.topics = Topics.of(config)
        self.registry, _ = _schemas(config)
        self.book = ConflictBook()
        self._consumer: Consumer | None = None
        self._lock = threading.Lock()

    def _start(self) -> Consumer:
        if self._consumer is None:
            c = Consumer(
                self.config.kafka.consumer(
                    f"{self.config.app_id}.conflicts-tracker-{uuid.uuid4().hex[:8]}",
                    **{
                        "isolation.level": "read_committed",
                        "topic.metadata.refresh.interval.ms": 5000,  # new units' topics
                    },
                )
            )
            pattern = "^" + self.topics.conflicts_prefix.replace(".", "\\.") + ".+"
            c.subscribe([pattern])
            self._consumer = c
        return self._consumer

    def poll(self) -> int:
        with self._lock:
            c = self._start()
            n = 0
            while True:
                messages = c.consume(10_000, 0.1)
                if not messages:
                    return n
                for m in messages:
                    if m.error() is None:
                        self.book.apply(self.topics, self.registry, m)
                        n += 1

    def report(self, metrics: VerificationMetrics) -> None:
        self.poll()
        metrics.conflicts(self.book.open_by_unit(int(time.time() * 1000)))

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                self._consumer.close()
                self._consumer = None
