"""The catalog in Kafka (目录的权威存储): a change log and a snapshot topic, written together.

Two topics hold the catalog:

- the change log, :attr:`~streams.kafka.topics.Topics.catalog_changes`: append-only and kept
  forever, one :class:`CatalogEvent` per change keyed by resource id (who, what, which
  version, the diff, and the spec only when a version is drafted or submitted). It is the
  history: :meth:`CatalogStore.history` replays one resource's events from it;
- the snapshot topic, :attr:`~streams.kafka.topics.Topics.catalog`: compacted, one
  :class:`CatalogSnapshot` per resource id, the resource's bounded current state (the version
  in force and the latest version with their specs, the ``seq`` of its last change and that
  change's offset in the change log). Neither record grows with the history.

:class:`CatalogStore` follows the snapshot topic on a background thread (a
:class:`~streams.kafka.follower.CompactedView`), restores every snapshot into a
:class:`CatalogBook` and publishes an immutable :class:`Catalog` after each change:
:meth:`current` is a plain attribute read, so the ingest asks it once per record without a
round trip, and a change reaches every running worker within a poll interval.

Commands (:meth:`submit`, :meth:`approve`, :meth:`reject`, :meth:`retire`, :meth:`bootstrap`)
run as a single writer:

1. become *the* catalog writer: a transactional producer whose ``transactional.id`` is the
   same for every writer of this catalog. ``init_transactions`` fences any other writer (its
   open transaction is aborted, its commit fails) and waits until the previous writer's
   commit is complete, so what we read next includes every earlier change;
2. read the snapshot topic to its end, run the command on a copy of the book to get its
   events and the resulting states;
3. publish the collection specs the events carry to the schema topic (so every consumer can
   decode payloads written with them); then, in one transaction, write the events to the
   change log, learn their offsets, write each changed resource's snapshot (naming the
   offset of its last change) to the snapshot topic, and commit: both or neither;
4. read our own snapshots back and check the stored state is ours (optimistic concurrency,
   as a second line of defence): otherwise :class:`CatalogError` "changed concurrently, retry".

Fencing matters beyond the error message: the book keeps the highest ``seq`` per resource
while compaction keeps the *last* record per key, so two writers racing on one resource
would leave live followers and a rebuild from the compacted topic disagreeing. With one
writer at a time, offsets and ``seq`` grow together.

A record of the snapshot topic that cannot be parsed (or a tombstone, which no command
writes) is counted in :attr:`CatalogStore.errors` and logged; following goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from confluent_kafka import KafkaException

from streams.catalog.model import (
    Catalog,
    CatalogError,
    Resource,
    SchemaLoader,
    Status,
    schema_file_loader,
)
from streams.catalog.review import (
    DATA_BUREAU,
    Action,
    CatalogBook,
    CatalogEvent,
    CatalogSnapshot,
    ResourceHistory,
    ResourceState,
)
from streams.kafka.changelog import close_writer
from streams.kafka.config import StreamsConfig
from streams.kafka.register_store import RegisterStore
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import CATALOG_MAX_MESSAGE_BYTES, Topics, ensure_topics
from streams.kafka.units_store import UnitsStore, UnitsUnavailable
from streams.units.model import UnitError, UnitRegister
from streams.wire.codec import Schema, SchemaRegistry

__all__ = ["MAX_EVENT_BYTES", "CatalogStore", "CatalogUnavailable"]

#: the largest catalog record (a change or a snapshot) the store writes (headroom for the
#: record batch overhead)
MAX_EVENT_BYTES = CATALOG_MAX_MESSAGE_BYTES - 16 * 1024

#: a command: run on a copy of the book at a time (ms), returns the events to write
Command = Callable[[CatalogBook, int], list[CatalogEvent]]

#: a change-log offset no record has: sizes a snapshot before its offset is known
_ANY_OFFSET = 2**62


class CatalogUnavailable(RuntimeError):
    """Kafka could not be reached, or the catalog topics could not be read or written."""


def _now_ms() -> int:
    return int(time.time() * 1000)


_close = close_writer


class CatalogStore(RegisterStore[CatalogBook, ResourceState, CatalogEvent]):
    """The Kafka-backed catalog: a :class:`~streams.ingest.runtime.CatalogSource` and its writer.

    Nothing touches Kafka until :meth:`start` (commands start the store themselves).
    ``units`` is the unit register submissions and approvals are checked against: by default
    a :class:`~streams.kafka.units_store.UnitsStore` of the same topics (read only when an
    entry is validated; closed with this store); a fixed
    :class:`~streams.units.model.UnitRegister` for tests.
    ``schema_loader`` reads the collection specs of submissions (default: the files below
    ``config.schema_dir``); a running catalog never reads spec files: :meth:`spec` gives
    the spec stored with the version. ``timeout`` bounds every wait on Kafka, in seconds.
    """

    _topic_noun = "catalog"
    _hint = (
        "is Kafka up (`xiangyun stack status`) and the catalog bootstrapped "
        "(`xiangyun catalog bootstrap`)?"
    )
    _sync_hint = "; is Kafka up?"
    _unavailable = CatalogUnavailable
    _conflict = CatalogError
    _writer_name = "catalog"
    _record_noun = "catalog"
    _tombstone = "tombstone: catalog entries are retired, never deleted"
    _key_name = "the snapshot's resource id"
    _change_noun = "catalog change"
    _check_command = "`xiangyun catalog show`"
    _holder = "catalog"
    _show_command = "xiangyun catalog show"

    def __init__(
        self,
        config: StreamsConfig,
        *,
        schema_loader: SchemaLoader | None = None,
        reviewers: Iterable[str] = (DATA_BUREAU,),
        timeout: float = 30.0,
        clock: Callable[[], int] = _now_ms,
        units: UnitsStore | UnitRegister | None = None,
    ) -> None:
        self.topics = Topics.of(config)
        self._owns_units = units is None
        self.units: UnitsStore | UnitRegister = (
            UnitsStore(config, timeout=timeout) if units is None else units
        )
        super().__init__(
            config,
            topic=self.topics.catalog,  # the snapshots
            changes_topic=self.topics.catalog_changes,  # the history
            book=CatalogBook(
                schema_loader or schema_file_loader(config.schema_dir),
                reviewers=reviewers,
                units=self.unit_register,
            ),
            state_key=lambda st: st.id,
            event_key=lambda ev: ev.resource_id,
            snapshot_json=lambda st, offset: CatalogSnapshot(st, offset).to_json(),
            timeout=timeout,
            clock=clock,
        )
        self._catalog = Catalog()
        self._specs: dict[tuple[str, int], Schema] = {}

    # -- following -----------------------------------------------------------------------
    def _read_snapshot(self, value: bytes) -> tuple[bytes, ResourceState, int]:
        snapshot = CatalogSnapshot.from_json(value)
        return snapshot.key, snapshot.state, snapshot.change_offset

    def _publish(self, state: ResourceState) -> None:
        self._catalog = self._catalog.with_entry((state.in_force or state.latest).resource)

    @staticmethod
    def _same(stored: ResourceState, mine: ResourceState) -> bool:
        return stored.to_mapping() == mine.to_mapping()

    def unit_register(self) -> UnitRegister:
        """The unit register as it stands now (read when a command validates an entry)."""
        units = self.units
        if isinstance(units, UnitRegister):
            return units
        try:
            units.sync()
        except UnitsUnavailable as exc:
            raise CatalogUnavailable(
                f"cannot check departments and providers against the unit register: {exc}"
            ) from exc
        return units.current()

    def current(self) -> Catalog:
        """The catalog as last read: per resource its version in force, else its latest.
        Never mutated once returned; empty before :meth:`start`."""
        return self._catalog

    def history(self, resource_id: str, timeout: float | None = None) -> ResourceHistory | None:
        """Every version and the whole history of one resource, replayed from its events in
        the change log (read from the start to its current end); None if it has none."""
        events = self._read_history(resource_id, CatalogEvent.from_json, timeout)
        return ResourceHistory.replay(resource_id, events)

    def spec(self, resource: Resource) -> Schema:
        """The reader schema of ``resource``'s version: the collection spec stored with that
        version (parsed once per version in force), never the file on disk."""
        key = (resource.id, resource.version)
        schema = self._specs.get(key)
        if schema is not None:
            return schema
        state = self.state(resource.id)
        if state is None:
            raise CatalogError(f"{resource.id} is not in the catalog")
        version = state.version(resource.version)
        schema = Schema.parse(version.spec)
        # A draft or submitted version may still be overwritten under the same number;
        # a version that has been approved never changes.
        if version.resource.status not in (Status.DRAFT, Status.SUBMITTED):
            self._specs[key] = schema
        return schema

    def close(self) -> None:
        super().close()
        if self._owns_units and isinstance(self.units, UnitsStore):
            self.units.close()

    # -- commands ------------------------------------------------------------------------
    def submit(
        self,
        entries: Resource | Iterable[Resource],
        actor: str | None = None,
        *,
        draft: bool = False,
    ) -> list[CatalogEvent]:
        """Submit entries for review (``draft``: save them as drafts), all or none. The actor
        defaults to each entry's department."""
        items = [entries] if isinstance(entries, Resource) else list(entries)
        if not items:
            raise CatalogError("nothing to submit: the file holds no catalog entry")

        def run(book: CatalogBook, at: int) -> list[CatalogEvent]:
            command = book.save_draft if draft else book.submit
            return [command(e, actor or e.department, at) for e in items]

        return self._command(run, self._checked_and_published)

    def approve(
        self, resource_id: str, reason: str = "", *, actor: str = DATA_BUREAU
    ) -> CatalogEvent:
        """Put the submitted version of ``resource_id`` in force."""
        return self._command(
            lambda book, at: [book.approve(resource_id, actor, reason, at)],
            self._checked_and_published,
        )[0]

    def reject(self, resource_id: str, reason: str, *, actor: str = DATA_BUREAU) -> CatalogEvent:
        """Refuse the submitted version of ``resource_id``; ``reason`` tells the department why."""
        return self._command(
            lambda book, at: [book.reject(resource_id, actor, reason, at)], self._checked
        )[0]

    def retire(self, resource_id: str, reason: str, *, actor: str = DATA_BUREAU) -> CatalogEvent:
        """Take ``resource_id`` out of force (records for it are then refused); a pending
        version is closed too. The event of the last version closed."""
        return self._command(
            lambda book, at: book.retire(resource_id, actor, reason, at), self._checked
        )[-1]

    def bootstrap(self, directory: Path | None = None) -> list[CatalogEvent]:
        """Load the starter catalog (``config.catalog_dir``): the resources not yet in the
        catalog are submitted by their departments and approved by the data bureau, in one
        transaction. Resources already there are left alone (the topics, not the files, are
        the source of truth), so a second run writes nothing.

        The catalog checks departments and providers against the unit register, so a store
        that reads the register from Kafka loads the starter register first
        (:meth:`UnitsStore.bootstrap <streams.kafka.units_store.UnitsStore.bootstrap>`, as
        idempotent)."""
        ensure_topics(self.config, self.topics, timeout=self.timeout)
        if isinstance(self.units, UnitsStore):
            try:
                self.units.bootstrap()
            except UnitError as exc:
                raise CatalogError(f"the starter unit register cannot be loaded: {exc}") from exc
            except UnitsUnavailable as exc:
                raise CatalogUnavailable(str(exc)) from exc
        entries = list(Catalog.from_dir(directory or self.config.catalog_dir))
        reviewer = DATA_BUREAU if DATA_BUREAU in self._book.reviewers else min(self._book.reviewers)
        return self._command(
            lambda book, at: book.bootstrap(entries, reviewer, at), self._checked_and_published
        )

    # -- what the single writer checks before writing ------------------------------------
    def _checked(
        self, book: CatalogBook, events: list[CatalogEvent], states: list[ResourceState]
    ) -> None:
        self._check_sizes(events, states)

    def _checked_and_published(
        self, book: CatalogBook, events: list[CatalogEvent], states: list[ResourceState]
    ) -> None:
        """Checked, then the specs the events carry published to the schema topic (so
        every consumer can decode payloads written with them)."""
        self._check_sizes(events, states)
        self._publish_specs(events, book)

    @staticmethod
    def _check_sizes(events: list[CatalogEvent], states: list[ResourceState]) -> None:
        for ev in events:
            size = len(ev.to_json())
            if size > MAX_EVENT_BYTES:
                raise CatalogError(
                    f"{ev.resource_id}: the record of change #{ev.seq} would be {size:,} "
                    f"bytes, over the {MAX_EVENT_BYTES:,} a catalog record may take; shorten "
                    f"the collection spec of version {ev.change.version}"
                )
        for st in states:
            size = len(CatalogSnapshot(st, _ANY_OFFSET).to_json())
            if size > MAX_EVENT_BYTES:
                numbers = " and ".join(str(v.resource.version) for v in st.versions)
                raise CatalogError(
                    f"{st.id}: its current state (versions {numbers} with their specs) would "
                    f"be {size:,} bytes, over the {MAX_EVENT_BYTES:,} a catalog record may "
                    f"take; shorten the collection spec of the new version"
                )

    def _publish_specs(self, events: list[CatalogEvent], book: CatalogBook) -> None:
        """The specs of the versions the events create or put in force."""
        schemas: dict[str, Schema] = {}
        for ev in events:
            version = ev.entry
            if version is None and ev.change.action is Action.APPROVED:
                state = book.state(ev.resource_id)
                version = state.version(ev.change.version) if state is not None else None
            if version is not None and version.spec and version.fingerprint not in schemas:
                schemas[version.fingerprint] = Schema.parse(version.spec)
        if not schemas:
            return
        topic = SchemaTopic(self.config.kafka, self.topics.schemas, SchemaRegistry())
        try:
            topic.publish(schemas.values(), timeout=self.timeout)
        except (RuntimeError, KafkaException) as exc:
            raise CatalogUnavailable(str(exc)) from exc
