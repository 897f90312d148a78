"""Client settings: a frozen dataclass, read from the environment only when asked to."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flink_tasks import wire
from flink_tasks.config import settings_from_env
from flink_tasks.kafka_security import KafkaSecurity
from flink_tasks.requests import (
    DEFAULT_MAX_REQUEST_BYTES as DEFAULT_MAX_REQUEST_BYTES,
)
from flink_tasks.requests import (
    KAFKA_DEFAULT_MAX_MESSAGE_BYTES as KAFKA_DEFAULT_MAX_MESSAGE_BYTES,
)
from flink_tasks.requests import RECORD_HEADROOM_BYTES as RECORD_HEADROOM_BYTES


@dataclass(frozen=True, kw_only=True)
class ClientSettings:
    """How a `FlinkTasksClient` reaches Kafka, and its limits.

    Attributes:
        bootstrap_servers: Kafka bootstrap servers, ``host:port[,host:port...]``.
        request_topic: The topic pipelines are submitted to (the StateFun ingress).
        action_topic: The topic task actions (status, pause, cancel...) are sent to.
        reply_topic: The topic the pipeline function replies on (the StateFun egress). Every
            client reads the whole topic without a consumer group.
        events_topic: The topic pipelines write their events to; empty disables events.
        default_timeout: How long a call waits for its reply when no timeout is given.
        connect_timeout: How long start-up may take (bootstrap, topic metadata, reply topic
            assignment and seek) before calls fail with `TransportError`.
        send_timeout: How long one request may take to be acknowledged by Kafka before the call
            fails with `TransportError` (the producer's ``delivery_timeout_ms``).
        read_committed: Read replies with ``isolation_level=read_committed`` (the default), so
            replies of aborted transactions of the exactly-once egress are never seen; with the
            at-least-once egress it costs nothing. Turn it off only to debug the egress.
        allow_pickle: Accept pickled results. Unpickling runs code chosen by the sender: enable
            it only when the workers are trusted.
        max_request_bytes: The largest request (key + value) sent; larger ones are refused
            before sending. Kafka's default record limit is 1 MiB; raise this only together
            with the broker's ``message.max.bytes`` and the topic's ``max.message.bytes``.
        client_id: The Kafka client id prefix (shows in broker logs and metrics).
        pipeline_reuse: What a submit does with a pipeline id that is already known:
            ``attach`` (wait for it / its stored result; the default), ``reject`` (raise
            `PipelineExistsError`) or ``allow`` (send it anyway: a finished id runs again).
            ``attach`` and ``reject`` cost one status lookup per submit.
        reconnect_backoff_max: The longest wait between two attempts to reconnect to a broker
            or to rebuild a failed producer or reply consumer (waits start at 250 ms and
            double up to this).
        security: TLS and SASL (`KafkaSecurity`). `from_env` and `replace` also take its
            fields flat (``security_protocol=``, ``FLINK_TASKS_SASL_USERNAME`` ...); passwords
            only as files, so they are on no command line and in no log.
        tracing: Start an OpenTelemetry span per submit (on the global tracer provider, as a
            child of the current span) and send its W3C trace context with the request, so the
            pipeline's task spans join its trace (needs ``flink-tasks-client[tracing]``; see
            docs/observability.md).
    """

    # the local runtime's broker (`flink-tasks local up`): one default address everywhere
    bootstrap_servers: str = "127.0.0.1:19092"
    request_topic: str = wire.DEFAULT_REQUEST_TOPIC
    action_topic: str = wire.DEFAULT_ACTION_TOPIC
    reply_topic: str = wire.DEFAULT_REPLY_TOPIC
    events_topic: str = wire.DEFAULT_EVENTS_TOPIC
    default_timeout: timedelta = timedelta(seconds=60)
    connect_timeout: timedelta = timedelta(seconds=15)
    send_timeout: timedelta = timedelta(seconds=30)
    read_committed: bool = True
    allow_pickle: bool = False
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    client_id: str = "flink-tasks-client"
    pipeline_reuse: str = "attach"
    reconnect_backoff_max: timedelta = timedelta(seconds=2)
    security: KafkaSecurity = dataclasses.field(default_factory=KafkaSecurity)
    tracing: bool = False

    def __post_init__(self) -> None:
        if not self.bootstrap_servers.strip():
            raise ValueError("bootstrap_servers must name at least one host:port")
        for name in ("request_topic", "action_topic", "reply_topic"):
            if not getattr(self, name):
                raise ValueError(f"{name} must not be empty")
        for name in ("default_timeout", "connect_timeout", "send_timeout", "reconnect_backoff_max"):
            value = getattr(self, name)
            if not isinstance(value, timedelta):
                raise TypeError(f"{name} must be a datetime.timedelta, got {value!r}")
            if value <= timedelta(0):
                raise ValueError(f"{name} must be positive, got {value}")
        if self.pipeline_reuse not in ("reject", "attach", "allow"):
            raise ValueError(
                f"pipeline_reuse must be reject, attach or allow, got {self.pipeline_reuse!r}"
            )
        if self.max_request_bytes <= 0:
            raise ValueError("max_request_bytes must be positive")
        if not isinstance(self.security, KafkaSecurity):
            raise TypeError(f"security must be a KafkaSecurity, got {self.security!r}")

    def replace(self, **changes: Any) -> ClientSettings:
        """A copy with some fields changed (`KafkaSecurity`'s fields may be given flat)."""
        flat = _security_changes(changes)
        if flat:
            changes["security"] = dataclasses.replace(
                changes.get("security", self.security), **flat
            )
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(
        cls,
        prefix: str = "FLINK_TASKS_",
        environ: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> ClientSettings:
        """Build settings from ``<prefix><FIELD_NAME>`` environment variables.

        For example ``FLINK_TASKS_BOOTSTRAP_SERVERS=kafka:9092``,
        ``FLINK_TASKS_DEFAULT_TIMEOUT=5min``, ``FLINK_TASKS_READ_COMMITTED=true``. Durations
        take ``ms``, ``s``, ``min``, ``h`` or ``d`` (a bare number is seconds). ``overrides`` win
        over the environment. Nothing else in the client reads the environment.

        Raises:
            ValueError: a variable has a value its field cannot take.
        """
        overrides = dict(overrides)
        flat = _security_changes(overrides)
        if "security" not in overrides:
            overrides["security"] = settings_from_env(KafkaSecurity, prefix, environ, flat)
        elif flat:
            overrides["security"] = dataclasses.replace(overrides["security"], **flat)
        return settings_from_env(cls, prefix, environ, overrides)


_SECURITY_FIELDS = frozenset(f.name for f in dataclasses.fields(KafkaSecurity))


def _security_changes(changes: dict[str, Any]) -> dict[str, Any]:
    """Take `KafkaSecurity`'s fields out of ``changes``."""
    return {name: changes.pop(name) for name in list(changes) if name in _SECURITY_FIELDS}
