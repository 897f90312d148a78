"""The worker's task-report producer after a broker freeze (SIGSTOP: its connections stay open,
nothing answers): the report sent during the freeze expires, and the next one, sent once the
broker is back, is delivered. kafka-python 3.0.12's idempotent producer kept no producer id
after an expired batch and never sent again, so every later heartbeat and result of a long
task was lost until the worker restarted."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from kafka import KafkaConsumer, TopicPartition

from flink_tasks.runtime import LocalRuntime
from flink_tasks.worker.reports import KafkaReportSink
from tests.deploy._ports import isolated_settings
from tests.waiting import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.filterwarnings(
        "ignore:.*is deprecated. Use files\\(\\) instead:DeprecationWarning"
    ),
]


def test_reports_are_delivered_again_after_one_expired_during_a_broker_freeze(
    tmp_path: Path,
) -> None:
    settings = isolated_settings(tmp_path / "runtime")
    rt = LocalRuntime(settings)
    rt.kafka.start(rt.java(for_flink=False))
    sink = None
    try:
        topic = settings.task_reports_topic
        # a short delivery timeout, so that the report sent during the freeze expires soon
        sink = KafkaReportSink(
            settings.bootstrap_servers, topic, request_timeout_ms=2000, delivery_timeout_ms=4000
        )
        sink.send("p1", b"before")
        wait_until(lambda: sink.sent == 1, 60, "the first report")
        broker = rt.kafka.process.pid
        assert broker is not None
        os.kill(broker, signal.SIGSTOP)
        try:
            sink.send("p2", b"frozen")
            wait_until(lambda: sink.failed == 1, 30, "the report sent during the freeze to expire")
        finally:
            os.kill(broker, signal.SIGCONT)
        sink.send("p3", b"after")
        wait_until(lambda: sink.sent == 2 or sink.failed > 1, 60, "the report after the freeze")
        assert (sink.sent, sink.failed) == (2, 1)
        consumer = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
        try:
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
            consumer.assign(partitions)
            consumer.seek_to_beginning()
            values: list[bytes] = []
            deadline = time.monotonic() + 30
            while not {b"before", b"after"} <= set(values) and time.monotonic() < deadline:
                for records in consumer.poll(timeout_ms=500).values():
                    values += [r.value for r in records]
        finally:
            consumer.close()
        # the expired one may have reached the broker all the same (its request was on the
        # wire when the broker froze): a timed-out send is "maybe delivered", never "surely not"
        assert sorted(values) in ([b"after", b"before"], [b"after", b"before", b"frozen"])
    finally:
        if sink is not None:
            sink.close(timeout=5)
        rt.kafka.stop(kill=True)
