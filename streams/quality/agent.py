"""The quality agent: data quality per resource and unit, in real time (article 22).

It reads every outcome topic ``read_committed`` (the pools, superseded, verification,
rejected), so an aborted ingest transaction never counts, and keeps the figures of
:mod:`streams.quality.figures`:

* a pool record: completeness of its payload against the resource's collection spec (the
  spec the catalog holds), timeliness of ``accepted_at_ms - observed_at_ms`` against the
  resource's update frequency; the unit is the record's provider;
* a superseded record or verification evidence: a record that passed the checks (its
  resource and providing unit from the record, or from the original envelope);
* a rejected record: its reason; the resource and provider from its original envelope, read
  best effort (:data:`~streams.quality.figures.UNDECODABLE` when it cannot be read).

Consistency comes from multi-source verification, when it runs (its topics exist):

* ``<prefix>.verified`` (compacted, key ``resource|subject``): each record is one verification
  that agreed with the pool, counted for the resource's provider;
* ``<prefix>.conflicts.<provider>`` (key: the conflict, ``resource|subject`` or an id; value
  a JSON object with ``status``, and ``resource_id`` unless the key starts with it): a record
  with status ``open`` opens a conflict (a disagreement, counted once per key), any other
  status or a tombstone closes it;
* ``<prefix>.conflicts.resolutions`` (value a JSON object naming the conflict's key as
  ``conflict_key`` or ``key``, else the record's own key): closes that conflict.

On start the agent reads the outcome topics from :data:`~streams.quality.figures.WINDOW_MS`
ago, so its 15-minute figures are whole at once after a restart ("since start" is since
then); the verification topics are read from their beginning. Every
``config.quality_snapshot_interval_ms`` it writes one JSON record per (resource, unit) to the
compacted ``<prefix>.quality`` topic (what ``xiangyun quality`` reads) and sets the
:class:`~monitoring.metrics.QualityMetrics` gauges.

Every Kafka call blocks: :class:`QualityService` runs the agent on its own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import faust
import mode
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, Message, Producer, TopicPartition

from monitoring.metrics import QualityMetrics
from streams.catalog.model import Catalog, Resource
from streams.core.reasons import Reason
from streams.kafka.config import StreamsConfig, idempotent_producer
from streams.kafka.topics import Topics
from streams.quality.figures import (
    TIMELINESS_LIMIT_MS,
    UNDECODABLE,
    UNKNOWN,
    WINDOW_MS,
    QualityBook,
    QualityRow,
    SpecFields,
    filled,
    spec_fields,
)
from streams.wire.codec import Schema, SchemaRegistry, decode
from streams.wire.envelope import EnvelopeCodec

__all__ = ["CatalogView", "QualityAgent", "QualityService", "register_quality"]

log = logging.getLogger(__name__)

_REASONS = frozenset(r.value for r in Reason)


class CatalogView(Protocol):
    """Where the agent reads the catalog and the specs (a worker's catalog store)."""

    def current(self) -> Catalog: ...
    def spec(self, resource: Resource) -> Schema: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


class QualityAgent:
    """Standalone: :meth:`start`, :meth:`run_once` in a loop, :meth:`stop`. One thread."""

    def __init__(
        self,
        config: StreamsConfig,
        registry: SchemaRegistry,
        catalog: CatalogView,
        *,
        units: Callable[[], Iterable[str]] | None = None,
        metrics: QualityMetrics | None = None,
        clock_ms: Callable[[], int] = _now_ms,
        batch_size: int | None = None,
    ) -> None:
        self.config = config
        self.topics = Topics.of(config)
        self.registry = registry
        self.catalog = catalog
        self.metrics = metrics
        self._units = units
        self._clock = clock_ms
        self.batch_size = batch_size or config.batch_size
        self.codec = EnvelopeCodec(registry, config.schema_dir)
        self._pool_reader = registry.by_name("org.xiangyun.PoolRecord")
        self._superseded_reader = registry.by_name("org.xiangyun.Superseded")
        self._rejected_reader = registry.by_name("org.xiangyun.Rejected")
        self._pool_topics = frozenset(self.topics.pools.values())
        prefix = config.topic_prefix
        self.verified_topic = f"{prefix}.verified"
        self.conflicts_prefix = f"{prefix}.conflicts."
        self.resolutions_topic = f"{prefix}.conflicts.resolutions"
        self.book = QualityBook(clock_ms() - WINDOW_MS)
        self._specs: dict[tuple[str, int], SpecFields] = {}
        self._known: frozenset[str] = frozenset()
        self._known_of: object = None
        self._register_units: frozenset[str] = frozenset()
        #: open conflicts: conflict key -> (resource, unit)
        self._open: dict[str, tuple[str, str]] = {}
        self._consumer: Consumer | None = None
        self._consistency: Consumer | None = None
        self._producer: Producer | None = None
        self._next_publish = 0
        self.bad_records = 0
        self.records = 0
        self.snapshots = 0

    # -- life cycle -----------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> QualityAgent:
        kafka = self.config.kafka
        conf = kafka.consumer(
            f"{self.config.app_id}.quality",
            **{"isolation.level": "read_committed", "enable.partition.eof": False},
        )
        consumer = Consumer(conf)
        meta = consumer.list_topics(timeout=timeout).topics
        wanted = []
        since = self._clock() - WINDOW_MS
        for topic in self.topics.outcomes:
            tmeta = meta.get(topic)
            if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                consumer.close()
                raise RuntimeError(f"outcome topic {topic} is missing: run `xiangyun topics`")
            wanted += [TopicPartition(topic, p, since) for p in sorted(tmeta.partitions)]
        # From WINDOW_MS ago; -1 (nothing that recent) is the end of the partition.
        consumer.assign(consumer.offsets_for_times(wanted, timeout=timeout))
        self._consumer = consumer
        # The verification topics may not exist yet: a pattern subscription picks them up
        # when they appear. A group of its own each time: read from the beginning.
        pattern = (
            "^" + self.config.topic_prefix.replace(".", "\\.") + r"\.(verified|conflicts\..+)$"
        )
        conf = kafka.consumer(
            f"{self.config.app_id}.quality.{uuid.uuid4().hex[:8]}",
            **{
                "isolation.level": "read_committed",
                "enable.partition.eof": False,
                "topic.metadata.refresh.interval.ms": 5000,
            },
        )
        consistency = Consumer(conf)
        consistency.subscribe([pattern])
        self._consistency = consistency
        self._producer = idempotent_producer(kafka, **{"linger.ms": 20})
        return self

    def stop(self) -> None:
        for client in (self._consumer, self._consistency):
            if client is not None:
                client.close()
        self._consumer = self._consistency = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None

    # -- reading --------------------------------------------------------------------------
    def run_once(self, poll_s: float = 0.5) -> int:
        """Read one batch of outcomes (and what verification wrote); publish a snapshot when
        one is due. Returns the outcome records read."""
        assert self._consumer is not None and self._consistency is not None
        msgs = self._consumer.consume(self.batch_size, timeout=poll_s)
        now = self._clock()
        n = 0
        for msg in msgs:
            if msg.error() is None:
                self._outcome(msg, now)
                n += 1
        for msg in self._consistency.consume(self.batch_size, timeout=0):
            if msg.error() is None:
                self._verification_result(msg, now)
        self.records += n
        if now >= self._next_publish:
            self.publish(now)
        return n

    def _bad(self, msg: Message, exc: Exception) -> None:
        self.bad_records += 1
        if self.metrics is not None:
            self.metrics.bad_records.inc()
        log.warning(
            "quality: %s[%s]@%s unreadable: %s", msg.topic(), msg.partition(), msg.offset(), exc
        )

    @staticmethod
    def _time(msg: Message, now: int) -> int:
        kind, at = msg.timestamp()
        return now if kind == TIMESTAMP_NOT_AVAILABLE else int(at)

    def _units_known(self) -> frozenset[str]:
        """Units the catalog (departments, providers) or the register names, per catalog
        snapshot and register read."""
        catalog = self.catalog.current()
        if self._known_of is not catalog:
            self._known = frozenset(
                {u for r in catalog for u in (r.provider, r.department)} | self._register_units
            )
            self._known_of = catalog
        return self._known

    def _labels(self, resource_id: Any, provider: Any) -> tuple[str, str]:
        """A resource id the catalog holds and a unit it or the register names, else
        :data:`UNKNOWN`: never a string from the data as such."""
        known = isinstance(resource_id, str) and self.catalog.current().get(resource_id)
        resource = resource_id if known else UNKNOWN
        unit = (
            provider if isinstance(provider, str) and provider in self._units_known() else UNKNOWN
        )
        return resource, unit

    def _outcome(self, msg: Message, now: int) -> None:
        topic, value = msg.topic(), msg.value()
        if value is None:  # a tombstone on a pool topic is no outcome
            return
        at = self._time(msg, now)
        try:
            if topic in self._pool_topics:
                self._accepted(value, at, now)
            elif topic == self.topics.superseded:
                rec = decode(value, self.registry.writer_of(value), self._superseded_reader)
                resource, unit = self._labels(rec["resource_id"], rec["provider"])
                self.book.passed(resource, unit, at, now)
            elif topic == self.topics.verification:
                env = self.codec.decode(value)
                resource, unit = self._labels(env.resource_id, env.provider)
                self.book.passed(resource, unit, at, now)
            elif topic == self.topics.rejected:
                self._rejected(value, at, now)
        except Exception as exc:  # a record we cannot read must not stop the figures
            self._bad(msg, exc)

    def _accepted(self, value: bytes, at: int, now: int) -> None:
        rec = decode(value, self.registry.writer_of(value), self._pool_reader)
        resource_id, unit = self._labels(rec["resource_id"], rec["provider"])
        resource = self.catalog.current().get(resource_id)
        if resource is None:
            self.book.accepted(
                UNKNOWN, unit, at, now, required=None, optional=None, delay_ms=0, limit_ms=None
            )
            return
        required: tuple[int, int] | None = None
        optional: tuple[int, int] | None = None
        try:
            fields = self._spec_fields(resource)
            payload = decode(rec["payload"], self.registry.writer_of(rec["payload"]))
            required = (sum(filled(payload.get(f)) for f in fields.required), len(fields.required))
            optional = (sum(filled(payload.get(f)) for f in fields.optional), len(fields.optional))
        except Exception as exc:  # no spec or writer: the record still counts, unmeasured
            log.debug("quality: completeness of %s not measured: %s", resource.id, exc)
        self.book.accepted(
            resource.id,
            unit,
            at,
            now,
            required=required,
            optional=optional,
            delay_ms=int(rec["accepted_at_ms"]) - int(rec["observed_at_ms"]),
            limit_ms=TIMELINESS_LIMIT_MS.get(resource.update_frequency),
        )

    def _spec_fields(self, resource: Resource) -> SpecFields:
        k = (resource.id, resource.version)
        fields = self._specs.get(k)
        if fields is None:
            fields = self._specs[k] = spec_fields(self.catalog.spec(resource).parsed)
        return fields

    def _rejected(self, value: bytes, at: int, now: int) -> None:
        rec = decode(value, self.registry.writer_of(value), self._rejected_reader)
        reason = rec["reason"] if rec["reason"] in _REASONS else UNKNOWN
        resource, unit = UNDECODABLE, UNDECODABLE
        original = rec.get("original_value")
        if original:
            try:
                env = self.codec.decode(original)
            except Exception:  # not an envelope we can read: that is why it was rejected
                pass
            else:
                resource, unit = self._labels(env.resource_id, env.provider)
        self.book.rejected(resource, unit, reason, at, now)
        if self.metrics is not None:
            self.metrics.rejected.labels(resource, unit, reason).inc()

    # -- verification results -------------------------------------------------------------
    def _verification_result(self, msg: Message, now: int) -> None:
        topic, value = msg.topic() or "", msg.value()
        key = (msg.key() or b"").decode(errors="replace")
        at = self._time(msg, now)
        try:
            if topic == self.verified_topic:
                if value is not None:
                    resource = self.catalog.current().get(key.split("|", 1)[0])
                    if resource is not None:
                        _, unit = self._labels(resource.id, resource.provider)
                        self.book.verified(resource.id, unit, True, at, now)
            elif topic == self.resolutions_topic:
                body = self._body(value) if value else {}
                target = (
                    body.get("conflict_id") or body.get("conflict_key") or body.get("key") or key
                )
                self._open.pop(str(target), None)
            elif topic.startswith(self.conflicts_prefix):
                if value is None:
                    self._open.pop(key, None)
                    return
                body = self._body(value)
                key = str(body.get("conflict_id") or key)
                status = str(body.get("status", "open")).lower()
                if status != "open":
                    self._open.pop(key, None)
                elif key not in self._open:
                    provider = topic[len(self.conflicts_prefix) :]
                    rid = body.get("resource_id") or key.split("|", 1)[0]
                    pair = self._labels(rid, provider)
                    self._open[key] = pair
                    self.book.verified(pair[0], pair[1], False, at, now)
        except Exception as exc:
            self._bad(msg, exc)

    def _body(self, value: bytes) -> dict[str, Any]:
        """A conflict or resolution record: Avro single-object (the verifier's), else JSON."""
        if value[:2] == b"\xc3\x01":
            body = decode(value, self.codec.registry.writer_of(value))
            return dict(body) if isinstance(body, dict) else {}
        parsed = json.loads(value)
        return parsed if isinstance(parsed, dict) else {}

    def _verification_running(self) -> bool:
        assert self._consistency is not None
        names = self._consistency.list_topics(timeout=5).topics
        return any(n == self.verified_topic or n.startswith(self.conflicts_prefix) for n in names)

    # -- the snapshot ---------------------------------------------------------------------
    def publish(self, now: int | None = None) -> list[QualityRow]:
        """Write every pair's figures to the quality topic and the gauges; returns them."""
        now = self._clock() if now is None else now
        self._next_publish = now + self.config.quality_snapshot_interval_ms
        if self._units is not None:
            try:
                units = frozenset(self._units())
                if units != self._register_units:
                    self._register_units, self._known_of = units, None
            except Exception as exc:  # the register away for a moment: keep the last one
                log.warning("quality: unit register unavailable: %s", exc)
        try:
            running = self._verification_running()
        except Exception as exc:
            log.warning("quality: cannot list the verification topics: %s", exc)
            running = self.book.open_conflicts is not None
        self.book.open_conflicts = Counter(self._open.values()) if running else None
        rows = self.book.rows(now)
        if self._producer is not None:
            topic = self.topics.quality
            for row in rows:
                self._producer.produce(topic, row.to_json(), row.key.encode())
            left = self._producer.flush(10)
            if left:
                log.warning("quality: %d snapshot records not delivered", left)
        if self.metrics is not None:
            self.metrics.show((r.resource, r.unit, r.window, r.open_conflicts) for r in rows)
        self.snapshots += 1
        return rows


class QualityService(mode.Service):
    """Starts the agent, runs it while the worker runs, stops it on shutdown."""

    def __init__(self, agent: QualityAgent, *, poll_s: float = 0.5, **kw: Any) -> None:
        super().__init__(**kw)
        self.agent = agent
        self.poll_s = poll_s
        self.running = False
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="quality")

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def on_stop(self) -> None:
        if self.running:
            await self.call(self.agent.stop)
        self._pool.shutdown(wait=False)

    @mode.Service.task
    async def _run(self) -> None:
        while not self.should_stop and not self.running:
            try:
                await self.call(self.agent.start)
                self.running = True
            except Exception:  # Kafka away for a moment: try again
                log.exception("quality: agent could not start; retrying")
                await self.sleep(2.0)
        while not self.should_stop:
            try:
                await self.call(self.agent.run_once, self.poll_s)
            except Exception:  # the broker away for a moment: the figures wait
                log.exception("quality: step failed; retrying")
                await self.sleep(1.0)


def register_quality(
    app: faust.App,
    config: StreamsConfig,
    *,
    registry: SchemaRegistry,
    catalog: CatalogView,
    units: Callable[[], Iterable[str]] | None = None,
    metrics: QualityMetrics | None = None,
) -> QualityService:
    """Run the quality agent in ``app``'s worker: ``registry`` decodes the outcomes (the
    worker's, which follows the schemas topic), ``catalog`` gives resources and specs,
    ``units`` the unit codes of the register (labels), ``metrics`` the gauges."""
    agent = QualityAgent(config, registry, catalog, units=units, metrics=metrics)
    service = QualityService(agent, poll_s=min(0.5, config.quality_snapshot_interval_ms / 2000))
    app.add_dependency(service)
    return service
