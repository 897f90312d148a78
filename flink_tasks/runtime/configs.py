"""Render the configuration files of the Kafka broker and the StateFun JVM."""

from __future__ import annotations

from pathlib import Path

from flink_tasks.runtime.settings import LocalRuntimeSettings, format_duration, format_float

#: Loopback is the only address anything binds to.
LOOPBACK = "127.0.0.1"


def kafka_dirs(settings: LocalRuntimeSettings) -> tuple[Path, Path]:
    """(config dir, data dir) of the broker."""
    base = settings.run_dir / "kafka"
    return base / "conf", base / "data"


def statefun_dirs(settings: LocalRuntimeSettings) -> dict[str, Path]:
    base = settings.run_dir / "statefun"
    return {
        "base": base,
        "conf": base / "conf",
        "checkpoints": base / "checkpoints",
        "rocksdb": base / "rocksdb",
        "tmp": base / "tmp",
    }


def render_kafka_server_properties(settings: LocalRuntimeSettings) -> str:
    """``server.properties`` of a single-node KRaft broker+controller on loopback."""
    _, data_dir = kafka_dirs(settings)
    props: dict[str, str | int] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.voters": f"1@{LOOPBACK}:{settings.kafka_controller_port}",
        "listeners": (
            f"PLAINTEXT://{LOOPBACK}:{settings.kafka_port},"
            f"CONTROLLER://{LOOPBACK}:{settings.kafka_controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK}:{settings.kafka_port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": 1,
        # topics are created explicitly by the launcher, with their partition counts
        "auto.create.topics.enable": "false",
        # one broker: every internal topic must have replication factor 1 and min ISR 1,
        # otherwise the group coordinator / transaction coordinator never become available
        "offsets.topic.replication.factor": 1,
        "offsets.topic.num.partitions": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "transaction.state.log.num.partitions": 1,
        "default.replication.factor": 1,
        "min.insync.replicas": 1,
        # StateFun's exactly-once egress transactionTimeout must be <= this (15 min)
        "transaction.max.timeout.ms": 900000,
        "group.initial.rebalance.delay.ms": 0,
        "num.network.threads": 2,
        "num.io.threads": 2,
        "num.recovery.threads.per.data.dir": 1,
        "log.retention.hours": 168,
    }
    if settings.kafka_security == "sasl_ssl":
        from flink_tasks.runtime.kafka_secure import broker_properties

        props.update(broker_properties(settings))
    lines = ["# Rendered by flink_tasks.runtime; do not edit, edit the settings."]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"


def render_kafka_log4j_properties() -> str:
    """reload4j config of the broker: everything to stdout, which goes to logs/kafka.log."""
    return "\n".join(
        [
            "log4j.rootLogger=INFO, stdout",
            "log4j.appender.stdout=org.apache.log4j.ConsoleAppender",
            "log4j.appender.stdout.layout=org.apache.log4j.PatternLayout",
            "log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n",
            "log4j.logger.kafka=INFO",
            "log4j.logger.org.apache.kafka=INFO",
            "log4j.logger.kafka.request.logger=WARN",
            "log4j.logger.kafka.controller=INFO",
            "log4j.logger.kafka.log.LogCleaner=INFO",
            "log4j.logger.state.change.logger=WARN",
            "log4j.logger.kafka.authorizer.logger=WARN",
            "log4j.logger.org.apache.kafka.common.config.AbstractConfig=WARN",
            "",
        ]
    )


#: Upper bound of the job's parallelism over its whole life: keyed state is split into this many
#: key groups when the job first starts, and a savepoint restores only at a parallelism up to it.
#: 128 is what Flink picks by itself below parallelism 86, so state written before it was set
#: explicitly restores unchanged.
MAX_PARALLELISM = 128


def job_flink_conf(settings: LocalRuntimeSettings) -> dict[str, str | int]:
    """What every StateFun job of ours runs with: checkpoints, latency, restarts, rescaling."""
    return {
        "pipeline.max-parallelism": MAX_PARALLELISM,
        "execution.checkpointing.interval": format_duration(settings.checkpoint_interval),
        "execution.buffer-timeout": format_duration(settings.buffer_timeout),
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.max-concurrent-checkpoints": 1,
        "execution.checkpointing.unaligned": "false",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        "execution.savepoint.ignore-unclaimed-state": "true",
        **restart_flink_conf(settings),
    }


def restart_flink_conf(settings: LocalRuntimeSettings) -> dict[str, str | int]:
    """Flink 1.16's exponential-delay restart strategy (it has no attempt limit)."""
    return {
        "restart-strategy": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": format_duration(
            settings.restart_initial_backoff
        ),
        "restart-strategy.exponential-delay.max-backoff": format_duration(
            settings.restart_max_backoff
        ),
        "restart-strategy.exponential-delay.backoff-multiplier": format_float(
            settings.restart_backoff_multiplier
        ),
        "restart-strategy.exponential-delay.reset-backoff-threshold": format_duration(
            settings.restart_reset_backoff_threshold
        ),
        "restart-strategy.exponential-delay.jitter-factor": format_float(
            settings.restart_jitter_factor
        ),
    }


#: Flink's own Prometheus reporter (flink-metrics-prometheus): every JobManager and TaskManager
#: serves its metrics (checkpoints, restarts, back-pressure, StateFun's remote calls) at
#: ``GET http://HOST:PORT/metrics``. Flink 1.16's reporter has no bind-address option: it listens
#: on every interface of the JVM's host.
PROMETHEUS_REPORTER_FACTORY = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"
#: the port of the reporter in compose and Kubernetes (Flink's default)
CLUSTER_METRICS_PORT = 9249


def prometheus_reporter_conf(port: int | str) -> dict[str, str | int]:
    """The reporter's keys; `port` may be a range (``9250-9260``: each JVM takes a free one)."""
    return {
        "metrics.reporters": "prom",
        "metrics.reporter.prom.factory.class": PROMETHEUS_REPORTER_FACTORY,
        "metrics.reporter.prom.port": port,
    }


def local_metrics_ports(settings: LocalRuntimeSettings) -> list[int]:
    """The reporter ports of the local runtime: one, or one per JVM in cluster mode."""
    if not settings.metrics_port:
        return []
    return [settings.metrics_port + i for i in range(1 + settings.taskmanagers)]


def render_flink_conf(settings: LocalRuntimeSettings, module_yaml: Path) -> str:
    """``flink-conf.yaml`` for the StateFun MiniCluster.

    Flink 1.16 reads this file line by line as ``key: value`` (no YAML quoting), so values
    are written plain.
    """
    dirs = statefun_dirs(settings)
    conf: dict[str, str | int] = {
        "statefun.remote.module-name": module_yaml.resolve().as_uri(),
        "statefun.flink-job-name": settings.job_name,
        "classloader.parent-first-patterns.additional": (
            "org.apache.flink.statefun;org.apache.kafka;com.google.protobuf"
        ),
        "parallelism.default": settings.parallelism,
        # StateFun needs RocksDB with RocksDB timers (its feedback operator uses raw keyed state)
        "state.backend": "rocksdb",
        "state.backend.rocksdb.timer-service.factory": "ROCKSDB",
        "state.backend.incremental": "true",
        "state.backend.rocksdb.localdir": str(dirs["rocksdb"]),
        # RocksDB's own LOG files land in logs/ (tens of MB a run at INFO); warnings are enough
        "state.backend.rocksdb.log.level": "WARN_LEVEL",
        "state.checkpoints.dir": dirs["checkpoints"].resolve().as_uri(),
        "state.savepoints.dir": (dirs["base"] / "savepoints").resolve().as_uri(),
        "io.tmp.dirs": str(dirs["tmp"]),
        "web.tmpdir": str(dirs["tmp"] / "web"),
        **job_flink_conf(settings),
        # loopback only, fixed REST port (local mode would pick a random one)
        "rest.bind-address": LOOPBACK,
        "rest.address": LOOPBACK,
        "rest.bind-port": settings.rest_port,
        "rest.port": settings.rest_port,
        # no jar upload or run through REST (the job runs from the launcher, not from a jar)
        "web.submit.enable": "false",
        "jobmanager.bind-host": LOOPBACK,
        "jobmanager.rpc.address": LOOPBACK,
        "taskmanager.bind-host": LOOPBACK,
        "taskmanager.host": LOOPBACK,
        "blob.server.port": "0",
        "metrics.internal.query-service.port": "0",
    }
    ports = local_metrics_ports(settings)
    if ports:
        conf.update(
            prometheus_reporter_conf(f"{ports[0]}-{ports[-1]}" if len(ports) > 1 else ports[0])
        )
    lines = ["# Rendered by flink_tasks.runtime; do not edit, edit the settings."]
    lines += [f"{k}: {v}" for k, v in conf.items()]
    return "\n".join(lines) + "\n"
