from pathlib import Path

import pytest

from xiangyun.settings import ConfigError, Settings


def test_defaults_are_the_local_stack():
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert (s.kafka_port, s.redis_port) == (9092, 6379)


def test_environment_overrides_with_types():
    s = Settings.from_env(
        {"XIANGYUN_PARTITIONS": "8", "XIANGYUN_STATE_DIR": "/tmp/x", "PATH": "/bin"}
    )
    assert s.partitions == 8
    assert s.state_dir == Path("/tmp/x")


def test_unknown_setting_is_refused_and_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"XIANGYUN_KAFKA_BOOTSTRAPS.*XIANGYUN_KAFKA_BOOTSTRAP"):
        Settings.from_env({"XIANGYUN_KAFKA_BOOTSTRAPS": "x:1"})


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("XIANGYUN_PARTITIONS", "0"),
        ("XIANGYUN_PARTITIONS", "many"),
        ("XIANGYUN_KAFKA_BOOTSTRAP", "nohost"),
        ("XIANGYUN_REDIS_URL", "http://x"),
        ("XIANGYUN_METRICS_PORT", "70000"),
        ("XIANGYUN_TOPIC_PREFIX", "bad prefix"),
        ("XIANGYUN_LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_values_are_refused(key, value):
    with pytest.raises(ConfigError, match=key):
        Settings.from_env({key: value})


def test_settings_are_frozen_and_round_trip_through_the_environment():
    s = Settings.from_env({"XIANGYUN_TOPIC_PREFIX": "t1"})
    with pytest.raises(AttributeError):
        s.topic_prefix = "t2"  # type: ignore[misc]
    assert Settings.from_env(s.describe()) == s
