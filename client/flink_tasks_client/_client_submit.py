"""Submitting pipelines, enqueueing them, and waiting for a result by pipeline id."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import Future
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flink_tasks import requests
from flink_tasks.pipeline import PipelineBuilder
from flink_tasks.tracing import submit_span_context
from flink_tasks_client import _kafka, _reuse
from flink_tasks_client._calls import Call as _Call
from flink_tasks_client._calls import fail as _fail
from flink_tasks_client._calls import succeed as _succeed
from flink_tasks_client._client_io import ClientIO

if TYPE_CHECKING:
    from flink_tasks_client._client import FlinkTasksClient

T = TypeVar("T")


class SubmitMixin(ClientIO):
    """`FlinkTasksClient`'s submit, enqueue and wait_result methods."""

    def _client(self) -> FlinkTasksClient:
        """This object as the whole client (the mixins only ever run as one)."""
        return cast("FlinkTasksClient", self)

    # --- submitting ---------------------------------------------------------------------------

    def submit(
        self,
        pipeline: PipelineBuilder[T],
        timeout: timedelta | float | None = None,
        *,
        reuse: _reuse.Reuse | None = None,
    ) -> Future[T]:
        """Submit a pipeline; the returned future completes with its result.

        Under the ``reuse`` policy (default ``settings.pipeline_reuse``, ``attach``) a pipeline
        id that is already known is never run twice by accident: ``attach`` waits for the
        running pipeline, or answers with the finished one's result; ``reject`` raises
        `PipelineExistsError`; ``allow`` sends without looking (a finished id runs again).

        Bad input is refused here, before anything is sent. The future fails with `TaskError`
        for a failed pipeline, `ResultTimeoutError` when no reply arrives within ``timeout``
        (the pipeline may still run), `TransportError` when Kafka cannot take the request.
        Cancelling the future stops waiting (the pipeline is not cancelled: use `cancel`).

        Args:
            pipeline: The pipeline; ``pipeline.id`` is the Kafka key and its id for actions.
            timeout: How long to wait for the result; default ``settings.default_timeout``.
            reuse: ``attach``, ``reject`` or ``allow`` (see above).

        Returns:
            A `concurrent.futures.Future` of the pipeline's result.

        Raises:
            SerializationError: an argument or the initial state cannot be serialized.
            RequestTooLargeError: the request is larger than ``settings.max_request_bytes``.
            PipelineDefinitionError: the pipeline is empty or has no id.
            ClientError: the client is closed.
        """
        limit = self._timeout(timeout)
        policy = _reuse.check_policy(self._settings.pipeline_reuse if reuse is None else reuse)
        reply_id = uuid.uuid4().hex
        value = self._encode_request(pipeline, reply_id)

        def send(limit: timedelta) -> Future[Any]:
            return self._send(
                topic=self._settings.request_topic,
                key=pipeline.id,
                value=value,
                reply_id=reply_id,
                call=_Call(
                    future=Future(),
                    interpret=self._pipeline_outcome,
                    what=f"pipeline {pipeline.id!r}",
                    timeout=limit,
                ),
            )

        if policy == "allow" or pipeline.claim_fresh_id():  # a fresh id: nothing to look up
            return send(limit)
        self._check_open()
        return _reuse.submit(self._client(), pipeline.id, limit, policy, send)

    async def submit_async(
        self,
        pipeline: PipelineBuilder[T],
        timeout: timedelta | float | None = None,
        *,
        reuse: _reuse.Reuse | None = None,
    ) -> T:
        """Submit a pipeline and await its result.

        Cancelling the awaiting task stops waiting for the reply (and forgets it); the pipeline
        itself keeps running.

        Args:
            pipeline: The pipeline to run.
            timeout: How long to wait for the result; default ``settings.default_timeout``.
            reuse: ``attach``, ``reject`` or ``allow`` (see `submit`).

        Returns:
            The pipeline's result.

        Raises:
            TaskError: the pipeline failed (its ``exception_type``, ``exception_message``,
                ``stacktrace`` and ``state`` say how).
            ResultTimeoutError: no reply within ``timeout``.
            TransportError: Kafka could not be reached or refused the request.
            SerializationError, RequestTooLargeError, PipelineDefinitionError: bad input,
                refused before sending.
        """
        return await asyncio.wrap_future(self.submit(pipeline, timeout, reuse=reuse))

    def submit_sync(
        self,
        pipeline: PipelineBuilder[T],
        timeout: timedelta | float | None = None,
        *,
        reuse: _reuse.Reuse | None = None,
    ) -> T:
        """Submit a pipeline and block until its result; the same as ``submit(...).result()``.

        Do not call it from an event loop's thread: use `submit_async` there.
        """
        return self.submit(pipeline, timeout, reuse=reuse).result()

    # --- waiting by pipeline id ---------------------------------------------------------------

    def wait_result(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> Future[Any]:
        """The result of a pipeline submitted by any client or process (e.g. one that crashed).

        A running or paused pipeline is waited for; a finished one answers with its stored
        result. The future fails with `PipelineNotFoundError` for an id that is unknown,
        `TaskError` for a failed pipeline, `ResultTimeoutError` after ``timeout``.
        """
        if not isinstance(pipeline_id, str) or not pipeline_id:
            raise ValueError(f"pipeline_id must be a non-empty string, got {pipeline_id!r}")
        self._check_open()
        return _reuse.wait_result(self._client(), pipeline_id, self._timeout(timeout))

    async def wait_result_async(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> Any:
        """`wait_result`, awaited."""
        return await asyncio.wrap_future(self.wait_result(pipeline_id, timeout))

    def wait_result_sync(self, pipeline_id: str, timeout: timedelta | float | None = None) -> Any:
        """`wait_result`, blocking until the result."""
        return self.wait_result(pipeline_id, timeout).result()

    def enqueue(
        self, pipeline: PipelineBuilder, *, reuse: _reuse.Reuse | None = None
    ) -> Future[str]:
        """Submit a pipeline without waiting for its result.

        The returned future completes with ``pipeline.id`` once Kafka has acknowledged the
        request (or fails with `TransportError` within ``send_timeout``). The result is not
        awaited: look it up with `get_status` / `get_result` / `wait_result` by pipeline id.
        Under ``reuse="attach"`` (the default) a known id is not sent again (the future
        completes with the id at once); ``reject`` raises `PipelineExistsError`; ``allow``
        sends it anyway.

        Raises:
            SerializationError, RequestTooLargeError, PipelineDefinitionError: bad input,
                refused before sending.
            ClientError: the client is closed.
        """
        self._check_open()
        policy = _reuse.check_policy(self._settings.pipeline_reuse if reuse is None else reuse)
        # The reply still carries a fresh reply_id, which no client waits for.
        value = self._encode_request(pipeline, uuid.uuid4().hex)
        if policy == "allow" or pipeline.claim_fresh_id():
            return self._enqueue_now(pipeline.id, value)
        known: Future[str] = Future()
        known.set_result(pipeline.id)
        return _reuse.submit(
            self._client(),
            pipeline.id,
            self._settings.default_timeout,
            policy,
            lambda _: self._enqueue_now(pipeline.id, value),
            exists=lambda _: known,
        )

    def _enqueue_now(self, pipeline_id: str, value: bytes) -> Future[str]:
        topic = self._settings.request_topic
        key = pipeline_id.encode("utf-8")
        what = f"pipeline {pipeline_id!r}"
        acked: Future[str] = Future()

        def produce(started: Future[None]) -> None:
            error = started.exception()
            if error is not None:
                _fail(acked, error)
                return
            sent = self._send_or_park(
                topic, key, value, lambda: produce(started), lambda err: _fail(acked, err), what
            )
            if sent is None:
                return
            sent.add_callback(lambda _: _succeed(acked, pipeline_id))
            sent.add_errback(
                lambda err: _fail(acked, _kafka.send_failure(self._settings, what, topic, err))
            )
            self._watch_ack(sent, lambda: _fail(acked, self._not_acknowledged(what, topic)))

        self._started.add_done_callback(produce)
        return acked

    async def enqueue_async(
        self, pipeline: PipelineBuilder, *, reuse: _reuse.Reuse | None = None
    ) -> str:
        """`enqueue`, awaited: returns ``pipeline.id`` once Kafka has acknowledged the request."""
        return await asyncio.wrap_future(self.enqueue(pipeline, reuse=reuse))

    def _encode_request(self, pipeline: PipelineBuilder, reply_id: str) -> bytes:
        return requests.encode_pipeline_request(
            pipeline,
            reply_topic=self._settings.reply_topic,
            reply_id=reply_id,
            events_topic=self._settings.events_topic,
            max_request_bytes=self._settings.max_request_bytes,
            trace_context=submit_span_context(pipeline.id) if self._settings.tracing else None,
        )
