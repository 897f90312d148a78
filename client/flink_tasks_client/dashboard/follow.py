"""Follows the events topic on a thread of its own and folds every event into a `Board`.

It starts at the first record written at or after ``since`` (Kafka's time index, as
`list_pipelines` does) and then reads new records as they come. When Kafka is unreachable it
says so (`EventFollower.problem`) and retries from where it was.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from datetime import timedelta
from typing import Any

from kafka import TopicPartition

from flink_tasks._proto import events_pb2
from flink_tasks_client import _kafka
from flink_tasks_client.dashboard.model import Board
from flink_tasks_client.settings import ClientSettings

logger = logging.getLogger(__name__)


class EventFollower:
    """Reads ``settings.events_topic`` into `board` until stopped."""

    def __init__(self, settings: ClientSettings, board: Board, since: timedelta | None) -> None:
        if not settings.events_topic:
            raise ValueError("the dashboard reads the events topic: settings.events_topic is empty")
        self.settings = settings
        self.board = board
        self.since = since
        #: why the dashboard cannot read events now ("" while it can)
        self.problem = "connecting to Kafka"
        self.events_read = 0
        self._stop = threading.Event()
        self._positions: dict[Any, int] = {}
        self._thread = threading.Thread(target=self._run, name="flink-tasks-dashboard-events")
        self._thread.daemon = True

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.25
        while not self._stop.is_set():
            try:
                self._follow()
            except Exception as exc:
                self.problem = f"cannot read {self.settings.events_topic}: {exc}"
                logger.warning("%s; retrying in %.1f s", self.problem, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.settings.reconnect_backoff_max.total_seconds())

    def _follow(self) -> None:
        _kafka.wait_reachable(self.settings)
        consumer: Any = _kafka.create_consumer(self.settings, purpose="dashboard")
        try:
            self._seek(consumer)
            self.problem = ""
            while not self._stop.is_set():
                for tp, records in consumer.poll(timeout_ms=200).items():
                    for record in records:
                        self._positions[tp] = record.offset + 1
                        event = events_pb2.PipelineEvent()
                        try:
                            event.ParseFromString(record.value or b"")
                        except Exception:
                            logger.warning("skipping a record that is not a pipeline event")
                            continue
                        self.board.apply(event)
                        self.events_read += 1
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    def _seek(self, consumer: Any) -> None:
        topic = self.settings.events_topic
        partitions = [
            TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())
        ]
        if not partitions:
            raise _kafka.missing_topic(self.settings, topic, None)
        consumer.assign(partitions)
        fresh = [tp for tp in partitions if tp not in self._positions]
        if fresh and self.since is None:
            consumer.seek_to_beginning(*fresh)
        elif fresh and self.since is not None:
            since_ms = int((time.time() - self.since.total_seconds()) * 1000)
            by_time = consumer.offsets_for_times({tp: since_ms for tp in fresh})
            ends = consumer.end_offsets(fresh)
            for tp in fresh:
                found = by_time.get(tp)
                consumer.seek(tp, found.offset if found is not None else ends[tp])
        for tp in partitions:
            if tp in self._positions:
                consumer.seek(tp, self._positions[tp])
