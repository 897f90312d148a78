"""The local single-node Kafka broker (KRaft combined mode) from Maven-resolved jars."""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

from flink_tasks.logs import quiet_kafka_close_race
from flink_tasks.runtime import kafka_secure
from flink_tasks.runtime.configs import (
    kafka_dirs,
    render_kafka_log4j_properties,
    render_kafka_server_properties,
)
from flink_tasks.runtime.errors import StartupError
from flink_tasks.runtime.process import (
    ManagedProcess,
    ensure_ports_free,
    port_accepts,
    rotate_log_file,
    tail,
)
from flink_tasks.runtime.settings import LocalRuntimeSettings
from flink_tasks.runtime.tools import JavaRuntime, maven_classpath

log = logging.getLogger(__name__)

BROKER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
#: The run dir keeps the cluster id it was formatted with (``kafka/cluster-id``).
CLUSTER_ID_FILE = "cluster-id"


def new_cluster_id() -> str:
    """A KRaft cluster id: a UUID in URL-safe base64 without padding (Kafka's own form).

    Like Kafka's ``Uuid.randomUuid()``, ids starting with ``-`` (one in 64) are drawn again:
    command-line tools would read them as options.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class KafkaBroker:
    """Start/stop the broker, format its storage on first start, create the topics."""

    def __init__(self, settings: LocalRuntimeSettings) -> None:
        self.settings = settings
        self.conf_dir, self.data_dir = kafka_dirs(settings)
        self.process = ManagedProcess(
            "kafka", settings.run_dir / "kafka.pid", settings.kafka_log_file
        )
        self.last_error: BaseException | None = None

    @property
    def ports(self) -> dict[int, str]:
        return {
            self.settings.kafka_port: "Kafka broker",
            self.settings.kafka_controller_port: "Kafka controller",
        }

    def classpath(self) -> list[str]:
        return maven_classpath(
            self.settings.deploy_dir / "kafka",
            package=False,
            timeout=self.settings.build_timeout.total_seconds(),
        )

    def write_configs(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if kafka_secure.secured(self.settings):
            kafka_secure.ensure_material(self.settings)
        server_properties = self.conf_dir / "server.properties"
        server_properties.touch(mode=0o600)  # it may hold the broker's own passwords
        server_properties.chmod(0o600)
        server_properties.write_text(render_kafka_server_properties(self.settings))
        (self.conf_dir / "log4j.properties").write_text(render_kafka_log4j_properties())

    def _java_cmd(self, java: JavaRuntime, classpath: list[str], main: str) -> list[str]:
        heap = self.settings.kafka_heap_mb
        return [
            java.executable,
            f"-Xms{min(256, heap)}m",
            f"-Xmx{heap}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Djava.io.tmpdir={self.settings.run_dir / 'kafka' / 'tmp'}",
            f"-Dlog4j.configuration={(self.conf_dir / 'log4j.properties').as_uri()}",
            "-cp",
            os.pathsep.join(classpath),
            main,
        ]

    def cluster_id(self) -> str:
        """The run dir's cluster id (``kafka/cluster-id``), made and kept on first use."""
        path = self.settings.run_dir / "kafka" / CLUSTER_ID_FILE
        if path.is_file():
            return path.read_text().strip()
        cluster_id = new_cluster_id()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(cluster_id + "\n")
        return cluster_id

    def format_storage(self, java: JavaRuntime, classpath: list[str]) -> None:
        """Format the KRaft storage once (with the run dir's cluster id); later starts reuse it."""
        if (self.data_dir / "meta.properties").is_file():
            return
        cluster_id = self.cluster_id()
        (self.settings.run_dir / "kafka" / "tmp").mkdir(parents=True, exist_ok=True)
        cmd = [
            *self._java_cmd(java, classpath, STORAGE_TOOL_MAIN),
            "format",
            # one argument: an id that begins with "-" must not be read as an option
            f"--cluster-id={cluster_id}",
            "-c",
            str(self.conf_dir / "server.properties"),
            "--ignore-formatted",
        ]
        argument_file = None
        if kafka_secure.secured(self.settings):
            # the SCRAM users, with their passwords: in a Java argument file, not on the
            # command line (main class and arguments move into it)
            main_at = cmd.index(STORAGE_TOOL_MAIN)
            argument_file = kafka_secure.scram_argument_file(self.settings, cmd[main_at:])
            cmd = [*cmd[:main_at], f"@{argument_file}"]
        self.settings.logs_dir.mkdir(parents=True, exist_ok=True)
        with self.settings.kafka_log_file.open("ab") as out:
            out.write(f"# formatting Kafka storage, cluster id {cluster_id}\n".encode())
            out.flush()
            try:
                proc = subprocess.run(
                    cmd,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=120,
                    check=False,
                )
            finally:
                if argument_file is not None:
                    argument_file.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise StartupError(
                f"formatting the Kafka storage failed (exit {proc.returncode})",
                log_file=self.settings.kafka_log_file,
                log_tail=tail(self.settings.kafka_log_file),
            )

    def start(self, java: JavaRuntime, *, rotate_log: bool = True) -> float:
        """Start the broker and wait until it serves metadata and the topics exist.

        Returns the seconds from JVM start to ready.
        """
        ensure_ports_free(self.ports)
        classpath = self.classpath()
        self.write_configs()
        if rotate_log:
            rotate_log_file(self.settings.kafka_log_file)
        self.format_storage(java, classpath)
        cmd = [
            *self._java_cmd(java, classpath, BROKER_MAIN),
            str(self.conf_dir / "server.properties"),
        ]
        started = time.monotonic()
        self.process.start(cmd, cwd=self.settings.run_dir, rotate_log=False)
        try:
            self.wait_ready(self.settings.kafka_start_timeout.total_seconds())
            self.create_topics()
            if self.settings.kafka_acls:
                self.grant_acls()
        except BaseException:
            self.process.stop(grace=5.0)
            raise
        elapsed = time.monotonic() - started
        log.info("Kafka ready on %s after %.1fs", self.settings.bootstrap_servers, elapsed)
        return elapsed

    def admin(self, timeout_ms: int = 5000) -> Any:
        from kafka.admin import KafkaAdminClient

        quiet_kafka_close_race()
        with _quiet():
            return KafkaAdminClient(
                bootstrap_servers=self.settings.bootstrap_servers,
                client_id="flink-tasks-launcher",
                request_timeout_ms=timeout_ms,
                bootstrap_timeout_ms=timeout_ms,
                **kafka_secure.role_security(self.settings, "admin").kafka_python_options(),
            )

    def list_topics(self, timeout_ms: int = 3000) -> set[str] | None:
        """Topic names, or None if the broker does not answer (see ``last_error``)."""
        try:
            admin = self.admin(timeout_ms)
        except Exception as exc:
            self.last_error = exc
            return None
        try:
            with _quiet():
                return set(admin.list_topics())
        except Exception as exc:
            self.last_error = exc
            return None
        finally:
            with contextlib.suppress(Exception):
                admin.close()

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            self.process.check_alive("start-up")
            # a plain TCP probe first: kafka-python leaks a socket per refused connection
            if port_accepts(self.settings.kafka_port) and (
                self.list_topics(timeout_ms=2000) is not None
            ):
                return
            if time.monotonic() > deadline:
                raise StartupError(
                    f"Kafka did not answer on {self.settings.bootstrap_servers} "
                    f"within {timeout:.0f}s (last client error: {self.last_error!r})",
                    log_file=self.settings.kafka_log_file,
                    log_tail=tail(self.settings.kafka_log_file, 20),
                )
            time.sleep(0.25)

    def create_topics(self) -> None:
        """Create the missing topics and wait until every partition has a leader."""
        with _quiet():
            self._create_topics()

    def _create_topics(self) -> None:
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        wanted = self.settings.topic_partitions
        configs = self.settings.topic_configs
        admin = self.admin(10_000)
        try:
            existing = set(admin.list_topics())
            missing = [
                NewTopic(
                    name,
                    num_partitions=parts,
                    replication_factor=1,
                    topic_configs=configs.get(name, {}),
                )
                for name, parts in wanted.items()
                if name not in existing
            ]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics(missing, timeout_ms=30_000)
                log.info("created topics %s", ", ".join(t.name for t in missing))
            # a run dir from an older version keeps its topics: give them today's configs (the
            # whole set: the runtime's topics have no other overrides)
            older = [name for name in configs if name in existing]
            if older:
                from kafka.admin import ConfigResource, ConfigResourceType

                topic = ConfigResourceType.TOPIC
                admin.alter_configs([ConfigResource(topic, n, configs[n]) for n in older])
            deadline = time.monotonic() + 60
            while True:
                described = {
                    describe_field(d, "name", "topic"): d
                    for d in admin.describe_topics(list(wanted))
                }
                ready = all(
                    name in described
                    and not described[name].get("error_code")
                    and described[name].get("partitions")
                    and all(
                        describe_field(p, "leader_id", "leader") >= 0
                        for p in described[name]["partitions"]
                    )
                    for name in wanted
                )
                if ready:
                    break
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"Kafka topics {sorted(wanted)} have no leaders after 60s",
                        log_file=self.settings.kafka_log_file,
                        log_tail=tail(self.settings.kafka_log_file, 20),
                    )
                time.sleep(0.2)
            for name, parts in wanted.items():
                have = len(described[name]["partitions"])
                if have != parts:
                    log.warning(
                        "topic %s exists with %d partitions, settings ask for %d",
                        name,
                        have,
                        parts,
                    )
        finally:
            with contextlib.suppress(Exception):
                admin.close()

    def grant_acls(self) -> None:
        """The ACLs of every role (see kafka_acls); the launcher itself is a super user."""
        from flink_tasks.runtime.kafka_acls import grant

        with _quiet():
            admin = self.admin(10_000)
            try:
                log.info("granted %d Kafka ACLs", grant(admin, self.settings))
            finally:
                with contextlib.suppress(Exception):
                    admin.close()

    def stop(self, *, kill: bool = False) -> bool:
        return self.process.stop(self.settings.stop_grace.total_seconds(), kill=kill)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """kafka-python 3.0 on Python 3.11 triggers importlib.resources DeprecationWarnings; do
    not let a caller's ``-W error`` (e.g. pytest's filterwarnings) break the launcher."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def describe_field(data: dict[str, Any], *names: str) -> Any:
    """First present key (kafka-python versions name metadata fields differently)."""
    for name in names:
        if name in data:
            return data[name]
    raise KeyError(names[0])
