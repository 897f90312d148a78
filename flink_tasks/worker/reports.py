"""Where a worker sends what it learns about a task after its request-reply call has ended.

A task that outlives its `inline_wait` is answered to StateFun at once with a lease; its
heartbeats and its result then travel as `WorkerReport` records on the task-reports Kafka topic,
which the StateFun module routes to the pipeline function (keyed by pipeline id). So the JVM never
waits on a task for longer than `inline_wait`, however long the task runs.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Protocol

from flink_tasks.logs import quiet_kafka_close_race
from flink_tasks.requests import DEFAULT_MAX_REQUEST_BYTES, RECORD_HEADROOM_BYTES

logger = logging.getLogger(__name__)
quiet_kafka_close_race()  # kafka-python's benign close race would log a traceback


class ReportSink(Protocol):
    """Delivers a serialized `WorkerReport` to the pipeline function at `pipeline_id`."""

    #: the largest report it delivers: a larger result is failed by its attempt, clearly, before
    #: it is sent (a Kafka record over the topic's limit would be refused and the task lost)
    max_report_bytes: int

    def send(self, pipeline_id: str, report: bytes) -> None:
        """Queue the report; never blocks the event loop and never raises."""

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to `timeout` seconds), then release resources."""


_STOP = object()


class KafkaReportSink:
    """Writes reports to the task-reports topic from a thread of its own.

    The producer is created lazily in that thread (the worker may start before Kafka) and
    rebuilt after an error; kafka-python's `send` may block on metadata, so it never runs on
    the event loop. A report that cannot be delivered is logged and dropped: the pipeline's
    durable lease then fails the attempt as lost, which its retry policy can retry.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        max_report_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        **producer_config: Any,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        #: Kafka's default record limit (1 MiB) less headroom, as for the client's requests
        self.max_report_bytes = max_report_bytes
        self._config = producer_config
        self._queue: queue.Queue[Any] = queue.Queue()
        #: a producer whose record expired: rebuilt before the next send (see `_lost`)
        self._expired_producer: Any = None
        self._thread = threading.Thread(target=self._run, name="task-reports", daemon=True)
        self._thread.start()
        self.sent = 0
        self.failed = 0

    def send(self, pipeline_id: str, report: bytes) -> None:
        self._queue.put((pipeline_id, report))

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout)

    def _producer(self) -> Any:
        from kafka import KafkaProducer

        return KafkaProducer(
            bootstrap_servers=self.bootstrap_servers,
            acks="all",
            linger_ms=2,
            retries=10,
            max_block_ms=30_000,
            client_id="flink-tasks-worker-reports",
            max_request_size=self.max_report_bytes + RECORD_HEADROOM_BYTES,
            **self._config,
        )

    def _run(self) -> None:
        from kafka.errors import KafkaError, MessageSizeTooLargeError

        producer: Any = None
        backoff = 0.5
        item: Any = None
        while True:
            if item is None:
                item = self._queue.get()
            if item is _STOP:
                break
            pipeline_id, report = item
            try:
                if producer is not None and producer is self._expired_producer:
                    _close_quietly(producer)
                    producer = None
                if producer is None:
                    producer = self._producer()
                future = producer.send(self.topic, key=pipeline_id.encode(), value=report)
                future.add_callback(self._delivered).add_errback(self._lost, pipeline_id, producer)
                item = None
                backoff = 0.5
            except MessageSizeTooLargeError as err:
                # no retry can send it, and retrying would hold every later report (the
                # heartbeats of other tasks) behind it; attempts fail oversized results first
                logger.error("task report for %s dropped: %s", pipeline_id, err)
                item = None
            except Exception as err:  # broker down, metadata timeout: rebuild and retry
                logger.warning("task report for %s not sent yet: %s", pipeline_id, err)
                if producer is not None:
                    _close_quietly(producer)
                    producer = None
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
        if producer is not None:
            try:
                producer.flush(timeout=5)
            except KafkaError as err:  # the broker is away: what is queued is lost, and said so
                logger.warning("task reports still queued at close are lost: %s", err)
            _close_quietly(producer)

    def _delivered(self, _metadata: Any) -> None:
        self.sent += 1

    def _lost(self, pipeline_id: str, producer: Any, err: BaseException) -> None:
        from kafka.errors import KafkaTimeoutError

        self.failed += 1
        logger.error("task report for %s lost: %s (its lease will expire)", pipeline_id, err)
        if isinstance(err, KafkaTimeoutError):
            # kafka-python 3.0.12: an idempotent producer whose batch expired after it was sent
            # keeps no producer id and never sends again (see the client's _client_io)
            self._expired_producer = producer


def _close_quietly(producer: Any) -> None:
    try:
        producer.close(timeout=2)
    except Exception:  # closing a producer of an unreachable broker
        logger.debug("closing the task-report producer failed", exc_info=True)
