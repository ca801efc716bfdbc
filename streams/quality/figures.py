"""Data quality figures (数据质量, article 22), per resource and providing unit, free of I/O.

Four figures, each a share between 0 and 1, or None ("n/a") when there is nothing to measure:

* **completeness**: of the collection spec's fields, the share a record fills (a value that is
  not null, not an empty string, list or map), over the records accepted into a pool; also
  given for the required fields (non-nullable without a default) and the optional ones apart;
* **validity**: the share of records *not* rejected, over every outcome (accepted, superseded,
  verification evidence, rejected); the rejections are also counted by reason code;
* **timeliness**: the share of accepted records whose delay from observation to acceptance
  (``accepted_at_ms - observed_at_ms``) is within what the catalog's update frequency allows
  (:data:`TIMELINESS_LIMIT_MS`: a realtime resource one minute, an hourly one an hour, a daily
  one a day ...); an ``irregular`` resource has no limit and no timeliness;
* **consistency**: of the verification results (multi-source verification, article 20), the
  share that agreed with the pool; with the number of conflicts still open. None while
  verification is not running (its topics do not exist).

Every figure is kept twice: over the last :data:`WINDOW_MS` (15 minutes, in one-minute buckets,
by the time each outcome was written) and since the agent started. :class:`QualityBook` holds
them; :meth:`QualityBook.rows` gives one :class:`QualityRow` per (resource, unit) pair, the
record the quality snapshot topic and ``xiangyun quality`` show.

Labels: the resource is a catalog resource id and the unit a unit the catalog or the unit
register names; anything else is :data:`UNKNOWN`, and a rejected record whose envelope cannot
be read is :data:`UNDECODABLE`, so no string from the data ever becomes a label.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUCKET_MS",
    "TIMELINESS_LIMIT_MS",
    "UNDECODABLE",
    "UNKNOWN",
    "WINDOW_MS",
    "Figures",
    "QualityBook",
    "QualityRow",
    "SpecFields",
    "Tally",
    "Window",
    "filled",
    "row_key",
    "spec_fields",
]

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS
WINDOW_MS = 15 * MINUTE_MS
BUCKET_MS = MINUTE_MS

#: the longest observation-to-acceptance delay that is on time, per update frequency
#: (:data:`streams.catalog.model.UPDATE_FREQUENCIES`); None: not measured
TIMELINESS_LIMIT_MS: Mapping[str, int | None] = {
    "realtime": MINUTE_MS,
    "hourly": HOUR_MS,
    "daily": DAY_MS,
    "weekly": 7 * DAY_MS,
    "monthly": 31 * DAY_MS,
    "quarterly": 92 * DAY_MS,
    "semiannual": 183 * DAY_MS,
    "annual": 366 * DAY_MS,
    "irregular": None,
}

#: the resource or unit of a rejected record whose envelope could not be read
UNDECODABLE = "(undecodable)"
#: a resource the catalog does not hold, or a unit neither the catalog nor the register names
UNKNOWN = "(unknown)"


@dataclass(frozen=True, slots=True)
class SpecFields:
    """A collection spec's top-level fields: required (non-nullable, no default) and optional."""

    required: tuple[str, ...]
    optional: tuple[str, ...]


def spec_fields(parsed: Mapping[str, Any]) -> SpecFields:
    """The fields of a parsed Avro record schema, split as :class:`SpecFields`."""
    required: list[str] = []
    optional: list[str] = []
    for f in parsed.get("fields", ()):
        ftype = f.get("type")
        nullable = ftype == "null" or (isinstance(ftype, list) and "null" in ftype)
        (optional if nullable or "default" in f else required).append(str(f["name"]))
    return SpecFields(tuple(required), tuple(optional))


def filled(value: Any) -> bool:
    """A field holds something: not null, not an empty string, bytes, list or map."""
    if value is None:
        return False
    if isinstance(value, str | bytes | list | tuple | dict):
        return len(value) > 0
    return True


@dataclass(slots=True)
class Tally:
    """Counts over a span of outcomes of one (resource, unit) pair."""

    records: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    required_filled: int = 0
    required_total: int = 0
    optional_filled: int = 0
    optional_total: int = 0
    timed: int = 0
    on_time: int = 0
    agreed: int = 0
    disagreed: int = 0

    def add(self, other: Tally) -> None:
        self.records += other.records
        self.rejected += other.rejected
        self.reasons.update(other.reasons)
        self.required_filled += other.required_filled
        self.required_total += other.required_total
        self.optional_filled += other.optional_filled
        self.optional_total += other.optional_total
        self.timed += other.timed
        self.on_time += other.on_time
        self.agreed += other.agreed
        self.disagreed += other.disagreed

    def figures(self, consistency_known: bool = True) -> Figures:
        fields_total = self.required_total + self.optional_total
        return Figures(
            records=self.records,
            rejected=self.rejected,
            reasons=dict(sorted(self.reasons.items())),
            completeness=_share(self.required_filled + self.optional_filled, fields_total),
            completeness_required=_share(self.required_filled, self.required_total),
            completeness_optional=_share(self.optional_filled, self.optional_total),
            validity=_share(self.records - self.rejected, self.records),
            timeliness=_share(self.on_time, self.timed),
            consistency=_share(self.agreed, self.agreed + self.disagreed)
            if consistency_known
            else None,
            verifications=self.agreed + self.disagreed,
        )


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole > 0 else None


@dataclass(frozen=True, slots=True)
class Figures:
    """The quality figures of one pair over one span (None: n/a)."""

    records: int
    rejected: int
    reasons: Mapping[str, int]
    completeness: float | None
    completeness_required: float | None
    completeness_optional: float | None
    validity: float | None
    timeliness: float | None
    consistency: float | None
    verifications: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "rejected": self.rejected,
            "reasons": dict(self.reasons),
            "completeness": self.completeness,
            "completeness_required": self.completeness_required,
            "completeness_optional": self.completeness_optional,
            "validity": self.validity,
            "timeliness": self.timeliness,
            "consistency": self.consistency,
            "verifications": self.verifications,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Figures:
        def opt(name: str) -> float | None:
            v = raw.get(name)
            return None if v is None else float(v)

        return cls(
            records=int(raw["records"]),
            rejected=int(raw["rejected"]),
            reasons={str(k): int(v) for k, v in (raw.get("reasons") or {}).items()},
            completeness=opt("completeness"),
            completeness_required=opt("completeness_required"),
            completeness_optional=opt("completeness_optional"),
            validity=opt("validity"),
            timeliness=opt("timeliness"),
            consistency=opt("consistency"),
            verifications=int(raw.get("verifications", 0)),
        )


class Window:
    """A :class:`Tally` over the last ``span_ms``, in ``bucket_ms`` buckets by event time.
    An event older than the span is left out; one from the future (a clock ahead) is kept in
    the bucket of its time and counts once that time has come."""

    __slots__ = ("_buckets", "bucket_ms", "span_ms")

    def __init__(self, span_ms: int = WINDOW_MS, bucket_ms: int = BUCKET_MS) -> None:
        self.span_ms = span_ms
        self.bucket_ms = bucket_ms
        self._buckets: dict[int, Tally] = {}

    def bucket(self, at_ms: int, now_ms: int) -> Tally | None:
        """The bucket of an event at ``at_ms``, or None if it is out of the window."""
        index = at_ms // self.bucket_ms
        if index <= (now_ms - self.span_ms) // self.bucket_ms:
            return None
        tally = self._buckets.get(index)
        if tally is None:
            tally = self._buckets[index] = Tally()
        return tally

    def total(self, now_ms: int) -> Tally:
        """The tally of the window ending at ``now_ms``; older buckets are dropped."""
        oldest = (now_ms - self.span_ms) // self.bucket_ms
        now_index = now_ms // self.bucket_ms
        out = Tally()
        for index in list(self._buckets):
            if index <= oldest:
                del self._buckets[index]
            elif index <= now_index:
                out.add(self._buckets[index])
        return out


def row_key(resource: str, unit: str) -> str:
    """The snapshot topic's key of a pair."""
    return f"{resource}|{unit}"


@dataclass(frozen=True, slots=True)
class QualityRow:
    """One (resource, unit) pair's figures at ``at_ms``: over the window and since start."""

    resource: str
    unit: str
    at_ms: int
    window_ms: int
    since_ms: int
    window: Figures
    total: Figures
    open_conflicts: int | None

    @property
    def key(self) -> str:
        return row_key(self.resource, self.unit)

    def to_dict(self) -> dict[str, Any]:
        return {
            "resource": self.resource,
            "unit": self.unit,
            "at_ms": self.at_ms,
            "window_ms": self.window_ms,
            "since_ms": self.since_ms,
            "open_conflicts": self.open_conflicts,
            "window": self.window.to_dict(),
            "total": self.total.to_dict(),
        }

    def to_json(self) -> bytes:
        return json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> QualityRow:
        raw = json.loads(data)
        conflicts = raw.get("open_conflicts")
        return cls(
            resource=str(raw["resource"]),
            unit=str(raw["unit"]),
            at_ms=int(raw["at_ms"]),
            window_ms=int(raw["window_ms"]),
            since_ms=int(raw["since_ms"]),
            window=Figures.from_dict(raw["window"]),
            total=Figures.from_dict(raw["total"]),
            open_conflicts=None if conflicts is None else int(conflicts),
        )


@dataclass(slots=True)
class _Pair:
    window: Window
    total: Tally


class QualityBook:
    """The counters of every (resource, unit) pair. Events carry the time they happened
    (``at_ms``, the outcome's write time); figures are asked for at ``now_ms``."""

    def __init__(self, since_ms: int, *, window_ms: int = WINDOW_MS) -> None:
        self.since_ms = since_ms
        self.window_ms = window_ms
        self._pairs: dict[tuple[str, str], _Pair] = {}
        #: open conflicts per pair; None while the conflict topics do not exist
        self.open_conflicts: dict[tuple[str, str], int] | None = None

    def _tallies(self, resource: str, unit: str, at_ms: int, now_ms: int) -> list[Tally]:
        pair = self._pairs.get((resource, unit))
        if pair is None:
            pair = self._pairs[(resource, unit)] = _Pair(Window(self.window_ms), Tally())
        bucket = pair.window.bucket(at_ms, now_ms)
        return [pair.total] if bucket is None else [pair.total, bucket]

    def accepted(
        self,
        resource: str,
        unit: str,
        at_ms: int,
        now_ms: int,
        *,
        required: tuple[int, int] | None,
        optional: tuple[int, int] | None,
        delay_ms: int,
        limit_ms: int | None,
    ) -> None:
        """A record accepted into a pool: ``required``/``optional`` are (filled, total)
        field counts (None: the payload could not be read), ``delay_ms`` from observation
        to acceptance against the resource's ``limit_ms`` (None: not measured)."""
        for t in self._tallies(resource, unit, at_ms, now_ms):
            t.records += 1
            if required is not None:
                t.required_filled += required[0]
                t.required_total += required[1]
            if optional is not None:
                t.optional_filled += optional[0]
                t.optional_total += optional[1]
            if limit_ms is not None:
                t.timed += 1
                t.on_time += delay_ms <= limit_ms

    def passed(self, resource: str, unit: str, at_ms: int, now_ms: int) -> None:
        """A record that passed the checks without changing a pool: superseded, or kept as
        verification evidence."""
        for t in self._tallies(resource, unit, at_ms, now_ms):
            t.records += 1

    def rejected(self, resource: str, unit: str, reason: str, at_ms: int, now_ms: int) -> None:
        for t in self._tallies(resource, unit, at_ms, now_ms):
            t.records += 1
            t.rejected += 1
            t.reasons[reason] += 1

    def verified(self, resource: str, unit: str, agreed: bool, at_ms: int, now_ms: int) -> None:
        """A verification result about ``unit``'s data of ``resource``: agreed with the pool,
        or a conflict opened."""
        for t in self._tallies(resource, unit, at_ms, now_ms):
            if agreed:
                t.agreed += 1
            else:
                t.disagreed += 1

    def pairs(self) -> list[tuple[str, str]]:
        return sorted(self._pairs)

    def rows(self, now_ms: int, extra: Iterable[tuple[str, str]] = ()) -> list[QualityRow]:
        """Every pair's figures at ``now_ms`` (``extra``: pairs to show even without a
        record, e.g. those with open conflicts)."""
        known = self.open_conflicts is not None
        conflicts = self.open_conflicts or {}
        out = []
        for resource, unit in sorted({*self._pairs, *extra, *conflicts}):
            pair = self._pairs.get((resource, unit))
            window = pair.window.total(now_ms) if pair is not None else Tally()
            total = pair.total if pair is not None else Tally()
            out.append(
                QualityRow(
                    resource=resource,
                    unit=unit,
                    at_ms=now_ms,
                    window_ms=self.window_ms,
                    since_ms=self.since_ms,
                    window=window.figures(known),
                    total=total.figures(known),
                    open_conflicts=conflicts.get((resource, unit), 0) if known else None,
                )
            )
        return out
