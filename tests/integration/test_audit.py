"""The access log on the real Kafka and Redis: entries written transactionally with their
answers, signed by the checkpointer, then tampered with (a copy of the log with one change,
as Kafka topics are append-only) and verified; proofs checked offline; the data tracker."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from streams.audit.entry import AccessEntry, Decision, FieldMask
from streams.audit.log import AccessLog, Checkpointer, read_topic
from streams.audit.proof import check_proof
from streams.audit.signing import load_or_create_key, public_key_pem
from streams.audit.tracker import Tracker
from streams.audit.verify import Kind
from streams.kafka.topics import Topics
from xiangyun.cli import main
from xiangyun.settings import Settings

N = 10
T0 = 1_760_000_000_000
DISCLOSE = T0 + 30 * 86_400_000


@pytest.fixture
def audit(settings: Settings, tmp_path: Path) -> Settings:
    return dataclasses.replace(
        settings, audit_checkpoint_interval_ms=200, audit_key_file=str(tmp_path / "key.pem")
    )


def _entry(i: int, **changes) -> AccessEntry:
    base = AccessEntry(
        decision_id=f"d-{i}",
        request_id=f"r-{i}",
        requester="220000-GA",
        official=f"officer-{i % 3}",
        resource_id="population.resident",
        subjects=(f"S{i % 4}", "S-all"),
        purpose="household registration check",
        decision=Decision.ALLOWED if i % 5 else Decision.REFUSED,
        reason="policy allows" if i % 5 else "no legal basis for this field",
        legal_basis="Household Registration Regulation art. 10",
        policy_version="p-3",
        catalog_version="7",
        decided_at_ms=T0 + i * 1000,
        case_id=f"case-{i}" if i % 2 else None,
        fields_returned=("name", "address"),
        fields_masked=(FieldMask("id_number", "KEEP_LAST_4"),),
        approval_version="a-1",
        data_as_of_ms=T0 - 60_000,
        disclose_after_ms=DISCLOSE if i == 6 else None,
    )
    return dataclasses.replace(base, **changes)


def _topic(settings: Settings, name: str) -> str:
    admin = AdminClient(settings.kafka.admin())
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(30)
    deadline = time.monotonic() + 30
    while True:  # a new topic has no leader for a moment
        meta = admin.list_topics(name, timeout=10).topics[name]
        if meta.partitions and all(p.leader >= 0 for p in meta.partitions.values()):
            return name
        assert time.monotonic() < deadline, f"{name} has no leader"
        time.sleep(0.05)


def _write(settings: Settings, log: AccessLog, entries: list[AccessEntry], answers: str) -> None:
    """As the exchange agent will: each answer and its entry in one transaction; one
    transaction aborted on the way (its numbers are given again)."""
    producer = Producer(settings.kafka.transactional_producer(f"{settings.app_id}.exchange"))
    producer.init_transactions(30)
    writer = log.writer()
    for i, entry in enumerate(entries):
        if i == 3:
            producer.begin_transaction()
            key, value = writer.record(_entry(99, official="never-committed"))
            producer.produce(log.entries_topic, key=key, value=value)
            producer.abort_transaction(30)
            writer.aborted()
        producer.begin_transaction()
        key, value = writer.record(entry)
        producer.produce(answers, key=entry.request_id.encode(), value=b"answer")
        producer.produce(log.entries_topic, key=key, value=value)
        producer.commit_transaction(30)
        writer.committed()
    assert writer.next_seq == len(entries)


def _copy(settings: Settings, values: list[bytes], name: str) -> str:
    topic = _topic(settings, name)
    producer = Producer(settings.kafka.producer())
    for v in values:
        producer.produce(topic, value=v)
    assert producer.flush(30) == 0
    return topic


def _run_until_signed(cp: Checkpointer, size: int) -> None:
    deadline = time.monotonic() + 30
    while cp.last is None or cp.last.tree_size < size:
        assert time.monotonic() < deadline, f"no checkpoint of {size} entries"
        cp.run_once(0.2)


@pytest.fixture
def written(audit: Settings):
    """A log of N entries, signed; with the data tracker fed by the checkpointer."""
    config = audit.streams
    log = AccessLog(config)
    _write(audit, log, [_entry(i) for i in range(N)], _topic(audit, f"{audit.topic_prefix}.ans"))
    key = load_or_create_key(Path(audit.audit_key_file))
    client = redis.Redis.from_url(audit.redis_url)
    tracker = Tracker(config, client)
    cp = Checkpointer(config, key, sinks=[tracker]).start()
    try:
        _run_until_signed(cp, N)
        yield log, key, tracker, cp
    finally:
        cp.stop()
        for k in client.scan_iter(f"{audit.topic_prefix}:audit:*"):
            client.delete(k)


def test_an_untouched_log_verifies_and_proves_offline(audit: Settings, written):
    log, key, _, _ = written
    public = key.public_key()
    report = log.verify(public)
    assert report.ok, report.render()
    assert (report.entries, report.signed_size) == (N, N)
    values = [v for _, v in log.read_entries()]
    assert [log.codec.decode_entry(v).seq for v in values] == list(range(N))
    assert "never-committed" not in {log.codec.decode_entry(v).official for v in values}
    pem = public_key_pem(public).encode()
    for index in (0, 4, N - 1):
        doc = json.loads(json.dumps(log.prove(index, public)))
        assert check_proof(doc, pem)[0]
        doc["entry_index"] = (index + 1) % N
        assert not check_proof(doc, pem)[0]


def _tampered(audit: Settings, log: AccessLog, values: list[bytes]) -> AccessLog:
    copy = _copy(audit, values, f"{audit.topic_prefix}.tampered-{uuid.uuid4().hex[:6]}")
    return AccessLog(
        audit.streams,
        entries_topic=copy,
        checkpoints_topic=log.checkpoints_topic,
        log_id=log.log_id,
    )


def _reencoded(log: AccessLog, value: bytes, **changes) -> bytes:
    entry = log.codec.decode_entry(value)
    return log.entry_record(dataclasses.replace(entry, **changes), entry.seq)[1]


@pytest.mark.parametrize(
    ("how", "index", "kind"),
    [
        ("alter", 3, Kind.CHANGED),
        ("delete", 4, Kind.REMOVED),
        ("reorder", 2, Kind.REORDERED),
        ("insert", 5, Kind.INSERTED),
        ("truncate", 7, Kind.TRUNCATED),
    ],
)
def test_tampering_is_named_at_its_first_entry(audit: Settings, written, how, index, kind):
    log, key, _, _ = written
    values = [v for _, v in log.read_entries()]
    if how == "alter":
        values[3] = _reencoded(log, values[3], official="someone-else")
    elif how == "delete":
        del values[4]
    elif how == "reorder":
        values[2], values[8] = values[8], values[2]
    elif how == "insert":
        values.insert(5, _reencoded(log, values[5], decision_id="forged", seq=5))
    else:
        values = values[:7]
    report = _tampered(audit, log, values).verify(key.public_key())
    assert not report.ok
    bad = report.first_bad_entry
    assert bad is not None, report.render()
    assert (bad.entry, bad.kind) == (index, kind), report.render()
    # the checkpoints after the bad entry no longer match: shorter logs fall short of them
    kinds = {f.kind for f in report.checkpoint_findings}
    shorter = how in ("delete", "truncate")
    assert kinds == {Kind.CHECKPOINT_TRUNCATED if shorter else Kind.CHECKPOINT_MISMATCH}


def test_a_fork_is_named_by_its_checkpoint(audit: Settings, written):
    log, key, _, _ = written
    values = [v for _, v in log.read_entries()]
    # A second log, altered at entry 7 and signed with the same key under the same name.
    forked_values = [*values]
    forked_values[7] = _reencoded(log, values[7], legal_basis="none")
    prefix = audit.topic_prefix
    fork_entries = _copy(audit, forked_values, f"{prefix}.fork")
    fork_cps = _topic(audit, f"{prefix}.fork.checkpoints")
    fork_log = AccessLog(
        audit.streams, entries_topic=fork_entries, checkpoints_topic=fork_cps, log_id=log.log_id
    )
    fork = Checkpointer(audit.streams, key, log=fork_log).start()
    fork.stop()
    assert fork.last is not None and fork.last.tree_size == N
    # The checkpoint topic now holds the log's own checkpoints and then the fork's.
    own = read_topic(audit.kafka, log.checkpoints_topic)
    theirs = read_topic(audit.kafka, fork_cps)
    both = _copy(audit, [v for _, v in own + theirs], f"{prefix}.both.checkpoints")
    mixed = AccessLog(audit.streams, checkpoints_topic=both, log_id=log.log_id)
    report = mixed.verify(key.public_key())
    assert report.first_bad_entry is None  # the log agrees with its first signed history
    named = {(f.checkpoint, f.kind) for f in report.checkpoint_findings}
    assert (len(own), Kind.CHECKPOINT_FORK) in named, report.render()
    assert (len(own), Kind.CHECKPOINT_MISMATCH) in named, report.render()
    # and the forked log, against the original checkpoints, is bad from entry 7
    report = AccessLog(
        audit.streams,
        entries_topic=fork_entries,
        checkpoints_topic=log.checkpoints_topic,
        log_id=log.log_id,
    ).verify(key.public_key())
    assert report.first_bad_entry is not None
    assert (report.first_bad_entry.entry, report.first_bad_entry.kind) == (7, Kind.CHANGED)


def test_the_checkpointer_refuses_to_sign_a_tampered_log(audit: Settings, written):
    from streams.audit.log import AuditError

    log, key, _, _ = written
    values = [v for _, v in log.read_entries()]
    values[1] = _reencoded(log, values[1], purpose="curiosity")
    bad = _tampered(audit, log, values)
    with pytest.raises(AuditError, match="no longer matches"):
        Checkpointer(audit.streams, key, log=bad).start()


def test_the_trail_lists_accesses_and_hides_an_investigation_until_its_date(audit, written):
    _, _, tracker, _ = written
    # S2 is the subject of entries 2 and 6; entry 6 is embargoed until DISCLOSE
    before = tracker.trail("S2", DISCLOSE - 1)
    assert [e.seq for e in before] == [2]
    assert before[0].legal_basis.startswith("Household") and before[0].official == "officer-2"
    after = tracker.trail("S2", DISCLOSE)
    assert [e.seq for e in after] == [2, 6]
    assert after[1].case_id is None and after[0].purpose == "household registration check"
    assert len(tracker.trail("S-all", DISCLOSE)) == N
    assert tracker.trail("nobody", DISCLOSE) == []
    assert tracker.next_offset() > 0
    assert tracker.apply(read_topic(audit.kafka, Topics.of(audit.streams).access)) == 0


def test_the_command_line_verifies_proves_and_shows_the_trail(
    audit: Settings, written, monkeypatch, capsys, tmp_path
):
    log, _, _, _ = written
    monkeypatch.setenv("XIANGYUN_TOPIC_PREFIX", audit.topic_prefix)
    monkeypatch.setenv("XIANGYUN_APP_ID", audit.app_id)
    monkeypatch.setenv("XIANGYUN_AUDIT_KEY_FILE", audit.audit_key_file)
    assert main(["audit", "verify"]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["audit", "prove", "4", "--json"]) == 0
    proof = tmp_path / "proof.json"
    proof.write_text(capsys.readouterr().out, encoding="utf-8")
    assert main(["audit", "public-key"]) == 0
    pem = tmp_path / "public.pem"
    pem.write_text(capsys.readouterr().out.split("\n", 1)[1], encoding="utf-8")
    assert main(["audit", "check-proof", str(proof), "--public-key", str(pem)]) == 0
    assert capsys.readouterr().out.startswith("OK")
    assert main(["audit", "checkpoint", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["tree_size"] == N
    for at, seqs in ((DISCLOSE - 1000, [2]), (DISCLOSE, [2, 6])):
        iso = dt.datetime.fromtimestamp(at / 1000, dt.UTC).isoformat()
        assert main(["audit", "trail", "S2", "--at", iso, "--json"]) == 0
        assert [e["seq"] for e in json.loads(capsys.readouterr().out)["entries"]] == seqs
    assert main(["audit", "trail", "S2"]) == 0
    assert "accesses to the data of S2" in capsys.readouterr().out
    values = [v for _, v in log.read_entries()]
    del values[4]
    copy = _copy(audit, values, f"{audit.topic_prefix}.cli-tampered")
    assert main(["audit", "verify", "--entries-topic", copy, "--log-id", log.log_id]) == 1
    out = capsys.readouterr().out
    assert "first bad entry #4 (removed)" in out and "checkpoint #" in out
