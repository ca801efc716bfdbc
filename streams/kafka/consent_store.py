"""The consents on record (article 18), followed from the compacted consents topic.

Source systems publish each consent keyed by its id on :attr:`Topics.consents
<streams.kafka.topics.Topics.consents>` (:class:`connectors.consent.ConsentPublisher`): a
grant, then the same consent again with ``withdrawn_at_ms`` when the subject withdraws it,
or a tombstone to erase it. :class:`ConsentBook` reads the topic from the beginning and keeps
following it on a background thread (a :class:`~streams.kafka.follower.CompactedView`), so a
consent or a withdrawal reaches the ingest within a poll interval; a batch citing a consent
the book does not hold reads the topic to its end first (:meth:`FollowedTopic.sync
<streams.kafka.register_store.FollowedTopic.sync>`), so a consent published just before its
record counts. :meth:`ConsentBook.check`
is the per-record rule of :mod:`streams.core.consent`: one dict lookup and a few comparisons,
no I/O, safe to call from any thread.

Memory: per consent one dict entry (consent id → :class:`~streams.core.consent.ConsentTerms`),
the id and subject strings and the time integers; granter and scope are not kept. Measured
with ``tracemalloc`` (tests/unit/streams/kafka/test_consent_store.py) at about
:data:`BYTES_PER_CONSENT` bytes per consent for 18-character citizen ids and 20-character
consent ids: 10 million consents take about 3.3 GB, so a province's consents fit one worker's
memory only if they are partitioned or the consents topic is scoped (say, per city).
"""

from __future__ import annotations

import logging

from streams.core.consent import CONSENT_SCHEMA_NAME, Consent, ConsentTerms, check_terms, merge
from streams.core.reasons import Reason
from streams.kafka.config import StreamsConfig
from streams.kafka.register_store import FollowedTopic
from streams.kafka.topics import Topics
from streams.wire.codec import Schema, SchemaRegistry, decode

__all__ = ["BYTES_PER_CONSENT", "ConsentBook", "ConsentsUnavailable"]

log = logging.getLogger(__name__)

#: measured memory per consent on record (module doc)
BYTES_PER_CONSENT = 340


class ConsentsUnavailable(RuntimeError):
    """The consents topic could not be read (Kafka away, or the topic not created)."""


class ConsentBook(FollowedTopic):
    """Every consent on the consents topic, in memory, for :meth:`check`.

    Nothing touches Kafka until :meth:`start`, which returns once the topic has been read to
    its end (so a worker never decides against a half-read book); :meth:`close` stops
    following. ``registry`` decodes the records (default: the schemas of
    ``config.schema_dir``; a worker passes its registry, which follows the schemas topic).
    """

    _topic_noun = "consents"
    _hint = "is Kafka up (`xiangyun stack status`) and the topic created (`xiangyun topics`)?"
    _unavailable = ConsentsUnavailable

    def __init__(
        self,
        config: StreamsConfig,
        *,
        registry: SchemaRegistry | None = None,
        timeout: float = 30.0,
    ) -> None:
        super().__init__(config, Topics.of(config).consents, timeout)
        self._registry = registry or SchemaRegistry.from_dir(config.schema_dir)
        self._reader: Schema = self._registry.by_name(CONSENT_SCHEMA_NAME)
        self._terms: dict[str, ConsentTerms] = {}

    # -- following -----------------------------------------------------------------------
    def _apply(self, key: bytes, value: bytes | None) -> None:
        try:
            consent_id = key.decode()
            if value is None:  # erased: from now on the reference names nothing
                self._terms.pop(consent_id, None)
                self.applied += 1
                return
            consent = Consent.from_avro(
                decode(value, self._registry.writer_of(value), self._reader)
            )
            if consent.consent_id != consent_id:
                raise ValueError(f"key {key!r:.80} is not the record's consent id")
            self._terms[consent_id] = merge(self._terms.get(consent_id), consent.terms())
            self.applied += 1
        except Exception as exc:  # a bad record must not stop the book
            self.errors += 1
            log.error("consents topic %s: record with key %r ignored: %s", self.topic, key, exc)

    def __enter__(self) -> ConsentBook:
        # unlike a register store, the book is read on entering: it is only asked, never written
        return self.start()

    # -- the decision --------------------------------------------------------------------
    def check(
        self, consent_ref: str | None, subject_id: str, resource_id: str, observed_at_ms: int
    ) -> Reason | None:
        """None if ``consent_ref`` names a consent on record of ``subject_id`` for
        ``resource_id`` in force at ``observed_at_ms``; else the reason code
        (:mod:`streams.core.consent`; CONSENT_MISSING for an empty reference). O(1)."""
        if not consent_ref:
            return Reason.CONSENT_MISSING
        return check_terms(self._terms.get(consent_ref), subject_id, resource_id, observed_at_ms)

    def terms(self, consent_id: str) -> ConsentTerms | None:
        """The decision's part of one consent on record, or None."""
        return self._terms.get(consent_id)

    def __len__(self) -> int:
        return len(self._terms)

    def __contains__(self, consent_id: object) -> bool:
        return consent_id in self._terms
