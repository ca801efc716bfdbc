"""The access log (可追溯): one Kafka topic of entries, one of signed checkpoints.

* ``<prefix>.access``: one partition, append-only, kept forever. The exchange agent writes
  each decision's entry in the same transaction as the answer (:meth:`AccessLog.entry_record`,
  numbered by an :class:`EntryWriter`). An entry's exact bytes are a leaf of the log's
  Merkle tree (RFC 6962); its ``seq`` is its leaf index.
* ``<prefix>.access.checkpoints``: the :class:`Checkpointer` follows the entries (read
  committed) and, every ``audit_checkpoint_interval_ms`` if the log grew, writes a tree head
  (size, root, time) signed with the platform's Ed25519 key, with the leaf hashes added since
  the checkpoint before.

Memory of the checkpointer: the tree is kept as its perfect subtrees (at most 64 hashes), plus
the 32-byte leaf hashes not yet in a checkpoint (at most :data:`MAX_LEAVES_PER_CHECKPOINT`):
a few hundred kilobytes whatever the size of the log. On start it reads the whole log once
(32 bytes hashed per entry) and refuses to sign if the log no longer matches its last
checkpoint.

:meth:`AccessLog.verify` reads both topics whole and checks them (:mod:`streams.audit.verify`);
:meth:`AccessLog.prove` gives an inclusion proof against the latest checkpoint, checked
offline by :func:`streams.audit.proof.check_proof` with the public key alone.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from streams.audit.entry import AccessEntry, EntryCodec
from streams.audit.merkle import HASH_SIZE, CompactTree, leaf_hash
from streams.audit.proof import make_proof
from streams.audit.signing import Checkpoint, sign_checkpoint, verify_checkpoint
from streams.audit.verify import VerifyReport, verify_log
from streams.kafka.config import KafkaConfig, StreamsConfig
from streams.kafka.topics import Topics

__all__ = [
    "MAX_LEAVES_PER_CHECKPOINT",
    "AccessLog",
    "AuditError",
    "Checkpointer",
    "EntrySink",
    "EntryWriter",
    "read_topic",
]

log = logging.getLogger(__name__)

#: a checkpoint carries at most this many leaf hashes (640 KB): more pending entries are
#: signed in several checkpoints at once
MAX_LEAVES_PER_CHECKPOINT = 20_000

Clock = Callable[[], int]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class AuditError(RuntimeError):
    """The access log cannot be read, or no longer matches what was signed."""


class EntrySink(Protocol):
    """Something kept up to date from the entries as they arrive (the data tracker)."""

    def apply(self, items: Sequence[tuple[int, bytes]]) -> int: ...


def _reader(kafka: KafkaConfig, purpose: str) -> Consumer:
    return Consumer(
        kafka.consumer(
            f"{purpose}-{uuid.uuid4().hex[:8]}",
            **{"isolation.level": "read_committed", "enable.partition.eof": True},
        )
    )


def _stable_end(consumer: Consumer, topic: str, timeout: float) -> tuple[int, int]:
    meta = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise AuditError(f"topic {topic} is missing: run `xiangyun topics` first")
    if len(meta.partitions) != 1:
        raise AuditError(f"topic {topic} has {len(meta.partitions)} partitions, not 1")
    lo, hi = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=timeout, cached=False)
    return int(lo), int(hi)  # read committed: hi is the last stable offset


def _drain(
    consumer: Consumer,
    topic: str,
    end: int,
    on_message: Callable[[int, bytes], None],
    timeout: float,
) -> None:
    """Consume the assigned partition of ``topic`` up to offset ``end``."""
    tp = TopicPartition(topic, 0)
    deadline = time.monotonic() + timeout
    while True:
        pos = consumer.position([tp])[0].offset
        if pos >= end:
            return
        if time.monotonic() > deadline:
            raise AuditError(f"could not read {topic} to offset {end} within {timeout}s")
        for m in consumer.consume(1000, 0.2):
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if (m.offset() or 0) >= end:
                        return
                    continue
                raise AuditError(f"reading {topic}: {err}")
            on_message(m.offset() or 0, m.value() or b"")


def read_topic(
    kafka: KafkaConfig, topic: str, *, start: int = 0, timeout: float = 30.0
) -> list[tuple[int, bytes]]:
    """Every committed record of the one-partition ``topic`` from offset ``start``, as
    (offset, value)."""
    consumer = _reader(kafka, "audit-read")
    try:
        lo, hi = _stable_end(consumer, topic, timeout)
        out: list[tuple[int, bytes]] = []
        if hi <= max(lo, start):
            return out
        consumer.assign([TopicPartition(topic, 0, max(lo, start))])
        _drain(consumer, topic, hi, lambda o, v: out.append((o, v)), timeout)
        return out
    finally:
        consumer.close()


class AccessLog:
    """The access log of ``config``'s topics (or of the topics named here: a verifier can be
    pointed at any copy of a log; ``log_id`` is the name its checkpoints are signed under)."""

    def __init__(
        self,
        config: StreamsConfig,
        *,
        entries_topic: str | None = None,
        checkpoints_topic: str | None = None,
        log_id: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        topics = Topics.of(config)
        self.config = config
        self.entries_topic = entries_topic or topics.access
        self.checkpoints_topic = checkpoints_topic or topics.access_checkpoints
        self.log_id = log_id or topics.access
        self.codec = EntryCodec(config.schema_dir)
        self.timeout = timeout

    # -- writing (the exchange agent) ------------------------------------------------------

    def entry_record(self, entry: AccessEntry, seq: int) -> tuple[bytes, bytes]:
        """(key, value) of ``entry`` as the ``seq``-th entry, to produce to
        :attr:`entries_topic` inside the writer's own transaction."""
        return entry.decision_id.encode(), self.codec.encode_entry(entry, seq)

    def next_seq(self) -> int:
        """The sequence number of the next entry: one past the last committed entry."""
        consumer = _reader(self.config.kafka, "audit-tail")
        try:
            lo, hi = _stable_end(consumer, self.entries_topic, self.timeout)
        finally:
            consumer.close()
        window = 64  # transaction markers sit between entries: look back further if needed
        while True:
            start = max(lo, hi - window)
            found = read_topic(
                self.config.kafka, self.entries_topic, start=start, timeout=self.timeout
            )
            if found:
                try:
                    return self.codec.decode_entry(found[-1][1]).seq + 1
                except Exception as exc:
                    raise AuditError(
                        f"the last entry of {self.entries_topic} cannot be read: {exc}"
                    ) from exc
            if start <= lo:
                return 0
            window *= 4

    def writer(self) -> EntryWriter:
        """An :class:`EntryWriter` numbering from the log's current end."""
        return EntryWriter(self, self.next_seq())

    # -- reading ---------------------------------------------------------------------------

    def read_entries(self) -> list[tuple[int, bytes]]:
        return read_topic(self.config.kafka, self.entries_topic, timeout=self.timeout)

    def read_checkpoints(self) -> list[Checkpoint | None]:
        """Every checkpoint in topic order; None for a record that is no checkpoint."""
        out: list[Checkpoint | None] = []
        for _, value in read_topic(self.config.kafka, self.checkpoints_topic, timeout=self.timeout):
            try:
                out.append(Checkpoint.from_record(self.codec.decode_checkpoint(value)))
            except Exception:  # reported by the verifier
                out.append(None)
        return out

    def latest_checkpoint(self, public: Ed25519PublicKey) -> Checkpoint | None:
        """The largest valid checkpoint of this log (signed by ``public``'s key)."""
        best: Checkpoint | None = None
        for cp in self.read_checkpoints():
            if cp is None or cp.log_id != self.log_id or not verify_checkpoint(public, cp):
                continue
            if best is None or cp.tree_size >= best.tree_size:
                best = cp
        return best

    def entry(self, values: Sequence[bytes], index: int) -> AccessEntry:
        return self.codec.decode_entry(values[index])

    # -- checking --------------------------------------------------------------------------

    def verify(self, public: Ed25519PublicKey) -> VerifyReport:
        """Read both topics whole and check every entry and checkpoint."""
        values = [v for _, v in self.read_entries()]
        return verify_log(
            values, self.codec.seqs(values), self.read_checkpoints(), public, self.log_id
        )

    def prove(self, index: int, public: Ed25519PublicKey) -> dict[str, Any]:
        """An inclusion proof of entry ``index`` against the latest checkpoint (JSON)."""
        cp = self.latest_checkpoint(public)
        if cp is None:
            raise AuditError(f"no valid checkpoint of {self.log_id} yet")
        if not 0 <= index < cp.tree_size:
            raise AuditError(
                f"entry {index} is not covered by the latest checkpoint "
                f"({cp.tree_size} entries); a newer one comes within seconds"
            )
        values = [v for _, v in self.read_entries()[: cp.tree_size]]
        hashes = [leaf_hash(v) for v in values]
        if len(hashes) < cp.tree_size or CompactTree(hashes).root() != cp.root_hash:
            raise AuditError(
                "the log does not match its latest checkpoint: `xiangyun audit verify` says where"
            )
        return make_proof(values[index], index, hashes, cp)


class EntryWriter:
    """Numbers the entries of the log's one writer (the exchange agent, whose transactional
    producer fences any older instance). Call :meth:`record` for each entry of a
    transaction, then :meth:`committed` after it commits or :meth:`aborted` after it aborts
    (the numbers of an aborted transaction are given again)."""

    def __init__(self, log: AccessLog, next_seq: int) -> None:
        self.log = log
        self.topic = log.entries_topic
        self._next = next_seq
        self._committed = next_seq

    @property
    def next_seq(self) -> int:
        return self._next

    def record(self, entry: AccessEntry) -> tuple[bytes, bytes]:
        """(key, value) of ``entry`` with the next sequence number."""
        out = self.log.entry_record(entry, self._next)
        self._next += 1
        return out

    def committed(self) -> None:
        self._committed = self._next

    def aborted(self) -> None:
        self._next = self._committed


class Checkpointer:
    """Follows the access log and signs its tree head (see the module's description)."""

    def __init__(
        self,
        config: StreamsConfig,
        key: Ed25519PrivateKey,
        *,
        log: AccessLog | None = None,
        sinks: Sequence[EntrySink] = (),
        clock: Clock = _now_ms,
    ) -> None:
        self.log = log or AccessLog(config)
        self.config = config
        self.key = key
        self.sinks = list(sinks)
        self.clock = clock
        self.interval_ms = config.audit_checkpoint_interval_ms
        self._tree = CompactTree()
        self._pending = bytearray()  # leaf hashes after the last checkpoint
        self._batch: list[tuple[int, bytes]] = []
        self._signed_size = 0
        self._last: Checkpoint | None = None
        self._last_at = 0
        self._consumer: Consumer | None = None
        self._producer = Producer(config.kafka.producer())
        self.written = 0

    @property
    def size(self) -> int:
        """Entries read so far."""
        return len(self._tree)

    @property
    def last(self) -> Checkpoint | None:
        return self._last

    def start(self) -> Checkpointer:
        """Read the whole log, check it against the last checkpoint, sign what is new."""
        public = self.key.public_key()
        last = self.log.latest_checkpoint(public)
        self._last = last
        self._signed_size = last.tree_size if last else 0
        self._last_at = last.time_ms if last else 0
        topic = self.log.entries_topic
        consumer = _reader(self.config.kafka, f"{self.config.app_id}.audit")
        self._consumer = consumer
        _, hi = _stable_end(consumer, topic, self.log.timeout)
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        _drain(consumer, topic, hi, self._add, max(self.log.timeout, 60.0))
        if last is not None and self.size < last.tree_size:
            raise AuditError(
                f"{topic} holds {self.size} entries but its last checkpoint signs "
                f"{last.tree_size}: refusing to sign a truncated log"
            )
        self._flush_sinks()
        self.maybe_checkpoint(force=True)
        return self

    def _add(self, offset: int, value: bytes) -> None:
        h = leaf_hash(value)
        self._tree.append(h)
        self._batch.append((offset, value))
        if len(self._batch) >= 1000:
            self._flush_sinks()
        size = len(self._tree)
        if size <= self._signed_size:
            if size == self._signed_size and self._last is not None:
                root = self._tree.root()
                if root != self._last.root_hash:
                    raise AuditError(
                        f"{self.log.entries_topic} no longer matches its checkpoint of size "
                        f"{size}: refusing to sign; `xiangyun audit verify` says where"
                    )
            return
        self._pending += h
        if len(self._pending) >= MAX_LEAVES_PER_CHECKPOINT * HASH_SIZE:
            self._write()

    def _flush_sinks(self) -> None:
        if self._batch:
            for sink in self.sinks:
                sink.apply(self._batch)
            self._batch = []

    def run_once(self, timeout: float = 0.5) -> int:
        """Read what arrived (up to ``timeout`` s), feed the sinks, sign if due; the count
        of entries read."""
        if self._consumer is None:
            raise RuntimeError("start() the checkpointer first")
        n = 0
        for m in self._consumer.consume(1000, timeout):
            err = m.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("access log: %s", err)
                continue
            self._add(m.offset() or 0, m.value() or b"")
            n += 1
        self._flush_sinks()
        self.maybe_checkpoint()
        return n

    def maybe_checkpoint(self, *, force: bool = False) -> Checkpoint | None:
        """Sign the tree head if the log grew and the interval has passed (or ``force``)."""
        if not self._pending:
            return None
        if not force and self.clock() - self._last_at < self.interval_ms:
            return None
        return self._write()

    def _write(self) -> Checkpoint:
        now = self.clock()
        cp = sign_checkpoint(
            self.key,
            self.log.log_id,
            len(self._tree),
            self._tree.root(),
            now,
            from_size=self._signed_size,
            leaf_hashes=bytes(self._pending),
        )
        errors: list[str] = []

        def delivered(err: KafkaError | None, _msg: object) -> None:
            if err is not None:
                errors.append(str(err))

        self._producer.produce(
            self.log.checkpoints_topic,
            key=self.log.log_id.encode(),
            value=self.log.codec.encode_checkpoint(cp.to_record()),
            on_delivery=delivered,
        )
        left = self._producer.flush(30.0)
        if left or errors:
            raise AuditError(f"checkpoint of size {cp.tree_size} not written: {errors or left}")
        self._pending = bytearray()
        self._signed_size = cp.tree_size
        self._last = cp
        self._last_at = now
        self.written += 1
        return cp

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        self._producer.flush(10.0)
