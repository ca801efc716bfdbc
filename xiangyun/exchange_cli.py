"""``xiangyun request`` and the exchange's verbs beside ``xiangyun exchange allowed``:
``subscribe``, ``unsubscribe``, ``revoke-subscription`` and ``subscriptions``.

Every verb speaks to a running worker through Kafka, as a department does: the request goes
to ``<prefix>.request.<DEPT>``, the answer comes back on ``<prefix>.reply.<DEPT>``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from streams.exchange.messages import Answer, AnswerDecision, ExchangeCodec
from streams.policy.legal import PolicyError
from streams.units.review import DATA_BUREAU
from xiangyun.settings import Settings

__all__ = ["add_exchange_parsers", "render_answer"]


def _asker(p: argparse.ArgumentParser, *, subjects: bool = True) -> None:
    p.add_argument("--as", dest="department", required=True, metavar="DEPT", help="220000-MZ")
    p.add_argument("--resource", required=True, metavar="ID", help="population.resident")
    if subjects:
        p.add_argument(
            "--subject", action="append", default=[], metavar="KEY", help="repeat for several"
        )
    p.add_argument("--purpose", required=True, metavar="DUTY", help="one of DEPT's duties")
    p.add_argument(
        "--fields", default="", metavar="F1,F2", help="fields wanted (default: all allowed)"
    )
    p.add_argument("--case", dest="case_id", metavar="ID", help="the case the request serves")
    p.add_argument("--official", metavar="ID", help="the acting official (default: your login)")
    p.add_argument("--approval", dest="approval_id", metavar="ID", help="bulk-copy approval")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per try (default 10)")
    p.add_argument("--json", action="store_true", help="print the answer as JSON")


def add_exchange_parsers(subparsers: Any, exchange_verbs: Any) -> None:
    """``xiangyun request`` and the exchange's subscription verbs."""
    r = subparsers.add_parser(
        "request",
        help="ask the exchange for subjects of a resource, as a department",
        description="Write a request to DEPT's request topic and print the exchange's answer: "
        "the records (masked as the policy says, with their provenance), or the refusal "
        "with its legal basis. Needs a running worker (`xiangyun worker`).",
    )
    _asker(r)
    r.set_defaults(handler=_run, verb_handler=_request)

    s = exchange_verbs.add_parser(
        "subscribe",
        help="subscribe a department to later changes of subjects (or of a region)",
        description="Every later change of a matching pool record reaches DEPT's reply topic, "
        "masked as the policy says at the time, until DEPT unsubscribes or the data bureau "
        "revokes it. A --region subscription is a bulk copy: it needs --approval.",
    )
    _asker(s)
    s.add_argument("--region", metavar="CODE", help="every subject collected in this region")
    s.set_defaults(handler=_run, verb_handler=_subscribe)

    u = exchange_verbs.add_parser(
        "unsubscribe", help="end one of a department's subscriptions", description="End ID."
    )
    u.add_argument("--as", dest="department", required=True, metavar="DEPT")
    u.add_argument("subscription_id", metavar="ID")
    u.add_argument("--reason", default="", help="why")
    u.add_argument("--timeout", type=float, default=10.0)
    u.add_argument("--json", action="store_true")
    u.set_defaults(handler=_run, verb_handler=_unsubscribe)

    v = exchange_verbs.add_parser(
        "revoke-subscription",
        help="revoke any subscription, as the data bureau",
        description=f"The data bureau ({DATA_BUREAU}) ends subscription ID at once.",
    )
    v.add_argument("subscription_id", metavar="ID")
    v.add_argument("--reason", required=True, help="why (kept in the subscription's record)")
    v.add_argument("--timeout", type=float, default=10.0)
    v.add_argument("--json", action="store_true")
    v.set_defaults(handler=_run, verb_handler=_revoke, department=DATA_BUREAU)

    ls = exchange_verbs.add_parser(
        "subscriptions",
        help="list subscriptions",
        description="Active subscriptions (--all: ended ones too), of DEPT or of everyone.",
    )
    ls.add_argument("--as", dest="department", metavar="DEPT", help="only DEPT's")
    ls.add_argument("--all", action="store_true", help="include ended subscriptions")
    ls.set_defaults(handler=_run, verb_handler=_subscriptions)


def _run(args: argparse.Namespace, settings: Settings) -> int:
    from connectors.exchange_client import ExchangeTimeout

    try:
        code: int = args.verb_handler(args, settings)
        return code
    except (PolicyError, ExchangeTimeout) as exc:
        print(f"xiangyun {args.command}: {exc}", file=sys.stderr)
        return 2


def _fields(raw: str) -> list[str]:
    return [f.strip() for f in raw.split(",") if f.strip()]


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%fZ")[:-4]


def render_answer(a: Answer) -> str:
    """An answer as a person reads it."""
    mark = {"ALLOWED": "✓", "REFUSED": "✗", "TIMEOUT": "⌛", "MALFORMED": "?"}[a.decision.value]
    out = [
        f"{mark} {a.decision.value} ({a.reason}) — {a.resource_id} for {a.purpose or '-'}, "
        f"asked by {a.requester}",
    ]
    if a.message:
        out.append(f"  {a.message}")
    if a.legal_basis:
        out.append(f"  legal basis: {a.legal_basis}")
    for r in a.records:
        if not r.found:
            out.append(f"\n  {r.subject_id}: not in the pool")
            continue
        out.append(f"\n  {r.subject_id}:")
        for k, v in r.fields.items():
            mask = f"  [{a.masks[k]}]" if k in a.masks else ""
            out.append(f"    {k:<22} {v if v is not None else '∅'}{mask}")
        p = r.provenance
        if p is not None:
            out.append(
                f"    — from {p['provider']} ({p['channel']}, region {p['region']}), version "
                f"{p['version']}, observed {_when(p['observed_at_ms'])}, accepted "
                f"{_when(p['accepted_at_ms'])}, {p['source_topic']}:{p['source_partition']}:"
                f"{p['source_offset']}, catalog v{p['catalog_version']}, verified by "
                f"{p['verification_count']}"
            )
    for k, basis in a.withheld.items():
        out.append(f"  withheld {k}: {basis[:80]}…")
    if a.subscription_id:
        out.append(f"  subscription: {a.subscription_id}")
    if a.decision is AnswerDecision.ALLOWED and a.usage_terms:
        out.append(f"\n  terms: {a.usage_terms}")
    fresh = ""
    if a.view_applied_at_ms is not None:
        fresh = f"; data as of {_when(a.view_applied_at_ms)}, {a.view_lag_records} behind"
    out.append(
        f"  policy {a.policy_version or '-'}; catalog {a.catalog_version or '-'}{fresh}; "
        f"decision {a.decision_id} at {_when(a.decided_at_ms)}"
    )
    return "\n".join(out)


def _print(a: Answer, as_json: bool) -> int:
    if as_json:
        print(json.dumps(a.to_json(), ensure_ascii=False, indent=2))
    else:
        print(render_answer(a))
    return 0 if a.decision is AnswerDecision.ALLOWED else 1


def _client(settings: Settings, department: str, official: str | None = None) -> Any:
    from connectors.exchange_client import ExchangeClient

    return ExchangeClient(settings.streams, department, official=official)


def _request(args: argparse.Namespace, settings: Settings) -> int:
    if not args.subject:
        raise PolicyError("name at least one --subject")
    with _client(settings, args.department, args.official) as client:
        answer = client.request(
            args.resource,
            args.subject,
            args.purpose,
            fields=_fields(args.fields),
            case_id=args.case_id,
            approval_id=args.approval_id,
            timeout=args.timeout,
        )
    return _print(answer, args.json)


def _subscribe(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.subject) == bool(args.region):
        raise PolicyError("name --subject KEY (one or more) or --region CODE, one of the two")
    with _client(settings, args.department, args.official) as client:
        answer = client.subscribe(
            args.resource,
            args.purpose,
            subjects=args.subject,
            region=args.region,
            fields=_fields(args.fields),
            case_id=args.case_id,
            approval_id=args.approval_id,
            timeout=args.timeout,
        )
    return _print(answer, args.json)


def _unsubscribe(args: argparse.Namespace, settings: Settings) -> int:
    with _client(settings, args.department) as client:
        answer = client.unsubscribe(args.subscription_id, args.reason, timeout=args.timeout)
    return _print(answer, args.json)


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    return _unsubscribe(args, settings)


def _subscriptions(args: argparse.Namespace, settings: Settings) -> int:
    from streams.audit.log import read_topic
    from streams.kafka.topics import Topics

    codec = ExchangeCodec(settings.schema_dir)
    latest = {}
    topic = Topics.of(settings.streams).exchange_subscriptions
    for _, value in read_topic(settings.kafka, topic, timeout=15):
        sub = codec.decode_subscription(value)
        latest[sub.subscription_id] = sub
    shown = [
        s
        for s in latest.values()
        if (args.all or s.active) and (not args.department or s.requester == args.department)
    ]
    if not shown:
        print("no subscriptions" + ("" if args.all else " active (--all lists ended ones)"))
        return 0
    print(
        f"{'id':<21} {'status':<12} {'requester':<11} {'resource':<32} {'purpose':<22} "
        f"{'subjects / region':<24} since"
    )
    for s in sorted(shown, key=lambda s: s.created_at_ms):
        scope = f"region {s.region}" if s.region else ",".join(s.subjects)[:24]
        print(
            f"{s.subscription_id:<21} {s.status.value:<12} {s.requester:<11} "
            f"{s.resource_id:<32} {s.purpose:<22} {scope:<24} {_when(s.created_at_ms)}"
        )
    return 0
