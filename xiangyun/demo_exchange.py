"""The demo's exchange part: departments ask, the policy answers or refuses citing the law,
a bulk copy needs an approval, the access log verifies, and a subject's trail is printed.

Runs against the demo's own topics while its worker runs; every step is checked, and the
demo fails if one does not turn out as the starter policy says it must.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from connectors.exchange_client import ExchangeClient
from streams.audit.log import AccessLog
from streams.audit.signing import load_public_key
from streams.audit.tracker import Tracker
from streams.catalog.review import DATA_BUREAU
from streams.exchange.messages import Answer, AnswerDecision
from streams.kafka.policy_store import PolicyStore
from streams.policy.approvals import Approval
from streams.views import PoolView
from xiangyun.settings import Settings

__all__ = ["DEPARTMENTS", "ExchangeDemo", "run_exchange_demo"]

#: the departments that ask in the demo; their topics are made before the worker starts,
#: so that it is subscribed to them from its first assignment (a topic made later waits
#: for the next metadata refresh and a rebalance, seconds the requests' deadlines spend)
DEPARTMENTS = ("220000-MZ", "220000-FGW")

RESIDENT = "population.resident"
ENTERPRISE = "legal_person.enterprise"


@dataclass
class ExchangeDemo:
    lines: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _answer(label: str, a: Answer) -> str:
    if a.decision is AnswerDecision.ALLOWED:
        found = sum(1 for r in a.records if r.found)
        masked = ", ".join(f"{f} {m}" for f, m in sorted(a.masks.items())) or "none"
        withheld = ", ".join(sorted(a.withheld)) or "none"
        return (
            f"    {label:<44} ALLOWED  {found}/{len(a.records)} found; masked: {masked}; "
            f"withheld: {withheld}"
        )
    return f"    {label:<44} {a.decision.value} {a.reason}: {a.legal_basis}"


def run_exchange_demo(
    settings: Settings, residents: list[str], firms: list[str], timeout: float = 120.0
) -> ExchangeDemo:
    """Ask as several departments about ``residents`` and ``firms`` (subjects the demo's
    pools hold) and check each answer against the starter policy."""
    out = ExchangeDemo()
    view = PoolView(settings.streams)
    deadline = time.monotonic() + timeout
    _say("exchange: waiting for the Redis view of the pools ...")
    while not view.freshness().current or view.generation() is None:
        if time.monotonic() > deadline:
            out.failures.append("the Redis view did not catch up with the pools")
            return out
        time.sleep(0.2)
    bulk = settings.policy_bulk_threshold + 1
    if len(residents) < 2 or len(firms) < bulk:
        out.failures.append(f"too few subjects for the exchange part ({len(firms)} firms)")
        return out
    clients = {d: ExchangeClient(settings.streams, d, official=f"officer-{d}") for d in DEPARTMENTS}
    mz, fgw = clients["220000-MZ"], clients["220000-FGW"]
    answers: list[Answer] = []

    def ask(label: str, expect: str, client: ExchangeClient, *args: object, **kw: object) -> None:
        a = client.request(*args, timeout=30.0, **kw)  # type: ignore[arg-type]
        answers.append(a)
        out.lines.append(_answer(label, a))
        got = "ALLOWED" if a.decision is AnswerDecision.ALLOWED else a.reason
        if got != expect:
            out.failures.append(f"{label}: {got}, expected {expect}")

    try:
        _say("exchange: departments ask ...")
        out.lines.append(
            "  exchange (requests on each department's topic, answers on its reply topic)"
        )
        ask(
            "civil affairs, social assistance, 2 residents",
            "ALLOWED",
            mz,
            RESIDENT,
            residents[:2],
            "social_assistance",
            case_id="DEMO-CASE-1",
        )
        ask(
            "civil affairs asks for ethnicity",
            "NEGATIVE_LIST",
            mz,
            RESIDENT,
            residents[:1],
            "social_assistance",
            fields=["ethnicity"],
        )
        ask(
            "development & reform asks for a resident",
            "NO_DEMAND_ENTRY",
            fgw,
            RESIDENT,
            residents[:1],
            "credit_supervision",
        )
        ask("civil affairs without a duty", "NO_DUTY", mz, RESIDENT, residents[:1], "")
        ask(
            "development & reform, credit, 1 enterprise",
            "ALLOWED",
            fgw,
            ENTERPRISE,
            firms[:1],
            "credit_supervision",
        )
        ask(
            f"bulk: {bulk} enterprises, no approval",
            "BULK_NEEDS_APPROVAL",
            fgw,
            ENTERPRISE,
            firms[:bulk],
            "credit_supervision",
        )
        approval = f"AP-DEMO-{int(time.time())}"
        with PolicyStore(settings.streams, timeout=30) as store:
            now = store.now_ms()
            store.grant(
                Approval(
                    id=approval,
                    requester="220000-FGW",
                    resource=ENTERPRISE,
                    purpose="credit_supervision",
                    quota=1,
                    expires_at_ms=now + 86_400_000,
                    granted_by=DATA_BUREAU,
                    granted_at_ms=now,
                    max_subjects=bulk,
                )
            )
        ask(
            f"bulk: {bulk} enterprises, approval {approval}",
            "ALLOWED",
            fgw,
            ENTERPRISE,
            firms[:bulk],
            "credit_supervision",
            approval_id=approval,
        )
    finally:
        for c in clients.values():
            c.close()

    _say("exchange: verifying the access log against its signed checkpoints ...")
    log = AccessLog(settings.streams, timeout=30)
    public = load_public_key(settings.audit_key_path)
    while True:
        cp = log.latest_checkpoint(public)
        entries = len(log.read_entries())
        if cp is not None and cp.tree_size >= entries >= len(answers):
            break
        if time.monotonic() > deadline:
            out.failures.append("no signed checkpoint covers the access log")
            return out
        time.sleep(0.5)
    report = log.verify(public)
    out.lines.append(
        f"  access log          {entries} entries, checkpoint of {cp.tree_size} signed; "
        f"verify: {'OK' if report.ok else 'FAILED'}"
    )
    if not report.ok:
        out.failures.append(f"the access log does not verify: {report.render()}")
    tracker = Tracker(settings.streams, log=log)
    tracker.catch_up()
    trail = tracker.trail(residents[0], int(time.time() * 1000))
    out.lines.append(f"  trail of {residents[0]} (who accessed this person's data, and why):")
    for e in trail:
        out.lines.append(
            f"    #{e.seq:<4} {e.requester} ({e.official})  {e.decision}  duty: "
            f"{e.purpose or '-'}  case: {e.case_id or '-'}  basis: {e.legal_basis[:60]}"
        )
    if len(trail) < 2:
        out.failures.append(f"the trail of {residents[0]} lists {len(trail)} accesses, not 2+")
    return out
