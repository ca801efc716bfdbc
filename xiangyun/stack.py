"""The local stack without Docker: Apache Kafka (KRaft), Redis and Prometheus.

Kafka's jars come from Maven Central through ``stack/pom.xml`` and are cached in the
state folder; Redis and Prometheus are Debian's packages, installed when missing. Each
service runs detached with a PID file; ``down`` stops only those PIDs, and only when the
process's command line still names this stack's state folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import monitoring
from xiangyun.settings import Settings
from xiangyun_data import stack_dir

__all__ = ["SERVICES", "Stack", "StackError"]

SERVICES = ("kafka", "redis", "prometheus")
POM = stack_dir() / "pom.xml"
PROMETHEUS_CONFIG = Path(monitoring.__file__).resolve().parent / "prometheus.yml"


class StackError(RuntimeError):
    """A service could not be installed, started or reached; the message says what to do."""


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    pid: int | None
    address: str
    answering: bool
    ours: bool

    def line(self) -> str:
        state = "up" if self.answering else "down"
        owner = (
            f"pid {self.pid}" if self.ours and self.pid else ("external" if self.answering else "-")
        )
        return f"{self.name:<11} {state:<5} {self.address:<22} {owner}"


def _log(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


class Stack:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.root = settings.state_dir
        self.libs = self.root / "kafka" / "libs"

    # -- helpers -----------------------------------------------------------------------
    def _pidfile(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def _our_pid(self, name: str) -> int | None:
        """PID from the PID file, if that process is alive and still one of ours.

        Ours means it runs in this stack's state folder (every service is started there),
        so a PID reused by another program is never signalled.
        """
        try:
            pid = int(self._pidfile(name).read_text().strip())
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except (OSError, ValueError):
            return None
        if _is_zombie(pid):
            return None
        return pid if Path(cwd).is_relative_to(self.root) else None

    def _spawn(self, name: str, argv: list[str], cwd: Path | None = None) -> int:
        log_path = self.root / f"{name}.log"
        with open(log_path, "ab") as log_file:
            proc = subprocess.Popen(
                argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd or self.root,
                start_new_session=True,
            )
        self._pidfile(name).write_text(f"{proc.pid}\n")
        return proc.pid

    def _wait(
        self,
        name: str,
        check: Callable[[], bool],
        timeout: float,
        pid: int | None,
        busy: Callable[[], bool] | None = None,
    ) -> None:
        """Until ``check()``; a service that is ``busy()`` (loading its data) is given more
        time as long as its process lives, with a line of progress every 10 s."""
        began = time.monotonic()
        deadline = began + timeout
        said = began
        while True:
            if check():
                return
            if pid is not None and not Path(f"/proc/{pid}").exists():
                break
            now = time.monotonic()
            if busy is not None and busy():
                deadline = max(deadline, now + timeout)
                if now - said >= 10:
                    _log(f"{name} is still loading its data ({now - began:.0f} s) ...")
                    said = now
            elif now >= deadline:
                break
            time.sleep(0.25)
        tail = ""
        log_path = self.root / f"{name}.log"
        if log_path.exists():
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise StackError(f"{name} did not become ready; see {log_path}:\n{tail}")

    # -- installs ----------------------------------------------------------------------
    def install(self) -> None:
        """Fetch Kafka's jars (once) and install Redis and Prometheus if missing."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._install_debian("redis-server", "redis-server")
        self._install_debian("prometheus", "prometheus")
        self._fetch_kafka()

    def _install_debian(self, binary: str, package: str) -> None:
        if shutil.which(binary):
            return
        if os.geteuid() != 0:
            raise StackError(f"{binary} is missing: run `sudo apt-get install -y {package}`")
        _log(f"installing {package} from Debian's packages ...")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        done = subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], env=env
        )
        if done.returncode != 0 or not shutil.which(binary):
            raise StackError(f"could not install {package}; try `apt-get install -y {package}`")

    def _fetch_kafka(self) -> None:
        stamp = self.libs / ".pom-sha256"
        digest = hashlib.sha256(POM.read_bytes()).hexdigest()
        if (
            stamp.exists()
            and stamp.read_text() == digest
            and any(self.libs.glob("kafka_2.13-*.jar"))
        ):
            return
        if not shutil.which("mvn"):
            raise StackError("Maven is missing: run `apt-get install -y maven` (and a JDK 17+)")
        _log("fetching Apache Kafka jars from Maven Central (once) ...")
        if self.libs.exists():
            shutil.rmtree(self.libs)
        self.libs.mkdir(parents=True)
        done = subprocess.run(
            [
                "mvn",
                "-q",
                "-B",
                "-f",
                str(POM),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={self.libs}",
                "-DincludeScope=runtime",
            ],
        )
        if done.returncode != 0:
            raise StackError(
                "mvn could not fetch the Kafka jars; check network access to Maven Central"
            )
        stamp.write_text(digest)

    # -- Kafka -------------------------------------------------------------------------
    def _kafka_properties(self) -> Path:
        kdir = self.root / "kafka"
        data = kdir / "data"
        props = kdir / "server.properties"
        port, ctl = self.s.kafka_port, self.s.kafka_controller_port
        props.write_text(
            "\n".join(
                [
                    "# Written by `xiangyun stack up`; edits are overwritten.",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{ctl}",
                    f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{ctl}",
                    f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                    f"log.dirs={data}",
                    f"num.partitions={self.s.partitions}",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=false",
                    "log.retention.hours=168",
                    "log.segment.bytes=268435456",
                    "",
                ]
            )
        )
        (kdir / "log4j2.properties").write_text(
            "\n".join(
                [
                    "rootLogger.level=WARN",
                    "rootLogger.appenderRef.stdout.ref=STDOUT",
                    "appender.stdout.type=Console",
                    "appender.stdout.name=STDOUT",
                    "appender.stdout.layout.type=PatternLayout",
                    "appender.stdout.layout.pattern=[%d] %p %m (%c)%n",
                    "logger.kafka.name=kafka",
                    "logger.kafka.level=WARN",
                    "logger.server.name=org.apache.kafka.server",
                    "logger.server.level=INFO",
                    "",
                ]
            )
        )
        return props

    def _java(self, main: str, *args: str, heap: str = "256m") -> list[str]:
        return [
            "java",
            f"-Xmx{heap}",
            "-Xms128m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.root / 'kafka' / 'log4j2.properties'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _kafka_answers(self) -> bool:
        if not _port_open(self.s.kafka_port):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            md = AdminClient(self.s.kafka.admin()).list_topics(timeout=2)
            return bool(md.brokers)
        except Exception:
            return False

    def kafka_up(self) -> None:
        if self._kafka_answers():
            return
        if self._our_pid("kafka"):  # starting up: wait for it
            self._wait("kafka", self._kafka_answers, 90, self._our_pid("kafka"))
            return
        props = self._kafka_properties()
        data = self.root / "kafka" / "data"
        if not (data / "meta.properties").exists():
            _log("formatting Kafka storage (KRaft) ...")
            done = subprocess.run(
                self._java(
                    "kafka.tools.StorageTool",
                    "format",
                    "--ignore-formatted",
                    "-t",
                    _cluster_id(),
                    "-c",
                    str(props),
                ),
                capture_output=True,
                text=True,
            )
            if done.returncode != 0:
                raise StackError(f"Kafka storage format failed:\n{done.stdout}\n{done.stderr}")
        _log(f"starting Kafka on {self.s.kafka_bootstrap} ...")
        pid = self._spawn("kafka", self._java("kafka.Kafka", str(props), heap=self.s.kafka_heap))
        self._wait("kafka", self._kafka_answers, 90, pid)

    # -- Redis -------------------------------------------------------------------------
    def _redis_state(self) -> str:
        """``ready``, ``loading`` (replaying its append-only file) or ``down``."""
        if not _port_open(self.s.redis_port):
            return "down"
        import redis

        try:
            ok = redis.Redis.from_url(self.s.redis_url, socket_timeout=1).ping()
        except redis.exceptions.BusyLoadingError:
            return "loading"
        except Exception:
            return "down"
        return "ready" if ok else "down"

    def _redis_answers(self) -> bool:
        return self._redis_state() == "ready"

    def redis_up(self) -> None:
        if self._redis_answers():
            return

        def loading() -> bool:
            return self._redis_state() == "loading"

        running = self._our_pid("redis")
        if running:  # ours, still starting or loading a large data set: wait for it
            self._wait("redis", self._redis_answers, 30, running, busy=loading)
            return
        rdir = self.root / "redis"
        rdir.mkdir(parents=True, exist_ok=True)
        _log(f"starting Redis on 127.0.0.1:{self.s.redis_port} ...")
        pid = self._spawn(
            "redis",
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.s.redis_port),
                "--dir",
                str(rdir),
                "--appendonly",
                "yes",
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "yes",
            ],
            cwd=rdir,
        )
        self._wait("redis", self._redis_answers, 30, pid, busy=loading)

    # -- Prometheus --------------------------------------------------------------------
    def _prometheus_answers(self) -> bool:
        url = f"http://127.0.0.1:{self.s.prometheus_port}/-/ready"
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                return bool(resp.status == 200)
        except Exception:
            return False

    def _prometheus_scrapes_us(self) -> bool:
        url = f"http://127.0.0.1:{self.s.prometheus_port}/api/v1/status/config"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                return b"xiangyun-worker" in resp.read()
        except Exception:
            return False

    def prometheus_up(self) -> None:
        if self._prometheus_answers():
            if not self._prometheus_scrapes_us():
                raise StackError(
                    f"a Prometheus that xiangyun did not start answers on port "
                    f"{self.s.prometheus_port} without the xiangyun-worker job (Debian starts "
                    "one on install on some machines): stop it, e.g. `systemctl stop "
                    "prometheus`, or set XIANGYUN_PROMETHEUS_PORT to a free port"
                )
            return
        pdir = self.root / "prometheus"
        pdir.mkdir(parents=True, exist_ok=True)
        _log(f"starting Prometheus on 127.0.0.1:{self.s.prometheus_port} ...")
        pid = self._spawn(
            "prometheus",
            [
                "prometheus",
                f"--config.file={PROMETHEUS_CONFIG}",
                f"--storage.tsdb.path={pdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.s.prometheus_port}",
                "--storage.tsdb.retention.time=7d",
                "--web.enable-lifecycle",
            ],
            cwd=pdir,
        )
        self._wait("prometheus", self._prometheus_answers, 60, pid)

    # -- verbs -------------------------------------------------------------------------
    def up(self) -> list[ServiceStatus]:
        self.install()
        self.kafka_up()
        self.redis_up()
        self.prometheus_up()
        from streams.kafka.topics import ensure_topics

        ensure_topics(self.s.streams)
        return self.status()

    def down(self) -> list[str]:
        stopped = []
        for name in reversed(SERVICES):
            pid = self._our_pid(name)
            if pid is None:
                self._pidfile(name).unlink(missing_ok=True)
                continue
            _log(f"stopping {name} (pid {pid}) ...")
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 60
            while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
                if _is_zombie(pid):
                    break
                time.sleep(0.2)
            if Path(f"/proc/{pid}").exists() and not _is_zombie(pid):
                os.kill(pid, signal.SIGKILL)
            self._pidfile(name).unlink(missing_ok=True)
            stopped.append(name)
        return stopped

    def status(self) -> list[ServiceStatus]:
        s = self.s
        checks = {
            "kafka": (s.kafka_bootstrap, self._kafka_answers),
            "redis": (f"127.0.0.1:{s.redis_port}", self._redis_answers),
            "prometheus": (f"127.0.0.1:{s.prometheus_port}", self._prometheus_answers),
        }
        out = []
        for name in SERVICES:
            addr, answers = checks[name]
            pid = self._our_pid(name)
            out.append(ServiceStatus(name, pid, addr, answers(), pid is not None))
        return out


def _cluster_id() -> str:
    # KRaft wants a base64 UUID of 22 characters.
    import base64

    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True
