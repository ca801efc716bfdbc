"""Reading a pool view: one record, how fresh the view is, its digest and its size.

"Flush" of a view (:meth:`PoolView.flush`) deletes the view's own keys only, never a whole
Redis database: first the state hash (one atomic step: readers then see an empty view and a
running materializer replays the pool topics into a new generation), then every key of an
older generation by SCAN and UNLINK. Another application's keys in the same database are
left alone.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis
from confluent_kafka import Consumer, TopicPartition

from streams.core.regions import PROVINCE, city_of, is_region
from streams.kafka.config import StreamsConfig
from streams.kafka.topics import Topics
from streams.views.layout import (
    BUCKETS,
    Entry,
    Layout,
    decode_record,
    decode_verified,
    entry_digest,
    record_context_id,
    text,
)
from streams.wire.codec import CodecError, SchemaRegistry, decode

__all__ = ["Freshness", "PoolView", "ResourceStats", "ViewStats"]

_MASK = (1 << 64) - 1

#: KEYS: state. ARGV: ns, then resource, subject, bucket key suffix of each record. One
#: consistent read of them all (one generation): {gen, then value, ctx, verified of each},
#: '' for what is missing.
_GET_SCRIPT = """
local gen = redis.call('HGET', KEYS[1], 'gen')
if not gen then return {} end
local prefix = ARGV[1] .. ':' .. gen .. ':'
local out = {gen}
for i = 2, #ARGV, 3 do
  local subject, bucket = ARGV[i + 1], ':' .. ARGV[i + 2]
  local value = redis.call('HGET', prefix .. 'r:' .. ARGV[i] .. bucket, subject)
  local ctx, verified = '', ''
  if value then
    ctx = redis.call('HGET', prefix .. 'ctx', string.sub(value, 2, 9)) or ''
    verified = redis.call('HGET', prefix .. 'v:' .. ARGV[i] .. bucket, subject) or ''
  end
  out[#out + 1] = value or ''
  out[#out + 1] = ctx
  out[#out + 1] = verified
end
return out
"""
#: records per script call: one call holds Redis for a few milliseconds at most
GET_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class Freshness:
    """How far the view is behind the pool topics."""

    generation: str | None  # None: there is no view in Redis (yet)
    applied_at_ms: int | None  # when the last batch was applied
    lag: dict[str, int]  # committed records not yet applied, per pool topic
    applied: dict[tuple[str, int], int]  # next offset applied, per (topic, partition)
    ends: dict[tuple[str, int], int]  # last stable offset, per (topic, partition)

    @property
    def behind(self) -> int:
        return sum(self.lag.values())

    @property
    def current(self) -> bool:
        """True when every committed pool record is applied."""
        return self.generation is not None and self.behind == 0

    @property
    def age_s(self) -> float | None:
        """Seconds since the last applied batch."""
        if self.applied_at_ms is None:
            return None
        return max(0.0, time.time() - self.applied_at_ms / 1000)


@dataclass(frozen=True, slots=True)
class ResourceStats:
    resource_id: str
    pool: str
    records: int
    memory_bytes: int


@dataclass(frozen=True, slots=True)
class ViewStats:
    generation: str | None
    resources: list[ResourceStats] = field(default_factory=list)
    keys: int = 0
    memory_bytes: int = 0  # MEMORY USAGE of every key of the view (state included)

    @property
    def records(self) -> int:
        return sum(r.records for r in self.resources)

    @property
    def bytes_per_record(self) -> float:
        return self.memory_bytes / self.records if self.records else 0.0

    def per_pool(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.resources:
            out[r.pool] = out.get(r.pool, 0) + r.records
        return out


class PoolView:
    """The Redis view of the pools of ``config.topic_prefix`` in ``config.redis_url``."""

    def __init__(
        self,
        config: StreamsConfig,
        registry: SchemaRegistry | None = None,
        *,
        redis_client: redis.Redis | None = None,
    ) -> None:
        self.config = config
        self.layout = Layout.of(config.topic_prefix)
        self.registry = registry or SchemaRegistry.from_dir(config.schema_dir)
        self.redis = redis_client or redis.Redis.from_url(config.redis_url)
        self._get = self.redis.register_script(_GET_SCRIPT)
        self._probe: Consumer | None = None  # kept for freshness(), made on first use
        self._probe_lock = threading.Lock()

    def generation(self) -> str | None:
        gen = self.redis.hget(self.layout.state, "gen")
        return text(gen) if gen is not None else None

    # -- one record -----------------------------------------------------------------------

    def get(self, resource_id: str, subject_id: str) -> dict[str, Any] | None:
        """The current PoolRecord of ``subject_id`` in ``resource_id`` with its payload
        decoded (``payload`` the record; ``payload_bytes`` as collected; ``payload_schema``
        the writer's name), or None. ``verification_count`` and ``verifiers``: the distinct
        units that confirmed this version (多源校核); 0 and none for a version not (yet)
        verified."""
        return self.get_many([(resource_id, subject_id)])[0]

    def get_many(self, keys: Sequence[tuple[str, str]]) -> list[dict[str, Any] | None]:
        """:meth:`get` of each (resource_id, subject_id), in order, in one Redis round trip
        per :data:`GET_CHUNK` records."""
        out: list[dict[str, Any] | None] = []
        for start in range(0, len(keys), GET_CHUNK):
            chunk = keys[start : start + GET_CHUNK]
            args: list[str] = [self.layout.ns]
            for resource_id, subject_id in chunk:
                suffix = self.layout.record_key("", resource_id, subject_id).rsplit(":", 1)[1]
                args += (resource_id, subject_id, suffix)
            reply = self._get(keys=[self.layout.state], args=args)
            if not reply:  # no view (yet)
                out += [None] * len(chunk)
                continue
            for i, (resource_id, subject_id) in enumerate(chunk):
                value, ctx, verified = reply[1 + 3 * i : 4 + 3 * i]
                out.append(
                    self._record(resource_id, subject_id, value, ctx, verified) if value else None
                )
        return out

    def _record(
        self, resource_id: str, subject_id: str, value: bytes, ctx: bytes, verified: bytes
    ) -> dict[str, Any]:
        rec = decode_record(resource_id, subject_id, value, ctx)
        seen = decode_verified(verified) if verified else None
        if seen is not None and seen["version"] == rec["version"]:
            rec["verification_count"] = seen["verification_count"]
            rec["verifiers"] = seen["verifiers"]
            rec["last_verified_at_ms"] = seen["last_verified_at_ms"]
        else:
            rec["verifiers"] = []
            rec["last_verified_at_ms"] = 0
        raw: bytes = rec["payload"]
        rec["payload_bytes"] = raw
        try:
            writer = self.registry.writer_of(raw)
            rec["payload"] = decode(raw, writer)
            rec["payload_schema"] = writer.name
        except CodecError as exc:
            rec["payload"] = None
            rec["payload_schema"] = None
            rec["payload_error"] = str(exc)
        return rec

    def share(
        self, resource_id: str, region: str, limit: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """A region's own share of a pool (article 20): the current records of
        ``resource_id`` collected in ``region`` or, for a city, in its districts; the
        province's code gives every record. Payloads as collected (``payload`` bytes)."""
        gen = self.generation()
        if gen is None:
            return
        contexts: dict[bytes, bytes] = {
            _raw(k): _raw(v) for k, v in self.redis.hgetall(self.layout.context_key(gen)).items()
        }
        shown = 0
        for bucket in range(BUCKETS):
            key = f"{self.layout.gen_prefix(gen)}r:{resource_id}:{bucket:02x}"
            for f, v in self._fields(key):
                value = _raw(v)
                rec = decode_record(
                    resource_id, text(f), value, contexts.get(record_context_id(value), b"")
                )
                if not _within(rec["region"], region):
                    continue
                yield rec
                shown += 1
                if limit is not None and shown >= limit:
                    return

    # -- freshness ------------------------------------------------------------------------

    def freshness(self, timeout: float = 10.0) -> Freshness:
        state = {text(k): text(v) for k, v in self.redis.hgetall(self.layout.state).items()}
        applied: dict[tuple[str, int], int] = {}
        for name, value in state.items():
            tp = self.layout.parse_offset_field(name)
            if tp is not None:
                applied[tp] = int(value)
        with self._probe_lock:
            if self._probe is None:
                self._probe = _probe(self.config)
            ends = end_offsets(self.config, timeout, self._probe)
        lag: dict[str, int] = {}
        for (t, p), end in ends.items():
            lag[t] = lag.get(t, 0) + max(0, end - applied.get((t, p), 0))
        at = state.get("applied_at_ms")
        return Freshness(state.get("gen"), int(at) if at else None, lag, applied, ends)

    # -- the whole view -------------------------------------------------------------------

    def _keys(self, gen: str) -> Iterator[str]:
        for key in self.redis.scan_iter(match=self.layout.gen_prefix(gen) + "*", count=1000):
            yield key.decode()

    def _fields(self, key: str) -> Iterator[tuple[bytes, bytes]]:
        yield from self.redis.hscan_iter(key, count=1000)

    def digest(self) -> int:
        """Order-independent digest of the view's records (see
        :func:`~streams.views.layout.digest_entries`): each record's resource, subject,
        stored value and the context it refers to, without generation or bucket, so a
        rebuild of the same topics has the same digest. 0 for an empty view. The state hash
        (offsets, times) is bookkeeping, not content, and is not included."""
        gen = self.generation()
        if gen is None:
            return 0
        contexts: dict[bytes, bytes] = {
            _raw(k): _raw(v) for k, v in self.redis.hgetall(self.layout.context_key(gen)).items()
        }
        total = 0
        for key in self._keys(gen):
            parsed = self.layout.parse(key)
            if parsed is None or parsed[1] != "r":
                continue
            resource_id = parsed[2]
            for f, v in self._fields(key):
                value = _raw(v)
                ctx = contexts.get(record_context_id(value), b"")
                entry = Entry(resource_id, text(f), value, ctx)
                total = (total + entry_digest(entry)) & _MASK
        return total

    def stats(self) -> ViewStats:
        """Records and memory per resource (Redis ``MEMORY USAGE``, exact)."""
        gen = self.generation()
        if gen is None:
            return ViewStats(None)
        pools = {
            text(k): text(v) for k, v in self.redis.hgetall(self.layout.resources_key(gen)).items()
        }
        counts: dict[str, int] = {}
        memory: dict[str, int] = {}
        total_mem = int(self.redis.memory_usage(self.layout.state, samples=0) or 0)
        nkeys = 1
        for key in self._keys(gen):
            parsed = self.layout.parse(key)
            mem = int(self.redis.memory_usage(key, samples=0) or 0)
            total_mem += mem
            nkeys += 1
            if parsed is None or parsed[1] != "r":
                continue
            rid = parsed[2]
            counts[rid] = counts.get(rid, 0) + int(self.redis.hlen(key))
            memory[rid] = memory.get(rid, 0) + mem
        resources = [
            ResourceStats(rid, pools.get(rid, "?"), counts[rid], memory[rid])
            for rid in sorted(counts)
        ]
        return ViewStats(gen, resources, nkeys, total_mem)

    def flush(self) -> int:
        """Delete the view's own keys (never FLUSHDB): the state hash first, then every
        key of a generation that is not the current one. The number of keys deleted."""
        deleted = int(self.redis.unlink(self.layout.state))
        for page in _pages(self.redis, self.layout.ns + ":*"):
            current = self.generation()  # read after SCAN: a newer generation is kept
            doomed = [k for k in page if self._stale(k, current)]
            if doomed:
                deleted += int(self.redis.unlink(*doomed))
        return deleted

    def _stale(self, key: bytes, current: str | None) -> bool:
        parsed = self.layout.parse(key.decode())
        return parsed is not None and parsed[0] != current

    def close(self) -> None:
        with self._probe_lock:
            if self._probe is not None:
                self._probe.close()
                self._probe = None
        self.redis.close()


def _raw(reply: bytes | str) -> bytes:
    return reply if isinstance(reply, bytes) else reply.encode()


def _pages(client: redis.Redis, match: str) -> Iterator[list[bytes]]:
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor, match=match, count=1000)
        if keys:
            yield [_raw(k) for k in keys]
        if cursor == 0:
            return


def _probe(config: StreamsConfig) -> Consumer:
    return Consumer(
        config.kafka.consumer(
            f"{config.app_id}.views-probe", **{"isolation.level": "read_committed"}
        )
    )


def end_offsets(
    config: StreamsConfig, timeout: float = 10.0, probe: Consumer | None = None
) -> dict[tuple[str, int], int]:
    """The last stable offset of every partition of every pool topic; ``probe`` a consumer
    the caller keeps (making one costs tens of milliseconds)."""
    c = probe or _probe(config)
    try:
        names = [*Topics.of(config).pools.values(), Topics.of(config).verified]
        meta = c.list_topics(timeout=timeout).topics
        out = {}
        for t in names:
            tmeta = meta.get(t)
            if tmeta is None:
                continue
            for p in sorted(tmeta.partitions):
                out[(t, p)] = c.get_watermark_offsets(
                    TopicPartition(t, p), timeout=timeout, cached=False
                )[1]
        return out
    finally:
        if probe is None:
            c.close()


def _within(code: str, region: str) -> bool:
    """``code`` is ``region``, or one of its districts (the province holds every code)."""
    if code == region or region == PROVINCE:
        return True
    return is_region(code) and city_of(code) == region
