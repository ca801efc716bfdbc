"""``xiangyun conflicts``: conflicts raised by multi-source verification (多源校核), and
their resolution by the providing unit.

``list`` shows conflicts (of one providing unit, open ones only), ``show`` one with both
values of every differing field, ``resolve`` accepts or dismisses one as a unit: only the
provider the conflict was raised with, or the data bureau, may; an unknown or already
resolved conflict is refused (exit 1).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

from streams.verification.conflicts import ConflictRefused, ConflictStore
from xiangyun.settings import Settings

__all__ = ["add_conflicts_parser", "render_conflict", "run_conflicts"]


def add_conflicts_parser(subparsers: Any) -> None:
    """Add ``conflicts`` and its verbs to the ``xiangyun`` command's subparsers."""
    p = subparsers.add_parser(
        "conflicts",
        help="conflicts between evidence and the pools: list, show, resolve",
        description="Evidence from a registered unit that disagrees with a resource's "
        "authoritative value raises a conflict with the resource's provider, on its own "
        "conflict topic. The provider accepts it (a new authoritative version follows) or "
        "dismisses it with a reason.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    ls = verbs.add_parser("list", help="conflicts, oldest first")
    ls.add_argument("--unit", metavar="CODE", help="only those raised with this provider")
    ls.add_argument("--open", action="store_true", help="only open conflicts")
    ls.add_argument("--json", action="store_true", help="print JSON lines")

    sh = verbs.add_parser("show", help="one conflict with both values of each field")
    sh.add_argument("conflict_id", metavar="ID")
    sh.add_argument("--json", action="store_true", help="print the conflict as JSON")

    rs = verbs.add_parser(
        "resolve",
        help="accept or dismiss a conflict (its provider or the data bureau)",
        description="Write the resolution of conflict ID. Refused (exit 1) for an unknown "
        "conflict, one already resolved, or a unit other than its provider and the data "
        "bureau.",
    )
    rs.add_argument("conflict_id", metavar="ID")
    how = rs.add_mutually_exclusive_group(required=True)
    how.add_argument("--accept", action="store_true", help="the evidence is right")
    how.add_argument("--dismiss", action="store_true", help="the authoritative value stands")
    rs.add_argument("--reason", required=True, metavar="TEXT", help="why (kept with it)")
    rs.add_argument("--as", dest="unit", required=True, metavar="UNIT", help="resolving unit")

    p.set_defaults(handler=run_conflicts)


def run_conflicts(args: argparse.Namespace, settings: Settings) -> int:
    store = ConflictStore(settings.streams)
    if args.verb == "resolve":
        status = "accepted" if args.accept else "dismissed"
        try:
            res = store.resolve(args.conflict_id, status, args.reason, args.unit)
        except ConflictRefused as exc:
            print(f"xiangyun conflicts resolve: {exc}", file=sys.stderr)
            return 1
        print(f"conflict {res['conflict_id']} {res['status']} by {res['resolved_by']}")
        return 0
    book = store.read()
    if args.verb == "show":
        conflict = book.view(args.conflict_id)
        if conflict is None:
            print(f"xiangyun conflicts show: no conflict {args.conflict_id!r}", file=sys.stderr)
            return 1
        print(
            json.dumps(conflict, ensure_ascii=False, indent=2)
            if args.json
            else render_conflict(conflict)
        )
        return 0
    rows = book.listing(args.unit, args.open)
    if args.json:
        for c in rows:
            print(json.dumps(c, ensure_ascii=False))
        return 0
    print(f"{'conflict':<32}  {'status':<9} {'provider':<12} {'verifier':<12} raised  resource")
    for c in rows:
        print(
            f"{c['conflict_id']:<32}  {c['status']:<9} {c['authoritative']['provider']:<12} "
            f"{c['evidence']['provider']:<12} {_when(c['raised_at_ms'])}  "
            f"{c['resource_id']} {c['subject_id']} ({', '.join(c['fields'])})"
        )
    print(f"{len(rows)} conflict{'s' if len(rows) != 1 else ''}")
    return 0


def _when(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M")


def render_conflict(c: dict[str, Any]) -> str:
    a, e = c["authoritative"], c["evidence"]
    lines = [
        f"conflict {c['conflict_id']}  {c['status']}",
        f"  subject        {c['resource_id']} {c['subject_id']}",
        f"  authoritative  {a['provider']} version {a['version']}, record {a['record_id']} "
        f"({a['pool_topic']} partition {a['pool_partition']} offset {a['pool_offset']})",
        f"  evidence       {e['provider']} (region {e['region']}), record {e['record_id']}, "
        f"observed {_when(e['observed_at_ms'])}",
        f"  raised         {_when(c['raised_at_ms'])}",
    ]
    width = max((len(f) for f in c["fields"]), default=0)
    for f in c["fields"]:
        lines.append(f"  {f:<{width}}  {a['values'].get(f)}  ≠  {e['values'].get(f)}")
    res = c.get("resolution")
    if res:
        lines.append(
            f"  resolution     {res['status']} by {res['resolved_by']} at {_when(res['at_ms'])}: "
            f"{res['reason']}"
        )
    return "\n".join(lines)
