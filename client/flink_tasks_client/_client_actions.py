"""Task actions (status, request, result, pause, unpause, cancel) and event streams."""

from __future__ import annotations

import uuid
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

from flink_tasks import requests
from flink_tasks._proto import messages_pb2
from flink_tasks.errors import ClientError
from flink_tasks.records import SubmittedPipeline
from flink_tasks.types import PipelineStatus
from flink_tasks_client._calls import Call as _Call
from flink_tasks_client._client_io import ClientIO
from flink_tasks_client._events import EventStream


class ActionsMixin(ClientIO):
    """`FlinkTasksClient`'s action methods and `events`."""

    # --- actions ------------------------------------------------------------------------------

    def action(
        self, pipeline_id: str, action: int, timeout: timedelta | float | None = None
    ) -> Future[Any]:
        """Send a task action; the returned future completes with its interpreted reply.

        The typed methods (`get_status`, `pause`...) are the usual way to call this.

        Args:
            pipeline_id: The pipeline's id.
            action: One of ``messages_pb2.ACTION_*``.
            timeout: How long to wait for the reply; default ``settings.default_timeout``.
        """
        limit = self._timeout(timeout)
        name = messages_pb2.Action.Name(action)  # type: ignore[arg-type]
        reply_id = uuid.uuid4().hex
        value = requests.encode_action_request(
            pipeline_id, action, reply_topic=self._settings.reply_topic, reply_id=reply_id
        )
        return self._send(
            topic=self._settings.action_topic,
            key=pipeline_id,
            value=value,
            reply_id=reply_id,
            call=_Call(
                future=Future(),
                interpret=lambda reply: self._action_outcome(action, reply),
                what=f"{name} of pipeline {pipeline_id!r}",
                timeout=limit,
            ),
        )

    async def get_status(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> PipelineStatus:
        """The pipeline's status; `PipelineStatus.PENDING` for an id that is not known."""
        return await self._await(self.action(pipeline_id, messages_pb2.ACTION_GET_STATUS, timeout))

    async def get_request(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> SubmittedPipeline:
        """The request the pipeline was submitted with.

        Raises:
            PipelineNotFoundError: no pipeline is known under that id.
        """
        return await self._await(self.action(pipeline_id, messages_pb2.ACTION_GET_REQUEST, timeout))

    async def get_result(self, pipeline_id: str, timeout: timedelta | float | None = None) -> Any:
        """The result of a finished pipeline.

        Raises:
            TaskError: the pipeline failed.
            PipelineNotFoundError: the id is unknown, or the pipeline has not finished.
        """
        return await self._await(self.action(pipeline_id, messages_pb2.ACTION_GET_RESULT, timeout))

    async def pause(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> PipelineStatus:
        """Pause a pipeline: no new task is sent until `unpause`. Returns the new status.

        Raises:
            ActionError: the pipeline cannot be paused (e.g. it has finished).
        """
        return await self._await(self.action(pipeline_id, messages_pb2.ACTION_PAUSE, timeout))

    async def unpause(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> PipelineStatus:
        """Resume a paused pipeline. Returns the new status.

        Raises:
            ActionError: the pipeline is not paused.
        """
        return await self._await(self.action(pipeline_id, messages_pb2.ACTION_UNPAUSE, timeout))

    async def cancel(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> PipelineStatus:
        """Cancel a pipeline (its ``finally_do`` still runs). Returns the new status.

        Raises:
            ActionError: the pipeline cannot be cancelled (e.g. it has finished).
        """
        return await self._await(self.action(pipeline_id, messages_pb2.ACTION_CANCEL, timeout))

    def get_status_sync(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> PipelineStatus:
        """Blocking `get_status`."""
        status: PipelineStatus = self.action(
            pipeline_id, messages_pb2.ACTION_GET_STATUS, timeout
        ).result()
        return status

    def get_result_sync(self, pipeline_id: str, timeout: timedelta | float | None = None) -> Any:
        """Blocking `get_result`."""
        return self.action(pipeline_id, messages_pb2.ACTION_GET_RESULT, timeout).result()

    def get_request_sync(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> SubmittedPipeline:
        """Blocking `get_request`."""
        request: SubmittedPipeline = self.action(
            pipeline_id, messages_pb2.ACTION_GET_REQUEST, timeout
        ).result()
        return request

    def pause_sync(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> PipelineStatus:
        """Blocking `pause`."""
        status: PipelineStatus = self.action(
            pipeline_id, messages_pb2.ACTION_PAUSE, timeout
        ).result()
        return status

    def unpause_sync(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> PipelineStatus:
        """Blocking `unpause`."""
        status: PipelineStatus = self.action(
            pipeline_id, messages_pb2.ACTION_UNPAUSE, timeout
        ).result()
        return status

    def cancel_sync(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> PipelineStatus:
        """Blocking `cancel`."""
        status: PipelineStatus = self.action(
            pipeline_id, messages_pb2.ACTION_CANCEL, timeout
        ).result()
        return status

    # --- events -------------------------------------------------------------------------------

    def events(
        self,
        pipeline_id: str,
        *,
        from_beginning: bool = False,
        timeout: timedelta | float | None = None,
    ) -> EventStream:
        """Follow the events of a root pipeline (and of its children) from the events topic.

        The stream starts at the end of the topic when it is entered (``async with``) or first
        iterated: enter it *before* submitting to see ``PipelineCreated``. With
        ``from_beginning=True`` it reads the topic from its start instead, which also finds the
        events of a pipeline submitted earlier (and of earlier runs of the same id). It ends
        after the root pipeline's terminal status event (COMPLETED, FAILED or CANCELLED).

        Args:
            pipeline_id: The root pipeline's id.
            from_beginning: Read the events topic from its beginning.
            timeout: Iteration raises `ResultTimeoutError` once this much time has passed
                since the stream started; default ``settings.default_timeout``.

        Returns:
            An `EventStream`: an async iterator of `flink_tasks.records.PipelineEvent`.
        """
        self._check_open()
        if not self._settings.events_topic:
            raise ClientError("events are disabled: settings.events_topic is empty")
        stream = EventStream(
            self._settings,
            pipeline_id,
            from_beginning=from_beginning,
            timeout=self._timeout(timeout),
        )
        self._streams.add(stream)
        return stream
