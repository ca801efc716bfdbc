"""Consents and data quality on the real broker: the consent book follows the consents topic
and gives each case its reason; the quality agent of a real worker shows the figures move when
bad records arrive, on its snapshot topic and in `xiangyun quality`."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from connectors.consent import ConsentPublisher
from connectors.generator import SampleGenerator
from connectors.producer import SourceProducer
from streams.catalog.model import Catalog
from streams.core.consent import Consent
from streams.core.reasons import Reason
from streams.kafka.consent_store import ConsentBook
from streams.quality.figures import UNDECODABLE, QualityRow
from streams.wire.envelope import EnvelopeCodec
from xiangyun.cli import main
from xiangyun.processes import WorkerProcess
from xiangyun.quality_cli import read_rows
from xiangyun.settings import Settings

SUBJECT = "220102194503071234"
RESOURCE = "220100.population.elderly_allowance"
DAY = 86_400_000


def until(cond: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


def consent(cid: str, t0: int, **kw: Any) -> Consent:
    fields: dict[str, Any] = {
        "consent_id": cid,
        "subject_id": SUBJECT,
        "resource_id": RESOURCE,
        "granted_by": "220100-MZ",
        "scope": "elderly allowance",
        "granted_at_ms": t0,
    }
    fields.update(kw)
    return Consent(**fields)


def test_consent_book_follows_the_consents_topic(settings: Settings) -> None:
    t0 = 1_767_225_600_000
    granted = consent("C-granted", t0)
    expiring = consent("C-expiring", t0, expires_at_ms=t0 + DAY)
    withdrawing = consent("C-withdrawing", t0)
    with ConsentPublisher(settings.streams) as pub:
        pub.grant([granted, expiring, withdrawing])
    book = ConsentBook(settings.streams).start()
    try:
        check = book.check
        assert len(book) == 3
        assert check("C-granted", SUBJECT, RESOURCE, t0 + 5 * DAY) is None
        assert check("C-expiring", SUBJECT, RESOURCE, t0 + DAY - 1) is None
        assert check("C-expiring", SUBJECT, RESOURCE, t0 + DAY) is Reason.CONSENT_EXPIRED
        assert check("C-nobody", SUBJECT, RESOURCE, t0) is Reason.CONSENT_UNKNOWN
        assert check("C-granted", "220102194503079999", RESOURCE, t0) is Reason.CONSENT_MISMATCH
        assert check("C-granted", SUBJECT, RESOURCE, t0 - 1) is Reason.CONSENT_NOT_YET_GIVEN

        # Withdrawn and erased while the book follows: seen within a poll interval.
        with ConsentPublisher(settings.streams) as pub:
            pub.withdraw(withdrawing, t0 + 2 * DAY)
            pub.erase("C-granted")
        until(
            lambda: (
                check("C-withdrawing", SUBJECT, RESOURCE, t0 + 2 * DAY) is Reason.CONSENT_WITHDRAWN
            ),
            what="the withdrawal",
        )
        assert check("C-withdrawing", SUBJECT, RESOURCE, t0 + 2 * DAY - 1) is None
        until(
            lambda: check("C-granted", SUBJECT, RESOURCE, t0) is Reason.CONSENT_UNKNOWN,
            what="the erasure",
        )
        assert book.errors == 0
    finally:
        book.close()


def _by_pair(rows: list[QualityRow]) -> dict[tuple[str, str], QualityRow]:
    return {(r.resource, r.unit): r for r in rows}


def test_quality_figures_move_when_bad_records_arrive(
    settings: Settings,
    codec: EnvelopeCodec,
    catalog: Catalog,
    producer: SourceProducer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s = dataclasses.replace(settings, quality_snapshot_interval_ms=300)
    now = int(time.time() * 1000)
    good = SampleGenerator(
        codec,
        catalog,
        s.schema_dir,
        seed=21,
        broken_share=0.0,
        start_ms=now - 5_000,
        consents=True,
    )
    bad = SampleGenerator(
        codec,
        catalog,
        s.schema_dir,
        seed=22,
        broken_share=1.0,
        kinds=["bad_enum", "impossible_date", "garbage"],
        start_ms=now - 30_000,
    )
    with WorkerProcess(s, name=f"worker-{s.app_id}").start():
        records = list(good.records(300))
        with ConsentPublisher(s.streams) as consents:  # on record before the records
            consents.grant(good.consents())
        sent = producer.send_all(((r.principal, r.key, r.value) for r in records), progress=False)

        def all_counted() -> list[QualityRow] | None:
            rows = read_rows(s)
            seen = sum(r.window.records for r in rows)
            return rows if seen >= sent else None

        rows = until(all_counted, 90, "every good record in the quality snapshot")
        for row in rows:
            assert row.window.validity == 1.0, row
            assert row.window.rejected == 0
            assert row.unit != UNDECODABLE
            assert row.window.completeness is not None and row.window.completeness > 0.5, row
            assert row.window.completeness_required == 1.0, row
            assert row.window.timeliness == 1.0, row  # seconds late; realtime allows a minute
        resident = _by_pair(rows)[("population.resident", "220000-GA")]
        assert resident.open_conflicts == 0  # the verifier runs; no evidence, no conflict
        assert resident.window.consistency is None

        bad_sent = producer.send_all(
            ((r.principal, r.key, r.value) for r in bad.records(90)), progress=False
        )

        def rejects_counted() -> list[QualityRow] | None:
            rows = read_rows(s)
            rejected = sum(r.window.rejected for r in rows)
            return rows if rejected >= bad_sent else None

        rows = until(rejects_counted, 90, "the bad records in the quality snapshot")
        pairs = _by_pair(rows)
        undecodable = pairs[(UNDECODABLE, UNDECODABLE)]
        assert undecodable.window.reasons == {"MALFORMED": 30}
        assert undecodable.window.validity == 0.0
        worse = [r for r in rows if r.window.reasons.get("FIELD_RULE")]
        assert worse and all(r.window.validity is not None for r in worse)
        assert all(r.window.validity < 1.0 for r in worse)  # type: ignore[operator]
        assert sum(r.window.reasons.get("FIELD_RULE", 0) for r in rows) == 60

        for name, value in s.describe(reveal=True).items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()
        assert main(["quality"]) == 0
        table = capsys.readouterr().out
        assert UNDECODABLE in table and "valid" in table and "n/a" in table
        assert "population.resident" in table
        assert main(["quality", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert {(d["resource"], d["unit"]) for d in doc} == set(pairs)
