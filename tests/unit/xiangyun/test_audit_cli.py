from pathlib import Path

import pytest

from xiangyun.cli import build_parser
from xiangyun.settings import ConfigError, Settings


def test_audit_settings_reach_the_library_and_are_validated():
    s = Settings.from_env({"XIANGYUN_STATE_DIR": "/tmp/st"})
    assert s.streams.audit_checkpoint_interval_ms == 2000
    assert s.streams.audit_key_file == Path("/tmp/st/audit/signing-key.pem")
    s = Settings.from_env(
        {"XIANGYUN_AUDIT_KEY_FILE": "/tmp/k.pem", "XIANGYUN_AUDIT_CHECKPOINT_INTERVAL_MS": "500"}
    )
    assert (s.streams.audit_key_file, s.streams.audit_checkpoint_interval_ms) == (
        Path("/tmp/k.pem"),
        500,
    )
    assert Settings.from_env(s.describe()) == s
    with pytest.raises(ConfigError, match="XIANGYUN_AUDIT_CHECKPOINT_INTERVAL_MS"):
        Settings.from_env({"XIANGYUN_AUDIT_CHECKPOINT_INTERVAL_MS": "0"})


def test_audit_verbs_parse():
    p = build_parser()
    args = p.parse_args(["audit", "prove", "7", "--json"])
    assert (args.verb, args.entry, args.json) == ("prove", 7, True)
    args = p.parse_args(["audit", "verify", "--entries-topic", "t"])
    assert args.entries_topic == "t"
    assert p.parse_args(["audit", "trail", "S1"]).subject == "S1"
