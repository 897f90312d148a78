"""Log lines carry the pipeline and task ids of the work they are about."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from flink_tasks import FlinkTasks, logs
from flink_tasks.testing import PipelineEnvironment

tasks = FlinkTasks()
task_log = logging.getLogger("tests.unit.test_logs.task")


@tasks.bind()
async def logs_async() -> str:
    task_log.warning("from an async body")
    return "ok"


@tasks.bind()
def logs_sync() -> str:
    task_log.warning("from a sync body")
    return "ok"


def _formatted(message: str) -> str:
    record = logging.LogRecord("flink_tasks.x", logging.WARNING, __file__, 1, message, None, None)
    logs.TaskFieldsFilter().filter(record)
    return logs.formatter("text").format(record).split(" ", 2)[2]  # without time and level


def test_the_text_format_shows_the_ids_when_set() -> None:
    assert _formatted("outside") == "flink_tasks.x: outside"
    with logs.pipeline_ids("P"):
        assert _formatted("engine") == "flink_tasks.x: engine [pipeline P]"
    with logs.task_fields(
        pipeline_id="P", root_pipeline_id="R", task_id="t1", task_type="m.f", attempt=1
    ):
        assert _formatted("task") == "flink_tasks.x: task [task m.f t1 pipeline P root R]"
    assert _formatted("after") == "flink_tasks.x: after"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.TaskFieldsFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    task_log.addHandler(handler)
    try:
        yield handler
    finally:
        task_log.removeHandler(handler)


@pytest.mark.parametrize("task", [logs_async, logs_sync], ids=["async", "sync"])
async def test_a_task_body_logs_with_its_ids(records: _Records, task: object) -> None:
    async with PipelineEnvironment.in_process(tasks, default_timeout=30) as env:
        pipeline = task.send()  # type: ignore[attr-defined]
        entry = pipeline.to_proto().entries[0].task
        assert await env.submit_async(pipeline) == "ok"
    [record] = records.records
    assert (record.pipeline_id, record.root_pipeline_id) == (pipeline.id, pipeline.id)  # type: ignore[attr-defined]
    assert (record.task_id, record.task_type) == (entry.task_id, entry.task_type)  # type: ignore[attr-defined]


class _Net:
    """What a kafka-python transport asks of its event loop when it closes."""

    def unregister_event(self, sock: object, events: int) -> None:
        pass

    def cancel(self, task: object) -> None:
        pass


def test_a_read_racing_our_close_logs_nothing_but_a_real_read_error_still_does(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """kafka-python 3.0.12 reads a transport its close emptied meanwhile (the demo's stop printed
    that traceback); that record is dropped, a read failing on an open socket is still logged."""
    import socket

    from kafka.net.transport import KafkaTCPTransport

    logs.quiet_kafka_close_race()
    logs.quiet_kafka_close_race()  # idempotent
    transport_logger = logging.getLogger("kafka.net.transport")
    assert transport_logger.filters.count(logs._kafka_close_race_filter) == 1
    caplog.set_level(logging.ERROR, logger="kafka.net.transport")

    ours, theirs = socket.socketpair()
    transport = KafkaTCPTransport(_Net(), ours)
    transport.close()
    _, err = transport._sock_recv()
    assert err is not None  # the read still fails: only its log record goes
    assert [r for r in caplog.records if r.name == "kafka.net.transport"] == []

    theirs.close()
    broken, other = socket.socketpair()
    broken.close()  # an open transport over a dead socket: a real error
    other.close()
    failing = KafkaTCPTransport(_Net(), broken)
    _, err = failing._sock_recv()
    assert err is not None
    assert [r.levelno for r in caplog.records if r.name == "kafka.net.transport"] == [logging.ERROR]
