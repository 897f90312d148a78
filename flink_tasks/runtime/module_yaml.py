"""Render the StateFun remote ``module.yaml`` (StateFun 3.x multi-document format).

Three kinds of components, one YAML document each:

* ``io.statefun.endpoints.v2/http`` -- one per function namespace (``flink_tasks/*`` plus any
  extra namespaces), all pointing at the Python worker's ``/statefun/{function.name}``;
* ``io.statefun.kafka.v1/ingress`` ``flink_tasks/ingress`` -- the requests and actions topics,
  both routed to ``flink_tasks/pipeline`` (the record key becomes the function id);
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

from flink_tasks.runtime.settings import LocalRuntimeSettings, format_duration

INGRESS_ID = "flink_tasks/ingress"
EGRESS_ID = "flink_tasks/kafka"
PIPELINE_FUNCTION = "flink_tasks/pipeline"
PIPELINE_REQUEST_TYPE = "flink_tasks.v1/PipelineRequest"
ACTION_REQUEST_TYPE = "flink_tasks.v1/ActionRequest"

YamlValue = str | int | bool | Sequence["YamlValue"] | Mapping[str, "YamlValue"]


def module_components(settings: LocalRuntimeSettings) -> list[dict[str, YamlValue]]:
    """The module's components as plain data (one dict per YAML document)."""
    docs: list[dict[str, YamlValue]] = []
    for namespace in settings.function_namespaces:
        docs.append(
            {
                "kind": "io.statefun.endpoints.v2/http",
                "spec": {
                    "functions": f"{namespace}/*",
                    "urlPathTemplate": f"{settings.worker_url}/statefun/{{function.name}}",
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
                "id": INGRESS_ID,
                "address": settings.bootstrap_servers,
                "consumerGroupId": settings.consumer_group_id,
                "startupPosition": {"type": "group-offsets"},
                "autoOffsetResetPosition": "earliest",
                "topics": [
                    {
                        "topic": settings.requests_topic,
                        "valueType": PIPELINE_REQUEST_TYPE,
                        "targets": [PIPELINE_FUNCTION],
                    },
                    {
                        "topic": settings.actions_topic,
                        "valueType": ACTION_REQUEST_TYPE,
                        "targets": [PIPELINE_FUNCTION],
                    },
                ],
                "properties": [{"isolation.level": "read_committed"}],
            },
        }
    )
    semantic: dict[str, YamlValue] = {"type": settings.delivery_semantic}
    if settings.delivery_semantic == "exactly-once":
        semantic["transactionTimeout"] = format_duration(settings.transaction_timeout)
    docs.append(
        {
            "kind": "io.statefun.kafka.v1/egress",
            "spec": {
                "id": EGRESS_ID,
                "address": settings.bootstrap_servers,
                "deliverySemantic": semantic,
            },
        }
    )
    return docs


def render_module_yaml(settings: LocalRuntimeSettings) -> str:
    """Render ``module.yaml`` for StateFun 3.3.0 from the settings."""
    header = "# Rendered by flink_tasks.runtime.module_yaml; do not edit, edit the settings.\n"
    return header + "".join("---\n" + to_yaml(doc) for doc in module_components(settings))


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
