"""One configuration for every Kafka client: security settings reach every kind of client."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from streams.app import broker_credentials
from streams.ingest.reader import CollectReader
from streams.kafka.config import SECURITY_PROPERTIES, KafkaConfig
from xiangyun.settings import ConfigError, Settings

ROOT = Path(__file__).resolve().parents[4]
SASL = {
    "XIANGYUN_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "XIANGYUN_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "XIANGYUN_KAFKA_SASL_USERNAME": "xiangyun-worker",
    "XIANGYUN_KAFKA_SASL_PASSWORD": "s3cret",
    "XIANGYUN_KAFKA_SSL_CA_LOCATION": "/etc/xiangyun/ca.pem",
}
WANT = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "xiangyun-worker",
    "sasl.password": "s3cret",
    "ssl.ca.location": "/etc/xiangyun/ca.pem",
}


def test_settings_pass_security_to_every_kind_of_client_configuration() -> None:
    kafka = Settings.from_env(SASL).kafka
    assert dict(kafka.security) == WANT
    for conf in (
        kafka.producer(),
        kafka.transactional_producer("t"),
        kafka.consumer("g"),
        kafka.admin(),
    ):
        assert {k: conf[k] for k in WANT} == WANT
    # the worker's own reader builds its consumer from the same object
    settings = Settings.from_env(SASL, topic_prefix="unit", app_id="unit-config")
    reader_conf = CollectReader.consumer_config(
        type("R", (), {"config": settings.streams})()  # type: ignore[arg-type]
    )
    assert {k: reader_conf[k] for k in WANT} == WANT


def test_the_secret_is_masked_in_the_description_but_reaches_the_worker() -> None:
    settings = Settings.from_env(SASL)
    assert settings.describe()["XIANGYUN_KAFKA_SASL_PASSWORD"] == "***"
    assert settings.describe(reveal=True)["XIANGYUN_KAFKA_SASL_PASSWORD"] == "s3cret"


def test_an_unknown_protocol_or_property_is_refused() -> None:
    with pytest.raises(ConfigError, match="SECURITY_PROTOCOL"):
        Settings.from_env({"XIANGYUN_KAFKA_SECURITY_PROTOCOL": "TLS"})
    with pytest.raises(ValueError, match="not a Kafka security property"):
        KafkaConfig(security={"bootstrap.servers": "evil:9092"})
    assert "sasl.password" in SECURITY_PROPERTIES


def test_faust_gets_the_same_credentials() -> None:
    env = {**SASL, "XIANGYUN_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    del env["XIANGYUN_KAFKA_SSL_CA_LOCATION"]
    creds = broker_credentials(Settings.from_env(env).kafka)
    assert creds is not None
    assert creds.username == "xiangyun-worker"  # type: ignore[attr-defined]
    assert str(creds.mechanism.value) == "SCRAM-SHA-512"  # type: ignore[attr-defined]
    assert broker_credentials(KafkaConfig()) is None


_FACTORIES = {"producer", "consumer", "admin", "transactional_producer", "consumer_config"}
_CLIENTS = {"Producer", "Consumer", "AdminClient"}


def _built_by_kafka_config(arg: ast.expr, assigned: dict[str, ast.expr]) -> bool:
    if isinstance(arg, ast.Name) and arg.id in assigned:
        arg = assigned[arg.id]
    return (
        isinstance(arg, ast.Call)
        and isinstance(arg.func, ast.Attribute)
        and arg.func.attr in _FACTORIES
    )


def test_every_kafka_client_in_the_project_is_built_from_kafka_config() -> None:
    """No client is built from a hand-written dict: a security setting reaches them all."""
    found, wrong = 0, []
    for path in sorted(ROOT.glob("*/**/*.py")):
        if path.parts[len(ROOT.parts)] not in {"streams", "connectors", "monitoring", "xiangyun"}:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            assigned = {
                t.id: node.value
                for node in ast.walk(fn)
                if isinstance(node, ast.Assign)
                for t in node.targets
                if isinstance(t, ast.Name)
            }
            for call in ast.walk(fn):
                if (
                    isinstance(call, ast.Call)
                    and isinstance(call.func, ast.Name)
                    and call.func.id in _CLIENTS
                ):
                    found += 1
                    if not call.args or not _built_by_kafka_config(call.args[0], assigned):
                        wrong.append(f"{path.relative_to(ROOT)}:{call.lineno}")
    assert found >= 10, "the scan found too few clients to mean anything"
    assert wrong == [], f"Kafka clients not built from KafkaConfig: {wrong}"
