"""A department's client of the exchange (共享交换).

``ExchangeClient(config, "220000-MZ")`` writes requests to the department's request topic
``<prefix>.request.220000-MZ`` and reads answers from its reply topic
``<prefix>.reply.220000-MZ``, ``read_committed`` (an answer is visible only once its
access-log entry is committed with it), matching them by request id. A request that gets
no answer within ``timeout`` is sent again with the same request id, ``retries`` times: the
exchange answers a retry with the answer it gave the first time, and never decides twice.

The department is the topic: with broker ACLs, only the department's credentials may write
its request topic and read its reply topic.

Subscription deliveries arriving on the reply topic are put on :attr:`ExchangeClient.deliveries`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import getpass
import logging
import queue
import threading
import time
import uuid
from collections.abc import Sequence
from types import TracebackType

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streams.core.random_ids import RandomIds
from streams.exchange.messages import (
    Answer,
    Delivery,
    ExchangeCodec,
    ExchangeRequest,
    RequestKind,
)
from streams.kafka.config import StreamsConfig
from streams.kafka.consume import read_available
from streams.kafka.topics import Topics, ensure_department_topics
from streams.policy.model import department_region

__all__ = ["ExchangeClient", "ExchangeTimeout"]

log = logging.getLogger(__name__)


class ExchangeTimeout(TimeoutError):
    """No answer came within the timeout, after every retry."""


class ExchangeClient:
    def __init__(
        self,
        config: StreamsConfig,
        department: str,
        *,
        official: str | None = None,
        create_topics: bool = True,
        timeout: float = 30.0,
    ) -> None:
        department_region(department)  # says what a department code looks like
        self.config = config
        self.department = department
        self.official = official or getpass.getuser()
        topics = Topics.of(config)
        self.request_topic = topics.request(department)
        self.reply_topic = topics.reply(department)
        self.codec = ExchangeCodec(config.schema_dir)
        if create_topics:
            ensure_department_topics(config, department, timeout)
        self._ids = RandomIds()
        self._producer = Producer(config.kafka.producer(**{"linger.ms": 0}))
        self._consumer = Consumer(
            config.kafka.consumer(
                f"{config.app_id}.client.{department}.{uuid.uuid4().hex[:8]}",
                **{"isolation.level": "read_committed", "fetch.wait.max.ms": 10},
            )
        )
        # From the reply topic's current end: answers to earlier requests are not ours.
        meta = self._consumer.list_topics(self.reply_topic, timeout=timeout).topics
        parts = sorted(meta[self.reply_topic].partitions) if self.reply_topic in meta else []
        if not parts:
            raise RuntimeError(f"reply topic {self.reply_topic} is missing")
        start = []
        deadline = time.monotonic() + timeout
        for p in parts:
            while True:  # a topic just made: its leader may not answer for a moment
                try:
                    _lo, hi = self._consumer.get_watermark_offsets(
                        TopicPartition(self.reply_topic, p), timeout=timeout, cached=False
                    )
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            start.append(TopicPartition(self.reply_topic, p, hi))
        self._consumer.assign(start)
        self._waiting: dict[str, concurrent.futures.Future[Answer]] = {}
        self._lock = threading.Lock()
        self.deliveries: queue.Queue[Delivery] = queue.Queue()
        #: every answer read, in order (request id, answer): a retried request may be
        #: answered more than once, always alike
        self.answers_seen = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="exchange-client", daemon=True)
        self._thread.start()

    # -- reading -------------------------------------------------------------------------
    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                msgs = read_available(self._consumer, 1000, 0.1)
            except Exception as exc:  # broker away: librdkafka reconnects
                log.warning("exchange client: %s", exc)
                continue
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("exchange client: %s", err)
                    continue
                try:
                    reply = self.codec.decode_reply(m.value() or b"")
                except Exception as exc:
                    log.warning("exchange client: unreadable reply: %s", exc)
                    continue
                if isinstance(reply, Delivery):
                    self.deliveries.put(reply)
                    continue
                self.answers_seen += 1
                with self._lock:
                    fut = self._waiting.pop(reply.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(reply)

    # -- asking --------------------------------------------------------------------------
    def build(
        self,
        resource_id: str,
        subjects: Sequence[str] = (),
        purpose: str = "",
        *,
        fields: Sequence[str] = (),
        case_id: str | None = None,
        official: str | None = None,
        deadline_s: float = 30.0,
        approval_id: str | None = None,
        kind: RequestKind = RequestKind.QUERY,
        region: str | None = None,
        subscription_id: str | None = None,
        reason: str | None = None,
        request_id: str | None = None,
    ) -> ExchangeRequest:
        return ExchangeRequest(
            request_id=request_id or self._ids.hex(),
            kind=kind,
            resource_id=resource_id,
            subjects=tuple(subjects),
            fields=tuple(fields),
            purpose=purpose,
            case_id=case_id,
            official=official or self.official,
            deadline_ms=int(time.time() * 1000 + deadline_s * 1000),
            approval_id=approval_id,
            region=region,
            subscription_id=subscription_id,
            reason=reason,
        )

    def send(self, request: ExchangeRequest) -> concurrent.futures.Future[Answer]:
        """Write ``request`` (no wait); the future gets its first answer."""
        with self._lock:
            fut = self._waiting.get(request.request_id)
            if fut is None:
                fut = self._waiting[request.request_id] = concurrent.futures.Future()
        self.send_raw(self.codec.encode_request(request), request.request_id.encode())
        return fut

    def send_raw(self, value: bytes, key: bytes | None = None) -> None:
        """Write any bytes to the request topic (tests of malformed requests)."""
        while True:
            try:
                self._producer.produce(self.request_topic, value, key)
                break
            except BufferError:
                self._producer.poll(0.05)
        self._producer.poll(0)

    def expect(self, request_id: str) -> concurrent.futures.Future[Answer]:
        """A future for the answer to ``request_id`` (sent by :meth:`send_raw`)."""
        with self._lock:
            return self._waiting.setdefault(request_id, concurrent.futures.Future())

    def ask(self, request: ExchangeRequest, *, timeout: float = 10.0, retries: int = 2) -> Answer:
        """Send ``request`` and wait for its answer; resend it (same request id) after
        each ``timeout`` s without one, ``retries`` times."""
        for _attempt in range(retries + 1):
            fut = self.send(request)
            self._producer.flush(timeout)
            try:
                return fut.result(timeout)
            except concurrent.futures.TimeoutError:
                continue
        with self._lock:
            self._waiting.pop(request.request_id, None)
        raise ExchangeTimeout(
            f"no answer to {request.request_id} from the exchange in {retries + 1} tries of "
            f"{timeout:.0f}s: is a worker running (`xiangyun worker`)?"
        )

    def request(
        self,
        resource_id: str,
        subjects: Sequence[str],
        purpose: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        **kw: object,
    ) -> Answer:
        """Ask once about ``subjects`` of ``resource_id`` for the duty ``purpose``."""
        return self.ask(
            self.build(resource_id, subjects, purpose, **kw),  # type: ignore[arg-type]
            timeout=timeout,
            retries=retries,
        )

    async def arequest(
        self,
        resource_id: str,
        subjects: Sequence[str],
        purpose: str,
        *,
        timeout: float = 10.0,
        retries: int = 2,
        **kw: object,
    ) -> Answer:
        """:meth:`request` without blocking the event loop."""
        request = self.build(resource_id, subjects, purpose, **kw)  # type: ignore[arg-type]
        for _attempt in range(retries + 1):
            fut = self.send(request)
            try:
                return await asyncio.wait_for(asyncio.wrap_future(fut), timeout)
            except TimeoutError:
                continue
        raise ExchangeTimeout(f"no answer to {request.request_id} from the exchange")

    def subscribe(
        self,
        resource_id: str,
        purpose: str,
        *,
        subjects: Sequence[str] = (),
        region: str | None = None,
        timeout: float = 10.0,
        **kw: object,
    ) -> Answer:
        """Subscribe to later changes of ``subjects`` (or of every subject of ``region``)."""
        req = self.build(
            resource_id,
            subjects,
            purpose,
            kind=RequestKind.SUBSCRIBE,
            region=region,
            **kw,  # type: ignore[arg-type]
        )
        return self.ask(req, timeout=timeout)

    def unsubscribe(
        self, subscription_id: str, reason: str = "", *, timeout: float = 10.0
    ) -> Answer:
        """End one of the department's subscriptions (the data bureau: revoke any)."""
        from streams.units.review import DATA_BUREAU

        kind = (
            RequestKind.REVOKE_SUBSCRIPTION
            if self.department == DATA_BUREAU
            else RequestKind.UNSUBSCRIBE
        )
        req = self.build("", (), "", kind=kind, subscription_id=subscription_id, reason=reason)
        return self.ask(req, timeout=timeout)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._producer.flush(10)
        self._consumer.close()

    def __enter__(self) -> ExchangeClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
