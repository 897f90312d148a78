"""`EventStream`: the events of one root pipeline, read from the events topic."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from datetime import timedelta
from types import TracebackType
from typing import Any

from flink_tasks._proto import events_pb2
from flink_tasks.errors import ResultTimeoutError, TransportError
from flink_tasks.records import PipelineEvent, pipeline_event
from flink_tasks.types import PipelineStatus
from flink_tasks_client import _kafka
from flink_tasks_client.settings import ClientSettings

logger = logging.getLogger(__name__)

_TERMINAL = frozenset({PipelineStatus.COMPLETED, PipelineStatus.FAILED, PipelineStatus.CANCELLED})


class EventStream:
    """An async iterator of the `PipelineEvent` records of one root pipeline.

    It yields the events whose ``root_pipeline_id`` is the pipeline's id (its children's
    included), in topic order, and ends after the root pipeline's own terminal status event.
    Each stream runs its own consumer (no consumer group) on its own thread.

    Create it with `FlinkTasksClient.events`. Entering it (``async with``) resolves its start
    position; iterating a stream that was not entered does so on the first ``__anext__``.
    """

    def __init__(
        self,
        settings: ClientSettings,
        pipeline_id: str,
        *,
        from_beginning: bool,
        timeout: timedelta,
    ) -> None:
        if not isinstance(pipeline_id, str) or not pipeline_id:
            raise ValueError(f"pipeline_id must be a non-empty string, got {pipeline_id!r}")
        self.pipeline_id = pipeline_id
        self._settings = settings
        self._from_beginning = from_beginning
        self._timeout = timeout
        self._key = pipeline_id.encode("utf-8")
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Any] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._finished = False

    async def start(self) -> EventStream:
        """Assign the events topic and resolve the start position; idempotent.

        Raises:
            TransportError: Kafka could not be reached or the events topic is missing.
        """
        if self._ready is None:
            loop = asyncio.get_running_loop()
            self._loop = loop
            self._queue = asyncio.Queue()
            self._ready = loop.create_future()
            self._deadline = loop.time() + self._timeout.total_seconds()
            self._thread = threading.Thread(
                target=self._run, name=f"flink-tasks-events-{self.pipeline_id}", daemon=True
            )
            self._thread.start()
        await asyncio.shield(self._ready)
        return self

    def stop(self, error: BaseException | None = None) -> None:
        """Stop reading (from any thread); a pending ``__anext__`` raises ``error`` if given."""
        self._stop_event.set()
        if error is not None:
            self._post(error)

    async def aclose(self) -> None:
        """Stop reading and wait for the consumer to close."""
        self._finished = True
        self._stop_event.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.get_running_loop().run_in_executor(None, thread.join, 5.0)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> PipelineEvent:
        if self._finished:
            raise StopAsyncIteration
        await self.start()
        assert self._loop is not None and self._queue is not None
        remaining = self._deadline - self._loop.time()
        try:
            if remaining <= 0:
                raise asyncio.TimeoutError
            item = await asyncio.wait_for(self._queue.get(), remaining)
        except asyncio.TimeoutError:
            await self.aclose()
            raise ResultTimeoutError(
                f"the events of pipeline {self.pipeline_id!r} did not end within "
                f"{self._timeout}; pass a longer timeout to events(...)"
            ) from None
        if isinstance(item, BaseException):
            await self.aclose()
            raise item
        event: PipelineEvent = item
        if event.pipeline_id == self.pipeline_id and event.status in _TERMINAL:
            await self.aclose()
        return event

    async def __aenter__(self) -> EventStream:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _post(self, item: Any) -> None:
        loop, queue = self._loop, self._queue
        if loop is None or queue is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def _set_ready(self, error: BaseException | None) -> None:
        ready, loop = self._ready, self._loop
        assert ready is not None and loop is not None

        def complete() -> None:
            if ready.done():
                return
            if error is None:
                ready.set_result(None)
            else:
                ready.set_exception(error)

        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(complete)

    def _run(self) -> None:
        consumer: Any = None
        try:
            _kafka.wait_reachable(self._settings)
            consumer = _kafka.create_consumer(self._settings, purpose="events")
            _kafka.assign_all(
                consumer,
                self._settings.events_topic,
                self._settings,
                from_beginning=self._from_beginning,
            )
        except BaseException as err:
            if consumer is not None:
                with contextlib.suppress(Exception):
                    consumer.close()
            self._set_ready(err)
            self._post(err)
            return
        self._set_ready(None)
        try:
            while not self._stop_event.is_set():
                batches = consumer.poll(timeout_ms=100)
                for records in batches.values():
                    for record in records:
                        self._on_record(record.key, record.value)
        except BaseException as err:
            logger.exception("the events consumer of pipeline %s failed", self.pipeline_id)
            self._post(TransportError(f"reading events failed: {err}"))
        finally:
            with contextlib.suppress(Exception):
                consumer.close()

    def _on_record(self, key: bytes | None, value: bytes | None) -> None:
        # Events are keyed by root pipeline id: skip other pipelines' events without parsing.
        if key is not None and key != self._key:
            return
        raw = events_pb2.PipelineEvent()
        try:
            raw.ParseFromString(value or b"")
            event = pipeline_event(raw)
        except Exception as err:
            logger.warning(
                "skipping a record on %s that is not a PipelineEvent: %s",
                self._settings.events_topic,
                err,
            )
            return
        if event.root_pipeline_id == self.pipeline_id:
            self._post(event)
