"""``xiangyun pools``: the Redis views of the resource pools from the command line.

``get`` shows a subject's current record with its provenance, ``stats`` what the view holds
and how fresh it is, ``rebuild`` replaces the view by a replay of the pool topics. Every verb
reads the view of ``XIANGYUN_TOPIC_PREFIX`` in ``XIANGYUN_REDIS_URL``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from typing import Any

from streams.kafka.schema_topic import SchemaTopic
from streams.kafka.topics import Topics
from streams.views import Freshness, Materializer, PoolView, Progress, ViewStats
from streams.wire.codec import SchemaRegistry
from xiangyun.settings import Settings

__all__ = ["add_pools_parser", "render_record", "run_pools"]

#: seconds to wait for Kafka's schema topic before payloads are shown undecoded
CLI_TIMEOUT = 15.0


def add_pools_parser(subparsers: Any) -> None:
    """Add ``pools`` and its verbs to the ``xiangyun`` command's subparsers."""
    p = subparsers.add_parser(
        "pools",
        help="the Redis views of the resource pools: get, stats, rebuild",
        description="Each resource pool's current records, kept in Redis by the worker's "
        "materializer from the pool topics (read committed), keyed by resource and subject.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    g = verbs.add_parser(
        "get",
        help="show a subject's current record with its provenance",
        description="The current record of SUBJECT in RESOURCE as the view holds it: version, "
        "who collected it, when and through which channel, where it came from, the catalog "
        "version it was checked against, and the record itself. Exits 1 if there is none.",
    )
    g.add_argument("resource_id", metavar="RESOURCE", help="resource id, e.g. population.resident")
    g.add_argument("subject_id", metavar="SUBJECT", help="subject id, e.g. a citizen id")
    g.add_argument("--json", action="store_true", help="print the record as JSON")

    sh = verbs.add_parser(
        "list",
        help="a region's own share of a pool (a city reads what its units collected)",
        description="The current records of RESOURCE collected in --region or, for a city, "
        "in its districts (article 20: cities pre-aggregate and forward; each reads its own "
        "share). One line per record; --json for every field.",
    )
    sh.add_argument("resource_id", metavar="RESOURCE", help="resource id, e.g. population.resident")
    sh.add_argument(
        "--region", required=True, help="GB/T 2260 code: a city (220100) or 220000 for all"
    )
    sh.add_argument("--limit", type=int, default=20, help="at most this many records (20)")
    sh.add_argument("--json", action="store_true", help="print the records as JSON lines")

    s = verbs.add_parser(
        "stats",
        help="records per pool and resource, memory per record, freshness, digest",
        description="What the view holds: records per pool and resource, Redis memory per "
        "record (MEMORY USAGE of the view's keys), how far it is behind the pool topics, when "
        "it last applied a batch, and its digest (equal digests: equal content).",
    )
    s.add_argument("--no-digest", action="store_true", help="skip the digest (a full scan)")
    s.add_argument(
        "--accounting",
        action="store_true",
        help="also account for every published record, per resource and source unit, from "
        "Kafka: published = accepted + duplicate + stale + conflict + evidence + rejected "
        "(reads the collect and outcome topics; exits 1 if it does not add up)",
    )

    r = verbs.add_parser(
        "rebuild",
        help="delete the view and replay the pool topics into it",
        description="Delete the view's own keys in Redis (its state first; other keys of the "
        "database are left alone), then replay every pool topic from the beginning, printing "
        "progress. A running worker notices and follows the new view.",
    )
    r.add_argument(
        "--timeout", type=float, default=600.0, metavar="SECONDS", help="give up after (600)"
    )

    p.set_defaults(handler=run_pools)


def run_pools(args: argparse.Namespace, settings: Settings) -> int:
    handler = {"get": _get, "list": _list, "stats": _stats, "rebuild": _rebuild}[args.verb]
    return handler(args, settings)


def _registry(settings: Settings) -> SchemaRegistry:
    """The schema files, and what the schemas topic adds (best effort: without Kafka the
    payloads of file schemas are still decoded)."""
    registry = SchemaRegistry.from_dir(settings.schema_dir)
    topic = SchemaTopic(settings.kafka, Topics.of(settings.streams).schemas, registry)
    try:
        topic.follow(CLI_TIMEOUT)
    except Exception as exc:  # no schemas topic or no Kafka: file schemas only
        print(f"(schemas topic not read: {exc})", file=sys.stderr)
    finally:
        topic.close()
    return registry


# -- get -----------------------------------------------------------------------------------


def _get(args: argparse.Namespace, settings: Settings) -> int:
    view = PoolView(settings.streams, _registry(settings))
    rec = view.get(args.resource_id, args.subject_id)
    if rec is None:
        gen = view.generation()
        why = "the view is empty" if gen is None else "no current record"
        print(f"{args.resource_id} {args.subject_id}: {why}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(_jsonable(rec), ensure_ascii=False, indent=2))
    else:
        print(render_record(rec))
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    if args.limit < 1:
        print("xiangyun pools list: --limit must be at least 1", file=sys.stderr)
        return 2
    view = PoolView(settings.streams, _registry(settings))
    n = 0
    for rec in view.share(args.resource_id, args.region, args.limit):
        n += 1
        if args.json:
            print(json.dumps(_jsonable(rec), ensure_ascii=False))
        else:
            print(
                f"{rec['subject_id']:<24} v{rec['version']:<6} {rec['provider']:<18} "
                f"region {rec['region']}  via {rec.get('principal') or '?'}  "
                f"observed {_when(rec['observed_at_ms'])}"
            )
    if not n:
        print(f"{args.resource_id}: no records collected in {args.region}", file=sys.stderr)
    return 0


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%fZ")[:-4] + "Z"


def render_record(rec: dict[str, Any]) -> str:
    """A pool record with its provenance, for people."""
    verified = rec["verification_count"]
    lines = [
        f"{rec['resource_id']}  subject {rec['subject_id']}",
        f"  version         {rec['version']}, observed {_when(rec['observed_at_ms'])}",
        f"  collected by    {rec['provider']} (region {rec['region']}), channel {rec['channel']}",
        f"  consent         {rec['consent_ref'] or '-'}",
        f"  accepted        {_when(rec['accepted_at_ms'])}, against catalog version "
        f"{rec['catalog_version']}",
        f"  from            {rec['source_topic']} partition {rec['source_partition']} "
        f"offset {rec['source_offset']}, record id {rec['record_id']}",
        f"  fingerprint     {rec['content_fingerprint'].hex()}",
        f"  verified by     {verified} other source{'s' if verified != 1 else ''}"
        + (f": {', '.join(rec['verifiers'])}" if rec.get("verifiers") else ""),
    ]
    if rec.get("payload") is None:
        lines.append(f"record ({len(rec['payload_bytes'])} bytes, not decoded):")
        lines.append(f"  {rec.get('payload_error', '')}")
    else:
        lines.append(f"record ({rec['payload_schema']}):")
        width = max((len(k) for k in rec["payload"]), default=0)
        for k, v in rec["payload"].items():
            shown = "-" if v is None else v if isinstance(v, str) else json.dumps(v)
            lines.append(f"  {k:<{width}}  {shown}")
    return "\n".join(lines)


# -- stats ---------------------------------------------------------------------------------


def render_freshness(f: Freshness) -> list[str]:
    if f.generation is None:
        return ["freshness: no view in Redis (a worker builds it; or `xiangyun pools rebuild`)"]
    age = "never" if f.age_s is None else f"{f.age_s:.1f} s ago"
    state = "current" if f.current else f"{f.behind} records behind"
    out = [f"freshness: last batch applied {age}; {state}"]
    out += [f"  {t}: {n} behind" for t, n in sorted(f.lag.items()) if n]
    return out


def render_stats(stats: ViewStats, settings: Settings) -> list[str]:
    head = f"view {(stats.generation and 'generation ' + stats.generation) or '(none)'}"
    lines = [f"{head} in {settings.redis_url}, topics {settings.topic_prefix}.pool.*"]
    rows = [
        (
            r.pool,
            r.resource_id,
            str(r.records),
            f"{r.memory_bytes / r.records:.0f}" if r.records else "-",
        )
        for r in sorted(stats.resources, key=lambda r: (r.pool, r.resource_id))
    ]
    header = ("pool", "resource", "records", "bytes/record")
    widths = [max(len(x) for x in col) for col in zip(header, *rows, strict=False)]
    for row in (header, *rows):
        cells = [
            v.ljust(w) if i < 2 else v.rjust(w)
            for i, (v, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    for pool, n in sorted(stats.per_pool().items()):
        lines.append(f"pool {pool}: {n} records")
    lines.append(
        f"total: {stats.records} records in {stats.keys} keys, {stats.memory_bytes} bytes "
        f"({stats.bytes_per_record:.0f} bytes per record)"
    )
    return lines


def _stats(args: argparse.Namespace, settings: Settings) -> int:
    view = PoolView(settings.streams)
    for line in render_stats(view.stats(), settings):
        print(line)
    for line in render_freshness(view.freshness()):
        print(line)
    if not args.no_digest:
        print(f"digest: {view.digest():016x}")
    if args.accounting:
        from streams.kafka.topics import Topics
        from xiangyun.outcomes import account

        books = account(settings, Topics.of(settings.streams))
        print()
        for line in books.render():
            print(line)
        return 0 if books.balanced else 1
    return 0


# -- rebuild -------------------------------------------------------------------------------


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    registry = _registry(settings)
    view = PoolView(settings.streams, registry)
    deleted = view.flush()
    print(f"deleted {deleted} keys of the view")
    started = time.monotonic()

    def show(p: Progress) -> None:
        behind = sum(p.lag.values())
        print(f"  {p.records} records applied in {p.batches} batches, {behind} behind", flush=True)

    with Materializer(settings.streams, registry) as m:
        done = m.catch_up(args.timeout, progress=show)
    took = time.monotonic() - started
    if not done.caught_up:
        print(f"not caught up after {args.timeout:.0f} s: {sum(done.lag.values())} behind")
        return 1
    stats = view.stats()
    print(
        f"rebuilt in {took:.1f} s: {stats.records} records, "
        f"{stats.bytes_per_record:.0f} bytes per record; digest {view.digest():016x}"
    )
    return 0
