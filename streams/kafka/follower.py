"""Follow a compacted topic into memory: the schema registry and the catalog use this.

A :class:`CompactedView` reads its topic from the beginning on a background thread and
keeps following it, so a change is seen within a poll interval. :meth:`sync` gives
read-your-writes: it waits until everything written before the call has been applied.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams.kafka.config import KafkaConfig

__all__ = ["CompactedView", "ViewError"]

log = logging.getLogger(__name__)

Apply = Callable[[bytes, bytes | None], None]


class ViewError(RuntimeError):
    """The view could not reach or catch up with its topic."""


class CompactedView:
    def __init__(
        self, kafka: KafkaConfig, topic: str, apply: Apply, *, poll_s: float = 0.2
    ) -> None:
        self.topic = topic
        self._apply = apply
        self._poll_s = poll_s
        conf = kafka.consumer(
            f"view-{topic}-{uuid.uuid4().hex[:8]}",
            **{
                "enable.partition.eof": False,
                # Transactional writers (the catalog) are seen only once committed; an
                # aborted write is never applied. Watermarks are then the last stable offset.
                "isolation.level": "read_committed",
            },
        )
        self._consumer = Consumer(conf)
        self._probe = Consumer(conf)  # watermark queries from other threads
        self._probe_lock = threading.Lock()
        self._positions: dict[int, int] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._syncer: ThreadPoolExecutor | None = None
        self.errors = 0

    def start(self, timeout: float = 30.0) -> CompactedView:
        meta = self._consumer.list_topics(self.topic, timeout=timeout)
        tmeta = meta.topics.get(self.topic)
        if tmeta is None or tmeta.error is not None or not tmeta.partitions:
            raise ViewError(f"topic {self.topic} is missing: run `xiangyun topics` first")
        parts = sorted(tmeta.partitions)
        self._positions = dict.fromkeys(parts, 0)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in parts])
        self._thread = threading.Thread(target=self._run, name=f"view-{self.topic}", daemon=True)
        self._thread.start()
        if not self.sync(timeout):
            raise ViewError(f"could not read {self.topic} to its end within {timeout}s")
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._step()
            except Exception:  # the client failing now and then must not end the view
                log.exception("view %s: poll failed; retrying", self.topic)
                self._stop.wait(self._poll_s)

    def _step(self) -> None:
        msg = self._consumer.poll(self._poll_s)
        if msg is not None:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("view %s: %s", self.topic, err)
                return
            key = msg.key() or b""
            try:
                self._apply(key, msg.value())
            except Exception:  # a bad entry must not stop the view
                self.errors += 1
                log.exception("view %s: could not apply offset %s", self.topic, msg.offset())
        self._advance()

    def _advance(self) -> None:
        tps = [TopicPartition(self.topic, p) for p in self._positions]
        positions = self._consumer.position(tps)
        with self._cond:
            for tp in positions:
                if tp.offset >= 0:
                    self._positions[tp.partition] = tp.offset
            self._cond.notify_all()

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until every record written before this call is applied; False on timeout."""
        deadline = time.monotonic() + timeout
        ends = self._end_offsets(deadline)
        if ends is None:
            return False
        with self._cond:
            while any(self._positions[p] < end for p, end in ends.items()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, self._poll_s))
        return True

    def sync_soon(self, timeout: float = 10.0) -> Future[bool]:
        """:meth:`sync` on a thread of the view's, begun now: it covers what was written
        before this call, and the caller goes on while the broker answers."""
        if self._syncer is None:
            self._syncer = ThreadPoolExecutor(1, thread_name_prefix=f"sync-{self.topic}")
        return self._syncer.submit(self.sync, timeout)

    def _end_offsets(self, deadline: float) -> dict[int, int] | None:
        """High watermarks; retried until the deadline, since a topic created a moment ago
        has no leader yet (NOT_LEADER_FOR_PARTITION) and a broker may be restarting."""
        while True:
            left = deadline - time.monotonic()
            with self._probe_lock:
                try:
                    return {
                        p: self._probe.get_watermark_offsets(
                            TopicPartition(self.topic, p), timeout=max(left, 0.1), cached=False
                        )[1]
                        for p in self._positions
                    }
                except Exception as exc:  # KafkaException: no leader yet, broker away
                    if time.monotonic() + 0.2 >= deadline:
                        log.warning("view %s: watermarks unavailable: %s", self.topic, exc)
                        return None
            time.sleep(0.2)

    def wait_for(self, partition: int, offset: int, timeout: float = 10.0) -> bool:
        """Wait until the record at ``offset`` of ``partition`` (and all before it) has been
        applied; False on timeout. Read-your-writes for a writer that knows its offsets."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._positions.get(partition, -1) <= offset:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, self._poll_s))
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._syncer is not None:
            self._syncer.shutdown(wait=True, cancel_futures=True)
        if self._thread is not None:
            self._thread.join(5)
        self._consumer.close()
        self._probe.close()
