"""The five topics on any Kafka (a managed one too): check that they exist with what StateFun
needs, or create the missing ones as the local runtime does.

What a check calls a problem is what would hurt the running job:

* a missing topic (the StateFun job, the worker or the client fails on it);
* an ingress topic (requests, actions, task reports) without ``compact`` in its
  ``cleanup.policy``: only a compacted topic makes the broker refuse a record without a key,
  which stock StateFun's ingress fails on, restarts, reads again and fails on again;
* an ingress topic whose ``min.compaction.lag.ms`` is below its ``retention.ms``: compaction
  could then remove a record that retention keeps, and a restore from an older checkpoint
  (whose offsets are before it) would miss it.

Fewer partitions than the settings ask for is reported but is no problem (Flink source subtasks
beyond the partitions only idle). Existing topics are never changed: a check says how to fix one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from flink_tasks.kafka_security import KafkaSecurity
from flink_tasks.runtime.kafka import describe_field
from flink_tasks.runtime.process import port_accepts
from flink_tasks.runtime.settings import KEYED_TOPIC_CONFIG, LocalRuntimeSettings

#: Kafka's "forever" for retention.ms
_FOREVER = -1


@dataclass(frozen=True)
class TopicReport:
    """What one topic looks like next to what the settings ask for."""

    name: str
    wanted_partitions: int
    ingress: bool
    partitions: int | None = None
    """None: the topic does not exist."""
    configs: dict[str, str] = field(default_factory=dict)
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.partitions is not None and not self.problems


class TopicsError(Exception):
    """The broker could not be reached or refused the admin request."""


@contextlib.contextmanager
def admin_client(
    bootstrap_servers: str, security: KafkaSecurity, timeout_s: float = 10.0
) -> Iterator[Any]:
    """A kafka-python admin client, closed on exit; `TopicsError` if no broker answers."""
    from kafka.admin import KafkaAdminClient
    from kafka.errors import KafkaError

    _probe(bootstrap_servers, timeout_s)
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=bootstrap_servers,
            client_id="flink-tasks-topics",
            request_timeout_ms=int(timeout_s * 1000),
            bootstrap_timeout_ms=int(timeout_s * 1000),
            **security.kafka_python_options(),
        )
    except (KafkaError, ValueError) as err:
        raise TopicsError(f"cannot connect to {bootstrap_servers}: {err}") from None
    try:
        yield admin
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def _probe(bootstrap_servers: str, timeout_s: float) -> None:
    """A TCP connection to some bootstrap server first: kafka-python leaks a thread and sockets
    when it cannot bootstrap."""
    for address in bootstrap_servers.split(","):
        host, _, port = address.strip().rpartition(":")
        if port_accepts(int(port), host.strip("[]"), timeout_s):
            return
    raise TopicsError(
        f"no broker of {bootstrap_servers} accepts connections (waited {timeout_s:g} s for each)"
    )


def inspect_topics(admin: Any, settings: LocalRuntimeSettings) -> list[TopicReport]:
    """One report per topic of `settings`, in the settings' order."""
    from kafka.admin import ConfigResource, ConfigResourceType

    existing = set(admin.list_topics())
    wanted = settings.topic_partitions
    ingress = set(settings.ingress_topics)
    present = [name for name in wanted if name in existing]
    partitions = {
        describe_field(d, "name", "topic"): len(d.get("partitions") or ())
        for d in (admin.describe_topics(present) if present else [])
    }
    configs: dict[str, dict[str, str]] = {}
    if present:
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in present]
        found = admin.describe_configs(resources, config_filter="all")
        for by_name in found.values():
            for name, entries in by_name.items():
                configs[name] = {key: str(data["value"]) for key, data in entries.items()}
    reports = []
    for name, parts in wanted.items():
        if name not in existing:
            reports.append(TopicReport(name, parts, name in ingress))
            continue
        config = configs.get(name, {})
        problems = _ingress_problems(config) if name in ingress else ()
        if not partitions.get(name):  # listed, but Kafka would not describe it to this user
            problems = (
                "its partitions could not be read (is this user allowed Describe?)",
                *problems,
            )
        reports.append(
            TopicReport(name, parts, name in ingress, partitions.get(name, 0), config, problems)
        )
    return reports


def _ingress_problems(config: dict[str, str]) -> tuple[str, ...]:
    if "cleanup.policy" not in config:  # Kafka answers a denied DescribeConfigs with nothing
        return (
            "its configs could not be read (is this user allowed DescribeConfigs on it?), so "
            "whether it refuses records without a key is unknown",
        )
    policy = config["cleanup.policy"]
    if "compact" not in policy.split(","):
        return (
            f"cleanup.policy={policy}: the broker accepts records without a key, and "
            "one would crash-loop StateFun's ingress (needs compact,delete)",
        )
    retention = int(config.get("retention.ms", _FOREVER))
    lag = int(config.get("min.compaction.lag.ms", 0))
    if (retention == _FOREVER and lag < 2**63 - 1) or (retention != _FOREVER and lag < retention):
        return (
            f"min.compaction.lag.ms={lag} is below retention.ms={retention}: compaction may "
            "remove a record that retention keeps, and a restore from an older checkpoint "
            "would miss it",
        )
    return ()


def fix_command(report: TopicReport, bootstrap_servers: str) -> str:
    """The shell command that gives an existing ingress topic the configs it needs."""
    configs = ",".join(f"{k}={v}" for k, v in KEYED_TOPIC_CONFIG.items()).replace(
        "compact,delete", "[compact,delete]"
    )
    return (
        f"kafka-configs.sh --bootstrap-server {bootstrap_servers} --alter --entity-type topics "
        f"--entity-name {report.name} --add-config {configs}"
    )


def create_missing(
    admin: Any, settings: LocalRuntimeSettings, reports: list[TopicReport], replication: int
) -> list[str]:
    """Create the topics that `reports` found missing, with the settings' partitions and the
    ingress topics' configs; returns their names. `replication` -1: the broker's default."""
    from kafka.admin import NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    configs = settings.topic_configs
    missing = [
        NewTopic(
            r.name,
            num_partitions=r.wanted_partitions,
            replication_factor=replication,
            topic_configs=configs.get(r.name, {}),
        )
        for r in reports
        if r.partitions is None
    ]
    if not missing:
        return []
    try:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(missing, timeout_ms=30_000)
    except KafkaError as err:
        raise TopicsError(f"creating {', '.join(t.name for t in missing)}: {err}") from None
    return [t.name for t in missing]
