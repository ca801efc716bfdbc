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

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from streams.kafka.config import StreamsConfig
from streams.kafka.register_store import RegisterStore
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


class UnitsUnavailable(RuntimeError):
    """Kafka could not be reached, or the unit register's topics could not be read or written."""


def _now_ms() -> int:
    return int(time.time() * 1000)


class UnitsStore(RegisterStore[UnitBook, UnitState, UnitEvent]):
    """The Kafka-backed unit register and its writer. Nothing touches Kafka until
    :meth:`start` (commands and :meth:`sync` start the store themselves)."""

    _topic_noun = "unit register"
    _hint = (
        "is Kafka up (`xiangyun stack status`) and the register bootstrapped "
        "(`xiangyun units bootstrap`)?"
    )
    _unavailable = UnitsUnavailable
    _conflict = UnitError
    _writer_name = "units"
    _record_noun = "unit"
    _tombstone = "tombstone: units are never deleted"
    _key_name = "the snapshot's unit code"
    _change_noun = "change"
    _check_command = "`xiangyun units list`"
    _holder = "register"
    _show_command = "xiangyun units show"

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
            topic=self.topics.units,
            changes_topic=self.topics.units_changes,
            book=UnitBook(reviewers=reviewers),
            state_key=lambda st: st.code,
            event_key=lambda ev: ev.code,
            snapshot_json=lambda st, offset: UnitSnapshot(st, offset).to_json(),
            timeout=timeout,
            clock=clock,
        )
        self._register = UnitRegister()

    # -- following -----------------------------------------------------------------------
    def _read_snapshot(self, value: bytes) -> tuple[bytes, UnitState, int]:
        snapshot = UnitSnapshot.from_json(value)
        return snapshot.key, snapshot.state, snapshot.change_offset

    def _publish(self, state: UnitState) -> None:
        self._register = self._register.with_unit(state.in_force or state.latest)

    def current(self) -> UnitRegister:
        """The register as last read (per code its version in force, else its latest);
        never mutated once returned; empty before :meth:`start`."""
        return self._register

    def history(self, code: str, timeout: float | None = None) -> UnitHistory | None:
        """Every version and the whole history of one unit, from the change log."""
        return UnitHistory.replay(code, self._read_history(code, UnitEvent.from_json, timeout))

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
