"""Prometheus metrics of the exchange (运行监测): one registry per process, no globals."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["ExchangeMetrics", "Metrics", "QualityMetrics", "VerificationMetrics", "ViewMetrics"]


class Metrics:
    """Every metric a worker exposes; names are the operators' contract (see alerts.yml)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records = Counter(
            "xiangyun_ingest_records",
            "Collected records by outcome, pool, reason code and providing unit",
            ["outcome", "pool", "reason", "unit"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "xiangyun_ingest_batch_seconds",
            "Time to check and deliver one batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.batch_records = Histogram(
            "xiangyun_ingest_batch_records",
            "Records in one batch",
            buckets=(1, 10, 100, 500, 1000, 2000, 5000, 10000),
            registry=r,
        )
        self.lag = Gauge(
            "xiangyun_ingest_lag_records",
            "Records in the collect topic not yet committed",
            ["topic", "partition"],
            registry=r,
        )
        self.catalog_in_force = Gauge(
            "xiangyun_catalog_resources_in_force",
            "Catalog resources in force",
            registry=r,
        )
        self.catalog_errors = Gauge(
            "xiangyun_catalog_bad_records",
            "Records of the catalog topic the worker could not apply (see its log)",
            registry=r,
        )
        self.schemas = Gauge(
            "xiangyun_schema_registry_schemas",
            "Schemas known to the worker",
            registry=r,
        )
        self.transactions = Counter(
            "xiangyun_ingest_transactions",
            "Ingest transactions by result (committed, aborted)",
            ["result"],
            registry=r,
        )
        self.restore_seconds = Histogram(
            "xiangyun_ingest_restore_seconds",
            "Time to rebuild the pool state of newly assigned partitions from Kafka",
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900),
            registry=r,
        )
        self.state_keys = Gauge(
            "xiangyun_ingest_state_keys",
            "Keys whose current pool version this worker holds",
            registry=r,
        )
        self.latency = Histogram(
            "xiangyun_ingest_latency_seconds",
            "From a batch read off the collect topic to its transaction committed",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.up = Gauge("xiangyun_worker_up", "1 while the worker runs", registry=r)

    def count(self, outcomes: Mapping[tuple[str, str, str, str], int]) -> None:
        """Add a batch's tallies at once: one label lookup per distinct outcome, not per record."""
        for (outcome, pool, reason, unit), n in outcomes.items():
            self.records.labels(outcome, pool, reason, unit).inc(n)

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        start_http_server(port, addr=addr, registry=self.registry)


class ViewMetrics:
    """Metrics of the Redis views of the resource pools; on ``registry`` (a worker passes
    :attr:`Metrics.registry`, so one endpoint serves both)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.lag = Gauge(
            "xiangyun_view_lag_records",
            "Committed records of a pool topic not yet applied to the Redis view",
            ["topic"],
            registry=r,
        )
        self._applied_at = 0.0
        self.freshness = Gauge(
            "xiangyun_view_freshness_seconds",
            "Seconds since the last batch was applied to the Redis view (NaN before the first)",
            registry=r,
        )
        self.freshness.set_function(
            lambda: time.time() - self._applied_at if self._applied_at else math.nan
        )
        self.records = Counter(
            "xiangyun_view_records_applied",
            "Pool records applied to the Redis view, by pool",
            ["pool"],
            registry=r,
        )
        self.rebuilds = Counter(
            "xiangyun_view_rebuilds",
            "Replays of the pool topics because the view was gone from Redis",
            registry=r,
        )
        self.bad_records = Counter(
            "xiangyun_view_bad_records",
            "Pool records the materializer could not read (see its log)",
            registry=r,
        )

    def applied(self, counts: Mapping[str, int], at: float) -> None:
        """A batch was applied at ``at`` (epoch seconds) with ``counts`` records per pool."""
        for pool, n in counts.items():
            self.records.labels(pool).inc(n)
        self._applied_at = at


class QualityFigures(Protocol):
    """What :class:`QualityMetrics` shows of one (resource, unit) pair's window figures."""

    @property
    def records(self) -> int: ...
    @property
    def completeness(self) -> float | None: ...
    @property
    def validity(self) -> float | None: ...
    @property
    def timeliness(self) -> float | None: ...
    @property
    def consistency(self) -> float | None: ...


class QualityMetrics:
    """Data quality per resource and providing unit (article 22), over the quality agent's
    15-minute window; on ``registry`` (a worker passes :attr:`Metrics.registry`). Labels come
    from the catalog and the unit register only, never from the data, so their number is
    bounded by the catalog. A share with nothing to measure is NaN (no alert fires on it)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        pair = ["resource", "unit"]
        self.window_records = Gauge(
            "xiangyun_quality_window_records",
            "Records of a resource and unit that reached an outcome in the last 15 minutes",
            pair,
            registry=r,
        )
        self.completeness = Gauge(
            "xiangyun_quality_completeness_ratio",
            "Share of the collection spec's fields filled in accepted records (15 minutes)",
            pair,
            registry=r,
        )
        self.validity = Gauge(
            "xiangyun_quality_validity_ratio",
            "Share of records not rejected (15 minutes)",
            pair,
            registry=r,
        )
        self.timeliness = Gauge(
            "xiangyun_quality_timeliness_ratio",
            "Share of accepted records within the update frequency's delay (15 minutes)",
            pair,
            registry=r,
        )
        self.consistency = Gauge(
            "xiangyun_quality_consistency_ratio",
            "Share of verification results agreeing with the pool (15 minutes)",
            pair,
            registry=r,
        )
        self.open_conflicts = Gauge(
            "xiangyun_quality_open_conflicts",
            "Verification conflicts still open",
            pair,
            registry=r,
        )
        self.rejected = Counter(
            "xiangyun_quality_rejected_records",
            "Rejected records by resource, unit and reason code, as the quality agent read them",
            ["resource", "unit", "reason"],
            registry=r,
        )
        self.bad_records = Counter(
            "xiangyun_quality_bad_records",
            "Outcome or verification records the quality agent could not read (see its log)",
            registry=r,
        )

    def show(self, rows: Iterable[tuple[str, str, QualityFigures, int | None]]) -> None:
        """Set the gauges of every (resource, unit, window figures, open conflicts)."""
        for resource, unit, fig, conflicts in rows:
            self.window_records.labels(resource, unit).set(fig.records)
            for gauge, value in (
                (self.completeness, fig.completeness),
                (self.validity, fig.validity),
                (self.timeliness, fig.timeliness),
                (self.consistency, fig.consistency),
            ):
                gauge.labels(resource, unit).set(math.nan if value is None else value)
            self.open_conflicts.labels(resource, unit).set(
                math.nan if conflicts is None else conflicts
            )


class ExchangeMetrics:
    """Metrics of the exchange (共享交换) on ``registry`` (a worker passes
    :attr:`Metrics.registry`, so one endpoint serves all)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "xiangyun_exchange_requests",
            "Exchange requests answered, by decision (ALLOWED, REFUSED, TIMEOUT, MALFORMED) "
            "and reason code (OK, a refusal reason, RETRY for a retried request)",
            ["decision", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "xiangyun_exchange_answer_seconds",
            "From a request written to its topic (its Kafka timestamp) to its answer committed",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.deliveries = Counter(
            "xiangyun_exchange_subscription_deliveries",
            "Pool changes delivered to subscribers, by resource and decision",
            ["resource", "decision"],
            registry=r,
        )
        self.subscriptions = Gauge(
            "xiangyun_exchange_subscriptions_active",
            "Active subscriptions",
            registry=r,
        )
        self.transactions = Counter(
            "xiangyun_exchange_transactions",
            "Exchange transactions by result (committed, aborted)",
            ["result"],
            registry=r,
        )
        self.active = Gauge(
            "xiangyun_exchange_active",
            "1 while this worker is the exchange (holds its lease), 0 while on standby",
            registry=r,
        )

    def count(
        self,
        answers: Mapping[tuple[str, str], int],
        deliveries: Mapping[tuple[str, str], int],
    ) -> None:
        for (decision, reason), n in answers.items():
            self.requests.labels(decision, reason).inc(n)
        for (resource, decision), n in deliveries.items():
            self.deliveries.labels(resource, decision).inc(n)


class VerificationMetrics:
    """Metrics of multi-source verification (多源校核) on ``registry`` (a worker passes
    :attr:`Metrics.registry`)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = r = registry if registry is not None else CollectorRegistry()
        self.evidence = Counter(
            "xiangyun_verification_evidence",
            "Evidence records by outcome: agree, disagree (a conflict), pending (no "
            "authoritative value yet), dropped (pending past the cap), self, unregistered, "
            "unreadable; reset: authoritative versions that reset a count",
            ["outcome"],
            registry=r,
        )
        self.pending = Gauge(
            "xiangyun_verification_pending",
            "Evidence records waiting for an authoritative value on this worker",
            registry=r,
        )
        self.transactions = Counter(
            "xiangyun_verification_transactions",
            "Verifier transactions by result (committed, aborted)",
            ["result"],
            registry=r,
        )
        self.conflicts_open = Gauge(
            "xiangyun_verification_conflicts_open",
            "Open conflicts per providing unit",
            ["unit"],
            registry=r,
        )
        self.conflict_oldest = Gauge(
            "xiangyun_verification_conflict_oldest_open_seconds",
            "Age of the oldest open conflict per providing unit (0: none open)",
            ["unit"],
            registry=r,
        )
        self._units: set[str] = set()

    def count(self, outcomes: Mapping[str, int]) -> None:
        for outcome, n in outcomes.items():
            self.evidence.labels(outcome).inc(n)

    def conflicts(self, open_by_unit: Mapping[str, tuple[int, float]]) -> None:
        """``unit -> (open conflicts, oldest age in seconds)``; a unit left out has none."""
        for unit in self._units - set(open_by_unit):
            self.conflicts_open.labels(unit).set(0)
            self.conflict_oldest.labels(unit).set(0)
        for unit, (n, age) in open_by_unit.items():
            self.conflicts_open.labels(unit).set(n)
            self.conflict_oldest.labels(unit).set(age)
            self._units.add(unit)
