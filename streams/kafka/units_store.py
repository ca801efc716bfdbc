"""The unit register in Kafka (参与单位名录的权威存储): a change log and a snapshot topic,
written together, like the catalog (:mod:`streams.kafka.catalog_store`).

- the change log, :attr:`~streams.kafka.topics.Topics.units_changes`: append-only and kept
  forever, one :class:`~streams.units.review.UnitEvent` per change keyed by unit code; it is
  the history (:meth:`UnitsStore.history`);
- the snapshot topic, :attr:`~streams.kafka.topics.Topics.units`: compacted, one
  :class:`~streams.units.review.UnitSnapshot` per code (the version in force and the latest
  one, the ``seq`` of its last change and that change's offset in the change log).

:class:`UnitsStore` follows the snapshot topic on a background thread and publishes an
immutable :class:`~streams.units.model.UnitRegister` after each change (:meth:`current`), so
a change reaches every reader within a poll interval. Commands run as the single writer of
the register through :class:`~streams.kafka.changelog.ChangeLogWriter` (fence the other
writers, read the snapshot topic to its end, run the command on a copy of the book, write
changes and snapshots in one transaction), then read their snapshots back and check that the
stored state is theirs.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from confluent_kafka import KafkaException

from streams.kafka.changelog import ChangeLogWriter, close_writer, read_log
from streams.kafka.config import StreamsConfig
from streams.kafka.follower import CompactedView, ViewError
from streams.kafka.topics import Topics, ensure_topics
from streams.units.model import Unit, UnitError, UnitRegister
from streams.units.review import (
    DATA_BUREAU,
    UnitBook,
    UnitEvent,
    UnitHistory,
    UnitSnapshot,
    UnitState,
)

__all__ = ["UnitsStore", "UnitsUnavailable"]

log = logging.getLogger(__name__)

Command = Callable[[UnitBook, int], list[UnitEvent]]


class UnitsUnavailable(RuntimeError):
    """Kafka could not be reached, or the unit register's topics could not be read or written."""


def _now_ms() -> int:
    return int(time.time() * 1000)


_HINT = (
    "is Kafka up (`xiangyun stack status`) and the register bootstrapped "
    "(`xiangyun units bootstrap`)?"
)


class UnitsStore:
    """The Kafka-backed unit register and its writer. Nothing touches Kafka until
    :meth:`start` (commands and :meth:`sync` start the store themselves)."""

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
        self.topic = self.topics.units
        self.changes_topic = self.topics.units_changes
        self.timeout = timeout
        self._clock = clock
        self._book = UnitBook(reviewers=reviewers)
        self._register = UnitRegister()
        self._offsets: dict[str, int] = {}
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._view: CompactedView | None = None
        self._writer = ChangeLogWriter(
            config.kafka,
            transactional_id=f"xiangyun-units-writer.{self.topic}",
            changes_topic=self.changes_topic,
            snapshot_topic=self.topic,
            noun="unit register",
            conflict=UnitError,
            unavailable=UnitsUnavailable,
            timeout=timeout,
        )
        self.errors = 0
        self.applied = 0

    # -- following -----------------------------------------------------------------------
    def start(self, timeout: float | None = None) -> UnitsStore:
        """Read the snapshot topic to its end and keep following it (idempotent)."""
        with self._start_lock:
            if self._view is not None:
                return self
            view = CompactedView(self.config.kafka, self.topic, self._apply)
            try:
                view.start(self.timeout if timeout is None else timeout)
            except (ViewError, KafkaException) as exc:
                view.stop()
                raise UnitsUnavailable(
                    f"cannot read the unit register topic {self.topic}: {exc}; {_HINT}"
                ) from exc
            self._view = view
        return self

    def _apply(self, key: bytes, value: bytes | None) -> None:
        try:
            if value is None:
                raise UnitError("tombstone: units are never deleted")
            snapshot = UnitSnapshot.from_json(value)
            if snapshot.key != key:
                raise UnitError(f"key {key!r:.80} is not the snapshot's unit code")
            with self._lock:
                if self._book.restore(snapshot.state):
                    state = snapshot.state
                    self._offsets[state.code] = snapshot.change_offset
                    self._register = self._register.with_unit(state.in_force or state.latest)
                    self.applied += 1
        except Exception as exc:  # a bad record must not stop the register
            self.errors += 1
            log.error("unit topic %s: record with key %r ignored: %s", self.topic, key, exc)

    def current(self) -> UnitRegister:
        """The register as last read (per code its version in force, else its latest);
        never mutated once returned; empty before :meth:`start`."""
        return self._register

    def sync(self, timeout: float | None = None) -> None:
        """Wait until every change committed before this call is in :meth:`current`."""
        view = self.start()._view
        assert view is not None
        if not view.sync(self.timeout if timeout is None else timeout):
            raise UnitsUnavailable(
                f"could not read the unit register topic {self.topic} to its end"
            )

    def state(self, code: str) -> UnitState | None:
        with self._lock:
            return self._book.state(code)

    def states(self) -> list[UnitState]:
        with self._lock:
            return self._book.states()

    def history(self, code: str, timeout: float | None = None) -> UnitHistory | None:
        """Every version and the whole history of one unit, from the change log."""
        try:
            events, bad = read_log(
                self.config.kafka,
                self.changes_topic,
                code,
                UnitEvent.from_json,
                self.timeout if timeout is None else timeout,
            )
        except (ViewError, KafkaException) as exc:
            raise UnitsUnavailable(
                f"cannot read the unit change log {self.changes_topic}: {exc}; {_HINT}"
            ) from exc
        if bad:
            log.error(
                "change log %s: %d records of %s ignored: %s",
                self.changes_topic,
                len(bad),
                code,
                bad[:3],
            )
        return UnitHistory.replay(code, events)

    def close(self) -> None:
        with self._start_lock:
            if self._view is not None:
                self._view.stop()
                self._view = None

    def __enter__(self) -> UnitsStore:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- commands ------------------------------------------------------------------------
    def submit(self, units: Unit | Iterable[Unit], actor: str | None = None) -> list[UnitEvent]:
        """Submit units for review, all or none. The actor defaults to each unit's parent
        (the data bureau for a unit without one)."""
        items = [units] if isinstance(units, Unit) else list(units)
        if not items:
            raise UnitError("nothing to submit: the file holds no unit")
        return self._command(
            lambda book, at: [book.submit(u, actor or u.parent or DATA_BUREAU, at) for u in items]
        )

    def approve(self, code: str, reason: str = "", *, actor: str = DATA_BUREAU) -> UnitEvent:
        """Register the submitted version of ``code``."""
        return self._command(lambda book, at: [book.approve(code, actor, reason, at)])[0]

    def reject(self, code: str, reason: str, *, actor: str = DATA_BUREAU) -> UnitEvent:
        """Refuse the submitted version of ``code``; ``reason`` says why."""
        return self._command(lambda book, at: [book.reject(code, actor, reason, at)])[0]

    def bootstrap(self, directory: Path | None = None) -> list[UnitEvent]:
        """Load the starter register (``config.units_dir``): units not yet registered are
        submitted and approved by the data bureau, parents first, in one transaction.
        Units already there are left alone, so a second run writes nothing."""
        ensure_topics(self.config, self.topics, timeout=self.timeout)
        units = list(UnitRegister.from_dir(directory or self.config.units_dir))
        reviewer = DATA_BUREAU if DATA_BUREAU in self._book.reviewers else min(self._book.reviewers)
        return self._command(lambda book, at: book.bootstrap(units, reviewer, at))

    # -- the single writer ---------------------------------------------------------------
    def _command(self, run: Command) -> list[UnitEvent]:
        self.start()
        with self._write_lock:
            producer = self._writer.become()
            try:
                self.sync()
                with self._lock:
                    book = self._book.copy()
                events = run(book, self._clock())
                if not events:
                    return []
                states = [
                    s for c in dict.fromkeys(ev.code for ev in events) if (s := book.state(c))
                ]
                offsets, last = self._writer.write(
                    producer,
                    [(ev.code, ev.to_json()) for ev in events],
                    lambda offs: [
                        (st.code, UnitSnapshot(st, offs[st.code]).to_json()) for st in states
                    ],
                )
            finally:
                close_writer(producer)
            view = self._view
            assert view is not None
            if not view.wait_for(last[0], last[1], self.timeout):
                raise UnitsUnavailable(
                    f"the change was committed to {self.topic} but not read back within "
                    f"{self.timeout:.0f}s; check with `xiangyun units list`"
                )
            self._verify(states, offsets)
        return events

    def _verify(self, states: list[UnitState], offsets: dict[str, int]) -> None:
        """What the snapshot topic holds now must be our change, or a later one."""
        for mine in states:
            with self._lock:
                stored = self._book.state(mine.code)
                covered = self._offsets.get(mine.code, -1)
            ours = offsets[mine.code]
            if stored is not None and (
                (stored.seq == mine.seq and covered == ours and stored == mine)
                or (stored.seq > mine.seq and covered > ours)
            ):
                continue
            at = f"change #{stored.seq}" if stored is not None else "no change"
            raise UnitError(
                f"{mine.code} changed concurrently (the register holds {at}, this change was "
                f"#{mine.seq}); this change was not applied; check with "
                f"`xiangyun units show {mine.code}` and retry"
            )
