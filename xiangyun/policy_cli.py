"""``xiangyun policy``, ``xiangyun approvals`` and ``xiangyun exchange allowed``.

The sharing lists (responsibility, demand, negative; the province's and each city's) and the
bulk-copy approvals are kept in Kafka (``XIANGYUN_TOPIC_PREFIX``.policy and its change log).
Departments submit lists, the data bureau reviews them; the data bureau grants and revokes
approvals; anyone asks what a department may get.
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import sys
from pathlib import Path
from typing import Any

import yaml

from streams.catalog.model import CatalogError
from streams.catalog.review import DATA_BUREAU
from streams.kafka.catalog_store import CatalogStore, CatalogUnavailable
from streams.kafka.policy_store import PolicyStore, PolicyUnavailable, catalog_fields
from streams.policy.approvals import Approval
from streams.policy.decision import Request, decide
from streams.policy.legal import PolicyError
from streams.policy.model import ListKind, department_region, list_key, load_lists
from streams.policy.review import PolicyHistory
from xiangyun.settings import Settings

__all__ = ["add_policy_parsers", "bootstrap_policy"]

#: seconds to wait for Kafka before a verb gives up with a message
CLI_TIMEOUT = 15.0
_KINDS = [k.value for k in ListKind]


def add_policy_parsers(subparsers: Any) -> Any:
    """Add ``policy``, ``approvals`` and ``exchange`` to the ``xiangyun`` subparsers; the
    verbs of ``exchange``, for the exchange's own verbs (:mod:`xiangyun.exchange_cli`)."""
    _add_policy(subparsers)
    _add_approvals(subparsers)
    return _add_exchange(subparsers)


def _add_policy(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "policy",
        help="the sharing lists: list, show, submit, review, bootstrap",
        description="The sharing responsibility, demand and negative lists (共享责任清单、"
        "需求清单、负面清单) of the province and of each city, kept in Kafka with versions, "
        "review by the data bureau and history. A city's lists may add restrictions to the "
        "province's, never lift one: such a list is refused.",
    )
    verbs = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    ls = verbs.add_parser(
        "list", help="one line per list", description="Each list: version in force, pending."
    )
    ls.set_defaults(handler=run_policy, verb_handler=_policy_list)

    sh = verbs.add_parser(
        "show",
        help="show a list in force and its history",
        description="Print the version in force of REGION's KIND list (YAML), the pending "
        "version if any, and every change.",
    )
    sh.add_argument("region", metavar="REGION", help="220000 (the province) or a city code")
    sh.add_argument("kind", metavar="KIND", choices=_KINDS, help=" | ".join(_KINDS))
    sh.add_argument("--pending", action="store_true", help="print the pending version instead")
    sh.set_defaults(handler=run_policy, verb_handler=_policy_show)

    s = verbs.add_parser(
        "submit",
        help="submit lists from a YAML or JSON file for review",
        description="Submit the lists in FILE (one list, or a YAML list of lists: kind, "
        "region, entries) for review by the data bureau. All or none; a city list that would "
        "lift a provincial restriction is refused with the entries at fault.",
    )
    s.add_argument("file", type=Path, metavar="FILE", help="YAML or JSON policy lists")
    s.add_argument(
        "--as", dest="actor", required=True, metavar="ACTOR", help="who submits, e.g. 220100-MZ"
    )
    s.set_defaults(handler=run_policy, verb_handler=_policy_submit)

    r = verbs.add_parser(
        "review",
        help="approve or reject a submitted list",
        description="Approve (put in force) or reject the pending version of REGION's KIND list.",
    )
    r.add_argument("region", metavar="REGION", help="220000 or a city code")
    r.add_argument("kind", metavar="KIND", choices=_KINDS, help=" | ".join(_KINDS))
    d = r.add_mutually_exclusive_group(required=True)
    d.add_argument("--approve", dest="decision", action="store_const", const="approve")
    d.add_argument("--reject", dest="decision", action="store_const", const="reject")
    r.add_argument("--reason", required=True, metavar="TEXT", help="why (kept in the history)")
    r.add_argument(
        "--as",
        dest="actor",
        default=DATA_BUREAU,
        metavar="ACTOR",
        help=f"the reviewer (default: the data bureau, {DATA_BUREAU})",
    )
    r.set_defaults(handler=run_policy, verb_handler=_policy_review)

    b = verbs.add_parser(
        "bootstrap",
        help="load the starter lists",
        description="Submit and approve the starter lists (XIANGYUN_POLICY_DIR) not yet in "
        "Kafka; lists already there are left alone, so a second run writes nothing.",
    )
    b.add_argument("--dir", type=Path, metavar="DIR", help="another folder of lists")
    b.set_defaults(handler=run_policy, verb_handler=_policy_bootstrap)


def _add_approvals(subparsers: Any) -> None:
    a = subparsers.add_parser(
        "approvals",
        help="bulk-copy approvals: grant, revoke, list",
        description="A bulk copy (a whole pool, or more subjects than "
        "XIANGYUN_POLICY_BULK_THRESHOLD) needs an approval on record: requester, resource, "
        "scope, purpose, quota, expiry, granted by. Revocation takes effect at once; every "
        "use is counted against the quota.",
    )
    verbs = a.add_subparsers(dest="verb", required=True, metavar="VERB")
    g = verbs.add_parser("grant", help="grant an approval", description="Grant an approval.")
    g.add_argument("--requester", required=True, metavar="DEPT", help="e.g. 220000-TJ")
    g.add_argument("--resource", required=True, metavar="ID", help="catalog resource id")
    g.add_argument("--purpose", required=True, metavar="DUTY", help="one of the requester's duties")
    g.add_argument("--quota", type=int, required=True, metavar="N", help="uses it allows")
    g.add_argument("--days", type=float, required=True, metavar="DAYS", help="valid for DAYS")
    g.add_argument(
        "--max-subjects",
        type=int,
        metavar="N",
        help="at most N subjects per request (default: the whole pool)",
    )
    g.add_argument("--id", metavar="ID", help="approval id (default: generated)")
    g.add_argument("--note", default="", metavar="TEXT", help="e.g. the case file number")
    g.add_argument("--as", dest="actor", default=DATA_BUREAU, metavar="ACTOR", help="who grants it")
    g.set_defaults(handler=run_policy, verb_handler=_approvals_grant)

    r = verbs.add_parser("revoke", help="revoke an approval at once", description="Revoke ID.")
    r.add_argument("approval_id", metavar="ID")
    r.add_argument("--reason", required=True, metavar="TEXT", help="why (kept in the history)")
    r.add_argument("--as", dest="actor", default=DATA_BUREAU, metavar="ACTOR")
    r.set_defaults(handler=run_policy, verb_handler=_approvals_revoke)

    ls = verbs.add_parser(
        "list",
        help="list approvals",
        description="Active approvals with their uses; --all adds expired, revoked, exhausted.",
    )
    ls.add_argument("--all", action="store_true", help="include approvals no longer active")
    ls.set_defaults(handler=run_policy, verb_handler=_approvals_list)


def _add_exchange(subparsers: Any) -> Any:
    e = subparsers.add_parser(
        "exchange",
        help="what a department may get",
        description="Questions to the exchange's sharing policy.",
    )
    verbs = e.add_subparsers(dest="verb", required=True, metavar="VERB")
    a = verbs.add_parser(
        "allowed",
        help="list what a department may get, field by field",
        description="Per resource in force and per duty of DEPT (or --purpose): the fields it "
        "gets clear, masked (with the mask) or withheld (with the legal basis), and the "
        "conditions. Resources it may not get are listed with --all, with the reason.",
    )
    a.add_argument("--as", dest="department", required=True, metavar="DEPT", help="220000-MZ")
    a.add_argument("--purpose", metavar="DUTY", help="one duty (default: each of its duties)")
    a.add_argument("--all", action="store_true", help="also list refusals with their basis")
    a.set_defaults(handler=run_policy, verb_handler=_exchange_allowed)
    return verbs


# -- running -------------------------------------------------------------------------------


def run_policy(args: argparse.Namespace, settings: Settings) -> int:
    try:
        code: int = args.verb_handler(args, settings)
        return code
    except (PolicyError, PolicyUnavailable, CatalogError, CatalogUnavailable) as exc:
        print(f"xiangyun {args.command} {args.verb}: {exc}", file=sys.stderr)
        return 2


def _store(settings: Settings) -> PolicyStore:
    return PolicyStore(settings.streams, timeout=CLI_TIMEOUT)


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%MZ")


def _policy_list(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings).start() as store:
        states = [s for s in store.states() if s.key.startswith("list/")]
    if not states:
        print("no lists yet: run `xiangyun policy bootstrap`")
        return 0
    print(f"{'region':<7} {'kind':<15} {'in force':<9} {'pending':<8} entries")
    for st in states:
        _, region, kind = st.key.split("/")
        live = st.in_force
        print(
            f"{region:<7} {kind:<15} {('v' + str(live.version)) if live else '-':<9} "
            f"{('v' + str(st.pending.version)) if st.pending else '-':<8} "
            f"{len(live.entries) if live else 0}"
        )
    return 0


def _history_lines(history: PolicyHistory | None) -> list[str]:
    out = ["history:"]
    for ev in history.events if history else ():
        line = f"  #{ev.seq:<3} {_when(ev.at_ms)}  {ev.actor:<12} {ev.action.value:<9}"
        if ev.version:
            line += f" v{ev.version}"
        if ev.approval is not None:
            line += f" uses {ev.approval.uses}/{ev.approval.quota}"
        if ev.reason:
            line += f"  {ev.reason}"
        out.append(line)
    return out


def _policy_show(args: argparse.Namespace, settings: Settings) -> int:
    key = list_key(args.region, ListKind(args.kind))
    with _store(settings).start() as store:
        st = store.state(key)
        if st is None:
            print(
                f"xiangyun policy show: no {args.kind} list for {args.region}; "
                "`xiangyun policy list` shows the lists there are",
                file=sys.stderr,
            )
            return 1
        history = store.history(key)
    doc = st.pending if args.pending else st.in_force
    label = "pending" if args.pending else "in force"
    if doc is None:
        print(f"# no version {label}")
    else:
        print(f"# {doc.label} ({label})")
        print(yaml.safe_dump(doc.to_mapping(), allow_unicode=True, sort_keys=False), end="")
    print("\n".join(_history_lines(history)))
    return 0


def _policy_submit(args: argparse.Namespace, settings: Settings) -> int:
    lists = load_lists(args.file)
    with _store(settings) as store:
        events = store.submit(lists, args.actor)
    for ev in events:
        print(f"{ev.key}: version {ev.version} submitted by {ev.actor}; awaiting review")
    return 0


def _policy_review(args: argparse.Namespace, settings: Settings) -> int:
    key = list_key(args.region, ListKind(args.kind))
    with _store(settings) as store:
        if args.decision == "approve":
            ev = store.approve(key, args.reason, actor=args.actor)
        else:
            ev = store.reject(key, args.reason, actor=args.actor)
    print(f"{key}: version {ev.version} {ev.action.value} by {ev.actor}")
    return 0


def bootstrap_policy(settings: Settings, directory: Path | None = None) -> str:
    """Load the starter lists (idempotent); a line saying what was written."""
    with _store(settings) as store:
        events = store.bootstrap(directory)
        version = store.current().version
    if not events:
        return f"policy: {store.topic} already up to date ({version})"
    return f"policy: starter lists loaded into {store.topic}: {version}"


def _policy_bootstrap(args: argparse.Namespace, settings: Settings) -> int:
    print(bootstrap_policy(settings, args.dir))
    return 0


def _approvals_grant(args: argparse.Namespace, settings: Settings) -> int:
    if args.days <= 0:
        raise PolicyError("--days: give a positive number of days")
    with _store(settings) as store:
        now = store.now_ms()
        approval = Approval(
            id=args.id or f"AP-{dt.datetime.now(dt.UTC):%Y%m%d}-{secrets.token_hex(3)}",
            requester=args.requester,
            resource=args.resource,
            purpose=args.purpose,
            quota=args.quota,
            expires_at_ms=now + int(args.days * 86_400_000),
            granted_by=args.actor,
            granted_at_ms=now,
            max_subjects=args.max_subjects,
            note=args.note,
        )
        store.grant(approval)
    print(
        f"approval {approval.id} granted: {approval.requester} may copy {approval.resource} "
        f"({approval.scope}) for {approval.purpose}, {approval.quota} uses, until "
        f"{_when(approval.expires_at_ms)}"
    )
    return 0


def _approvals_revoke(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings) as store:
        store.revoke(args.approval_id, args.reason, actor=args.actor)
    print(f"approval {args.approval_id} revoked")
    return 0


def _approvals_list(args: argparse.Namespace, settings: Settings) -> int:
    with _store(settings).start() as store:
        now = store.now_ms()
        approvals = sorted(store.current().approvals.values(), key=lambda a: a.id)
    shown = [a for a in approvals if args.all or a.problem(now) is None]
    if not shown:
        print("no approvals" + ("" if args.all else " active (--all lists every one)"))
        return 0
    print(
        f"{'id':<20} {'status':<9} {'requester':<11} {'resource':<32} {'scope':<14} "
        f"{'purpose':<22} {'uses':<9} {'expires':<17} granted by"
    )
    for a in shown:
        print(
            f"{a.id:<20} {a.status(now).value:<9} {a.requester:<11} {a.resource:<32} "
            f"{a.scope:<14} {a.purpose:<22} {f'{a.uses}/{a.quota}':<9} "
            f"{_when(a.expires_at_ms):<17} {a.granted_by}"
        )
    return 0


def _exchange_allowed(args: argparse.Namespace, settings: Settings) -> int:
    department_region(args.department)  # says what a department code looks like
    with (
        _store(settings).start() as store,
        CatalogStore(settings.streams, timeout=CLI_TIMEOUT).start() as catalog_store,
    ):
        policy = store.current()
        catalog = catalog_store.current()
        now = store.now_ms()
        eff = policy.effective(department_region(args.department))
        entry = eff.responsibility.get(args.department)
        if entry is None:
            print(
                f"{args.department} is not on the responsibility list that applies to it "
                f"({eff.version}): it may get nothing. `xiangyun policy show "
                f"{eff.region} responsibility` lists the departments",
                file=sys.stderr,
            )
            return 1
        duties = [args.purpose] if args.purpose else [d.code for d in entry.duties]
        fields_of = catalog_fields(catalog_store)
        print(f"{args.department} {entry.name} — policy {eff.version}")
        for resource in sorted(catalog, key=lambda r: r.id):
            if not resource.in_force:
                continue
            for duty in duties:
                d = decide(
                    Request(args.department, resource.id, duty),
                    catalog,
                    eff,
                    policy.approvals,
                    now,
                    fields_of=fields_of,
                    bulk_threshold=settings.policy_bulk_threshold,
                )
                if not d.allowed:
                    if args.all:
                        print(f"\n✗ {resource.id} for {duty}: {d.reason} — {d.message}")
                        print(f"    legal basis: {d.legal_basis}")
                    continue
                print(f"\n✓ {resource.id} ({resource.share.value}) for {duty}")
                if resource.share_conditions:
                    print(f"    conditions: {resource.share_conditions}")
                for f in d.fields:
                    print(f"    {f:<22} clear")
                for f, m in d.masks.items():
                    print(f"    {f:<22} masked {m.value}")
                for f, basis in d.withheld.items():
                    print(f"    {f:<22} withheld — {basis[:60]}…")
                print(
                    f"    bulk (whole pool, > {settings.policy_bulk_threshold} subjects): "
                    "needs an approval (`xiangyun approvals list`)"
                )
    return 0
