"""What the Kafka-backed registers share: following a compacted topic, and a register kept as
a change log and a snapshot topic written by one fenced writer.

:class:`FollowedTopic` reads a compacted topic to its end on :meth:`~FollowedTopic.start` and
keeps following it on a background thread (a :class:`~streams.kafka.follower.CompactedView`);
the consents (:mod:`streams.kafka.consent_store`) are one. :class:`RegisterStore` adds a book
of bounded states restored from the snapshots and the single writer of the register's
commands (:mod:`streams.kafka.changelog`): the catalog (:mod:`streams.kafka.catalog_store`),
the unit register (:mod:`streams.kafka.units_store`) and the sharing lists and approvals
(:mod:`streams.kafka.policy_store`). Each register names itself in its messages through the
class attributes below, so that an operator reads the same words as before.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, ClassVar, Generic, Protocol, Self, TypeVar

from confluent_kafka import KafkaException, Producer

from streams.kafka.changelog import ChangeLogWriter, close_writer, read_log
from streams.kafka.config import StreamsConfig
from streams.kafka.follower import CompactedView, ViewError

__all__ = ["Book", "FollowedTopic", "RegisterStore"]


class FollowedTopic:
    """A compacted topic, read to its end by :meth:`start` and followed until :meth:`close`.

    Nothing touches Kafka until :meth:`start`; subclasses apply each record in
    :meth:`_apply` (on the view's thread, in order) and count it in :attr:`applied` or,
    when it cannot be applied, in :attr:`errors`."""

    #: the topic in messages: "cannot read the <topic_noun> topic ..."
    _topic_noun: ClassVar[str]
    #: what to check when the topic cannot be read (ends the message)
    _hint: ClassVar[str]
    #: appended to "could not read the ... topic T to its end"
    _sync_hint: ClassVar[str] = ""
    #: raised when Kafka cannot be reached or the topic cannot be read
    _unavailable: ClassVar[type[Exception]]

    def __init__(self, config: StreamsConfig, topic: str, timeout: float) -> None:
        self.config = config
        self.topic = topic
        self.timeout = timeout
        self._view: CompactedView | None = None
        self._start_lock = threading.Lock()
        #: records of the topic that could not be applied (see the log)
        self.errors = 0
        #: records that changed what the store holds
        self.applied = 0

    def _apply(self, key: bytes, value: bytes | None) -> None:
        raise NotImplementedError

    def start(self, timeout: float | None = None) -> Self:
        """Read the topic to its end and keep following it (idempotent)."""
        with self._start_lock:
            if self._view is not None:
                return self
            view = CompactedView(self.config.kafka, self.topic, self._apply)
            try:
                view.start(self.timeout if timeout is None else timeout)
            except (ViewError, KafkaException) as exc:
                view.stop()
                raise self._unavailable(
                    f"cannot read the {self._topic_noun} topic {self.topic}: {exc}; {self._hint}"
                ) from exc
            self._view = view
        return self

    def sync(self, timeout: float | None = None) -> None:
        """Wait until every record written before this call is applied."""
        view = self.start()._view
        assert view is not None
        if not view.sync(self.timeout if timeout is None else timeout):
            raise self._unavailable(
                f"could not read the {self._topic_noun} topic {self.topic} to its end"
                f"{self._sync_hint}"
            )

    def close(self) -> None:
        with self._start_lock:
            if self._view is not None:
                self._view.stop()
                self._view = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Sequenced(Protocol):
    @property
    def seq(self) -> int: ...


class _Record(Protocol):
    def to_json(self) -> bytes: ...


StateT = TypeVar("StateT", bound=_Sequenced)
EventT = TypeVar("EventT", bound=_Record)


class Book(Protocol[StateT]):
    """What a store asks of its register's book (:class:`~streams.catalog.review.CatalogBook`,
    :class:`~streams.units.review.UnitBook`, :class:`~streams.policy.review.PolicyBook`)."""

    @property
    def reviewers(self) -> frozenset[str]: ...

    def copy(self) -> Self: ...

    def state(self, key: str, /) -> StateT | None: ...

    def states(self) -> list[StateT]: ...

    def restore(self, state: StateT, /) -> bool: ...


BookT = TypeVar("BookT", bound=Book[Any])


class RegisterStore(FollowedTopic, Generic[BookT, StateT, EventT]):
    """A register in Kafka: its book follows the snapshot topic, its commands run as the
    register's single writer (fence the other writers, read the snapshot topic to its end,
    run the command on a copy of the book, write changes and snapshots in one transaction,
    read the snapshots back and check the stored state is ours)."""

    #: raised when a record or a change cannot be accepted (the register's own error)
    _conflict: ClassVar[type[Exception]]
    #: the writer in its ``transactional.id``: ``xiangyun-<writer_name>-writer.<topic>``
    _writer_name: ClassVar[str]
    #: the register's records in messages: "<record_noun> topic", "<record_noun> change log"
    _record_noun: ClassVar[str]
    #: why a tombstone on the snapshot topic is refused
    _tombstone: ClassVar[str]
    #: what a snapshot's key must be: "key K is not <key_name>"
    _key_name: ClassVar[str]
    #: "the <change_noun> was committed to T but not read back ..."
    _change_noun: ClassVar[str]
    #: the command that shows the register ("`xiangyun units list`")
    _check_command: ClassVar[str]
    #: the register in a conflict: "the <holder> holds change #N"
    _holder: ClassVar[str]
    #: the command that shows one key (followed by the key)
    _show_command: ClassVar[str]

    def __init__(
        self,
        config: StreamsConfig,
        *,
        topic: str,
        changes_topic: str,
        book: BookT,
        state_key: Callable[[StateT], str],
        event_key: Callable[[EventT], str],
        snapshot_json: Callable[[StateT, int], bytes],
        timeout: float,
        clock: Callable[[], int],
    ) -> None:
        """``state_key`` and ``event_key`` give the key a state or an event is about,
        ``snapshot_json`` the snapshot record of a state at a change-log offset."""
        super().__init__(config, topic, timeout)
        self._state_key = state_key
        self._event_key = event_key
        self._snapshot_json = snapshot_json
        self.changes_topic = changes_topic
        self._clock = clock
        self._book = book
        self._offsets: dict[str, int] = {}  # per key: the last change its snapshot covers
        self._lock = threading.Lock()  # the book and the published view
        self._write_lock = threading.Lock()  # one command at a time in this process
        self._writer = ChangeLogWriter(
            config.kafka,
            # One id for every writer of this register: a new writer fences the others.
            transactional_id=f"xiangyun-{self._writer_name}-writer.{topic}",
            changes_topic=changes_topic,
            snapshot_topic=topic,
            noun=self._topic_noun,
            conflict=self._conflict,
            unavailable=self._unavailable,
            timeout=timeout,
        )
        self._log = logging.getLogger(type(self).__module__)

    # -- what each register says ---------------------------------------------------------
    def _read_snapshot(self, value: bytes) -> tuple[bytes, StateT, int]:
        """A record of the snapshot topic: its key, its state and the change-log offset of
        the last change it includes."""
        raise NotImplementedError

    def _publish(self, state: StateT) -> None:
        """Publish the register's new view after ``state`` was restored (under the lock)."""
        raise NotImplementedError

    @staticmethod
    def _same(stored: StateT, mine: StateT) -> bool:
        return stored == mine

    # -- following -----------------------------------------------------------------------
    def _apply(self, key: bytes, value: bytes | None) -> None:
        try:
            if value is None:
                raise self._conflict(self._tombstone)
            record_key, state, change_offset = self._read_snapshot(value)
            if record_key != key:
                raise self._conflict(f"key {key!r:.80} is not {self._key_name}")
            with self._lock:
                if self._book.restore(state):
                    self._offsets[self._state_key(state)] = change_offset
                    self._publish(state)
                    self.applied += 1
        except Exception as exc:  # a bad record must not stop the register
            self.errors += 1
            self._log.error(
                "%s topic %s: record with key %r ignored: %s",
                self._record_noun,
                self.topic,
                key,
                exc,
            )

    def state(self, key: str) -> StateT | None:
        """The current state of one key: its version in force and its latest version."""
        with self._lock:
            state: StateT | None = self._book.state(key)
        return state

    def states(self) -> list[StateT]:
        with self._lock:
            states: list[StateT] = self._book.states()
        return states

    def _read_history(
        self, key: str, parse: Callable[[bytes], EventT], timeout: float | None
    ) -> list[EventT]:
        """Every event of ``key`` in the change log, from the start to its current end."""
        try:
            events, bad = read_log(
                self.config.kafka,
                self.changes_topic,
                key,
                parse,
                self.timeout if timeout is None else timeout,
            )
        except (ViewError, KafkaException) as exc:
            raise self._unavailable(
                f"cannot read the {self._record_noun} change log {self.changes_topic}: {exc}; "
                f"{self._hint}"
            ) from exc
        if bad:
            self._log.error(
                "change log %s: %d records of %s ignored: %s",
                self.changes_topic,
                len(bad),
                key,
                bad[:3],
            )
        return events

    # -- the single writer ---------------------------------------------------------------
    def _command(
        self,
        run: Callable[[BookT, int], list[EventT]],
        check: Callable[[BookT, list[EventT], list[StateT]], None] | None = None,
    ) -> list[EventT]:
        """Run ``run`` on a copy of the book as the register's only writer; ``check`` may
        refuse its events (or do more, such as publish specs) before anything is written."""
        self.start()
        with self._write_lock:
            producer = self._become_writer()
            try:
                self.sync()
                with self._lock:
                    book = self._book.copy()
                events = run(book, self._clock())
                if not events:
                    return []
                states = self._changed_states(book, events)
                if check is not None:
                    check(book, events, states)
                offsets, last = self._write(producer, events, states)
            finally:
                close_writer(producer)
            view = self._view
            assert view is not None
            if not view.wait_for(last[0], last[1], self.timeout):
                raise self._unavailable(
                    f"the {self._change_noun} was committed to {self.topic} but not read back "
                    f"within {self.timeout:.0f}s; check with {self._check_command}"
                )
            self._verify(states, offsets)
        return events

    def _changed_states(self, book: BookT, events: list[EventT]) -> list[StateT]:
        """The state after ``events`` of each key they change, in order of first change."""
        states = []
        for key in dict.fromkeys(self._event_key(ev) for ev in events):
            state: StateT | None = book.state(key)
            assert state is not None  # the book has just applied an event of it
            states.append(state)
        return states

    def _become_writer(self) -> Producer:
        return self._writer.become()

    def _write(
        self, producer: Producer, events: list[EventT], states: list[StateT]
    ) -> tuple[dict[str, int], tuple[int, int]]:
        """Write ``events`` to the change log and the ``states`` (each naming the offset of
        its key's last event) to the snapshot topic, in one transaction. Returns the
        change-log offset of each key's last event, and the (partition, offset) of the
        last snapshot."""

        def snapshots(offsets: dict[str, int]) -> list[tuple[str, bytes]]:
            keys = [self._state_key(st) for st in states]
            return [
                (k, self._snapshot_json(st, offsets[k])) for k, st in zip(keys, states, strict=True)
            ]

        return self._writer.write(
            producer, [(self._event_key(ev), ev.to_json()) for ev in events], snapshots
        )

    def _verify(self, states: list[StateT], offsets: dict[str, int]) -> None:
        """What the snapshot topic holds now must be our change, or a later change written
        after ours (its snapshot covers a later offset of the change log)."""
        for mine in states:
            key = self._state_key(mine)
            with self._lock:
                stored: StateT | None = self._book.state(key)
                covered = self._offsets.get(key, -1)
            ours = offsets[key]
            if stored is not None and (
                (stored.seq == mine.seq and covered == ours and self._same(stored, mine))
                or (stored.seq > mine.seq and covered > ours)
            ):
                continue
            at = f"change #{stored.seq}" if stored is not None else "no change"
            raise self._conflict(
                f"{key} changed concurrently (the {self._holder} holds {at}, this change was "
                f"#{mine.seq}); this change was not applied; check with "
                f"`{self._show_command} {key}` and retry"
            )
