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
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from confluent_kafka import KafkaException

from streams.catalog.model import Catalog, Resource, field_names
from streams.catalog.review import DATA_BUREAU
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.config import StreamsConfig
from streams.kafka.follower import CompactedView, ViewError
from streams.kafka.register_store import RegisterStore
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


class PolicyStore(RegisterStore[PolicyBook, PolicyState, PolicyEvent]):
    """The Kafka-backed sharing lists and approvals. Nothing touches Kafka until
    :meth:`start` (commands start the store themselves); ``timeout`` bounds every wait."""

    _topic_noun = "policy"
    _hint = (
        "is Kafka up (`xiangyun stack status`) and the lists bootstrapped "
        "(`xiangyun policy bootstrap`)?"
    )
    _unavailable = PolicyUnavailable
    _conflict = PolicyError
    _writer_name = "policy"
    _record_noun = "policy"
    _tombstone = "tombstone: lists and approvals are never deleted"
    _key_name = "the state's key"
    _change_noun = "policy change"
    _check_command = "`xiangyun policy list`"

    def __init__(
        self,
        config: StreamsConfig,
        *,
        reviewers: Iterable[str] = (DATA_BUREAU,),
        timeout: float = 30.0,
        clock: Callable[[], int] = _now_ms,
    ) -> None:
        self.topics = Topics.of(config)
        super().__init__(
            config,
            topic=self.topics.policy,
            changes_topic=self.topics.policy_changes,
            book=PolicyBook(reviewers),
            state_key=lambda st: st.key,
            event_key=lambda ev: ev.key,
            snapshot_json=lambda st, offset: StateRecord(st, offset).to_json(),
            timeout=timeout,
            clock=clock,
        )
        self._policy = PolicySet()

    # -- following -----------------------------------------------------------------------
    def _read_snapshot(self, value: bytes) -> tuple[bytes, PolicyState, int]:
        record = StateRecord.from_json(value)
        return record.key, record.state, record.change_offset

    def _publish(self, state: PolicyState) -> None:
        self._policy = self._book.policy()

    def now_ms(self) -> int:
        """The store's clock (ms): what its commands stamp changes with."""
        return self._clock()

    def current(self) -> PolicySet:
        """The lists in force and the approvals, as last read; never mutated once returned."""
        return self._policy

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

    # -- commands ------------------------------------------------------------------------
    def submit(self, lists: PolicyList | Iterable[PolicyList], actor: str) -> list[PolicyEvent]:
        """Submit list versions for review by the data bureau, all or none."""
        items = [lists] if isinstance(lists, PolicyList) else list(lists)
        if not items:
            raise PolicyError("nothing to submit: the file holds no policy list")
        return self._command(
            lambda book, at: [book.submit(x, actor, at) for x in items], self._check_sizes
        )

    def approve(self, key: str, reason: str = "", *, actor: str = DATA_BUREAU) -> PolicyEvent:
        return self._command(
            lambda book, at: [book.approve(key, actor, reason, at)], self._check_sizes
        )[0]

    def reject(self, key: str, reason: str, *, actor: str = DATA_BUREAU) -> PolicyEvent:
        return self._command(
            lambda book, at: [book.reject(key, actor, reason, at)], self._check_sizes
        )[0]

    def bootstrap(self, directory: Path | None = None) -> list[PolicyEvent]:
        """Load the starter lists (``config.policy_dir``): lists not yet in the store are
        submitted and approved by the data bureau; a second run writes nothing."""
        ensure_topics(self.config, self.topics, timeout=self.timeout)
        lists = load_lists(directory or self.config.policy_dir)
        reviewer = DATA_BUREAU if DATA_BUREAU in self._book.reviewers else min(self._book.reviewers)
        return self._command(
            lambda book, at: book.bootstrap(lists, reviewer, at), self._check_sizes
        )

    def grant(self, approval: Approval) -> PolicyEvent:
        """Put a bulk-copy approval on record (``approval.granted_by`` must be a reviewer)."""
        return self._command(lambda book, at: [book.grant(approval, at)], self._check_sizes)[0]

    def revoke(self, approval_id: str, reason: str, *, actor: str = DATA_BUREAU) -> PolicyEvent:
        """Revoke an approval at once: every store sees it within a poll interval."""
        return self._command(
            lambda book, at: [book.revoke(approval_id, actor, reason, at)], self._check_sizes
        )[0]

    def record_use(self, approval_id: str, actor: str = "exchange") -> Approval:
        """Count one use against an approval (refused, with :class:`PolicyError`, when it
        is expired, revoked or its quota is spent). Returns the approval after the use."""
        ev = self._command(lambda book, at: [book.use(approval_id, actor, at)], self._check_sizes)[
            0
        ]
        assert ev.approval is not None
        return ev.approval

    # -- the single writer ---------------------------------------------------------------
    @staticmethod
    def _check_sizes(
        book: PolicyBook, events: list[PolicyEvent], states: list[PolicyState]
    ) -> None:
        for ev in events:
            if len(ev.to_json()) > MAX_RECORD_BYTES:
                raise PolicyError(f"{ev.key}: the change is too large for one record")

    def _verify(self, states: list[PolicyState], offsets: dict[str, int]) -> None:
        """The stored state must hold our change or a later one (uses of an approval may
        follow ours at once from another exchange instance)."""
        for st in states:
            with self._lock:
                stored = self._book.state(st.key)
            if stored is None or stored.seq < st.seq:
                raise PolicyError(
                    f"{st.key} changed concurrently; this change was not applied; retry"
                )
