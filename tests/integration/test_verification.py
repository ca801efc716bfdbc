"""Multi-source verification on the real broker with a real worker: agreement counts each
verifier once, disagreement raises a conflict with the provider, evidence before the
authoritative value waits, conflicts are resolved through the CLI, and a SIGKILLed worker
neither loses nor double-counts."""

from __future__ import annotations

import dataclasses
import itertools
import socket
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.generator import SampleGenerator
from connectors.producer import SourceProducer
from streams.kafka.topics import Topics
from streams.units.model import UnitRegister
from streams.verification.compare import conflict_id
from streams.views import PoolView
from streams.wire.codec import SchemaRegistry, decode, encode, read_fingerprint
from streams.wire.envelope import Envelope, EnvelopeCodec
from xiangyun.cli import build_parser
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings
from xiangyun_data import units_dir

PROVIDER, CHANGCHUN, JILIN, BUREAU = "220000-GA", "220100-GA", "220200-GA", "220000-ZSJ"


def wait_for(check: Callable[[], Any], timeout: float = 90, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def read_all(settings: Settings, topic: str) -> list[tuple[bytes, bytes | None]]:
    """Every committed record of ``topic`` in log order per partition: (key, value)."""
    c = Consumer(
        settings.kafka.consumer(
            f"vt-{uuid.uuid4().hex[:6]}",
            **{"isolation.level": "read_committed", "enable.partition.eof": True},
        )
    )
    out: list[tuple[bytes, bytes | None]] = []
    try:
        meta = c.list_topics(topic, timeout=10).topics.get(topic)
        if meta is None or not meta.partitions:
            return out
        ends = {}
        for p in meta.partitions:
            high = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            if high:
                ends[p] = high
        if not ends:
            return out
        c.assign([TopicPartition(topic, p, 0) for p in ends])
        left = set(ends)
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            for m in c.consume(10_000, 0.5):
                if m.error() is not None:
                    left.discard(m.partition() or 0)
                    continue
                out.append((m.key() or b"", m.value()))
                if (m.offset() or 0) + 1 >= ends[m.partition() or 0]:
                    left.discard(m.partition() or 0)
        assert not left, f"{topic} not read to its end"
    finally:
        c.close()
    return out


def verified(settings: Settings, registry: SchemaRegistry) -> dict[bytes, list[dict[str, Any]]]:
    """Every verified record per key, in order."""
    schema = registry.by_name("org.xiangyun.Verified")
    out: dict[bytes, list[dict[str, Any]]] = {}
    for key, value in read_all(settings, Topics.of(settings.streams).verified):
        if value is not None:
            out.setdefault(key, []).append(decode(value, schema))
    return out


def conflicts(settings: Settings, registry: SchemaRegistry, unit: str) -> list[dict[str, Any]]:
    schema = registry.by_name("org.xiangyun.Conflict")
    topic = Topics.of(settings.streams).conflicts(unit)
    return [decode(v, schema) for _, v in read_all(settings, topic) if v is not None]


def residents(generator: SampleGenerator, codec: EnvelopeCodec, n: int) -> list[Envelope]:
    """``n`` resident records with distinct subjects (provider 220000-GA)."""
    seen: set[bytes] = set()
    out: list[Envelope] = []
    while len(out) < n:
        for r in generator.records(2000):
            if r.expected == "accepted:population" and r.key not in seen:
                env = codec.decode(r.value)
                if env.resource_id == "population.resident":
                    seen.add(r.key)
                    out.append(env)
                    if len(out) == n:
                        break
    return out


def as_evidence(env: Envelope, unit: str) -> Envelope:
    return dataclasses.replace(env, provider=unit, region=unit[:6], record_id=str(uuid.uuid4()))


def changed(registry: SchemaRegistry, env: Envelope, **fields: Any) -> Envelope:
    writer = registry.get(read_fingerprint(env.payload))
    assert writer is not None
    payload = {**decode(env.payload, writer), **fields}
    return dataclasses.replace(env, payload=encode(writer, payload))


#: the starter register: each record goes out on its provider's principal's collect topic
UNITS = UnitRegister.from_dir(units_dir()).approved()


def principal_of(env: Envelope) -> str:
    principal = UNITS.principal_of(env.provider)
    assert principal is not None, env.provider
    return principal


def send(producer: SourceProducer, codec: EnvelopeCodec, envs: list[Envelope]) -> None:
    producer.send_all(((principal_of(e), e.key, codec.encode(e)) for e in envs), progress=False)


def cli(settings: Settings, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    args = build_parser().parse_args(["conflicts", *argv])
    code = args.handler(args, settings)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_agreement_disagreement_waiting_evidence_and_resolution(
    settings: Settings,
    generator: SampleGenerator,
    producer: SourceProducer,
    codec: EnvelopeCodec,
    registry: SchemaRegistry,
    worker: WorkerProcess,
    capsys: pytest.CaptureFixture[str],
) -> None:
    agreed, disputed, waiting = residents(generator, codec, 3)
    # Agreement: two city units confirm; Changchun twice (other record ids, other spacing).
    name = decode(agreed.payload, registry.writer_of(agreed.payload))["name"]
    spaced = changed(registry, agreed, name=f" {name}  ")  # the same facts
    send(producer, codec, [agreed, disputed])
    send(
        producer,
        codec,
        [
            as_evidence(agreed, CHANGCHUN),
            as_evidence(spaced, CHANGCHUN),
            as_evidence(agreed, JILIN),
        ],
    )
    # Disagreement: Changchun has another address for the second subject.
    wrong = as_evidence(changed(registry, disputed, address="长春市朝阳区某某路 1 号"), CHANGCHUN)
    send(producer, codec, [wrong])
    # Evidence first: Jilin confirms the third subject before the province has it.
    early = as_evidence(waiting, JILIN)
    send(producer, codec, [early])
    topics = Topics.of(settings.streams)
    wait_for(
        lambda: any(
            k.startswith(waiting.key)
            for k, v in read_all(settings, topics.verification_pending)
            if v
        ),
        what="the early evidence to wait in the pending change log",
    )
    assert waiting.key not in verified(settings, registry)
    send(producer, codec, [waiting])

    def settled() -> dict[bytes, list[dict[str, Any]]] | None:
        got = verified(settings, registry)
        if got.get(agreed.key, [{}])[-1].get("count") == 2 and waiting.key in got:
            return got
        return None

    got = wait_for(settled, what="both agreements and the waiting evidence")
    # Changchun and Jilin publish on their own cities' collect topics: Kafka orders the
    # records of one topic, not of two, so either city may come first.
    counts = [(r["count"], sorted(r["verifiers"])) for r in got[agreed.key]]
    assert counts in (
        [(1, [CHANGCHUN]), (2, sorted([CHANGCHUN, JILIN]))],
        [(1, [JILIN]), (2, sorted([CHANGCHUN, JILIN]))],
    ), f"the same verifier counts once: {counts}"
    assert got[agreed.key][-1]["version"] == agreed.version
    assert [(r["count"], r["verifiers"]) for r in got[waiting.key]] == [(1, [JILIN])]
    assert disputed.key not in got

    (conflict,) = wait_for(lambda: conflicts(settings, registry, PROVIDER), what="a conflict")
    assert conflict["conflict_id"] == conflict_id(disputed.key, disputed.version, wrong.record_id)
    assert conflict["fields"] == ["address"] and conflict["status"] == "open"
    assert conflict["authoritative"]["provider"] == PROVIDER
    assert conflict["authoritative"]["version"] == disputed.version
    assert conflict["evidence"]["provider"] == CHANGCHUN
    assert conflict["evidence"]["record_id"] == wrong.record_id
    assert conflict["evidence"]["values"] == {"address": '"长春市朝阳区某某路 1 号"'}
    assert (
        conflict["authoritative"]["values"]["address"] != conflict["evidence"]["values"]["address"]
    )

    # The Redis view shows the count with the record.
    view = PoolView(settings.streams)
    rec = wait_for(
        lambda: (
            (r := view.get("population.resident", agreed.subject_id))
            and r["verification_count"] == 2
            and view.get("population.resident", disputed.subject_id) is not None
            and r
        ),
        what="the view to show the verification",
    )
    assert sorted(rec["verifiers"]) == sorted([CHANGCHUN, JILIN])
    assert view.get("population.resident", disputed.subject_id)["verification_count"] == 0  # type: ignore[index]

    # Resolution through the CLI.
    cid = conflict["conflict_id"]
    code, out = cli(settings, capsys, "list", "--unit", PROVIDER, "--open")
    assert code == 0 and cid in out and "1 conflict" in out
    code, out = cli(settings, capsys, "show", cid)
    assert code == 0 and "address" in out and "长春市朝阳区某某路 1 号" in out
    code, out = cli(
        settings, capsys, "resolve", cid, "--dismiss", "--reason", "old", "--as", CHANGCHUN
    )
    assert code == 1 and "only its provider" in out
    code, out = cli(
        settings, capsys, "resolve", "f" * 32, "--accept", "--reason", "x", "--as", PROVIDER
    )
    assert code == 1 and "no conflict" in out
    code, out = cli(
        settings,
        capsys,
        "resolve",
        cid,
        "--dismiss",
        "--reason",
        "registry is current",
        "--as",
        PROVIDER,
    )
    assert code == 0 and "dismissed" in out
    code, out = cli(settings, capsys, "resolve", cid, "--accept", "--reason", "x", "--as", BUREAU)
    assert code == 1 and "already dismissed" in out
    code, out = cli(settings, capsys, "list", "--open")
    assert code == 0 and cid not in out and "0 conflicts" in out
    code, out = cli(settings, capsys, "show", cid)
    assert "dismissed by 220000-GA" in out and "registry is current" in out

    # A second disagreement, accepted by the data bureau.
    again = as_evidence(changed(registry, disputed, ethnicity="其他"), JILIN)
    send(producer, codec, [again])
    second = conflict_id(disputed.key, disputed.version, again.record_id)
    wait_for(
        lambda: any(c["conflict_id"] == second for c in conflicts(settings, registry, PROVIDER)),
        what="the second conflict",
    )
    code, out = cli(
        settings, capsys, "resolve", second, "--accept", "--reason", "moved", "--as", BUREAU
    )
    assert code == 0 and "accepted by 220000-ZSJ" in out

    # Open conflicts per unit reach the metrics.
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"

    def metric_lines() -> list[str]:
        with urllib.request.urlopen(url, timeout=2) as resp:
            text: str = resp.read().decode()
        return text.splitlines()

    wait_for(
        lambda: f'xiangyun_verification_conflicts_open{{unit="{PROVIDER}"}} 0.0' in metric_lines(),
        what="the open conflicts gauge",
    )
    lines = metric_lines()
    assert 'xiangyun_verification_evidence_total{outcome="agree"} 4.0' in lines, [
        line for line in lines if "verification_evidence" in line
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_sigkilled_worker_neither_loses_nor_double_counts(
    settings: Settings,
    generator: SampleGenerator,
    producer: SourceProducer,
    codec: EnvelopeCodec,
    registry: SchemaRegistry,
) -> None:
    subjects = residents(generator, codec, 3000)
    verifiers = [CHANGCHUN, JILIN, "220300-GA"]
    expect_agree: dict[bytes, list[str]] = {}
    expect_conflicts: set[str] = set()
    records: list[Envelope] = []
    for i, env in enumerate(subjects):
        evidence: list[Envelope] = []
        units = verifiers[: 1 + i % 3]
        for unit in units:
            evidence.append(as_evidence(env, unit))
        evidence.append(as_evidence(env, units[0]))  # the same verifier twice
        if i % 5 == 0:
            bad = as_evidence(changed(registry, env, address=f"elsewhere {i}"), "220400-GA")
            evidence.append(bad)
            expect_conflicts.add(conflict_id(env.key, env.version, bad.record_id))
        expect_agree[env.key] = units
        # A third of the subjects: evidence before the authoritative value.
        records += [*evidence, env] if i % 3 == 0 else [env, *evidence]
    evidence_total = len(records) - len(subjects)
    send(producer, codec, records)

    def worker(name: str) -> WorkerProcess:
        s = dataclasses.replace(settings, metrics_port=_free_port(), batch_size=200)
        return WorkerProcess(s, name=f"{name}-{settings.app_id}").start()

    first = worker("v1")
    deadline = time.monotonic() + 180
    while (done := first.metric("xiangyun_verification_evidence_total{")) < evidence_total * 0.3:
        assert time.monotonic() < deadline, f"no verification progress past {done}"
        time.sleep(0.02)
    first.kill()  # SIGKILL mid-stream: open transactions, state on disk, batches in flight
    first.stop()
    assert done < evidence_total, "the kill came after the work was done"
    second = worker("v2")
    try:

        def complete() -> dict[bytes, list[dict[str, Any]]] | None:
            got = verified(settings, registry)
            finished = all(
                got.get(k, [{}])[-1].get("count") == len(units) for k, units in expect_agree.items()
            )
            return got if finished else None

        got = wait_for(complete, timeout=240, what="every subject verified")
        raised = wait_for(
            lambda: (
                (c := conflicts(settings, registry, PROVIDER))
                and {x["conflict_id"] for x in c} >= expect_conflicts
                and c
            ),
            timeout=120,
            what="every conflict",
        )
    finally:
        second.stop()
    for key, units in expect_agree.items():
        history = got[key]
        # One verified record per distinct verifier: nothing counted twice, nothing lost.
        # (Cities publish on their own topics: their order between topics may differ.)
        steps = [set(r["verifiers"]) for r in history]
        assert [len(x) for x in steps] == list(range(1, len(units) + 1)), key
        assert all(a < b for a, b in itertools.pairwise(steps)), key
        assert steps[-1] == set(units), key
        assert history[-1]["count"] == len(units)
    per_id = Counter(c["conflict_id"] for c in raised)
    assert set(per_id) == expect_conflicts
    assert all(n == 1 for n in per_id.values()), "a conflict raised twice"
    # Nothing is left waiting: every key got its authoritative value.
    pending: dict[bytes, bytes | None] = {}
    for key, value in read_all(settings, Topics.of(settings.streams).verification_pending):
        pending[key] = value
    assert not [k for k, v in pending.items() if v is not None]
