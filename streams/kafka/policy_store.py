"""The sharing lists and approvals in Kafka: a change log and a state topic, written together.

Kept like the catalog (:mod:`streams.kafka.catalog_store`), with the same fenced single
writer (:mod:`streams.kafka.changelog`):

- the change log, :attr:`~streams.kafka.topics.Topics.policy_changes`: append-only, kept
  forever, one :class:`~streams.policy.review.PolicyEvent` per change keyed by
  ``list/<region>/<kind>`` or ``approval/<id>``; :meth:`PolicyStore.history` replays it;
- the state topic, :attr:`~streams.kafka.topics.Topics.policy`: compacted, one bounded
  :class:`~streams.policy.review.PolicyState` per key (a list's version in force and
  pending version; an approval with its uses).

:class:`PolicyStore` follows the state topic on a background thread and publishes an
immutable :class:`~streams.policy.review.PolicySet` after each change: :meth:`current` is an
attribute read, and a change (an approval revoked, a use counted) reaches every running
store within a poll interval. Commands (submit, approve, reject, bootstrap, grant, revoke,
:meth:`record_use`) run as the one writer: fence the others, read the state topic to its
end, run the command on a copy of the book (a use over the quota, a city list lifting a
provincial restriction, ... are refused there), write changes and states in one
transaction, read them back.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException

from streams.catalog.model import Catalog, Resource, field_names
from streams.catalog.review import DATA_BUREAU
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.changelog import ChangeLogWriter, close_writer
from streams.kafka.config import StreamsConfig
from streams.kafka.follower import CompactedView, ViewError
from streams.kafka.topics import CATALOG_MAX_MESSAGE_BYTES, Topics, ensure_topics
from streams.policy.approvals import Approval
from streams.policy.decision import Decision, FieldSource, Request, decide
from streams.policy.legal import BULK_COPY, PolicyError, PolicyReason
from streams.policy.model import PolicyList, load_lists
from streams.policy.review import (
    PolicyBook,
    PolicyEvent,
    PolicyHistory,
    PolicySet,
    PolicyState,
    StateRecord,
)

__all__ = ["PolicyStore", "PolicyUnavailable", "catalog_fields"]

log = logging.getLogger(__name__)

#: the largest policy record the store writes (headroom for the batch overhead)
MAX_RECORD_BYTES = CATALOG_MAX_MESSAGE_BYTES - 16 * 1024
Command = Callable[[PolicyBook, int], list[PolicyEvent]]


class PolicyUnavailable(RuntimeError):
    """Kafka could not be reached, or the policy topics could not be read or written."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def catalog_fields(store: CatalogStore) -> FieldSource:
    """The field names of a resource's version as stored in the Kafka catalog."""

    def fields(resource: Resource) -> Sequence[str]:
        state = store.state(resource.id)
        if state is None:
            return ()
        return field_names(state.version(resource.version).spec)

    return fields


class PolicyStore:
    """The Kafka-backed sharing lists and approvals. Nothing touches Kafka until
    :meth:`start` (commands start the store themselves); ``timeout`` bounds every wait."""

    def __init__(
        self,
        config: StreamsConfig,
        *,
        reviewers: Iterable[str] = (DATA_BUREAU,),
        timeout: float = 30.0,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.config = config
        self.topics = Topics.of(config)
        self.topic = self.topics.policy
        self.changes_topic = self.topics.policy_changes
        self.timeout = timeout
        self._clock = clock
        self._book = PolicyBook(reviewers)
        self._policy = PolicySet()
        self._offsets: dict[str, int] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._view: CompactedView | None = None
        self.errors = 0
        self.applied = 0

    # -- following -----------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> PolicyStore:
        """Read the state topic to its end and keep following it (idempotent)."""
        with self._start_lock:
            if self._view is not None:
                return self
            view = CompactedView(self.config.kafka, self.topic, self._apply)
            try:
                view.start(self.timeout if timeout is None else timeout)
            except (ViewError, KafkaException) as exc:
                view.stop()
                raise PolicyUnavailable(
                    f"cannot read the policy topic {self.topic}: {exc}; is Kafka up "
                    f"(`xiangyun stack status`) and the lists bootstrapped "
                    f"(`xiangyun policy bootstrap`)?"
                ) from exc
            self._view = view
        return self

    def _apply(self, key: bytes, value: bytes | None) -> None:
        try:
            if value is None:
                raise PolicyError("tombstone: lists and approvals are never deleted")
            record = StateRecord.from_json(value)
            if record.key != key:
                raise PolicyError(f"key {key!r:.80} is not the state's key")
            with self._lock:
                if self._book.restore(record.state):
                    self._offsets[record.state.key] = record.change_offset
                    self._policy = self._book.policy()
                    self.applied += 1
        except Exception as exc:  # a bad record must not stop the policy
            self.errors += 1
            log.error("policy topic %s: record with key %r ignored: %s", self.topic, key, exc)

    def now_ms(self) -> int:
        """The store's clock (ms): what its commands stamp changes with."""
        return self._clock()

    def current(self) -> PolicySet:
        """The lists in force and the approvals, as last read; never mutated once returned."""
        return self._policy

    def sync(self, timeout: float | None = None) -> None:
        """Wait until every change committed before this call is in :meth:`current`."""
        view = self.start()._view
        assert view is not None
        if not view.sync(self.timeout if timeout is None else timeout):
            raise PolicyUnavailable(f"could not read the policy topic {self.topic} to its end")

    def state(self, key: str) -> PolicyState | None:
        with self._lock:
            return self._book.state(key)

    def states(self) -> list[PolicyState]:
        with self._lock:
            return self._book.states()

    def history(self, key: str, timeout: float | None = None) -> PolicyHistory | None:
        """Every change of ``key`` from the change log (read to its current end)."""
        events: list[PolicyEvent] = []
        wanted = key.encode()

        def collect(k: bytes, value: bytes | None) -> None:
            if k != wanted or value is None:
                return
            try:
                events.append(PolicyEvent.from_json(value))
            except PolicyError as exc:
                log.error("change log %s: record of %s ignored: %s", self.changes_topic, key, exc)

        view = CompactedView(self.config.kafka, self.changes_topic, collect)
        try:
            view.start(self.timeout if timeout is None else timeout)
        except (ViewError, KafkaException) as exc:
            raise PolicyUnavailable(
                f"cannot read the policy change log {self.changes_topic}: {exc}; is Kafka up "
                f"and the lists bootstrapped (`xiangyun policy bootstrap`)?"
            ) from exc
        finally:
            view.stop()
        return PolicyHistory.replay(key, events)

    def decide(
        self,
        request: Request,
        catalog: Catalog,
        *,
        fields_of: FieldSource,
        now_ms: int | None = None,
    ) -> Decision:
        """:func:`~streams.policy.decision.decide` on :meth:`current`, with the configured
        bulk threshold."""
        policy = self.current()
        return decide(
            request,
            catalog,
            policy.effective,
            policy.approvals,
            self._clock() if now_ms is None else now_ms,
            fields_of=fields_of,
            bulk_threshold=self.config.policy_bulk_threshold,
        )

    def claim(self, decision: Decision) -> Decision:
        """Count the use of the approval an allowed bulk ``decision`` relies on, before any
        data goes out: the decision itself, or, when the approval was spent, expired or
        revoked meanwhile (another exchange instance used its last use), a refusal citing
        the bulk-copy basis. A decision without an approval is returned as it is."""
        if not decision.allowed or decision.approval_id is None:
            return decision
        try:
            self.record_use(decision.approval_id)
        except PolicyError as exc:
            approval = self.current().approvals.get(decision.approval_id)
            reason = approval.problem(self.now_ms()) if approval is not None else None
            return Decision(
                False,
                decision.requester,
                decision.resource,
                decision.purpose,
                decision.policy_version,
                reason or PolicyReason.APPROVAL_EXHAUSTED,
                BULK_COPY,
                str(exc),
            )
        return decision

    def close(self) -> None:
        with self._start_lock:
            if self._view is not None:
                self._view.stop()
                self._view = None

    def __enter__(self) -> PolicyStore:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------
    def submit(self, lists: PolicyList | Iterable[PolicyList], actor: str) -> list[PolicyEvent]:
        """Submit list versions for review by the data bureau, all or none."""
        items = [lists] if isinstance(lists, PolicyList) else list(lists)
        if not items:
            raise PolicyError("nothing to submit: the file holds no policy list")
        return self._command(lambda book, at: [book.submit(x, actor, at) for x in items])

    def approve(self, key: str, reason: str = "", *, actor: str = DATA_BUREAU) -> PolicyEvent:
        return self._command(lambda book, at: [book.approve(key, actor, reason, at)])[0]

    def reject(self, key: str, reason: str, *, actor: str = DATA_BUREAU) -> PolicyEvent:
        return self._command(lambda book, at: [book.reject(key, actor, reason, at)])[0]

    def bootstrap(self, directory: Path | None = None) -> list[PolicyEvent]:
        """Load the starter lists (``config.policy_dir``): lists not yet in the store are
        submitted and approved by the data bureau; a second run writes nothing."""
        ensure_topics(self.config, self.topics, timeout=self.timeout)
        lists = load_lists(directory or self.config.policy_dir)
        reviewer = DATA_BUREAU if DATA_BUREAU in self._book.reviewers else min(self._book.reviewers)
        return self._command(lambda book, at: book.bootstrap(lists, reviewer, at))

    def grant(self, approval: Approval) -> PolicyEvent:
        """Put a bulk-copy approval on record (``approval.granted_by`` must be a reviewer)."""
        return self._command(lambda book, at: [book.grant(approval, at)])[0]

    def revoke(self, approval_id: str, reason: str, *, actor: str = DATA_BUREAU) -> PolicyEvent:
        """Revoke an approval at once: every store sees it within a poll interval."""
        return self._command(lambda book, at: [book.revoke(approval_id, actor, reason, at)])[0]

    def record_use(self, approval_id: str, actor: str = "exchange") -> Approval:
        """Count one use against an approval (refused, with :class:`PolicyError`, when it
        is expired, revoked or its quota is spent). Returns the approval after the use."""
        ev = self._command(lambda book, at: [book.use(approval_id, actor, at)])[0]
        assert ev.approval is not None
        return ev.approval

    # -- the single writer ---------------------------------------------------------------
    def _command(self, run: Command) -> list[PolicyEvent]:
        self.start()
        with self._write_lock:
            writer = ChangeLogWriter(
                self.config.kafka,
                # One id for every writer of these lists: a new writer fences the others.
                transactional_id=f"xiangyun-policy-writer.{self.topic}",
                changes_topic=self.changes_topic,
                snapshot_topic=self.topic,
                noun="policy",
                conflict=PolicyError,
                unavailable=PolicyUnavailable,
                timeout=self.timeout,
            )
            producer = writer.become()
            try:
                self.sync()
                with self._lock:
                    book = self._book.copy()
                events = run(book, self._clock())
                if not events:
                    return []
                states = [book.state(k) for k in dict.fromkeys(ev.key for ev in events)]
                for ev in events:
                    if len(ev.to_json()) > MAX_RECORD_BYTES:
                        raise PolicyError(f"{ev.key}: the change is too large for one record")

                def snapshots(offsets: dict[str, int]) -> list[tuple[str, bytes]]:
                    out = []
                    for st in states:
                        assert st is not None
                        out.append((st.key, StateRecord(st, offsets[st.key]).to_json()))
                    return out

                _, last = writer.write(
                    producer, [(ev.key, ev.to_json()) for ev in events], snapshots
                )
            finally:
                close_writer(producer)
            view = self._view
            assert view is not None
            if not view.wait_for(last[0], last[1], self.timeout):
                raise PolicyUnavailable(
                    f"the policy change was committed to {self.topic} but not read back within "
                    f"{self.timeout:.0f}s; check with `xiangyun policy list`"
                )
            for st in states:
                assert st is not None
                with self._lock:
                    stored = self._book.state(st.key)
                if stored is None or stored.seq < st.seq:
                    raise PolicyError(
                        f"{st.key} changed concurrently; this change was not applied; retry"
                    )
        return events
