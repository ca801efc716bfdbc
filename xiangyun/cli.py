"""The ``xiangyun`` command line: stack, worker, demo, bench, topics, config, catalog, units,
pools, audit, policy, approvals, exchange, quality, conflicts."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from xiangyun.audit_cli import add_audit_parser
from xiangyun.catalog_cli import add_catalog_parser, bootstrap_catalog
from xiangyun.conflicts_cli import add_conflicts_parser
from xiangyun.exchange_cli import add_exchange_parsers
from xiangyun.policy_cli import add_policy_parsers, bootstrap_policy
from xiangyun.pools_cli import add_pools_parser
from xiangyun.quality_cli import add_quality_parser
from xiangyun.settings import ConfigError, Settings
from xiangyun.units_cli import add_units_parser, bootstrap_units

__all__ = ["main"]

Handler = Callable[[argparse.Namespace, Settings], int]


def _stack(args: argparse.Namespace, settings: Settings) -> int:
    from xiangyun.stack import Stack

    stack = Stack(settings)
    if args.verb == "up":
        statuses = stack.up()
    elif args.verb == "down":
        stopped = stack.down()
        print("stopped: " + (", ".join(stopped) if stopped else "nothing of ours was running"))
        return 0
    else:
        statuses = stack.status()
    print(f"{'service':<11} {'state':<5} {'address':<22} owner")
    for st in statuses:
        print(st.line())
    print(f"state folder: {settings.state_dir}")
    ok = all(st.answering for st in statuses)
    if ok and args.verb == "up":
        # Workers only follow the catalog topic: make sure it holds the starter catalog,
        # the unit register the catalog is checked against (units first), and the policy
        # topic the starter sharing lists.
        print(bootstrap_units(settings))
        print(bootstrap_catalog(settings))
        print(bootstrap_policy(settings))
    return 0 if ok else 1


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from streams.app import run_worker

    run_worker(settings.streams)
    return 0


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from streams.kafka.topics import Topics
    from xiangyun.units_cli import ensure_collect_topics

    topics = Topics.of(settings.streams)
    principals = ensure_collect_topics(settings)
    for name, conf in topics.all().items():
        print(f"{name:<40} {conf or ''}")
    for principal in principals:
        print(f"{topics.collect(principal):<40} (collect topic of {principal})")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from xiangyun.demo import render, run_demo

    result = run_demo(
        settings,
        records=args.records,
        broken_share=args.broken_share,
        seed=args.seed,
        start_stack=not args.no_stack,
    )
    print(render(result))
    if not args.no_stack:
        print("\nThe stack keeps running; `xiangyun stack down` stops it.")
    return 0 if result.ok else 1


def _bench(args: argparse.Namespace, settings: Settings) -> int:
    from xiangyun.bench import render, render_province, run_bench, run_province

    if args.records < 1 or args.runs < 1 or args.subjects < 1:
        print(
            "xiangyun bench: --records, --runs and --subjects must be at least 1", file=sys.stderr
        )
        return 2
    if args.province:
        print(render_province(run_province(settings, args.subjects, not args.no_stack)))
        return 0
    result = run_bench(
        settings,
        records=args.records,
        runs=args.runs,
        start_stack=not args.no_stack,
        keep_topics=args.keep_topics,
    )
    print(render(result))
    return 0 if result.complete else 1


def _config(args: argparse.Namespace, settings: Settings) -> int:
    for k, v in settings.describe().items():
        print(f"{k}={v}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="xiangyun",
        description="Xiangyun (祥云): an event-driven exchange for a province's public data on "
        "Apache Kafka. Configuration: XIANGYUN_* environment variables "
        "(`xiangyun config` lists them).",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "stack",
        help="start, stop or show the local Kafka, Redis and Prometheus",
        description="The local stack without Docker. `up` installs what is "
        "missing and waits until every service answers.",
    )
    s.add_argument("verb", choices=["up", "down", "status"])
    s.set_defaults(handler=_stack)

    w = sub.add_parser("worker", help="run a Faust worker (ingest agent, metrics endpoint)")
    w.set_defaults(handler=_worker)

    t = sub.add_parser("topics", help="create missing topics and list them")
    t.set_defaults(handler=_topics)

    d = sub.add_parser("demo", help="end-to-end demo on sample data; exits 1 if counts differ")
    d.add_argument("--records", type=int, default=20_000, help="sample records (default 20000)")
    d.add_argument(
        "--broken-share",
        type=float,
        default=0.05,
        help="share of deliberately broken records (default 0.05)",
    )
    d.add_argument("--seed", type=int, default=None, help="generator seed (default: a new one)")
    d.add_argument("--no-stack", action="store_true", help="do not start the local stack")
    d.set_defaults(handler=_demo)

    b = sub.add_parser(
        "bench",
        help="ingest throughput against a raw Kafka pipe",
        description="Per run, on its own topics: (a) a raw consume/re-produce pipe, at least "
        "once, (t) the same pipe in Kafka transactions, (b) a real worker deciding, "
        "deduplicating and routing the same records exactly once, (c) the materializer "
        "replaying the pools into Redis; plus the pool state's bytes per key. Reports "
        "min/median/max of every rate and of the per-run ratios; deletes every topic it "
        "created. `--province` runs the province-scale test instead (24 million residents; "
        "not in the tests). See BENCHMARKS.md.",
    )
    # the defaults' one home; every command pays the import (about 0.1 s)
    from xiangyun.bench import DEFAULT_RECORDS, DEFAULT_RUNS

    b.add_argument(
        "--records",
        type=int,
        default=DEFAULT_RECORDS,
        help=f"records per run (default {DEFAULT_RECORDS})",
    )
    b.add_argument(
        "--runs",
        type=int,
        default=DEFAULT_RUNS,
        help=f"runs, each of every loop; (b) and (g) take turns going first, so an even "
        f"number is fair to both (default {DEFAULT_RUNS})",
    )
    b.add_argument("--no-stack", action="store_true", help="do not start the local stack")
    b.add_argument(
        "--keep-topics", action="store_true", help="keep the benchmark's topics for inspection"
    )
    b.add_argument(
        "--province",
        action="store_true",
        help="province scale: --subjects residents through ingest into the pool and Redis",
    )
    b.add_argument(
        "--subjects",
        type=int,
        default=24_000_000,
        help="residents for --province (default 24000000)",
    )
    b.set_defaults(handler=_bench)

    c = sub.add_parser("config", help="print every setting and its current value")
    c.set_defaults(handler=_config)

    add_catalog_parser(sub)
    add_units_parser(sub)
    add_pools_parser(sub)
    add_audit_parser(sub)
    add_exchange_parsers(sub, add_policy_parsers(sub))
    add_quality_parser(sub)
    add_conflicts_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _main(argv)
        sys.stdout.flush()  # here, not at exit, so a closed pipe is caught below
        return code
    except BrokenPipeError:
        # The reader went away (`xiangyun catalog show ID | head`): stop quietly. Python
        # flushes stdout once more at exit; pointed at devnull, that flush cannot fail.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"xiangyun: configuration error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.handler
    try:
        return handler(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from xiangyun.stack import StackError

        if isinstance(exc, StackError | ConfigError):
            print(f"xiangyun: {exc}", file=sys.stderr)
            return 2
        raise
