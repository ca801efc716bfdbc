"""Prometheus metrics of the exchange (运行监测): one registry per process, no globals."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics", "VerificationMetrics", "ViewMetrics"]


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
