"""Render the StateFun remote ``module.yaml`` (StateFun 3.x multi-document format).

Three kinds of components, one YAML document each:

* ``io.statefun.endpoints.v2/http`` -- one per function namespace (``flink_tasks/*`` plus any
  extra namespaces), pointing at the Python worker's ``/statefun/{function.name}``: the worker
  pool given for the namespace (``endpoints``, ``NAMESPACE=URL``), else the one worker URL;
* ``io.statefun.kafka.v1/ingress`` ``flink_tasks/ingress`` -- the requests, actions and
  task-reports topics, all routed to ``flink_tasks/pipeline`` (the record key becomes the
  function id);
* ``io.statefun.kafka.v1/egress`` ``flink_tasks/kafka`` -- the one egress the Python code writes
  records to, for any topic.

Ingress start position: ``group-offsets`` with ``autoOffsetResetPosition: earliest``. On the very
first start the group has no committed offsets, so everything already in the topics is read
(records produced before partition assignment are not lost). The consumer commits its offsets
to Kafka whenever a checkpoint completes, so a runtime started again *without* a checkpoint
resumes from there instead of replaying every topic from the beginning. A runtime restored from
a checkpoint ignores both and continues from the offsets stored in the checkpoint.

The ingress reads with ``isolation.level: read_committed`` so that records the exactly-once
egress writes into an ingress topic only become visible once their transaction commits (and
aborted ones never do); for plain producers this changes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from flink_tasks import wire
from flink_tasks.kafka_security import KafkaSecurity
from flink_tasks.runtime.configs import (
    CLUSTER_METRICS_PORT,
    job_flink_conf,
    prometheus_reporter_conf,
)
from flink_tasks.runtime.kafka_secure import role_security
from flink_tasks.runtime.settings import LocalRuntimeSettings, format_duration, project_root

YamlValue = str | int | bool | Sequence["YamlValue"] | Mapping[str, "YamlValue"]


def module_components(
    settings: LocalRuntimeSettings,
    *,
    kafka_address: str | None = None,
    worker_url: str | None = None,
    kafka_security: KafkaSecurity | None = None,
) -> list[dict[str, YamlValue]]:
    """The module's components as plain data (one dict per YAML document).

    ``kafka_address`` and ``worker_url`` replace the local runtime's loopback addresses, for
    the deployment targets (:data:`DEPLOY_TARGETS`) where Kafka and the worker live elsewhere;
    ``kafka_security`` is how the job's Kafka ingress and egress authenticate there (default:
    the local broker's ``statefun`` user, or nothing for a plaintext local broker).
    """
    kafka = kafka_address or settings.bootstrap_servers
    # TLS / SASL of the StateFun job's Kafka clients (passwords as ${dir:...} file references)
    kafka_properties: list[YamlValue] = [
        {key: value}
        for key, value in (kafka_security or role_security(settings, "statefun"))
        .java_properties()
        .items()
    ]
    worker = (worker_url or settings.worker_url).rstrip("/")
    pools = settings.endpoint_urls
    docs: list[dict[str, YamlValue]] = []
    for namespace in settings.function_namespaces:
        url = pools.get(namespace, worker)
        docs.append(
            {
                "kind": "io.statefun.endpoints.v2/http",
                "spec": {
                    "functions": f"{namespace}/*",
                    "urlPathTemplate": f"{url}/statefun/{{function.name}}",
                    "maxNumBatchRequests": settings.max_batch_requests,
                    "transport": {
                        "type": "io.statefun.transports.v1/async",
                        "call": format_duration(settings.call_timeout),
                        "connect": format_duration(settings.connect_timeout),
                        "payload_max_bytes": settings.payload_max_bytes,
                    },
                },
            }
        )
    docs.append(
        {
            "kind": "io.statefun.kafka.v1/ingress",
            "spec": {
                "id": wire.INGRESS_ID,
                "address": kafka,
                "consumerGroupId": settings.consumer_group_id,
                "startupPosition": {"type": "group-offsets"},
                "autoOffsetResetPosition": "earliest",
                "topics": [
                    {
                        "topic": settings.requests_topic,
                        "valueType": wire.PIPELINE_REQUEST,
                        "targets": [wire.PIPELINE_FUNCTION],
                    },
                    {
                        "topic": settings.actions_topic,
                        "valueType": wire.ACTION_REQUEST,
                        "targets": [wire.PIPELINE_FUNCTION],
                    },
                    {
                        "topic": settings.task_reports_topic,
                        "valueType": wire.WORKER_REPORT,
                        "targets": [wire.PIPELINE_FUNCTION],
                    },
                ],
                "properties": [{"isolation.level": "read_committed"}, *kafka_properties],
            },
        }
    )
    semantic: dict[str, YamlValue] = {"type": settings.delivery_semantic}
    egress_properties = kafka_properties
    if settings.delivery_semantic == "exactly-once":
        semantic["transactionTimeout"] = format_duration(settings.transaction_timeout)
    else:
        # restored from an exactly-once checkpoint, the sink ends the transactions recorded
        # there; without a timeout here it asks for Flink's 1 h, above the broker's maximum
        # (15 min by default), and the job restarts forever
        timeout_ms = int(settings.transaction_timeout.total_seconds() * 1000)
        egress_properties = [{"transaction.timeout.ms": str(timeout_ms)}, *kafka_properties]
    docs.append(
        {
            "kind": "io.statefun.kafka.v1/egress",
            "spec": {
                "id": wire.EGRESS_ID,
                "address": kafka,
                "deliverySemantic": semantic,
                **({"properties": egress_properties} if egress_properties else {}),
            },
        }
    )
    return docs


def render_module_yaml(
    settings: LocalRuntimeSettings,
    *,
    kafka_address: str | None = None,
    worker_url: str | None = None,
    header: str | None = None,
    kafka_security: KafkaSecurity | None = None,
) -> str:
    """Render ``module.yaml`` for StateFun 3.3.0 from the settings."""
    if header is None:
        header = "# Rendered by flink_tasks.runtime.module_yaml; do not edit, edit the settings.\n"
    components = module_components(
        settings, kafka_address=kafka_address, worker_url=worker_url, kafka_security=kafka_security
    )
    return header + "".join("---\n" + to_yaml(doc) for doc in components)


def to_yaml(value: YamlValue, indent: int = 0) -> str:
    """A tiny block-style YAML emitter; scalars are JSON-quoted, which YAML accepts as is."""
    pad = "  " * indent
    if isinstance(value, Mapping):
        lines = []
        for key, item in value.items():
            if _is_scalar(item) or not item:
                lines.append(f"{pad}{key}: {_scalar(item)}\n")
            else:
                lines.append(f"{pad}{key}:\n{to_yaml(item, indent + 1)}")
        return "".join(lines)
    if isinstance(value, Sequence) and not isinstance(value, str):
        lines = []
        for item in value:
            if _is_scalar(item) or not item:
                lines.append(f"{pad}- {_scalar(item)}\n")
            else:
                nested = to_yaml(item, indent + 1)
                lines.append(f"{pad}- {nested[len(pad) + 2 :]}")
        return "".join(lines)
    return f"{pad}{_scalar(value)}\n"


def _is_scalar(value: YamlValue) -> bool:
    return isinstance(value, str | int | bool)


def _scalar(value: YamlValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _quote(value)
    return "{}" if isinstance(value, Mapping) else "[]"


def _quote(text: str) -> str:
    plain_ok = (
        text
        and all(c.isalnum() or c in "._/-:{}" for c in text)
        and text[0] not in "-:{}"
        and text.lower() not in ("true", "false", "yes", "no", "on", "off", "null", "~")
        and not _looks_numeric(text)
        and "{" not in text
    )
    return text if plain_ok else json.dumps(text)


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# --- deployment targets ---------------------------------------------------------------------------
#
# One source of truth for the StateFun module of every way flink-tasks runs: the settings. The
# local runtime renders module.yaml into its run dir at start; docker-compose and Kubernetes use
# committed files rendered by ``flink-tasks module-yaml --target compose|kubernetes`` from the
# ``settings.env`` next to them (FLINK_TASKS_* variables, the same names the local runtime, the
# worker and the client read). A test checks that the committed files are up to date.

TargetName = Literal["local", "compose", "kubernetes"]

#: Environment variables of a ``settings.env`` that are not `LocalRuntimeSettings` fields.
KAFKA_ADDRESS_VAR = "FLINK_TASKS_BOOTSTRAP_SERVERS"
WORKER_URL_VAR = "FLINK_TASKS_WORKER_URL"


@dataclass(frozen=True)
class DeployTarget:
    """Where a rendered StateFun module runs, and the addresses it uses there."""

    name: TargetName
    settings: LocalRuntimeSettings
    kafka_address: str
    worker_url: str
    #: the folder with ``settings.env`` and the committed rendered files (None: local)
    directory: Path | None = None
    #: TLS / SASL of the job's Kafka clients (FLINK_TASKS_SECURITY_PROTOCOL ... in settings.env)
    kafka_security: KafkaSecurity | None = None

    def module_yaml(self) -> str:
        header = (
            f"# Rendered by `flink-tasks module-yaml --target {self.name}` from "
            f"{'the FLINK_TASKS_* environment' if self.directory is None else 'settings.env'}; "
            "do not edit.\n"
        )
        return render_module_yaml(
            self.settings,
            kafka_address=self.kafka_address,
            worker_url=self.worker_url,
            header=header,
            kafka_security=self.kafka_security,
        )

    def rendered_files(self) -> dict[Path, str]:
        """The committed files of this target and their up-to-date content (empty for local)."""
        if self.directory is None:
            return {}
        files = {self.directory / "module.yaml": self.module_yaml()}
        if self.name == "compose":
            files[self.directory / "flink-conf.yaml"] = render_cluster_flink_conf(self.settings)
        return files

    def stale_files(self) -> list[Path]:
        """Committed files whose content differs from what the settings render."""
        return [
            path
            for path, text in self.rendered_files().items()
            if not path.is_file() or path.read_text() != text
        ]


def target_dir(name: str) -> Path:
    """Default folder of a target's ``settings.env``: ``deploy/<name>`` of the source checkout
    this package lives in, else ``./deploy/<name>`` (a checkout or copy of the repository's
    ``deploy/`` folder, which is where docker-compose.yml and the kustomization expect it)."""
    root = project_root()
    return (root if root is not None else Path.cwd()) / "deploy" / name


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines; ``#`` comments and blank lines skipped (what kustomize's ``envs:``
    and compose's ``env_file:`` both accept when values are unquoted)."""
    values: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.partition("=")
        if not sep or not key.strip() or key != key.strip():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE, got {line!r}")
        values[key] = value
    return values


def deploy_target(
    name: str,
    *,
    environ: Mapping[str, str] | None = None,
    directory: Path | None = None,
) -> DeployTarget:
    """The target ``local`` (settings from the environment), ``compose`` or ``kubernetes``
    (settings from ``<directory>/settings.env``, by default :func:`target_dir`; the environment
    is not read)."""
    if name == "local":
        settings = LocalRuntimeSettings.from_env(environ=environ)
        return DeployTarget("local", settings, settings.bootstrap_servers, settings.worker_url)
    if name not in ("compose", "kubernetes"):
        raise ValueError(f"unknown target {name!r}: use local, compose or kubernetes")
    directory = directory if directory is not None else target_dir(name)
    env_file = directory / "settings.env"
    if not env_file.is_file():
        raise ValueError(
            f"no settings.env in {directory}: pass --dir DIR, the folder holding the {name} "
            f"target's settings.env (deploy/{name}/ of the flink-tasks repository); the "
            "rendered files are written next to it"
        )
    env = read_env_file(env_file)
    for var in (KAFKA_ADDRESS_VAR, WORKER_URL_VAR):
        if not env.get(var):
            raise ValueError(f"{env_file}: {var} is missing")
    settings = LocalRuntimeSettings.from_env(environ=env)
    target: TargetName = "compose" if name == "compose" else "kubernetes"
    return DeployTarget(
        target,
        settings,
        env[KAFKA_ADDRESS_VAR],
        env[WORKER_URL_VAR],
        directory,
        KafkaSecurity.from_env(environ=env),
    )


def render_cluster_flink_conf(settings: LocalRuntimeSettings) -> str:
    """``flink-conf.yaml`` of the docker-compose Flink cluster (one job manager running the
    StateFun job, one task manager with ``parallelism`` slots), mounted over the official
    ``apache/flink-statefun:3.3.0`` image's own file."""
    conf: dict[str, str | int] = {
        "statefun.flink-job-name": settings.job_name,
        "classloader.parent-first-patterns.additional": (
            "org.apache.flink.statefun;org.apache.kafka;com.google.protobuf"
        ),
        "parallelism.default": settings.parallelism,
        "taskmanager.numberOfTaskSlots": settings.parallelism,
        "jobmanager.rpc.address": "jobmanager",
        "jobmanager.rpc.port": 6123,
        "taskmanager.rpc.port": 6122,
        "blob.server.port": 6124,
        "rest.address": "jobmanager",
        "rest.bind-address": "0.0.0.0",
        "rest.port": 8081,
        # no jar upload or run through REST: the REST API has no authentication
        "web.submit.enable": "false",
        "jobmanager.memory.process.size": "1g",
        "taskmanager.memory.process.size": "1536m",
        # StateFun needs RocksDB with RocksDB timers (its feedback operator uses raw keyed state)
        "state.backend": "rocksdb",
        "state.backend.rocksdb.timer-service.factory": "ROCKSDB",
        "state.backend.incremental": "true",
        # a named volume shared by the job manager and the task manager
        "state.checkpoints.dir": "file:///checkpoints/checkpoints",
        "state.savepoints.dir": "file:///checkpoints/savepoints",
        **job_flink_conf(settings),
        "pipeline.auto-generate-uids": "false",
        **prometheus_reporter_conf(CLUSTER_METRICS_PORT),
    }
    lines = [
        "# Rendered by `flink-tasks module-yaml --target compose` from settings.env; do not edit.",
        "# Flink 1.16 reads this file line by line as `key: value`.",
    ]
    lines += [f"{k}: {v}" for k, v in conf.items()]
    return "\n".join(lines) + "\n"
