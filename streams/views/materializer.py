"""The materializer: every pool topic and the verified topic, read committed, kept current
in Redis (each subject's verification count next to its record).

Each consumed batch is written by one Lua script, atomically with the offsets it applies
(Redis is the materializer's offset store; no consumer-group commits): the script first
checks that the view's state hash still holds the generation and the very offsets this
materializer last wrote (compare and set), so

* a materializer that restarts resumes from the offsets in Redis: each record is applied
  exactly once;
* if Redis was flushed or restarted empty, the state hash is gone; the script refuses the
  batch, and the materializer starts a new generation and replays the pool topics from the
  beginning: nothing is lost;
* two materializers writing one view (two workers, or a worker and ``pools rebuild``) never
  interleave: the one that finds other offsets than its own re-reads them and goes on from
  there.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    IsolationLevel,
    KafkaError,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec  # type: ignore[attr-defined]

from monitoring.metrics import ViewMetrics
from streams.kafka.config import StreamsConfig
from streams.kafka.topics import Topics
from streams.views.layout import LAYOUT, Layout, encode_record, encode_verified, text
from streams.wire.codec import CodecError, SchemaRegistry, decode

__all__ = ["APPLY_SCRIPT", "Materializer", "Progress"]

log = logging.getLogger(__name__)

#: KEYS: state, contexts, resources, record keys…  ARGV: mode (new|cont), gen, applied_at_ms,
#: parts, then per partition (field, expected next offset or "", new next offset); contexts,
#: then (id, value) pairs; resources, then (id, pool) pairs; then per record (index into
#: KEYS, subject, value or "" for a tombstone). Returns {1, n} applied, or {0, gen or ""}.
APPLY_SCRIPT = """
local state = KEYS[1]
local cur = redis.call('HGET', state, 'gen')
if ARGV[1] == 'new' then
  if cur then return {0, cur} end
  redis.call('HSET', state, 'gen', ARGV[2], 'layout', ARGV[4])
elseif cur ~= ARGV[2] then
  return {0, cur or ''}
end
local i = 5
local parts = tonumber(ARGV[i]); i = i + 1
for _ = 1, parts do
  local stored = redis.call('HGET', state, ARGV[i]) or ''
  if stored ~= ARGV[i + 1] then return {0, ARGV[2]} end
  i = i + 3
end
local j = 6
for _ = 1, parts do
  redis.call('HSET', state, ARGV[j], ARGV[j + 2])
  j = j + 3
end
local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]); i = i + 2
end
n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]); i = i + 2
end
local applied = 0
while i <= #ARGV do
  local key = KEYS[tonumber(ARGV[i])]
  if ARGV[i + 2] == '' then
    redis.call('HDEL', key, ARGV[i + 1])
  else
    redis.call('HSET', key, ARGV[i + 1], ARGV[i + 2])
  end
  applied = applied + 1
  i = i + 3
end
redis.call('HSET', state, 'applied_at_ms', ARGV[3])
redis.call('HINCRBY', state, 'applied_records', applied)
return {1, applied}
"""


@dataclass(slots=True)
class Progress:
    """What :meth:`Materializer.catch_up` did."""

    records: int = 0
    batches: int = 0
    rebuilds: int = 0
    lag: dict[str, int] = field(default_factory=dict)

    @property
    def caught_up(self) -> bool:
        return not any(self.lag.values())


class Materializer:
    """Reads every pool topic (read committed) into the Redis view of ``config.redis_url``.

    Standalone: :meth:`start`, then :meth:`run_once` in a loop (or :meth:`catch_up`), then
    :meth:`stop`. Every Kafka and Redis call blocks: run it off an event loop (see
    :func:`streams.views.agent.register_materializer`). One thread uses one instance.
    """

    def __init__(
        self,
        config: StreamsConfig,
        registry: SchemaRegistry,
        metrics: ViewMetrics | None = None,
        *,
        redis_client: redis.Redis | None = None,
        batch_size: int | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.layout = Layout.of(config.topic_prefix)
        self.pools = {topic: pool.value for pool, topic in Topics.of(config).pools.items()}
        self.verified = Topics.of(config).verified
        self.batch_size = batch_size or config.batch_size
        self._redis = redis_client or redis.Redis.from_url(config.redis_url)
        self._apply = self._redis.register_script(APPLY_SCRIPT)
        self._reader = registry.by_name("org.xiangyun.PoolRecord")
        self._verified_reader = registry.by_name("org.xiangyun.Verified")
        self._consumer: Consumer | None = None
        self._admin: AdminClient | None = None
        self._partitions: list[tuple[str, int]] = []
        self._gen = ""
        self._new = True  # the next write starts generation _gen
        self._applied: dict[tuple[str, int], int] = {}  # next offset applied, per partition
        self.rebuilds = 0
        self.bad_records = 0

    # -- life cycle -----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Materializer:
        conf = self.config.kafka.consumer(
            f"{self.config.app_id}.views",
            **{
                "isolation.level": "read_committed",  # aborted transactions never reach Redis
                "enable.partition.eof": True,  # EOF offsets step over transaction markers
                "enable.auto.offset.store": False,
                "fetch.max.bytes": 52_428_800,
            },
        )
        self._consumer = Consumer(conf)
        meta = self._consumer.list_topics(timeout=timeout).topics
        parts: list[tuple[str, int]] = []
        for topic in [*self.pools, self.verified]:
            tmeta = meta.get(topic)
            if tmeta is None or tmeta.error is not None or not tmeta.partitions:
                raise RuntimeError(f"topic {topic} is missing: run `xiangyun topics` first")
            parts += [(topic, p) for p in sorted(tmeta.partitions)]
        self._partitions = parts
        self._resync(self._read_state())
        return self

    def stop(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> Materializer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def generation(self) -> str:
        return self._gen

    @property
    def applied(self) -> dict[tuple[str, int], int]:
        """Next offset to apply per (topic, partition), as last written to Redis."""
        return dict(self._applied)

    # -- resuming -------------------------------------------------------------------------

    def _read_state(self) -> dict[str, str]:
        raw = self._redis.hgetall(self.layout.state)
        return {text(k): text(v) for k, v in raw.items()}

    def _resync(self, state: Mapping[str, str]) -> None:
        """Go on from the offsets in ``state``; with no state, replay from the beginning in
        a new generation."""
        assert self._consumer is not None
        gen = state.get("gen")
        if gen is None:
            if self._gen:
                self.rebuilds += 1
                if self.metrics is not None:
                    self.metrics.rebuilds.inc()
                log.warning("pool view %s is gone from Redis: replaying", self.layout.ns)
            self._gen, self._new, self._applied = secrets.token_hex(4), True, {}
        else:
            if state.get("layout") != LAYOUT:
                raise RuntimeError(
                    f"pool view {self.layout.ns} has layout {state.get('layout')}, not {LAYOUT}:"
                    " `xiangyun pools rebuild` replaces it"
                )
            self._gen, self._new = gen, False
            self._applied = {}
            for name, value in state.items():
                tp = self.layout.parse_offset_field(name)
                if tp is not None:
                    self._applied[tp] = int(value)
        self._consumer.assign(
            [
                TopicPartition(t, p, self._applied.get((t, p), OFFSET_BEGINNING))
                for t, p in self._partitions
            ]
        )

    # -- one batch ------------------------------------------------------------------------

    def run_once(self, timeout: float = 1.0) -> int:
        """Consume one batch and apply it; the number of records applied (-1 when the batch
        was refused and the materializer re-synced with Redis)."""
        assert self._consumer is not None, "start() first"
        messages = self._consumer.consume(self.batch_size, timeout)
        if not messages:
            return 0
        return self._write(messages)

    def _write(self, messages: Sequence[Message]) -> int:
        gen, layout = self._gen, self.layout
        ends: dict[tuple[str, int], int] = {}
        records: list[tuple[str, str, bytes]] = []  # (key, subject, value or b"")
        contexts: dict[bytes, bytes] = {}
        resources: dict[str, str] = {}
        counts: dict[str, int] = {}
        for m in messages:
            topic, part, offset = m.topic() or "", m.partition() or 0, m.offset() or 0
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    ends[(topic, part)] = max(ends.get((topic, part), 0), offset)
                else:
                    log.warning("pool view: %s", err)
                continue
            ends[(topic, part)] = offset + 1
            if topic == self.verified:
                verified = self._verified(m)
                if verified is not None:
                    rid, sid, value = verified
                    records.append((layout.verified_key(gen, rid, sid), sid, value))
                continue
            entry = self._entry(m)
            if entry is None:
                continue
            resource_id, subject_id, value, ctx = entry
            records.append((layout.record_key(gen, resource_id, subject_id), subject_id, value))
            if ctx is not None:
                contexts[ctx[0]] = ctx[1]
                pool = self.pools.get(topic, "")
                resources[resource_id] = pool
                counts[pool] = counts.get(pool, 0) + 1
        moved = {tp: o for tp, o in ends.items() if o > self._applied.get(tp, -1)}
        if not moved and not records:
            return 0
        keys = [layout.state, layout.context_key(gen), layout.resources_key(gen)]
        index: dict[str, int] = {}
        args: list[Any] = ["new" if self._new else "cont", gen, int(time.time() * 1000), LAYOUT]
        args.append(len(moved))
        for (t, p), o in moved.items():
            prev = self._applied.get((t, p))
            args += [layout.offset_field(t, p), "" if prev is None else str(prev), o]
        args.append(len(contexts))
        for cid, ctx_value in contexts.items():
            args += [cid, ctx_value]
        args.append(len(resources))
        for rid, pool in resources.items():
            args += [rid, pool]
        for key, subject, value in records:
            at = index.get(key)
            if at is None:
                keys.append(key)
                at = index[key] = len(keys)
            args += [at, subject, value]
        done, detail = self._apply(keys=keys, args=args)
        if not done:
            log.info("pool view %s: state changed under us (%r); re-syncing", layout.ns, detail)
            self._resync(self._read_state())
            return -1
        self._new = False
        self._applied.update(moved)
        if self.metrics is not None:
            self.metrics.applied(counts, time.time())
        return int(detail)

    def _entry(self, m: Message) -> tuple[str, str, bytes, tuple[bytes, bytes] | None] | None:
        """(resource, subject, value, (context id, context)) of a pool record; value b"" and
        no context for a tombstone; None for a record that cannot be read (logged, counted)."""
        raw = m.value()
        if raw is None:
            key = (m.key() or b"").decode(errors="replace")
            resource_id, sep, subject_id = key.partition("|")
            if not sep:
                self._bad(m, "tombstone without a resource_id|subject_id key")
                return None
            return resource_id, subject_id, b"", None
        try:
            rec = decode(raw, self.registry.writer_of(raw), self._reader)
            value, cid, ctx = encode_record(rec)
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            self._bad(m, str(exc))
            return None
        return rec["resource_id"], rec["subject_id"], value, (cid, ctx)

    def _verified(self, m: Message) -> tuple[str, str, bytes] | None:
        """(resource, subject, view value or b"" for a tombstone) of a verified record."""
        key = (m.key() or b"").decode(errors="replace")
        resource_id, sep, subject_id = key.partition("|")
        raw = m.value()
        if raw is None:
            if not sep:
                self._bad(m, "tombstone without a resource_id|subject_id key")
                return None
            return resource_id, subject_id, b""
        try:
            rec = decode(raw, self.registry.writer_of(raw), self._verified_reader)
            return rec["resource_id"], rec["subject_id"], encode_verified(rec)
        except (CodecError, KeyError, TypeError, ValueError) as exc:
            self._bad(m, str(exc))
            return None

    def _bad(self, m: Message, why: str) -> None:
        self.bad_records += 1
        if self.metrics is not None:
            self.metrics.bad_records.inc()
        log.warning("pool view: skipped %s[%s]@%s: %s", m.topic(), m.partition(), m.offset(), why)

    # -- progress -------------------------------------------------------------------------

    def end_offsets(self, timeout: float = 10.0) -> dict[tuple[str, int], int]:
        """The last stable offset of every pool partition (read committed), in one request:
        a watermark query per partition on the fetching consumer waits behind its fetch."""
        if self._admin is None:
            self._admin = AdminClient(self.config.kafka.admin())
        latest = OffsetSpec.latest()  # type: ignore[no-untyped-call]
        specs = {TopicPartition(t, p): latest for t, p in self._partitions}
        futures = self._admin.list_offsets(
            specs, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout
        )
        return {(tp.topic, tp.partition): f.result(timeout).offset for tp, f in futures.items()}

    def lag(self, ends: Mapping[tuple[str, int], int] | None = None) -> dict[str, int]:
        """Records behind, per pool topic and the verified topic (0 when every partition is
        applied to its end)."""
        ends = ends if ends is not None else self.end_offsets()
        out = dict.fromkeys([*self.pools, self.verified], 0)
        for (t, p), end in ends.items():
            out[t] += max(0, end - self._applied.get((t, p), 0))
        return out

    def report(self) -> dict[str, int]:
        """Set the lag gauges now; the lag per pool topic."""
        lag = self.lag()
        if self.metrics is not None:
            for topic, n in lag.items():
                self.metrics.lag.labels(topic).set(n)
        return lag

    def catch_up(
        self,
        timeout: float = 60.0,
        progress: Callable[[Progress], None] | None = None,
        poll: float = 0.5,
    ) -> Progress:
        """Apply batches until every pool partition is applied up to its end offset as of
        the call (or ``timeout`` passes); ``progress(Progress)`` is called after each batch."""
        deadline = time.monotonic() + timeout
        ends = self.end_offsets()
        out = Progress()
        while True:
            lag = {tp: max(0, end - self._applied.get(tp, 0)) for tp, end in ends.items()}
            if not any(lag.values()) or time.monotonic() >= deadline:
                break
            before = self.rebuilds
            n = self.run_once(min(poll, max(0.05, deadline - time.monotonic())))
            if n:
                out.batches += 1
                out.records += max(n, 0)
            out.rebuilds += self.rebuilds - before
            if n and progress is not None:
                out.lag = self.lag(ends)
                progress(out)
        out.lag = self.lag(ends)
        return out
