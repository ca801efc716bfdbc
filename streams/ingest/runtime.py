"""What a worker holds while it runs: the schema registry, the catalog, the ingest decision
with its pool state, the transactional producer and the metrics. Built explicitly, started
explicitly: no import-time side effects, no module globals.

Exactly once (consume, transform, produce): the outputs of one or more batches and the
collect offsets of those batches commit in one Kafka transaction
(``send_offsets_to_transaction`` with the consumer's group metadata, KIP-447), and every
reader of the outcome topics reads ``read_committed``. A worker that lost its group
membership cannot commit (the broker refuses its offsets, the transaction aborts); an
aborted transaction leaves nothing visible downstream. Any failure to commit ends the
process (crash-only): its pool state may be ahead of what Kafka holds, and a restart
rebuilds it from the pool topics.
"""

from __future__ import annotations

import gc
import logging
import operator
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import CancelledError, Future
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from monitoring.metrics import Metrics
from streams.catalog.model import Catalog, Resource
from streams.core.pools import Pool
from streams.core.reasons import Reason
from streams.ingest.decision import Ingestor, Outcome, OutcomeKind, SpecOf
from streams.ingest.pool_state import NATIVE, STATE_HEADER, PoolState
from streams.kafka.batch_reader import Offsets
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.config import StreamsConfig
from streams.kafka.consent_store import ConsentBook, ConsentsUnavailable
from streams.kafka.lag import GroupLag
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import Topics, ensure_topics
from streams.kafka.transaction import Transaction, TransactionFailed, produce_records
from streams.kafka.units_store import UnitsStore
from streams.units.model import UnitRegister
from streams.wire.codec import Schema, SchemaRegistry
from streams.wire.envelope import EnvelopeCodec

__all__ = [
    "COLLECT_AFTER_OBJECTS",
    "CatalogSource",
    "InternalErrors",
    "Runtime",
    "StaticCatalog",
    "StaticUnits",
    "TransactionFailed",
    "UnitsSource",
    "settle_collector",
]

log = logging.getLogger(__name__)

#: how long a batch waits, at most, for the consents topic when a record names a consent
#: the book does not hold (once per batch)
CONSENT_SYNC_TIMEOUT_S = 2.0
#: how long a batch waits, at most, for the schema topic when a record names a writer
#: schema the registry does not hold (once per batch)
SCHEMA_SYNC_TIMEOUT_S = 5.0

_TALLY_KEY = operator.itemgetter(
    *(Outcome._fields.index(f) for f in ("kind", "pool", "reason", "unit"))
)


class CatalogSource(Protocol):
    """Where a worker reads the catalog: :class:`~streams.kafka.catalog_store.CatalogStore`
    (the catalog topic, the default) or :class:`StaticCatalog` (unit tests)."""

    errors: int  # catalog records that could not be applied

    def start(self) -> object: ...
    def current(self) -> Catalog: ...
    def spec(self, resource: Resource) -> Schema: ...
    def close(self) -> None: ...


class StaticCatalog:
    """A catalog fixed at start, its specs read from files (unit tests only: a worker
    follows the catalog topic)."""

    errors = 0

    def __init__(self, catalog: Catalog, spec_of: SpecOf) -> None:
        self._catalog = catalog
        self._spec_of = spec_of

    def start(self) -> StaticCatalog:
        return self

    def current(self) -> Catalog:
        return self._catalog

    def spec(self, resource: Resource) -> Schema:
        return self._spec_of(resource)

    def close(self) -> None:
        return None


class UnitsSource(Protocol):
    """Where a worker reads the register of units: :class:`UnitsStore` (its topic, the
    default) or :class:`StaticUnits` (unit tests)."""

    def start(self) -> object: ...
    def current(self) -> UnitRegister: ...
    def close(self) -> None: ...


class StaticUnits:
    """A register fixed at start (unit tests only: a worker follows the units topic)."""

    def __init__(self, register: UnitRegister) -> None:
        self._register = register

    def start(self) -> StaticUnits:
        return self

    def current(self) -> UnitRegister:
        return self._register

    def close(self) -> None:
        return None


class InternalErrors(RuntimeError):
    """Too many records in a row failed on the platform's own error, not on their data."""


class Runtime:
    def __init__(
        self,
        config: StreamsConfig,
        catalog: CatalogSource | None = None,
        metrics: Metrics | None = None,
        units: UnitsSource | None = None,
        consents: bool = True,
    ) -> None:
        self.config = config
        self.topics = Topics.of(config)
        self.registry = SchemaRegistry.from_dir(config.schema_dir)
        self.codec = EnvelopeCodec(self.registry, config.schema_dir)
        self.schema_topic = SchemaTopic(config.kafka, self.topics.schemas, self.registry)
        # The worker only follows the catalog topic; loading the starter catalog into it is
        # `xiangyun stack up`'s, the demo's, the benchmark's or `xiangyun catalog bootstrap`'s.
        self.catalog: CatalogSource = catalog or CatalogStore(config)
        self.units: UnitsSource = units or UnitsStore(config)
        # Consents on record (article 18); None in unit tests: a reference suffices there.
        self.consents: ConsentBook | None = (
            ConsentBook(config, registry=self.registry) if consents else None
        )
        self.metrics = metrics or Metrics()
        catalog_source = self.catalog
        self.metrics.catalog_errors.set_function(lambda: catalog_source.errors)  # at scrape time
        self.state = PoolState()
        self.ingestor = Ingestor(
            self.codec,
            self.catalog.current,
            self.topics,
            config.schema_dir,
            spec_of=self.catalog.spec,
            refresh_schemas=self._sync_schemas,
            pool_state=self.state,
            max_clock_skew_ms=config.max_clock_skew_ms,
            units=self.units.current,
            partitions=config.partitions,
            consent=self.consents.check if self.consents is not None else None,
            refresh_consents=self._sync_consents if self.consents is not None else None,
        )
        # A batch needed the schema topic: the next one begins a sync as it starts.
        self._schemas_wanted = False
        self._schemas_ahead: Future[bool] | None = None
        self._txn: Transaction | None = None
        self._tally: Counter[tuple[OutcomeKind, Pool | None, Reason | None, str]] = Counter()
        self._lag: GroupLag | None = None

    def start(self) -> Runtime:
        self.units.start()
        principals = self.units.current().principals()
        if not principals:
            log.warning(
                "the unit register %s is empty: no principal has a collect topic, every "
                "record would be refused; load it (`xiangyun units bootstrap`)",
                self.topics.units,
            )
        ensure_topics(self.config, self.topics, principals=principals)
        self._check_partitioning()
        if not NATIVE:
            log.warning(
                "the pool state's C table was not built: the pure Python state holds a key "
                "in about 134 bytes, not 67; reinstall with a C compiler (`pip install -e .`)"
            )
        if self.consents is not None:
            self.consents.start()
        self.schema_topic.follow()
        self.catalog.start()
        if not len(self.catalog.current()):
            log.warning(
                "catalog topic %s is empty: every record is refused as UNKNOWN_RESOURCE until "
                "the catalog is loaded (`xiangyun catalog bootstrap`)",
                self.topics.catalog,
            )
        # A fresh id per process; a killed worker's open transaction is aborted by the
        # coordinator after transaction.timeout.ms, and KIP-447 fences it from committing.
        self._txn = Transaction.start(
            self.config.kafka,
            f"{self.config.ingest_group}.{uuid.uuid4().hex[:12]}",
            self.config.transaction_timeout_ms,
            "ingest",
            self.metrics.transactions,
        )
        self.metrics.up.set(1)
        return self

    def _check_partitioning(self) -> None:
        """Pool partition p holds exactly the keys of collect partition p, whichever
        principal's topic carried them: every collect and outcome topic has the configured
        partition count, or the worker refuses to start."""
        probe = Consumer(self.config.kafka.consumer(f"{self.config.ingest_group}.meta"))
        try:
            meta = probe.list_topics(timeout=30).topics
        finally:
            probe.close()
        want = self.config.partitions
        ours = [*self.topics.outcomes, *self.collect_topics(meta)]
        wrong = {t: len(meta[t].partitions) for t in ours if t in meta}
        wrong = {t: n for t, n in wrong.items() if n != want}
        if wrong:
            raise RuntimeError(
                f"collect and outcome topics must have {want} partitions "
                f"(XIANGYUN_PARTITIONS), these do not: {wrong}; recreate them with {want}"
            )

    def collect_topics(self, meta: Mapping[str, object]) -> list[str]:
        """Every principal's collect topic in ``meta`` (a topic listing)."""
        return sorted(filter(self.topics.is_collect, meta))

    def close(self) -> None:
        self.metrics.up.set(0)
        try:
            self.abort()
        except KafkaException as exc:
            log.warning("abort on close: %s", exc)
        self.schema_topic.close()
        self.catalog.close()
        self.units.close()
        if self.consents is not None:
            self.consents.close()

    def _sync_consents(self) -> None:
        """Read the consents topic to its end, briefly: a record naming a consent not on
        record is decided again after it (CONSENT_UNKNOWN if it still is not)."""
        assert self.consents is not None
        try:
            self.consents.sync(timeout=CONSENT_SYNC_TIMEOUT_S)
        except ConsentsUnavailable as exc:  # decided on what the book holds
            log.warning("consents not read to their end: %s", exc)

    def _sync_schemas(self) -> bool:
        """Read the schema topic to its end: at the first unknown writer fingerprint of a
        batch. The broker's answer took 1 to 10 ms on the event loop, each batch again
        while a source kept sending such records; after a batch that needed it, the next
        one begins the sync as it starts (it covers every schema published before its
        records were read), and its answer comes while the records before are decided."""
        self._schemas_wanted = True
        ahead = self._schemas_ahead
        if ahead is None:
            return self.schema_topic.refresh(SCHEMA_SYNC_TIMEOUT_S)
        try:
            return ahead.result(SCHEMA_SYNC_TIMEOUT_S + 1.0)
        except (TimeoutError, CancelledError):
            return False

    # -- pool state ----------------------------------------------------------------------
    def restore(self, partitions: Sequence[int], timeout: float | None = None) -> int:
        """Rebuild the pool state of collect ``partitions`` from the matching pool
        partitions, read ``read_committed`` to their end once no transaction is open on
        them (a killed owner's open transaction is aborted by its timeout first)."""
        if not partitions:
            return 0
        began = time.monotonic()
        wait = timeout if timeout is not None else self.config.transaction_timeout_ms / 1000 * 3
        committed = Consumer(
            self.config.kafka.consumer(
                f"{self.config.ingest_group}.restore",
                **{"isolation.level": "read_committed", "enable.partition.eof": True},
            )
        )
        uncommitted = Consumer(
            self.config.kafka.consumer(
                f"{self.config.ingest_group}.probe", **{"isolation.level": "read_uncommitted"}
            )
        )
        held = 0
        try:
            for p in partitions:
                tps = [TopicPartition(t, p) for t in self.topics.pools.values()]
                ends = self._stable_ends(committed, uncommitted, tps, began + wait)
                held += self.state.restore(p, self._read_state(committed, tps, ends))
        finally:
            committed.close()
            uncommitted.close()
        seconds = time.monotonic() - began
        self.metrics.restore_seconds.observe(seconds)
        self.metrics.state_keys.set(len(self.state))
        log.info("restored %d keys of partitions %s in %.2fs", held, list(partitions), seconds)
        return held

    @staticmethod
    def _stable_ends(
        committed: Consumer, uncommitted: Consumer, tps: list[TopicPartition], deadline: float
    ) -> dict[str, int]:
        while True:
            ends = {tp.topic: committed.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
            highs = {tp.topic: uncommitted.get_watermark_offsets(tp, timeout=10)[1] for tp in tps}
            if ends == highs:
                return ends
            if time.monotonic() > deadline:
                raise TransactionFailed(
                    f"pool partitions still have an open transaction: {ends} < {highs}"
                )
            time.sleep(0.2)

    @staticmethod
    def _read_state(
        consumer: Consumer, tps: list[TopicPartition], ends: dict[str, int]
    ) -> Iterable[tuple[bytes, bytes]]:
        todo = [tp for tp in tps if ends[tp.topic] > 0]
        if not todo:
            return
        consumer.assign([TopicPartition(tp.topic, tp.partition, 0) for tp in todo])
        left = {tp.topic for tp in todo}
        try:
            while left:
                for m in consumer.consume(10_000, 1.0):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            left.discard(m.topic() or "")
                            continue
                        raise TransactionFailed(f"restore: {err}")
                    if (m.offset() or 0) + 1 >= ends[m.topic() or ""]:
                        left.discard(m.topic() or "")
                    for header in m.headers() or ():
                        raw = header[1]
                        if header[0] == STATE_HEADER and isinstance(raw, bytes):
                            yield m.key() or b"", raw
        finally:
            consumer.unassign()

    def drop(self, partitions: Sequence[int]) -> None:
        self.state.drop(partitions)
        self.metrics.state_keys.set(len(self.state))

    # -- the batch path ------------------------------------------------------------------
    def decide(
        self, messages: Iterable[tuple[bytes | None, bytes | None, str, int, int]]
    ) -> list[Outcome]:
        if self._schemas_wanted:
            self._schemas_ahead = self.schema_topic.refresh_soon(SCHEMA_SYNC_TIMEOUT_S)
        self._schemas_wanted = False
        try:
            outcomes = self.ingestor.process_batch(messages)
        finally:
            self._schemas_ahead = None  # it covers this batch's records, not the next's
        if self.ingestor.internal_errors_in_a_row >= self.config.max_internal_errors:
            raise InternalErrors(
                f"{self.ingestor.internal_errors_in_a_row} records in a row failed on an "
                f"internal error (reason INTERNAL, see the log): stopping rather than "
                f"rejecting all traffic"
            )
        return outcomes

    def produce(self, outcomes: Sequence[Outcome], offsets: Offsets) -> None:
        """Add outputs and the offsets they answer for to the open transaction (begun
        here if none is). Never while :meth:`commit` runs."""
        txn = self._txn
        assert txn is not None, "Runtime.start() first"
        with txn.lock:
            producer = txn.begin()
            # No delivery callback: a message that fails makes the commit fail (abortable),
            # so nothing is acknowledged that was not written; a callback per record cost a
            # GIL hand-over each on the committing thread.
            produce_records(producer, outcomes)
            # (kind, pool, reason, unit) of each outcome, counted in C: half the cost of a
            # Counter increment per record
            self._tally.update(map(_TALLY_KEY, outcomes))
            txn.cover(offsets)
        self.metrics.batch_records.observe(len(outcomes))

    def commit_due(self, idle: bool) -> bool:
        """Commit when no batch waits (latency) or the transaction is old enough."""
        return self._txn is not None and self._txn.due(idle, self.config.commit_interval_ms)

    def commit(self, group_metadata: Callable[[], object], timeout: float = 60.0) -> int:
        """Send the covered offsets with the consumer's group metadata and commit; the
        number of outputs committed. Raises :class:`TransactionFailed` after aborting."""
        txn = self._txn
        assert txn is not None, "Runtime.start() first"
        with txn.lock:
            if not txn.commit(group_metadata, timeout):
                return 0
            tally, self._tally = self._tally, Counter()
        self.metrics.state_keys.set(len(self.state))  # a sum over the partitions: cheap
        self.metrics.count(
            {
                (kind.value, pool.value if pool else "", reason.value if reason else "", unit): n
                for (kind, pool, reason, unit), n in tally.items()
            }
        )
        return sum(tally.values())

    def abort(self, timeout: float = 10.0) -> None:
        """Abort the open transaction (a lost assignment, a stopping worker); after a
        commit in flight, if any: that one commits or fails on its own."""
        txn = self._txn
        if txn is None:
            return
        with txn.lock:
            try:
                txn.abort(timeout)
            finally:
                self._tally = Counter()

    # -- operations ----------------------------------------------------------------------
    def report(self, group: str) -> None:
        self.metrics.catalog_in_force.set(sum(1 for r in self.catalog.current() if r.in_force))
        self.metrics.schemas.set(len(self.registry))
        if self._lag is None:  # made on first use: no client before the worker runs
            self._lag = GroupLag(self.config.kafka)
        for (topic, part), n in self._lag.of(group, self.topics.is_collect).items():
            self.metrics.lag.labels(topic, str(part)).set(n)


#: Young container objects, net of those freed, before the collector runs (Python's default
#: 700). A batch keeps thousands alive while it is decided (messages, records, outcomes, one
#: batch read ahead): at 700 the collector ran every few hundred records and walked them all
#: each time, 0.6 us a record in the decision alone; at this, only when cyclic garbage has
#: piled up. The memory it bounds is that garbage's, a few MiB.
COLLECT_AFTER_OBJECTS = 50_000


def settle_collector() -> None:
    """After start-up: keep the collector off what lives for the whole run (``gc.freeze``:
    modules, schemas, the catalog), and off the batches in flight. The worker calls it; so
    does the benchmark before its in-process loops, to run them under the same collector."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(COLLECT_AFTER_OBJECTS, older, oldest)


def die(exc: BaseException, on_exit: Callable[[], None] | None = None) -> None:
    """Crash-only: what was not committed is read again by the partitions' next owner."""
    log.critical("ingest stops without committing: %s", exc)
    if on_exit is not None:
        on_exit()
    logging.shutdown()
    os._exit(70)
