"""`xiangyun request` and `xiangyun exchange subscribe | unsubscribe | revoke-subscription |
subscriptions` without Kafka: help, parsing, errors, and an answer as a person reads it."""

from __future__ import annotations

import pytest

from streams.exchange.messages import Answer, AnswerDecision, AnswerRecord
from xiangyun.cli import build_parser, main
from xiangyun.exchange_cli import render_answer


@pytest.mark.parametrize(
    "argv",
    [
        ["request"],
        ["exchange", "subscribe"],
        ["exchange", "unsubscribe"],
        ["exchange", "revoke-subscription"],
        ["exchange", "subscriptions"],
        ["exchange", "allowed"],
    ],
)
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    assert "usage: xiangyun" in capsys.readouterr().out


def test_parsing() -> None:
    p = build_parser()
    a = p.parse_args(
        [
            "request", "--as", "220000-MZ", "--resource", "population.resident",
            "--subject", "A", "--subject", "B", "--purpose", "social_assistance",
            "--fields", "name,citizen_id", "--case", "C-1", "--json",
        ]
    )  # fmt: skip
    assert (a.department, a.subject, a.fields, a.case_id, a.json) == (
        "220000-MZ",
        ["A", "B"],
        "name,citizen_id",
        "C-1",
        True,
    )
    a = p.parse_args(["exchange", "revoke-subscription", "SUB-1", "--reason", "no longer"])
    assert (a.department, a.subscription_id) == ("220000-ZSJ", "SUB-1")


def test_errors_say_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["exchange", "subscribe", "--as", "220000-MZ", "--resource", "r", "--purpose", "d"])
    assert code == 2
    assert "--subject KEY" in capsys.readouterr().err
    code = main(["request", "--as", "220000-MZ", "--resource", "r", "--purpose", "d"])
    assert code == 2


def test_an_answer_as_a_person_reads_it() -> None:
    a = Answer(
        request_id="R1",
        decision=AnswerDecision.ALLOWED,
        reason="OK",
        message="",
        legal_basis="《社会救助暂行办法》第六十条",
        requester="220000-MZ",
        resource_id="population.resident",
        purpose="social_assistance",
        decided_at_ms=1_800_000_000_000,
        decision_id="d1",
        records=(
            AnswerRecord(
                "S1",
                True,
                {"name": "Zhang San", "citizen_id": "abc"},
                {
                    "provider": "220000-GA",
                    "region": "220102",
                    "channel": "DIRECT",
                    "version": 3,
                    "record_id": "r",
                    "observed_at_ms": 1_799_999_000_000,
                    "accepted_at_ms": 1_799_999_001_000,
                    "source_topic": "xy.collect",
                    "source_partition": 1,
                    "source_offset": 9,
                    "catalog_version": 1,
                    "verification_count": 0,
                },
            ),
            AnswerRecord("S2", False),
        ),
        masks={"citizen_id": "MASK_HASH"},
        withheld={"ethnicity": "《中华人民共和国个人信息保护法》第二十八条"},
        usage_terms="For the stated duty only",
    )
    text = render_answer(a)
    assert "✓ ALLOWED (OK)" in text and "[MASK_HASH]" in text
    assert "from 220000-GA" in text and "S2: not in the pool" in text
    assert "withheld ethnicity" in text and "terms: For the stated duty only" in text
