"""The end-to-end demo: sample records from several source systems through a real worker.

Each run has topics of its own (``<prefix>-demo-<run>``): the pools keep what they hold,
so a second run on the first run's topics would meet its own subjects again. The topics of
the previous demo are deleted when a new one starts; the latest stay for inspection.

Exit status 0 only when every published record has exactly one outcome and the outcomes
are the ones the generator expects, record kind by record kind: a share of the valid
records is published twice (collect once: the second copy is a ``DUPLICATE``), half of
them under a new record id (the same fact re-sent is still a duplicate).
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field

from connectors.consent import ConsentPublisher
from connectors.generator import SampleGenerator, SampleRecord
from connectors.producer import SourceProducer
from streams.kafka.catalog_store import CatalogStore
from streams.kafka.policy_store import PolicyStore
from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import Topics, ensure_department_topics, ensure_topics
from streams.wire.codec import SchemaRegistry
from streams.wire.envelope import EnvelopeCodec
from xiangyun.demo_exchange import DEPARTMENTS, ExchangeDemo, run_exchange_demo
from xiangyun.outcomes import OutcomeTally, count_outcomes, end_offsets, wait_for_no_lag
from xiangyun.processes import WorkerProcess
from xiangyun.settings import Settings
from xiangyun.stack import Stack
from xiangyun.units_cli import ensure_collect_topics

__all__ = ["DemoResult", "run_demo"]

EVIDENCE_SHARE = 0.02  # records a city unit sends for a provincial resource (article 20)
REPUBLISH_EVERY = 30  # one valid record in 30 is published again


@dataclass
class DemoResult:
    published: int
    expected: Counter[str]
    tally: OutcomeTally
    elapsed_s: float
    sources: Counter[str]
    exchange: ExchangeDemo | None = None
    checks: list[str] = field(default_factory=list)

    @property
    def outcomes_ok(self) -> bool:
        return self.tally.total == self.published and self.tally.counts == self.expected

    @property
    def ok(self) -> bool:
        return self.outcomes_ok and (self.exchange is None or self.exchange.ok)


def run_demo(
    settings: Settings,
    records: int = 20_000,
    broken_share: float = 0.05,
    seed: int | None = None,
    start_stack: bool = True,
    timeout: float = 300.0,
) -> DemoResult:
    if start_stack:
        Stack(settings).up()
    base = settings
    run_id = uuid.uuid4().hex[:6]
    settings = dataclasses.replace(
        base,
        topic_prefix=f"{base.topic_prefix}-demo-{run_id}",
        app_id=f"{base.app_id}-demo-{run_id}",
        # The exchange part asks for a bulk copy of a demo-sized pool, and shows keyed-hash
        # masks: a small threshold and a key of the demo's own (never a production key).
        policy_bulk_threshold=min(base.policy_bulk_threshold, 20),
        policy_mask_key=base.policy_mask_key or "demo-only-mask-key-not-for-production",
    )
    _forget_earlier_demos(base, keep=(settings.topic_prefix, settings.app_id))
    seed = seed if seed is not None else int.from_bytes(os.urandom(4), "big")
    print(f"demo topics {settings.topic_prefix}.*, generator seed {seed}", file=sys.stderr)
    topics = Topics.of(settings.streams)
    ensure_topics(settings.streams, topics)
    registry = SchemaRegistry.from_dir(settings.schema_dir)
    codec = EnvelopeCodec(registry, settings.schema_dir)
    # The worker follows the catalog topic: load the starter catalog if it is not there yet,
    # and make records for what is in force there (an operator may have changed it).
    with CatalogStore(settings.streams) as store:
        store.bootstrap()  # the unit register first, then the catalog
        ensure_collect_topics(settings)
    with PolicyStore(settings.streams) as policy:  # the starter sharing lists
        policy.bootstrap()
        gen = SampleGenerator(
            codec,
            store.current(),
            settings.schema_dir,
            seed=seed,
            broken_share=broken_share,
            spec_of=store.spec,
            evidence_share=EVIDENCE_SHARE,
            consents=True,
        )
    for department in DEPARTMENTS:
        ensure_department_topics(settings.streams, department)
    print(
        f"generating {records:,} sample records ({broken_share:.0%} deliberately broken, "
        f"{EVIDENCE_SHARE:.0%} from units that are not the provider) ...",
        file=sys.stderr,
    )
    sample = list(gen.records(records))
    latest = {r.key: r for r in sample if r.expected.startswith("accepted")}
    # Re-send each subject's current version (an older one would be STALE: it is).
    again = list(latest.values())[::REPUBLISH_EVERY]
    for i, r in enumerate(again):
        value = r.value if i % 2 == 0 else _new_record_id(codec, r.value)
        sample.append(
            SampleRecord(r.key, value, "superseded:DUPLICATE", r.source, "again", r.principal)
        )
    expected = Counter(r.expected for r in sample)
    sources = Counter(r.source for r in sample)

    schema_topic = SchemaTopic(settings.kafka, topics.schemas, registry)
    producer = SourceProducer(settings.streams, schema_topic)
    producer.register([*registry, *gen.extra_schemas])
    # Consents on record before the records that cite them (article 18).
    with ConsentPublisher(settings.streams, registry=registry) as consents:
        consents.grant(gen.consents())
    with WorkerProcess(settings, name="demo-worker") as worker:
        # Records left by an earlier, interrupted run are worked off before we count.
        wait_for_no_lag(settings, topics)
        start = end_offsets(settings, topics.outcomes)
        began = time.monotonic()
        producer.send_all(((r.principal, r.key, r.value) for r in sample), total=len(sample))
        tally = count_outcomes(
            settings,
            start,
            topics=topics,
            registry=registry,
            expected=len(sample),
            timeout=timeout,
        )
        elapsed = time.monotonic() - began
        if tally.total < len(sample):
            print(worker.log_tail(), file=sys.stderr)
        accepted = [r.key.decode().split("|", 1) for r in sample if r.kind == "valid"]
        residents = list(dict.fromkeys(s for rid, s in accepted if rid == "population.resident"))
        firms = list(dict.fromkeys(s for rid, s in accepted if rid == "legal_person.enterprise"))
        exchange = run_exchange_demo(settings, residents, firms)
        if not exchange.ok:
            print(worker.log_tail(), file=sys.stderr)
        checks = _verification_and_quality(settings)
    return DemoResult(len(sample), expected, tally, elapsed, sources, exchange, checks)


def render(result: DemoResult) -> str:
    t = result.tally
    lines = [
        "",
        "Xiangyun demo",
        f"  source systems      {len(result.sources)}",
        f"  records published   {result.published:,}",
        f"  outcomes read back  {t.total:,}",
    ]
    accepted = {k: v for k, v in sorted(t.counts.items()) if k.startswith("accepted:")}
    lines.append(f"  accepted            {sum(accepted.values()):,}")
    for k, v in accepted.items():
        lines.append(
            f"    {k.split(':', 1)[1]:<18}{v:>8,}   expected {result.expected.get(k, 0):,}"
        )
    lines.append(
        f"  verification        {t.counts.get('verification', 0):,}   expected "
        f"{result.expected.get('verification', 0):,}   (not the provider: evidence, not truth)"
    )
    superseded = {k: v for k, v in sorted(t.counts.items()) if k.startswith("superseded:")}
    lines.append(
        f"  superseded          {sum(superseded.values()):,}   "
        "(collected once: re-sent facts change nothing)"
    )
    for k, v in superseded.items():
        lines.append(
            f"    {k.split(':', 1)[1]:<18}{v:>8,}   expected {result.expected.get(k, 0):,}"
        )
    rejected = {k: v for k, v in sorted(t.counts.items()) if k.startswith("rejected:")}
    lines.append(f"  rejected            {sum(rejected.values()):,}")
    for k, v in rejected.items():
        lines.append(
            f"    {k.split(':', 1)[1]:<18}{v:>8,}   expected {result.expected.get(k, 0):,}"
        )
    missing = {k: v for k, v in result.expected.items() if t.counts.get(k, 0) != v}
    lines.append(
        f"  elapsed             {result.elapsed_s:.1f} s "
        f"({result.published / max(result.elapsed_s, 1e-9):,.0f} records/s end to end)"
    )
    lines += result.checks
    if result.exchange is not None:
        lines += result.exchange.lines
    if result.outcomes_ok:
        lines.append("  result              OK: every record has exactly one outcome, as expected")
    else:
        lines.append(
            f"  result              MISMATCH: {result.published - t.total:,} records "
            f"without an outcome; differing outcomes: {missing}"
        )
    if result.exchange is not None:
        if result.exchange.ok:
            lines.append("  exchange            OK: every answer as the policy says, log verified")
        else:
            lines.append(f"  exchange            FAILED: {'; '.join(result.exchange.failures)}")
    return "\n".join(lines)


def _new_record_id(codec: EnvelopeCodec, value: bytes) -> bytes:
    """The same fact under a new record id: a re-send the pool must still see as one."""
    env = codec.decode(value)
    return codec.encode(dataclasses.replace(env, record_id=str(uuid.uuid4())))


def _forget_earlier_demos(base: Settings, keep: tuple[str, str]) -> None:
    """Delete the topics (Faust's too) and Redis view of earlier demo runs on this prefix."""
    from confluent_kafka.admin import AdminClient

    from streams.views import PoolView

    admin = AdminClient(base.kafka.admin())
    stem, faust_stem = f"{base.topic_prefix}-demo-", f"{base.app_id}-demo-"
    every = admin.list_topics(timeout=10).topics
    names = [t for t in every if t.startswith(stem)]
    old = sorted({t.split(".", 1)[0] for t in names} - {keep[0]})
    names += [t for t in every if t.startswith(faust_stem) and not t.startswith(keep[1])]
    for prefix in old:
        try:
            PoolView(dataclasses.replace(base, topic_prefix=prefix).streams).flush()
        except Exception as exc:  # Redis away: its keys stay, the topics still go
            print(f"could not clear the view of {prefix}: {exc}", file=sys.stderr)
    doomed = [t for t in names if t.split(".", 1)[0] in old or t.startswith(faust_stem)]
    if doomed:
        for fut in admin.delete_topics(doomed, operation_timeout=30).values():
            try:
                fut.result(30)
            except Exception as exc:  # already gone, or deleted by a concurrent demo
                print(f"could not delete a topic of an earlier demo: {exc}", file=sys.stderr)


def _verification_and_quality(settings: Settings) -> list[str]:
    """Multi-source verification and data quality as the worker reports them (its
    /metrics): shown, not judged; the figures follow the records by a few seconds."""
    url = f"http://127.0.0.1:{settings.metrics_port}/metrics"
    samples: list[tuple[str, dict[str, str], float]] = []
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            text = resp.read().decode()
    except OSError as exc:
        return [f"  verification, quality  n/a ({exc})"]
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m is not None:
            labels = dict(_LABEL.findall(m["labels"] or ""))
            samples.append((m["name"], labels, float(m["value"])))

    def total(name: str, **want: str) -> float:
        return sum(
            v
            for n, lab, v in samples
            if n == name and all(lab.get(k) == x for k, x in want.items())
        )

    evidence = "xiangyun_verification_evidence_total"
    agree, disagree = total(evidence, outcome="agree"), total(evidence, outcome="disagree")
    waiting = total("xiangyun_verification_pending")
    conflicts = total("xiangyun_verification_conflicts_open")
    lines = [
        f"  verification        evidence agreeing {agree:,.0f}, disagreeing {disagree:,.0f}, "
        f"waiting for an authoritative value {waiting:,.0f}; open conflicts {conflicts:,.0f} "
        "(`xiangyun conflicts list`)"
    ]
    validity = [
        (v, lab.get("resource", "?"), lab.get("unit", "?"))
        for n, lab, v in samples
        if n == "xiangyun_quality_validity_ratio"
        and v == v  # NaN: nothing to measure
        and not lab.get("resource", "(").startswith("(")  # broken beyond a resource
    ]
    if validity:
        worst = sorted(validity)[:3]
        shown = ", ".join(f"{r} from {u} {v:.0%}" for v, r, u in worst)
        lines.append(f"  quality             lowest validity: {shown} (`xiangyun quality`)")
    else:
        lines.append("  quality             not measured yet (`xiangyun quality`)")
    return lines


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][\w:]*)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
