"""The Docker stack, the Prometheus configs, the alert rules and the dashboard agree with the
local stack (``xiangyun/settings.py``, ``xiangyun/stack.py``, ``monitoring/metrics.py``).

No Kafka, Redis or Docker needed. ``promtool`` (Debian package ``prometheus``, the same one
the local stack runs) is required: without it these tests fail and say how to install it.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitoring.metrics import Metrics, QualityMetrics, VerificationMetrics, ViewMetrics
from streams.core.reasons import Reason
from xiangyun.cli import build_parser
from xiangyun.settings import PREFIX, Settings

ROOT = Path(__file__).resolve().parents[3]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
PROM_LOCAL = ROOT / "monitoring" / "prometheus.yml"
PROM_DOCKER = ROOT / "monitoring" / "prometheus.docker.yml"
ALERTS = ROOT / "monitoring" / "alerts.yml"
GRAFANA = ROOT / "monitoring" / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "xiangyun.json"
POM = ROOT / "stack" / "pom.xml"

JOBS = {"xiangyun-worker", "xiangyun-tools"}
TOOLS_METRICS_PORT = 9109  # demo, bench and producer processes
REQUIRED_ALERTS = {
    "XiangyunWorkerDown",
    "XiangyunIngestRejectRatioHigh",
    "XiangyunIngestLagHigh",
    "XiangyunIngestLagGrowing",
    "XiangyunIngestNoAccepted",
    "XiangyunIngestInternalError",
    "XiangyunIngestTransactionsAborting",
    "XiangyunIngestVersionConflictsHigh",
    "XiangyunIngestRestoreSlow",
    "XiangyunIngestLatencyHigh",
    "XiangyunViewLagging",
    "XiangyunViewBadRecords",
    "XiangyunQualityValidityLow",
    "XiangyunQualityTimelinessLow",
    "XiangyunVerificationConflictsStale",
    "XiangyunVerificationPendingGrowing",
    "XiangyunVerificationEvidenceDropped",
}
HEALTHCHECKED = {"kafka", "redis", "prometheus"}

Services = dict[str, dict[str, Any]]


# -- helpers ---------------------------------------------------------------------------------
def _yaml(path: Path) -> Any:
    assert path.is_file(), f"{path.relative_to(ROOT)} is missing"
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = _yaml(COMPOSE)
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict), "no services"
    return doc


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> Services:
    found: Services = compose["services"]
    return found


def _env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, in either compose syntax (mapping or list of KEY=VALUE)."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        pairs = (item.split("=", 1) for item in raw)
        return {k: v for k, v in pairs}
    return {str(k): "" if v is None else str(v) for k, v in raw.items()}


def _published(service: dict[str, Any]) -> dict[int, int]:
    """Published ports of a service: host port -> container port (short and long syntax)."""
    out: dict[int, int] = {}
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            out[int(entry["published"])] = int(entry["target"])
            continue
        spec = str(entry).split("/", 1)[0]
        parts = spec.split(":")
        assert len(parts) >= 2, f"port {entry!r} is not published on a fixed host port"
        out[int(parts[-2])] = int(parts[-1])
    return out


def _container_ports(service: dict[str, Any]) -> set[int]:
    return set(_published(service).values()) | {
        int(str(p).split("/", 1)[0]) for p in service.get("expose") or []
    }


def _dockerfile_env() -> dict[str, str]:
    """``ENV`` of the Dockerfile (``KEY=VALUE`` form, with line continuations)."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip().upper().startswith("ENV "):
            for key, value in re.findall(r"(\w+)=(\S+)", line.strip()[4:]):
                env[key] = value.strip("\"'")
    return env


def _built_from_dockerfile(services: Services, name: str) -> bool:
    built = {n for n, s in services.items() if "build" in s}
    images = {services[n].get("image") for n in built}
    svc = services[name]
    return name in built or (svc.get("image") is not None and svc.get("image") in images)


def _listeners(value: str) -> dict[str, tuple[str, int]]:
    out = {}
    for item in value.split(","):
        name, addr = item.strip().split("://", 1)
        host, port = addr.rsplit(":", 1)
        out[name] = (host, int(port))
    return out


def _targets(config: dict[str, Any]) -> dict[str, list[str]]:
    return {
        job["job_name"]: [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        for job in config["scrape_configs"]
    }


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package "
            "(`sudo apt-get install -y prometheus`, which ships /usr/bin/promtool); "
            "the stack's Prometheus configs and alert rules cannot be checked without it"
        )
    return path


def _run(*argv: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=120, cwd=ROOT, check=False
    )


# -- compose: ports and settings -------------------------------------------------------------
def test_compose_publishes_the_ports_of_the_local_stack(services: Services) -> None:
    defaults = Settings()
    expected = {
        "kafka": defaults.kafka_port,
        "redis": defaults.redis_port,
        "prometheus": defaults.prometheus_port,
        "worker": defaults.metrics_port,
        "tools": TOOLS_METRICS_PORT,
    }
    for name, port in expected.items():
        assert name in services, f"docker-compose.yml has no {name!r} service"
        published = _published(services[name])
        assert published.get(port) == port, (
            f"{name} must publish {port}:{port} like the local stack, publishes {published}"
        )


def test_compose_xiangyun_variables_are_real_settings(services: Services) -> None:
    checked = 0
    image_env = {k: v for k, v in _dockerfile_env().items() if k.startswith(PREFIX)}
    Settings.from_env(image_env)  # the image's own defaults are real settings too
    for name, svc in services.items():
        env = _env(svc)
        if _built_from_dockerfile(services, name):
            env = {**image_env, **env}
        ours = {k: v for k, v in env.items() if k.startswith(PREFIX)}
        if not ours:
            continue
        settings = Settings.from_env(ours)  # refuses unknown XIANGYUN_ variables
        checked += 1
        if f"{PREFIX}METRICS_PORT" in ours:
            assert settings.metrics_port in _container_ports(svc), (
                f"{name}: XIANGYUN_METRICS_PORT={settings.metrics_port} is not a port it exposes"
            )
    assert checked >= 2, "worker and tools must be configured with XIANGYUN_* variables"


def test_containers_reach_kafka_and_redis_through_the_compose_network(services: Services) -> None:
    kafka_env = _env(services["kafka"])
    advertised = _listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    internal = {f"{host}:{port}" for host, port in advertised.values() if host == "kafka"}
    defaults = Settings()
    for name in ("worker", "tools"):
        env = _env(services[name])
        settings = Settings.from_env({k: v for k, v in env.items() if k.startswith(PREFIX)})
        assert settings.kafka_bootstrap in internal, (
            f"{name} bootstraps from {settings.kafka_bootstrap}, Kafka advertises {internal}"
        )
        assert settings.redis_url.startswith("redis://redis:"), settings.redis_url
        assert settings.redis_port == defaults.redis_port
        deps = services[name].get("depends_on") or {}
        assert {"kafka", "redis"} <= set(deps), f"{name} must wait for kafka and redis"


def test_compose_commands_are_real_cli_commands(services: Services) -> None:
    parser = build_parser()
    commands = {"worker": ["xiangyun", "worker"], "tools": ["xiangyun", "demo", "--no-stack"]}
    for name, expected in commands.items():
        command = services[name].get("command") or []
        argv = command.split() if isinstance(command, str) else [str(a) for a in command]
        assert argv == expected, f"{name} runs {argv}, expected {expected}"
        try:
            parser.parse_args(argv[1:])
        except SystemExit:
            pytest.fail(f"{name}: `{' '.join(argv)}` is not a valid xiangyun command line")
    assert services["tools"].get("profiles") == ["demo"], "tools must only run with --profile demo"
    assert "profiles" not in services["worker"]


# -- compose: Kafka in KRaft mode ------------------------------------------------------------
def test_kafka_is_apache_kafka_4_in_kraft_mode(services: Services) -> None:
    kafka = services["kafka"]
    image, _, tag = str(kafka["image"]).partition(":")
    assert image == "apache/kafka", f"expected the official apache/kafka image, got {image}"
    assert tag.split(".")[0] == "4", f"Kafka major version must be 4 (KRaft only), got {tag!r}"
    pom = ET.parse(POM).getroot()
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    local_version = pom.findtext("m:properties/m:kafka.version", namespaces=ns)
    assert tag == local_version, f"compose runs Kafka {tag}, the local stack {local_version}"

    env = _env(kafka)
    defaults = Settings()
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_NODE_ID"] == "1"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"1@kafka:{defaults.kafka_controller_port}"
    listeners = _listeners(env["KAFKA_LISTENERS"])
    assert listeners["PLAINTEXT"][1] == defaults.kafka_port
    assert listeners["CONTROLLER"][1] == defaults.kafka_controller_port
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] == "CONTROLLER"
    advertised = _listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert "CONTROLLER" not in advertised
    assert advertised["PLAINTEXT"] == ("127.0.0.1", defaults.kafka_port), (
        "host clients use Settings().kafka_bootstrap, so PLAINTEXT must advertise it"
    )
    assert f"{advertised['PLAINTEXT'][0]}:{advertised['PLAINTEXT'][1]}" == defaults.kafka_bootstrap
    protocol_map = dict(
        p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(listeners) <= set(protocol_map), "every listener needs a security protocol"
    assert int(env["KAFKA_NUM_PARTITIONS"]) == defaults.partitions
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"


def test_no_zookeeper_anywhere(services: Services) -> None:
    """Comments may say "no ZooKeeper"; what is configured may not mention it."""
    configured = {
        path: json.dumps(_yaml(path)) for path in (COMPOSE, PROM_LOCAL, PROM_DOCKER, ALERTS)
    }
    configured[DOCKERFILE] = "\n".join(
        line
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if not line.lstrip().startswith("#")
    )
    for path, text in configured.items():
        assert "zookeeper" not in text.lower(), (
            f"{path.relative_to(ROOT)} configures ZooKeeper; the stack is KRaft only"
        )
    for name, svc in services.items():
        assert "zookeeper" not in str(svc.get("image", "")).lower(), name
        assert not any("ZOOKEEPER" in k for k in _env(svc)), name


# -- compose: health and order ---------------------------------------------------------------
def test_healthchecks_and_start_order(services: Services) -> None:
    for name in HEALTHCHECKED:
        check = services[name].get("healthcheck") or {}
        assert check.get("test"), f"{name} needs a healthcheck"
        assert not check.get("disable"), name
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must state conditions"
        for dep, cond in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert cond.get("condition") == "service_healthy", f"{name} -> {dep}"
            assert (services[dep].get("healthcheck") or {}).get("test"), (
                f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck"
            )


def test_prometheus_and_grafana_mount_the_repository_configs(services: Services) -> None:
    mounts = {
        str(v).split(":")[1]: str(v).split(":")[0]
        for v in services["prometheus"].get("volumes", [])
        if str(v).startswith("./")
    }
    assert mounts.get("/etc/prometheus/prometheus.yml") == "./monitoring/prometheus.docker.yml"
    for rule_file in _yaml(PROM_DOCKER)["rule_files"]:
        assert mounts.get(f"/etc/prometheus/{rule_file}") == f"./monitoring/{rule_file}", (
            f"prometheus.docker.yml loads {rule_file}, compose does not mount it beside it"
        )
    for source in mounts.values():
        assert (ROOT / source).exists(), source

    grafana = {
        str(v).split(":")[1]: str(v).split(":")[0]
        for v in services["grafana"].get("volumes", [])
        if str(v).startswith("./")
    }
    assert grafana.get("/etc/grafana/provisioning") == "./monitoring/grafana/provisioning"
    providers = [
        p
        for f in sorted((GRAFANA / "provisioning" / "dashboards").glob("*.yml"))
        for p in _yaml(f)["providers"]
    ]
    assert providers, "no Grafana dashboard provider"
    for provider in providers:
        path = provider["options"]["path"]
        assert grafana.get(path) == "./monitoring/grafana/dashboards", (
            f"provider reads {path}, compose mounts the dashboards at {grafana}"
        )


# -- Dockerfile ------------------------------------------------------------------------------
def test_dockerfile_installs_every_package_with_its_data() -> None:
    text = DOCKERFILE.read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    assert re.search(r"^RUN pip install \.\s*$", text, re.M)
    assert re.search(r'^CMD \["xiangyun", "worker"\]', text, re.M)
    assert re.search(rf"^EXPOSE {Settings().metrics_port}\b", text, re.M)
    before_install = text[: text.index("RUN pip install .")]
    copied = dict(re.findall(r"^COPY (\S+) (\S+)\s*$", before_install, re.M))
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    setuptools = pyproject["tool"]["setuptools"]
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= {p.split(".")[0] for p in setuptools["packages"]}
    needed |= {src.split("/")[0] for src in setuptools.get("package-dir", {}).values()}
    for source in needed:
        assert source in copied, f"`pip install .` needs {source}; the Dockerfile does not COPY it"
        assert (ROOT / source).exists(), source
    # The data ships inside the package: no setting points the image at copied folders.
    env = _dockerfile_env()
    assert f"{PREFIX}SCHEMA_DIR" not in env and f"{PREFIX}CATALOG_DIR" not in env


# -- Prometheus configs ----------------------------------------------------------------------
def test_prometheus_configs_have_the_same_jobs_and_rules() -> None:
    local, docker = _yaml(PROM_LOCAL), _yaml(PROM_DOCKER)
    assert set(_targets(local)) == set(_targets(docker)) == JOBS
    assert local["rule_files"] == docker["rule_files"] == ["alerts.yml"]
    for cfg in (local, docker):
        assert cfg["global"]["scrape_interval"] == "5s"
        for job in cfg["scrape_configs"]:
            assert job.get("metrics_path", "/metrics") == "/metrics", job["job_name"]


def test_prometheus_targets_match_the_processes(services: Services) -> None:
    local, docker = _targets(_yaml(PROM_LOCAL)), _targets(_yaml(PROM_DOCKER))
    ports = {"xiangyun-worker": Settings().metrics_port, "xiangyun-tools": TOOLS_METRICS_PORT}
    hosts = {"xiangyun-worker": "worker", "xiangyun-tools": "tools"}
    for job, port in ports.items():
        assert local[job] == [f"127.0.0.1:{port}"], f"local {job} scrapes {local[job]}"
        assert docker[job] == [f"{hosts[job]}:{port}"], f"docker {job} scrapes {docker[job]}"
        assert port in _container_ports(services[hosts[job]]), (
            f"Prometheus scrapes {hosts[job]}:{port}, the service does not expose it"
        )


def test_promtool_accepts_both_configs_and_the_rules() -> None:
    promtool = _promtool()
    for argv in (
        ("check", "config", PROM_LOCAL),
        ("check", "config", PROM_DOCKER),
        ("check", "rules", ALERTS),
    ):
        done = _run(promtool, *argv)
        command = " ".join(map(str, argv))
        assert done.returncode == 0, f"promtool {command}:\n{done.stdout}{done.stderr}"


# -- alert rules -----------------------------------------------------------------------------
def _rules() -> list[dict[str, Any]]:
    return [r for g in _yaml(ALERTS)["groups"] for r in g["rules"] if "alert" in r]


def test_every_alert_has_a_severity_and_says_what_to_do() -> None:
    rules = _rules()
    missing = REQUIRED_ALERTS - {r["alert"] for r in rules}
    assert not missing, f"alerts.yml lacks {missing}"
    for rule in rules:
        assert rule.get("labels", {}).get("severity") in {"critical", "warning"}, rule["alert"]
        notes = rule.get("annotations", {})
        assert notes.get("summary", "").strip(), f"{rule['alert']} has no summary"
        assert len(notes.get("description", "")) > 80, f"{rule['alert']}: say what to do"


def _exported() -> tuple[set[str], set[str]]:
    """Series names and label names a worker exposes: its :class:`Metrics` and the
    :class:`ViewMetrics` of its materializer, on one registry."""
    metrics = Metrics()
    view = ViewMetrics(metrics.registry)
    quality = QualityMetrics(metrics.registry)
    verification = VerificationMetrics(metrics.registry)
    names: set[str] = set()
    labels: set[str] = set()
    for family in metrics.registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
        }.get(family.type, ("",))
        names |= {family.name + s for s in suffixes}
    for collector in [
        *vars(metrics).values(),
        *vars(view).values(),
        *vars(quality).values(),
        *vars(verification).values(),
    ]:
        labels |= set(getattr(collector, "_labelnames", ()))
    return names, labels


def _dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_rules_and_dashboard_use_only_metrics_the_worker_exports() -> None:
    names, labels = _exported()
    labels |= {"le", "job", "instance"}

    exprs = [r["expr"] for r in _rules()] + _dashboard_exprs()
    # Query templates and metric names in the annotations must survive a rename too.
    notes = [v for r in _rules() for v in r.get("annotations", {}).values()]
    for text in notes:
        for used in re.findall(r"\bxiangyun_\w+", text):
            assert used in names, f"{used} is not exported by monitoring.metrics: {text}"
    for expr in exprs:
        for used in re.findall(r"\bxiangyun_\w+", expr):
            assert used in names, f"{used} is not exported by monitoring.metrics: {expr}"
        for group in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", expr):
            for label in filter(None, (x.strip() for x in group.split(","))):
                assert label in labels, f"label {label!r} does not exist: {expr}"
        for label in re.findall(r"[{,]\s*(\w+)\s*=~?", expr):
            assert label in labels, f"label {label!r} does not exist: {expr}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each panel query, with Grafana's variables given a value, as a recording rule that
    `promtool check rules` parses."""
    promtool = _promtool()
    rules = [
        {"record": f"dashboard:query_{i}", "expr": expr.replace("$__rate_interval", "1m")}
        for i, expr in enumerate(_dashboard_exprs())
    ]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(
        yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8"
    )
    done = _run(promtool, "check", "rules", path)
    assert done.returncode == 0, f"dashboard queries:\n{done.stdout}{done.stderr}"


def test_every_exported_metric_is_on_the_dashboard() -> None:
    """A metric added to monitoring.metrics gets a panel (or this test says which has none)."""
    metrics = Metrics()
    ViewMetrics(metrics.registry)
    QualityMetrics(metrics.registry)
    VerificationMetrics(metrics.registry)
    used = " ".join(_dashboard_exprs())
    missing = {
        family.name
        for family in metrics.registry.collect()
        if not re.search(rf"\b{family.name}(_total|_bucket|_sum|_count)?\b", used)
    }
    assert not missing, f"no dashboard panel shows {sorted(missing)}"


def test_reason_codes_and_settings_named_in_alerts_exist() -> None:
    text = ALERTS.read_text(encoding="utf-8")
    named = set(re.findall(r"\b[A-Z]+(?:_[A-Z]+)+\b", text))
    variables = {n for n in named if n.startswith(PREFIX)}
    reasons = named - variables
    assert reasons, "the alert descriptions should name reason codes"
    assert reasons <= {r.value for r in Reason}, reasons - {r.value for r in Reason}
    assert variables <= set(Settings().describe()), variables - set(Settings().describe())


# Scenarios for `promtool test rules`: each alert fires when it should and stays quiet when
# it should not. Descriptions are left out (free text); summaries are checked.
_R = "xiangyun_ingest_records_total"
_LAG = "xiangyun_ingest_lag_records"
_WORKER = {"job": "xiangyun-worker"}
_NO_ACCEPTED = "No record accepted into any pool for 10 minutes while records arrive"
Expect = tuple[int, str, list[tuple[dict[str, str], str]]]


def fires(minute: int, alert: str, summary: str, **labels: str) -> Expect:
    """At ``minute``, exactly one ``alert`` fires, with these labels and this summary."""
    return (minute, alert, [(labels, summary)])


def quiet(minute: int, alert: str) -> Expect:
    return (minute, alert, [])


_SCENARIOS: list[tuple[str, dict[str, str], list[Expect]]] = [
    (
        "the worker's scrape fails",
        {'up{job="xiangyun-worker",instance="worker:9108"}': "1 1 0 0 0 0 0"},
        [
            quiet(1, "XiangyunWorkerDown"),
            fires(
                5,
                "XiangyunWorkerDown",
                "Xiangyun worker worker:9108 is down",
                severity="critical",
                instance="worker:9108",
                **_WORKER,
            ),
        ],
    ),
    (
        "scraped, but the worker says its app is down",
        {
            'up{job="xiangyun-worker",instance="w:9108"}': "1x10",
            'xiangyun_worker_up{job="xiangyun-worker",instance="w:9108"}': "1 1 0 0 0 0 0",
        },
        [
            fires(
                6,
                "XiangyunWorkerDown",
                "Xiangyun worker w:9108 is down",
                severity="critical",
                instance="w:9108",
                **_WORKER,
            ),
        ],
    ),
    (
        "healthy worker",
        {
            'up{job="xiangyun-worker",instance="w:9108"}': "1x10",
            'xiangyun_worker_up{job="xiangyun-worker",instance="w:9108"}': "1x10",
        },
        [quiet(8, "XiangyunWorkerDown")],
    ),
    (
        "10% rejected",
        {
            f'{_R}{{outcome="accepted",pool="population",reason=""}}': "0+90x30",
            f'{_R}{{outcome="rejected",pool="",reason="FIELD_RULE"}}': "0+10x30",
        },
        [
            quiet(3, "XiangyunIngestRejectRatioHigh"),  # not yet for 5m
            fires(
                12,
                "XiangyunIngestRejectRatioHigh",
                "10% of ingested records are rejected",
                severity="warning",
            ),
            quiet(12, "XiangyunIngestNoAccepted"),
        ],
    ),
    (
        "1% rejected: fine",
        {
            f'{_R}{{outcome="accepted",pool="population",reason=""}}': "0+99x30",
            f'{_R}{{outcome="rejected",pool="",reason="FIELD_RULE"}}': "0+1x30",
        },
        [quiet(12, "XiangyunIngestRejectRatioHigh")],
    ),
    (
        "a third rejected, but 3 records a minute are too few to page anyone",
        {
            f'{_R}{{outcome="accepted",pool="population",reason=""}}': "0+2x30",
            f'{_R}{{outcome="rejected",pool="",reason="FIELD_RULE"}}': "0+1x30",
        },
        [quiet(12, "XiangyunIngestRejectRatioHigh")],
    ),
    (
        "a constant backlog of 20000 on one partition",
        {f'{_LAG}{{topic="xy.collect",partition="0"}}': "20000x20"},
        [
            quiet(3, "XiangyunIngestLagHigh"),
            fires(
                10,
                "XiangyunIngestLagHigh",
                "Ingest lag on xy.collect is 20k records",
                severity="critical",
                topic="xy.collect",
            ),
            quiet(10, "XiangyunIngestLagGrowing"),
            quiet(10, "XiangyunIngestNoAccepted"),  # nothing new arrives
        ],
    ),
    (
        "one partition reported by two workers after a rebalance is counted once",
        {
            f'{_LAG}{{topic="xy.collect",partition="0",instance="a"}}': "6000x20",
            f'{_LAG}{{topic="xy.collect",partition="0",instance="b"}}': "6000x20",
        },
        [quiet(10, "XiangyunIngestLagHigh")],
    ),
    (
        "backlog growing by 100 a minute, nothing accepted",
        {f'{_LAG}{{topic="xy.collect",partition="1"}}': "0+100x40"},
        [
            fires(
                25,
                "XiangyunIngestLagGrowing",
                "Ingest lag on xy.collect keeps growing",
                severity="warning",
                topic="xy.collect",
            ),
            quiet(25, "XiangyunIngestLagHigh"),
            fires(25, "XiangyunIngestNoAccepted", _NO_ACCEPTED, severity="critical"),
        ],
    ),
    (
        "small steady backlog",
        {f'{_LAG}{{topic="xy.collect",partition="1"}}': "500x40"},
        [quiet(25, "XiangyunIngestLagGrowing"), quiet(25, "XiangyunIngestNoAccepted")],
    ),
    (
        "accepted until minute 5, then everything rejected",
        {
            f'{_R}{{outcome="accepted",pool="population",reason=""}}': "0+20x5 100x25",
            f'{_R}{{outcome="rejected",pool="",reason="UNKNOWN_RESOURCE"}}': "0+50x30",
        },
        [
            quiet(5, "XiangyunIngestNoAccepted"),
            quiet(14, "XiangyunIngestNoAccepted"),  # minute 5's accepts still in the window
            fires(16, "XiangyunIngestNoAccepted", _NO_ACCEPTED, severity="critical"),
        ],
    ),
    (
        "only verification evidence, the accepted series never created",
        {f'{_R}{{outcome="verification",pool="population",reason=""}}': "0+10x30"},
        [fires(16, "XiangyunIngestNoAccepted", _NO_ACCEPTED, severity="critical")],
    ),
    (
        "idle: nothing arrives, nothing accepted",
        {
            f'{_R}{{outcome="accepted",pool="population",reason=""}}': "100x30",
            f'{_R}{{outcome="rejected",pool="",reason="FIELD_RULE"}}': "5x30",
            f'{_LAG}{{topic="xy.collect",partition="0"}}': "0x30",
        },
        [quiet(16, "XiangyunIngestNoAccepted")],
    ),
    (
        "healthy flow with many rejects: some still accepted",
        {
            f'{_R}{{outcome="accepted",pool="population",reason=""}}': "0+10x30",
            f'{_R}{{outcome="rejected",pool="",reason="FIELD_RULE"}}': "0+50x30",
        },
        [quiet(16, "XiangyunIngestNoAccepted")],
    ),
]


# The rules added with the transactional ingest, the providing unit and the Redis view.
_T = "xiangyun_ingest_transactions_total"
_W = "w:9108"
_AT = {"instance": _W}
_GA = "220000-GA"
_INTERNAL = f"Records fail on the platform's own error (INTERNAL) on {_W}"
_ABORTS = f"Ingest transactions abort on {_W}"
_RESTORE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900)
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _le(bound: float) -> str:
    return "+Inf" if bound == math.inf else f"{bound:g}"


def _histogram(
    name: str, buckets: tuple[float, ...], labels: str, values: Callable[[float], str]
) -> dict[str, str]:
    """Input series of a histogram's buckets: ``values(le)`` for each bound and +Inf."""
    return {f'{name}_bucket{{{labels}le="{_le(le)}"}}': values(le) for le in (*buckets, math.inf)}


def _restore(seconds: float) -> dict[str, str]:
    """One restore of ``seconds`` at minute 10 on w:9108, none before or after."""
    return _histogram(
        "xiangyun_ingest_restore_seconds",
        _RESTORE_BUCKETS,
        f'instance="{_W}",',
        lambda le: "0x10 1x40" if seconds <= le else "0x50",
    )


def _latency(per_minute: int, slow: int) -> dict[str, str]:
    """``per_minute`` batches a minute, of which ``slow`` take longer than 10 s, the others
    0.2 s."""
    return _histogram(
        "xiangyun_ingest_latency_seconds",
        _LATENCY_BUCKETS,
        "",
        lambda le: (
            f"0+{per_minute}x30"
            if le == math.inf
            else f"0+{per_minute - slow}x30"
            if le >= 0.25
            else "0x30"
        ),
    )


_SCENARIOS += [
    (
        "a single INTERNAL record: its series is created at 1",
        {
            f'{_R}{{outcome="accepted",pool="population",reason="",instance="{_W}"}}': "0+50x30",
            f'{_R}{{outcome="rejected",pool="",reason="INTERNAL",instance="{_W}"}}': "_x10 1x20",
        },
        [
            quiet(8, "XiangyunIngestInternalError"),
            fires(11, "XiangyunIngestInternalError", _INTERNAL, severity="warning", **_AT),
            fires(24, "XiangyunIngestInternalError", _INTERNAL, severity="warning", **_AT),
            quiet(27, "XiangyunIngestInternalError"),  # nothing new for 15 minutes
        ],
    ),
    (
        "INTERNAL again on a series that already exists",
        {f'{_R}{{outcome="rejected",pool="",reason="INTERNAL",instance="{_W}"}}': "1x20 2x20"},
        [
            quiet(17, "XiangyunIngestInternalError"),  # the first one is 15 minutes old
            fires(22, "XiangyunIngestInternalError", _INTERNAL, severity="warning", **_AT),
            quiet(36, "XiangyunIngestInternalError"),
        ],
    ),
    (
        "rejected for their data, never INTERNAL",
        {
            f'{_R}{{outcome="accepted",pool="population",reason="",instance="{_W}"}}': "0+50x30",
            f'{_R}{{outcome="rejected",pool="",reason="FIELD_RULE",instance="{_W}"}}': "0+5x30",
        },
        [quiet(12, "XiangyunIngestInternalError")],
    ),
    (
        "one transaction aborted: the series is created at 1",
        {
            f'{_T}{{result="committed",instance="{_W}"}}': "0+10x30",
            f'{_T}{{result="aborted",instance="{_W}"}}': "_x10 1x20",
        },
        [
            quiet(8, "XiangyunIngestTransactionsAborting"),
            fires(11, "XiangyunIngestTransactionsAborting", _ABORTS, severity="warning", **_AT),
            quiet(17, "XiangyunIngestTransactionsAborting"),
        ],
    ),
    (
        "a transaction aborted every minute",
        {
            f'{_T}{{result="committed",instance="{_W}"}}': "0+10x30",
            f'{_T}{{result="aborted",instance="{_W}"}}': "0+1x30",
        },
        [fires(20, "XiangyunIngestTransactionsAborting", _ABORTS, severity="warning", **_AT)],
    ),
    (
        "every transaction committed",
        {
            f'{_T}{{result="committed",instance="{_W}"}}': "0+10x30",
            f'{_T}{{result="aborted",instance="{_W}"}}': "2x30",
        },
        [quiet(20, "XiangyunIngestTransactionsAborting")],
    ),
    (
        "5% version conflicts from one unit, none from another",
        {
            f'{_R}{{outcome="accepted",pool="population",reason="",unit="{_GA}"}}': "0+95x40",
            f'{_R}{{outcome="superseded",pool="population",reason="VERSION_CONFLICT",'
            f'unit="{_GA}"}}': "0+5x40",
            f'{_R}{{outcome="accepted",pool="population",reason="",unit="220000-MZ"}}': (
                "0+100x40"
            ),
            f'{_R}{{outcome="superseded",pool="population",reason="DUPLICATE",'
            f'unit="220000-MZ"}}': "0+30x40",
        },
        [
            quiet(10, "XiangyunIngestVersionConflictsHigh"),  # not yet for 15m
            fires(
                30,
                "XiangyunIngestVersionConflictsHigh",
                f"5% of the records of unit {_GA} are version conflicts",
                severity="warning",
                unit=_GA,
            ),
        ],
    ),
    (
        "version conflicts counted without a unit label (a worker before units)",
        {
            f'{_R}{{outcome="accepted",pool="population",reason=""}}': "0+90x40",
            f'{_R}{{outcome="superseded",pool="population",reason="VERSION_CONFLICT"}}': (
                "0+10x40"
            ),
        },
        [
            fires(
                30,
                "XiangyunIngestVersionConflictsHigh",
                "10% of the records of unit (unknown) are version conflicts",
                severity="warning",
            ),
        ],
    ),
    (
        "0.5% version conflicts: fine",
        {
            f'{_R}{{outcome="accepted",pool="population",reason="",unit="{_GA}"}}': "0+199x40",
            f'{_R}{{outcome="superseded",pool="population",reason="VERSION_CONFLICT",'
            f'unit="{_GA}"}}': "0+1x40",
        },
        [quiet(30, "XiangyunIngestVersionConflictsHigh")],
    ),
    (
        "a third in conflict, but 3 records a minute from that unit",
        {
            f'{_R}{{outcome="accepted",pool="population",reason="",unit="{_GA}"}}': "0+2x40",
            f'{_R}{{outcome="superseded",pool="population",reason="VERSION_CONFLICT",'
            f'unit="{_GA}"}}': "0+1x40",
        },
        [quiet(30, "XiangyunIngestVersionConflictsHigh")],
    ),
    (
        "a restore of 2 minutes",
        _restore(120),
        [
            quiet(8, "XiangyunIngestRestoreSlow"),
            fires(
                12,
                "XiangyunIngestRestoreSlow",
                f"Pool state restore takes 4m 48s (p95) on {_W}",
                severity="warning",
                **_AT,
            ),
            quiet(45, "XiangyunIngestRestoreSlow"),  # no restore in the last 30 minutes
        ],
    ),
    (
        "a restore of 8 seconds",
        _restore(8),
        [quiet(12, "XiangyunIngestRestoreSlow")],
    ),
    (
        "2% of the batches take more than 10 s",
        _latency(100, 2),
        [
            quiet(8, "XiangyunIngestLatencyHigh"),  # not yet for 10m
            fires(20, "XiangyunIngestLatencyHigh", "Ingest latency p99 is 10s", severity="warning"),
        ],
    ),
    (
        "0.5% of the batches slow: p99 stays low",
        _latency(200, 1),
        [quiet(20, "XiangyunIngestLatencyHigh")],
    ),
    (
        "the view is behind and applies nothing",
        {
            f'xiangyun_view_lag_records{{topic="xy.pool.population",instance="{_W}"}}': "300x20",
            f'xiangyun_view_lag_records{{topic="xy.pool.legal",instance="{_W}"}}': "200x20",
            f'xiangyun_view_freshness_seconds{{instance="{_W}"}}': "0+60x20",
        },
        [
            quiet(5, "XiangyunViewLagging"),  # not yet for 5m
            fires(
                12,
                "XiangyunViewLagging",
                f"Redis view is 500 records behind the pools on {_W}",
                severity="warning",
                **_AT,
            ),
        ],
    ),
    (
        "the view is behind and has never applied a batch",
        {
            f'xiangyun_view_lag_records{{topic="xy.pool.population",instance="{_W}"}}': "40x20",
            f'xiangyun_view_freshness_seconds{{instance="{_W}"}}': " ".join(["NaN"] * 21),
        },
        [
            fires(
                12,
                "XiangyunViewLagging",
                f"Redis view is 40 records behind the pools on {_W}",
                severity="warning",
                **_AT,
            ),
        ],
    ),
    (
        "the view is behind but applies a batch every second",
        {
            f'xiangyun_view_lag_records{{topic="xy.pool.population",instance="{_W}"}}': "300x20",
            f'xiangyun_view_freshness_seconds{{instance="{_W}"}}': "1x20",
        },
        [quiet(12, "XiangyunViewLagging")],
    ),
    (
        "the view is current and idle",
        {
            f'xiangyun_view_lag_records{{topic="xy.pool.population",instance="{_W}"}}': "0x20",
            f'xiangyun_view_freshness_seconds{{instance="{_W}"}}': "0+60x20",
        },
        [quiet(12, "XiangyunViewLagging")],
    ),
    (
        "the materializer skips 3 records at minute 10",
        {f'xiangyun_view_bad_records_total{{instance="{_W}"}}': "0x10 3x20"},
        [
            quiet(8, "XiangyunViewBadRecords"),
            fires(
                12,
                "XiangyunViewBadRecords",
                f"The Redis view skipped 3 unreadable pool records on {_W}",
                severity="warning",
                **_AT,
            ),
            quiet(27, "XiangyunViewBadRecords"),
        ],
    ),
    (
        "every pool record readable",
        {f'xiangyun_view_bad_records_total{{instance="{_W}"}}': "0x30"},
        [quiet(12, "XiangyunViewBadRecords")],
    ),
]


# The data quality rules: gauges over the quality agent's 15-minute window.
_RES, _UNIT = "population.resident", "220000-GA"
_PAIR = f'resource="{_RES}",unit="{_UNIT}"'


def _quality(ratio: str, share: str, records: str) -> dict[str, str]:
    return {
        f"xiangyun_quality_{ratio}_ratio{{{_PAIR}}}": share,
        f"xiangyun_quality_window_records{{{_PAIR}}}": records,
    }


_SCENARIOS += [
    (
        "validity 70% from minute 5 on",
        _quality("validity", "1x5 0.7x40", "500x45"),
        [
            quiet(12, "XiangyunQualityValidityLow"),  # not yet for 15m
            fires(
                25,
                "XiangyunQualityValidityLow",
                f"Validity of {_RES} from {_UNIT} is 70%",
                severity="warning",
                resource=_RES,
                unit=_UNIT,
            ),
        ],
    ),
    (
        "validity 95%: fine",
        _quality("validity", "0.95x40", "500x40"),
        [quiet(25, "XiangyunQualityValidityLow")],
    ),
    (
        "validity 50%, but 4 records in the window",
        _quality("validity", "0.5x40", "4x40"),
        [quiet(25, "XiangyunQualityValidityLow")],
    ),
    (
        "no records: the ratio is NaN",
        _quality("validity", " ".join(["NaN"] * 41), "0x40"),
        [quiet(25, "XiangyunQualityValidityLow")],
    ),
    (
        "timeliness 40% from minute 5 on",
        _quality("timeliness", "1x5 0.4x40", "200x45"),
        [
            quiet(12, "XiangyunQualityTimelinessLow"),
            fires(
                25,
                "XiangyunQualityTimelinessLow",
                f"Timeliness of {_RES} from {_UNIT} is 40%",
                severity="warning",
                resource=_RES,
                unit=_UNIT,
            ),
        ],
    ),
    (
        "timeliness 90%: fine",
        _quality("timeliness", "0.9x40", "200x40"),
        [quiet(25, "XiangyunQualityTimelinessLow")],
    ),
]


# The rules of multi-source verification.
_AGE = "xiangyun_verification_conflict_oldest_open_seconds"
_PENDING = "xiangyun_verification_pending"
_EV = "xiangyun_verification_evidence_total"
_DAY = 86_400
_SCENARIOS += [
    (
        "a unit's oldest conflict passes 7 days, another unit's is a day old",
        {
            f'{_AGE}{{unit="{_GA}",instance="{_W}"}}': f"{7 * _DAY - 600}+60x90",
            f'{_AGE}{{unit="{_GA}",instance="w2:9108"}}': f"{7 * _DAY - 600}+60x90",
            f'{_AGE}{{unit="220000-MZ",instance="{_W}"}}': f"{_DAY}+60x90",
        },
        [
            quiet(20, "XiangyunVerificationConflictsStale"),  # past 7 days, not yet for 30m
            fires(
                50,
                "XiangyunVerificationConflictsStale",
                f"Unit {_GA} has left a conflict open for more than 7 days",
                severity="warning",
                unit=_GA,
            ),
        ],
    ),
    (
        "conflicts answered within days",
        {f'{_AGE}{{unit="{_GA}",instance="{_W}"}}': f"{3 * _DAY}+60x90"},
        [quiet(80, "XiangyunVerificationConflictsStale")],
    ),
    (
        "pending evidence grows by 100 a minute",
        {f'{_PENDING}{{instance="{_W}"}}': "500+100x90"},
        [
            quiet(20, "XiangyunVerificationPendingGrowing"),
            fires(
                70,
                "XiangyunVerificationPendingGrowing",
                f"Evidence waiting for an authoritative value grows on {_W}",
                severity="warning",
                **_AT,
            ),
        ],
    ),
    (
        "a large but steady amount of pending evidence",
        {f'{_PENDING}{{instance="{_W}"}}': "5000x90"},
        [quiet(70, "XiangyunVerificationPendingGrowing")],
    ),
    (
        "evidence dropped at minute 10: the series is created at 5",
        {
            f'{_EV}{{outcome="agree",instance="{_W}"}}': "0+10x40",
            f'{_EV}{{outcome="dropped",instance="{_W}"}}': "_x10 5x30",
        },
        [
            quiet(8, "XiangyunVerificationEvidenceDropped"),
            fires(
                12,
                "XiangyunVerificationEvidenceDropped",
                f"Evidence dropped unverified on {_W}",
                severity="warning",
                **_AT,
            ),
            quiet(27, "XiangyunVerificationEvidenceDropped"),
        ],
    ),
    (
        "nothing dropped",
        {f'{_EV}{{outcome="pending",instance="{_W}"}}': "0+10x40"},
        [quiet(20, "XiangyunVerificationEvidenceDropped")],
    ),
]


def test_every_alert_has_a_firing_and_a_quiet_scenario() -> None:
    firing = {name for _t, _s, exp in _SCENARIOS for _m, name, alerts in exp if alerts}
    quiet_ = {name for _t, _s, exp in _SCENARIOS for _m, name, alerts in exp if not alerts}
    rules = {r["alert"] for r in _rules()}
    assert rules <= firing, f"no scenario where these fire: {rules - firing}"
    assert rules <= quiet_, f"no scenario where these stay quiet: {rules - quiet_}"


def _rules_without_descriptions(tmp_path: Path) -> Path:
    doc = _yaml(ALERTS)
    for group in doc["groups"]:
        for rule in group["rules"]:
            rule["annotations"] = {"summary": rule.get("annotations", {}).get("summary", "")}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _scenario_tests() -> list[dict[str, Any]]:
    tests = []
    for _title, series, expected in _SCENARIOS:
        checks = [
            {
                "eval_time": f"{minute}m",
                "alertname": name,
                "exp_alerts": [
                    {"exp_labels": labels, "exp_annotations": {"summary": summary}}
                    for labels, summary in alerts
                ],
            }
            for minute, name, alerts in expected
        ]
        inputs = [{"series": s, "values": v} for s, v in series.items()]
        tests.append({"interval": "1m", "input_series": inputs, "alert_rule_test": checks})
    return tests


def test_alerts_fire_when_they_should_and_only_then(tmp_path: Path) -> None:
    promtool = _promtool()
    spec = {
        "rule_files": [str(_rules_without_descriptions(tmp_path))],
        "evaluation_interval": "1m",
        "tests": _scenario_tests(),
    }
    spec_path = tmp_path / "alerts_test.yml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    done = _run(promtool, "test", "rules", spec_path)
    assert done.returncode == 0, f"promtool test rules:\n{done.stdout}{done.stderr}"


def test_reject_alert_description_names_the_top_reasons(tmp_path: Path) -> None:
    """The description's query template renders: promtool prints what it got when the
    expected annotations (none here) differ, so the rendered text can be read back."""
    promtool = _promtool()
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": f'{_R}{{outcome="accepted",pool="population",reason=""}}',
                        "values": "0+90x30",
                    },
                    {
                        "series": f'{_R}{{outcome="rejected",pool="",reason="FIELD_RULE"}}',
                        "values": "0+8x30",
                    },
                    {
                        "series": f'{_R}{{outcome="rejected",pool="",reason="UNKNOWN_SCHEMA"}}',
                        "values": "0+2x30",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "12m",
                        "alertname": "XiangyunIngestRejectRatioHigh",
                        "exp_alerts": [{"exp_labels": {"severity": "warning"}}],
                    }
                ],
            }
        ],
    }
    spec_path = tmp_path / "describe.yml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    done = _run(promtool, "test", "rules", spec_path)
    out = done.stdout + done.stderr
    assert "error expanding template" not in out, out
    assert "Top reasons: FIELD_RULE (40), UNKNOWN_SCHEMA (10)." in out, out


def test_every_alert_description_renders(tmp_path: Path) -> None:
    """The scenarios against the rules with their descriptions: promtool reports every
    firing alert as a mismatch (no description is expected) and prints what it rendered."""
    promtool = _promtool()
    spec = {"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": _scenario_tests()}
    spec_path = tmp_path / "render.yml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    out = _run(promtool, "test", "rules", spec_path)
    text = out.stdout + out.stderr
    assert "error expanding template" not in text, text
    for rendered in (
        "Records ended with reason INTERNAL on w:9108 in the last 15 minutes (about 1)",
        "sent by providing unit 220000-GA were superseded",
        "the materializer on w:9108 has had 500 committed pool records",
        "took 4m 48s (p95 over 30 minutes) on w:9108",
    ):
        assert rendered in " ".join(text.split()), f"{rendered!r} not in:\n{text}"


# -- Grafana ---------------------------------------------------------------------------------
def test_grafana_datasource_points_at_the_compose_prometheus() -> None:
    sources = [
        s
        for f in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yml"))
        for s in _yaml(f)["datasources"]
    ]
    prometheus = [s for s in sources if s["type"] == "prometheus"]
    assert len(prometheus) == 1
    assert prometheus[0]["url"] == f"http://prometheus:{Settings().prometheus_port}"


def test_dashboard_panels_and_datasource() -> None:
    sources = {
        s["uid"]
        for f in (GRAFANA / "provisioning" / "datasources").glob("*.yml")
        for s in _yaml(f)["datasources"]
    }
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    titles = " | ".join(p["title"].lower() for p in dashboard["panels"])
    for wanted in (
        "throughput by pool",
        "rejects by reason",
        "lag",
        "batch latency p95",
        "outcomes by pool",
        "outcomes by unit",
        "superseded by reason",
        "transactions committed/aborted",
        "restore time",
        "state keys",
        "ingest latency p50/p99",
        "view lag",
        "view freshness",
    ):
        assert wanted in titles, f"dashboard has no {wanted!r} panel"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        refs = [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
        for ref in refs:
            assert ref and ref["uid"] in sources, f"{panel['title']}: datasource {ref}"
        assert panel.get("targets"), f"{panel['title']} has no query"
