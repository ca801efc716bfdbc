"""The exchange's round trip, measured: ``python -m xiangyun.exchange_bench``.

On its own topics (prefix ``<XIANGYUN_TOPIC_PREFIX>-xbench-<run>``, deleted at the end):

1. a bare Kafka round trip at the same steady rate: this process produces to a ping topic,
   an echo in a separate process consumes and produces to a pong topic, this process
   consumes it: the same client settings as the exchange's (the department's client on
   this side; the exchange reader's consumer settings and an idempotent producer on the
   echo's side), without transactions, policy, Redis or access log;
2. the same round trip with the echo's pongs and offsets committed in one transaction per
   batch, one commit at a time, as the exchange commits: what Kafka transactions alone
   cost, so that the exchange's own cost (policy, Redis, access log) can be told apart;
3. the exchange: a real worker (a separate process) answers requests written at ``rate``
   per second for ``seconds`` by an :class:`~connectors.exchange_client.ExchangeClient`
   in this process (one subject per request, a record found in the view, every answer in
   one transaction with its access-log entry);
4. a Kafka transaction alone, back to back (begin, produce one record, send offsets,
   commit): the floor under any answer that commits together with its log entry;
5. the highest steady rate one exchange worker holds: doubling the rate from ``rate``
   for 10 s steps while at least 95 % of the requests of a step are answered (10 s of
   drain allowed) and p99 stays under one second (or three times the bare p99, whichever
   is more: on a loaded machine the bare round trip itself is slow).

Reports p50 / p99 of each round trip in milliseconds.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.kafka.batch_reader import next_offsets
from streams.kafka.consume import read_available
from xiangyun.settings import Settings

__all__ = ["ExchangeBench", "run_exchange_bench"]


@dataclass
class Phase:
    name: str
    rate: float
    sent: int = 0
    answered: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        xs = sorted(self.latencies_ms)
        return xs[min(len(xs) - 1, int(q * len(xs)))]

    def line(self) -> str:
        return (
            f"{self.name:<28} rate {self.rate:>7.0f}/s  sent {self.sent:>7}  answered "
            f"{self.answered:>7}  p50 {self.pct(0.5):7.1f} ms  p99 {self.pct(0.99):7.1f} ms"
        )


@dataclass
class ExchangeBench:
    bare: Phase
    bare_txn: Phase
    exchange: Phase
    steps: list[Phase]
    max_rate: float
    txn_alone: Phase | None = None

    def render(self) -> str:
        lines = [self.bare.line(), self.bare_txn.line(), self.exchange.line()]
        if self.txn_alone is not None:
            lines.append(self.txn_alone.line())
        lines.append("steps to the highest steady rate:")
        lines += ["  " + s.line() for s in self.steps]
        lines.append(f"highest steady rate one exchange worker held: {self.max_rate:.0f}/s")
        if self.txn_alone is not None and self.bare.latencies_ms:
            lines.append(
                f"1.5 x the bare p99: {1.5 * self.bare.pct(0.99):.1f} ms; a transaction alone: "
                f"p99 {self.txn_alone.pct(0.99):.1f} ms"
            )
        for base in (self.bare, self.bare_txn):
            if base.latencies_ms and self.exchange.latencies_ms:
                lines.append(
                    f"exchange / {base.name}: "
                    f"p50 x{self.exchange.pct(0.5) / base.pct(0.5):.1f}, "
                    f"p99 x{self.exchange.pct(0.99) / base.pct(0.99):.1f}"
                )
        return "\n".join(lines)


def _paced(rate: float, seconds: float, send: Callable[[int], None]) -> int:
    """Call ``send(i)`` ``rate`` times a second for ``seconds``; the number sent."""
    start = time.monotonic()
    n = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= seconds:
            return n
        due = int(elapsed * rate)
        while n < due:
            send(n)
            n += 1
        time.sleep(0.002)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the bare round trip ---------------------------------------------------------------------


def _echo(settings: Settings, ping: str, pong: str, transactional: bool = False) -> None:
    """Consume ``ping`` and produce each record to ``pong`` until killed (the echo process).
    ``transactional``: each batch's pongs and its offsets commit in one transaction, one
    commit at a time, as the exchange commits its answers and their log entries."""
    kafka = settings.kafka
    consumer = Consumer(
        kafka.consumer(
            f"{settings.app_id}.echo",
            **{
                "isolation.level": "read_committed",
                "session.timeout.ms": 10_000,
                "fetch.wait.max.ms": 10,
                "auto.offset.reset": "latest",
            },
        )
    )
    consumer.subscribe([ping])
    if not transactional:
        producer = Producer(kafka.producer())
        while True:
            for m in read_available(consumer, 1000, 0.1):
                if m.error() is None:
                    producer.produce(pong, m.value(), m.key())
            producer.poll(0)
    producer = Producer(kafka.transactional_producer(f"{settings.app_id}.echo.{uuid.uuid4().hex}"))
    producer.init_transactions(30)
    while True:
        batch = [m for m in read_available(consumer, 1000, 0.1) if m.error() is None]
        if not batch:
            continue
        producer.begin_transaction()
        for m in batch:
            producer.produce(pong, m.value(), m.key())
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets(batch).items()]
        producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), 30)
        producer.commit_transaction(30)


def _end(consumer: Consumer, tp: TopicPartition) -> int:
    """The partition's end, once the new topic has a leader."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=10, cached=False)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _bare(
    settings: Settings, rate: float, seconds: float, payload: bytes, transactional: bool = False
) -> Phase:
    prefix = settings.topic_prefix
    kind = "txn" if transactional else "plain"
    ping, pong = f"{prefix}.bench.{kind}.ping", f"{prefix}.bench.{kind}.pong"
    admin = AdminClient(settings.kafka.admin())
    futs = admin.create_topics(
        [
            NewTopic(t, num_partitions=settings.partitions, replication_factor=1)
            for t in (ping, pong)
        ]
    )
    for f in futs.values():
        f.result(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith("XIANGYUN_")}
    env.update(settings.describe(reveal=True))
    echo = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "xiangyun.exchange_bench",
            "--echo-transactional" if transactional else "--echo",
            ping,
            pong,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
    )
    phase = Phase("bare round trip, in txns" if transactional else "bare Kafka round trip", rate)
    sent_at: dict[bytes, float] = {}
    lock = threading.Lock()
    producer = Producer(settings.kafka.producer(**{"linger.ms": 0}))
    consumer = Consumer(
        settings.kafka.consumer(
            f"{settings.app_id}.ping.{uuid.uuid4().hex[:6]}",
            **{"isolation.level": "read_committed", "fetch.wait.max.ms": 10},
        )
    )
    parts = consumer.list_topics(pong, timeout=10).topics[pong].partitions
    try:
        consumer.assign(
            [TopicPartition(pong, p, _end(consumer, TopicPartition(pong, p))) for p in parts]
        )
    except BaseException:
        echo.kill()
        consumer.close()
        raise
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for m in read_available(consumer, 1000, 0.1):
                if m.error() is not None:
                    continue
                now = time.monotonic()
                with lock:
                    t = sent_at.pop(m.key() or b"", None)
                if t is not None:
                    phase.latencies_ms.append((now - t) * 1000)
                    phase.answered += 1

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # The echo's group must be assigned before the pings count: warm up until a pong.
        deadline = time.monotonic() + 60
        while not phase.answered and time.monotonic() < deadline:
            key = uuid.uuid4().hex.encode()
            with lock:
                sent_at[key] = time.monotonic()
            producer.produce(ping, payload, key)
            producer.flush(5)
            time.sleep(0.5)
        phase.latencies_ms.clear()
        phase.answered = 0

        def send(_i: int) -> None:
            key = uuid.uuid4().hex.encode()
            with lock:
                sent_at[key] = time.monotonic()
            producer.produce(ping, payload, key)
            producer.poll(0)

        phase.sent = _paced(rate, seconds, send)
        producer.flush(10)
        time.sleep(2.0)
    finally:
        stop.set()
        reader.join(5)
        consumer.close()
        echo.kill()
        echo.wait(10)
    return phase


def _txn_alone(settings: Settings, transactions: int, payload: bytes) -> Phase:
    """``transactions`` Kafka transactions back to back, each one record and one offset."""
    topic = f"{settings.topic_prefix}.bench.txn-alone"
    admin = AdminClient(settings.kafka.admin())
    for f in admin.create_topics(
        [NewTopic(topic, num_partitions=1, replication_factor=1)]
    ).values():
        f.result(30)
    kafka = settings.kafka
    producer = Producer(kafka.transactional_producer(f"{settings.app_id}.alone.{uuid.uuid4().hex}"))
    consumer = Consumer(kafka.consumer(f"{settings.app_id}.alone"))  # its group's metadata
    try:
        producer.init_transactions(30)
        metadata = consumer.consumer_group_metadata()
        phase = Phase("a transaction alone", 0)
        began = time.monotonic()
        for i in range(transactions):
            t = time.monotonic()
            producer.begin_transaction()
            producer.produce(topic, payload, str(i).encode(), partition=0)
            producer.send_offsets_to_transaction([TopicPartition(topic, 0, i + 1)], metadata, 30)
            producer.commit_transaction(30)
            phase.latencies_ms.append((time.monotonic() - t) * 1000)
        phase.sent = phase.answered = transactions
        phase.rate = transactions / max(time.monotonic() - began, 1e-9)
        return phase
    finally:
        consumer.close()


# -- the exchange ------------------------------------------------------------------------------


def _exchange_phase(client: Any, name: str, rate: float, seconds: float, ask: Any) -> Phase:
    phase = Phase(name, rate)
    lock = threading.Lock()

    def send(_i: int) -> None:
        t = time.monotonic()
        fut = client.send(ask())

        def done(_f: Any) -> None:
            ms = (time.monotonic() - t) * 1000
            with lock:
                phase.latencies_ms.append(ms)
                phase.answered += 1

        fut.add_done_callback(done)

    phase.sent = _paced(rate, seconds, send)
    client._producer.flush(10)
    deadline = time.monotonic() + 10
    while phase.answered < phase.sent and time.monotonic() < deadline:
        time.sleep(0.05)
    return phase


def run_exchange_bench(
    settings: Settings, rate: float = 1000, seconds: float = 60, *, max_steps: int = 5
) -> ExchangeBench:
    from connectors.exchange_client import ExchangeClient
    from connectors.generator import SampleGenerator
    from connectors.producer import SourceProducer
    from streams.catalog.model import Catalog
    from streams.kafka.catalog_store import CatalogStore
    from streams.kafka.policy_store import PolicyStore
    from streams.kafka.schema_topic import SchemaTopic
    from streams.kafka.topics import Topics, ensure_topics
    from streams.kafka.units_store import UnitsStore
    from streams.views.reader import PoolView
    from streams.wire.codec import SchemaRegistry
    from streams.wire.envelope import EnvelopeCodec
    from xiangyun.processes import WorkerProcess

    run = uuid.uuid4().hex[:6]
    s = dataclasses.replace(
        settings,
        topic_prefix=f"{settings.topic_prefix}-xbench-{run}",
        app_id=f"{settings.app_id}-xbench-{run}",
        metrics_port=_free_port(),
    )
    config = s.streams
    topics = Topics.of(config)
    ensure_topics(config)
    with UnitsStore(config) as units:
        units.bootstrap()
        ensure_topics(config, principals=units.current().principals())
    with CatalogStore(config) as catalog_store:
        catalog_store.bootstrap()
    with PolicyStore(config) as policy:
        policy.bootstrap()
    dept, resource, duty = "220000-FGW", "legal_person.enterprise", "credit_supervision"
    client = ExchangeClient(config, dept, official="bench")
    worker = WorkerProcess(s, name=f"worker-{s.app_id}").start()
    view = PoolView(config)
    try:
        registry = SchemaRegistry.from_dir(s.schema_dir)
        codec = EnvelopeCodec(registry, s.schema_dir)
        generator = SampleGenerator(
            codec, Catalog.from_dir(s.catalog_dir), s.schema_dir, seed=7, broken_share=0.0
        )
        producer = SourceProducer(config, SchemaTopic(s.kafka, topics.schemas, registry))
        producer.register([*registry, *generator.extra_schemas])
        records = [r for r in generator.records(2000) if r.expected == "accepted:legal_person"]
        producer.send_all([(r.principal, r.key, r.value) for r in records], progress=False)
        producer.flush()
        firms = [r.key.decode().partition("|")[2] for r in records]
        deadline = time.monotonic() + 120
        while view.get(resource, firms[-1]) is None:
            if time.monotonic() > deadline:
                raise RuntimeError("the sample records did not reach the Redis view")
            time.sleep(0.1)
        i = 0

        def ask() -> Any:
            nonlocal i
            i += 1
            return client.build(resource, [firms[i % len(firms)]], duty, deadline_s=120)

        client.ask(ask(), timeout=60)  # the exchange holds its lease and its partitions
        payload = client.codec.encode_request(ask())
        bare = _bare(s, rate, seconds, payload)
        bare_txn = _bare(s, rate, seconds, payload, transactional=True)
        alone = _txn_alone(s, max(1000, int(rate * seconds / 10)), payload)
        exchange = _exchange_phase(client, "exchange round trip", rate, seconds, ask)
        steps: list[Phase] = []
        max_rate = 0.0
        # Held: nearly every request answered, p99 within a second (or three bare round
        # trips' p99 on a loaded machine).
        limit_ms = max(1000.0, 3 * bare.pct(0.99))
        step_rate = rate
        for _ in range(max_steps):
            phase = _exchange_phase(client, f"exchange at {step_rate:.0f}/s", step_rate, 10, ask)
            steps.append(phase)
            if phase.answered < 0.95 * phase.sent or phase.pct(0.99) > limit_ms:
                break
            max_rate = step_rate
            step_rate *= 2
        return ExchangeBench(bare, bare_txn, exchange, steps, max_rate, alone)
    finally:
        client.close()
        worker.stop()
        view.flush()
        view.close()
        admin = AdminClient(config.kafka.admin())
        mine = [
            t for t in admin.list_topics(timeout=10).topics if t.startswith(s.topic_prefix + ".")
        ]
        if mine:
            for f in admin.delete_topics(mine, operation_timeout=30).values():
                with contextlib.suppress(Exception):  # deleting is best effort
                    f.result(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m xiangyun.exchange_bench", description=__doc__)
    p.add_argument("--rate", type=float, default=1000, help="requests per second (default 1000)")
    p.add_argument("--seconds", type=float, default=60, help="seconds per phase (default 60)")
    p.add_argument("--steps", type=int, default=5, help="rate doublings at most (default 5)")
    p.add_argument("--echo", nargs=2, metavar=("PING", "PONG"), help=argparse.SUPPRESS)
    p.add_argument(
        "--echo-transactional", nargs=2, metavar=("PING", "PONG"), help=argparse.SUPPRESS
    )
    args = p.parse_args(argv)
    settings = Settings.from_env()
    if args.echo or args.echo_transactional:
        ping, pong = args.echo or args.echo_transactional
        _echo(settings, ping, pong, transactional=args.echo is None)
        return 0
    result = run_exchange_bench(settings, args.rate, args.seconds, max_steps=args.steps)
    print(result.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
