"""`list_pipelines`: find root pipelines by status, task type and time, from the events topic.

Every pipeline that was submitted with an events topic (the client's default) writes its
creation and each status change there, keyed by its root pipeline id. Listing reads the topic's
records from the first one written at or after ``since`` (Kafka's time index: older records are
never read) up to its end when the call starts, and folds them per root pipeline. Flink's state is
never scanned. What it cannot know: pipelines submitted without an events topic, and anything older
than the topic's retention.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from google.protobuf.message import Message
from kafka import TopicPartition

from flink_tasks._proto import events_pb2
from flink_tasks.types import PipelineStatus
from flink_tasks_client import _kafka
from flink_tasks_client.settings import ClientSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PipelineSummary:
    """What the events topic tells about one root pipeline."""

    pipeline_id: str
    status: PipelineStatus
    #: when its creation event was written; None when that is older than the window read
    created: datetime | None
    #: when its newest event was written
    updated: datetime
    #: task types of its own and its children's definitions
    task_types: frozenset[str] = field(default_factory=frozenset)


def list_pipelines(
    settings: ClientSettings,
    *,
    status: PipelineStatus | Iterable[PipelineStatus] | None = None,
    task_type: str | None = None,
    since: timedelta | None = None,
    limit: int = 100,
) -> list[PipelineSummary]:
    """Root pipelines with an event in the last `since` (all retained ones without it), whose
    current status is `status` (any of them) and that run `task_type`, newest update first, at
    most `limit`. Blocking; `FlinkTasksClient` users call it in a thread from async code."""
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit}")
    if not settings.events_topic:
        raise ValueError("events are disabled: settings.events_topic is empty")
    wanted = (
        None if status is None else {status} if isinstance(status, PipelineStatus) else set(status)
    )
    since_ms = None if since is None else int((time.time() - since.total_seconds()) * 1000)
    found = _fold(_read(settings, since_ms), since_ms)
    rows = [
        s
        for s in found.values()
        if (wanted is None or s.status in wanted)
        and (task_type is None or task_type in s.task_types)
    ]
    rows.sort(key=lambda s: s.updated, reverse=True)
    return rows[:limit]


def _read(settings: ClientSettings, since_ms: int | None) -> Iterable[events_pb2.PipelineEvent]:
    _kafka.wait_reachable(settings)
    consumer: Any = _kafka.create_consumer(settings, purpose="list")
    try:
        topic = settings.events_topic
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            raise _kafka.missing_topic(settings, topic, None)
        consumer.assign(partitions)
        ends = consumer.end_offsets(partitions)
        starts = consumer.beginning_offsets(partitions)
        if since_ms is not None:
            by_time = consumer.offsets_for_times({tp: since_ms for tp in partitions})
            starts = {tp: (o.offset if o is not None else ends[tp]) for tp, o in by_time.items()}
        for tp in partitions:
            consumer.seek(tp, starts[tp])
        remaining = {tp for tp in partitions if starts[tp] < ends[tp]}
        deadline = time.monotonic() + settings.default_timeout.total_seconds()
        while remaining:
            if time.monotonic() > deadline:
                raise TimeoutError(f"reading {topic} took longer than {settings.default_timeout}")
            for tp, records in consumer.poll(timeout_ms=200).items():
                for record in records:
                    if record.offset >= ends[tp]:
                        break
                    event = events_pb2.PipelineEvent()
                    try:
                        event.ParseFromString(record.value or b"")
                    except Exception:
                        logger.warning("skipping a record on %s that is not an event", topic)
                        continue
                    yield event
                if consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        with contextlib.suppress(Exception):
            consumer.close()


def _fold(
    events: Iterable[events_pb2.PipelineEvent], since_ms: int | None
) -> dict[str, PipelineSummary]:
    rows: dict[str, dict[str, Any]] = {}
    for event in events:
        root = event.root_pipeline_id or event.pipeline_id
        row = rows.setdefault(
            root, {"status": None, "created": None, "updated": 0, "task_types": set()}
        )
        row["updated"] = max(row["updated"], event.timestamp_ms)
        kind = event.WhichOneof("event")
        if kind == "pipeline_created":
            row["task_types"].update(_task_types(event.pipeline_created.pipeline))
            if event.pipeline_id == root:
                row["created"] = event.timestamp_ms
                row["status"] = row["status"] or PipelineStatus.RUNNING
        elif kind == "status_changed" and event.pipeline_id == root:
            row["status"] = PipelineStatus(event.status_changed.status)
    return {
        root: PipelineSummary(
            pipeline_id=root,
            status=row["status"] or PipelineStatus.RUNNING,
            created=_time(row["created"]) if row["created"] else None,
            updated=_time(row["updated"]),
            task_types=frozenset(row["task_types"]),
        )
        for root, row in rows.items()
        if since_ms is None or row["updated"] >= since_ms
    }


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc)


def _task_types(message: Message) -> set[str]:
    """Every ``task_type`` field anywhere in a pipeline definition."""
    found: set[str] = set()
    for descriptor, value in message.ListFields():
        if descriptor.name == "task_type" and isinstance(value, str):
            found.add(value)
        elif descriptor.message_type is not None:
            if descriptor.message_type.GetOptions().map_entry:
                continue  # no task types in maps
            items = [value] if isinstance(value, Message) else list(value)
            for item in items:
                found |= _task_types(item)
    return found
