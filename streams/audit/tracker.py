"""The data tracker: who accessed a subject's data, when, for which duty and case, under
which legal basis. An index in Redis kept up to date as entries arrive, never a scan of the log.

Per subject a sorted set ``<prefix>:audit:trail:<subject>`` (score: decision time; member: a
small JSON summary of the entry, identical on every write, so applying an entry twice changes
nothing). The Kafka offset the index has reached is in ``<prefix>:audit:tracker``, written in
the same MULTI/EXEC as the entries, so a restarted follower resumes where it stopped.

Entries of an investigation carry ``disclose_after_ms``: they are indexed at once but
:meth:`Tracker.trail` leaves them out until that time (as Estonia's Data Tracker does).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis

from streams.audit.entry import AccessEntry, EntryCodec
from streams.audit.log import AccessLog, read_topic
from streams.kafka.config import StreamsConfig

__all__ = ["Tracker", "TrailEntry"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TrailEntry:
    seq: int
    decision_id: str
    decided_at_ms: int
    requester: str
    official: str
    purpose: str
    case_id: str | None
    legal_basis: str
    resource_id: str
    decision: str
    fields_returned: tuple[str, ...]
    disclose_after_ms: int | None

    @classmethod
    def of(cls, entry: AccessEntry) -> TrailEntry:
        return cls(
            entry.seq,
            entry.decision_id,
            entry.decided_at_ms,
            entry.requester,
            entry.official,
            entry.purpose,
            entry.case_id,
            entry.legal_basis,
            entry.resource_id,
            entry.decision.value,
            entry.fields_returned,
            entry.disclose_after_ms,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "decision_id": self.decision_id,
            "decided_at_ms": self.decided_at_ms,
            "requester": self.requester,
            "official": self.official,
            "purpose": self.purpose,
            "case_id": self.case_id,
            "legal_basis": self.legal_basis,
            "resource_id": self.resource_id,
            "decision": self.decision,
            "fields_returned": list(self.fields_returned),
            "disclose_after_ms": self.disclose_after_ms,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TrailEntry:
        return cls(**{**doc, "fields_returned": tuple(doc["fields_returned"])})


class Tracker:
    """The subject → accesses index of one access log, in Redis."""

    def __init__(
        self,
        config: StreamsConfig,
        client: redis.Redis | None = None,
        *,
        log: AccessLog | None = None,
        key_prefix: str | None = None,
    ) -> None:
        self.config = config
        self.log = log or AccessLog(config)
        self.codec: EntryCodec = self.log.codec
        self.redis = client or redis.Redis.from_url(config.redis_url)
        prefix = key_prefix or config.topic_prefix
        self._trail_prefix = f"{prefix}:audit:trail:"
        self._state = f"{prefix}:audit:tracker"
        self.errors = 0

    def key(self, subject: str) -> str:
        return self._trail_prefix + subject

    def next_offset(self) -> int:
        """The offset of the access topic the index has reached."""
        raw = self.redis.hget(self._state, "next_offset")
        return int(raw) if raw is not None else 0

    def apply(self, items: Sequence[tuple[int, bytes]]) -> int:
        """Index the entries at these (offset, value); those already indexed are skipped.
        The count indexed."""
        start = self.next_offset()
        todo = [(o, v) for o, v in items if o >= start]
        if not todo:
            return 0
        pipe = self.redis.pipeline(transaction=True)
        n = 0
        for _offset, value in todo:
            try:
                entry = self.codec.decode_entry(value)
            except Exception:  # a broken entry is for `audit verify`; the index goes on
                self.errors += 1
                log.exception("data tracker: entry at offset %s cannot be read", _offset)
                continue
            member = json.dumps(TrailEntry.of(entry).to_json(), sort_keys=True, ensure_ascii=False)
            for subject in set(entry.subjects):
                pipe.zadd(self.key(subject), {member: entry.decided_at_ms})
            n += 1
        pipe.hset(self._state, "next_offset", str(todo[-1][0] + 1))
        pipe.execute()
        return n

    def catch_up(self) -> int:
        """Index what the log holds beyond the index's offset (the tail only)."""
        items = read_topic(
            self.config.kafka, self.log.entries_topic, start=self.next_offset(), timeout=30.0
        )
        return self.apply(items)

    def trail(self, subject: str, now_ms: int) -> list[TrailEntry]:
        """The accesses to ``subject``'s data disclosed at ``now_ms``, oldest first."""
        out = []
        members: list[bytes] = self.redis.zrange(self.key(subject), 0, -1)  # type: ignore[assignment]
        for raw in members:
            entry = TrailEntry.from_json(json.loads(raw))
            if entry.disclose_after_ms is not None and now_ms < entry.disclose_after_ms:
                continue  # an investigation's entry, hidden until its date
            out.append(entry)
        return out
