"""`FlinkTasksClient`: submit pipelines and run task actions over Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, TypeVar

from flink_tasks import serialization
from flink_tasks._proto import messages_pb2, values_pb2
from flink_tasks.errors import (
    ACTION_ERROR,
    NOT_FOUND_ERROR,
    ActionError,
    ClientError,
    PipelineDefinitionError,
    PipelineNotFoundError,
    RequestTooLargeError,
    ResultTimeoutError,
    TaskError,
    TransportError,
)
from flink_tasks.pipeline import PipelineBuilder
from flink_tasks.pipeline.builder import pipeline_id_problem
from flink_tasks.types import PipelineStatus
from flink_tasks_client import _kafka, _reuse
from flink_tasks_client._events import EventStream
from flink_tasks_client._link import ClientHealth, KafkaLink
from flink_tasks_client.settings import DEFAULT_MAX_REQUEST_BYTES, ClientSettings

logger = logging.getLogger(__name__)

T = TypeVar("T")

# The reply consumer's poll never blocks longer than this, so close() and timeouts are prompt.
_POLL_INTERVAL_S = 0.1
# How long close() waits for the I/O thread (beyond the start-up it may be stuck in).
_CLOSE_GRACE_S = 5.0
#: How long after send_timeout an unacknowledged send is failed by the client itself.
_ACK_GRACE_S = 1.0

_STATUS_ACTIONS = {
    messages_pb2.ACTION_GET_STATUS: "get_status",
    messages_pb2.ACTION_PAUSE: "pause",
    messages_pb2.ACTION_UNPAUSE: "unpause",
    messages_pb2.ACTION_CANCEL: "cancel",
}


@dataclass
class _Call:
    """One request waiting for its reply."""

    future: Future[Any]
    interpret: Callable[[messages_pb2.Reply], Any]
    what: str
    timeout: timedelta


class FlinkTasksClient:
    """Submits pipelines to Kafka and awaits their replies; runs task actions; follows events.

    One client holds one Kafka producer and one reply consumer, on an I/O thread it owns, shared
    by any number of concurrent calls from any threads or event loops. Every call carries a
    fresh ``reply_id``; the reply consumer reads the reply topic (every partition, no consumer
    group, starting at its end when the client starts) and completes the call whose
    ``reply_id`` the reply echoes.

    Start-up (connecting, loading topic metadata, seeking the reply topic to its end) begins in
    the constructor and runs in the background; calls made meanwhile are sent once it is done.
    Entering the client as a context manager waits for it, so a broker that is down is reported
    there. Close the client (or leave its ``with`` block) to release its connections.

    Args:
        bootstrap_servers: Kafka bootstrap servers; ignored when ``settings`` is given.
        settings: All settings at once (see `ClientSettings`, e.g. `ClientSettings.from_env`).
        **options: Any other `ClientSettings` field, e.g. ``reply_topic=`` or
            ``default_timeout=timedelta(minutes=5)``; they override ``settings``.

    Example:
        >>> async with FlinkTasksClient("127.0.0.1:19092") as client:  # doctest: +SKIP
        ...     result = await client.submit_async(multiply.send(3, 2))
    """

    def __init__(
        self,
        bootstrap_servers: str | None = None,
        *,
        settings: ClientSettings | None = None,
        **options: Any,
    ) -> None:
        base = settings if settings is not None else ClientSettings()
        if bootstrap_servers is not None:
            options["bootstrap_servers"] = bootstrap_servers
        self._settings = base.replace(**options) if options else base
        self._lock = threading.Lock()
        self._pending: dict[str, _Call] = {}
        # pipeline id -> keys in _pending of calls waiting for that pipeline's own reply
        self._final_waiters: dict[str, set[str]] = {}
        self._deadlines: list[tuple[float, int, str]] = []
        # Sends not yet acknowledged: kafka-python may neither deliver nor fail a record after
        # the broker was killed (seen with 3.0.12), so the client enforces send_timeout itself.
        self._ack_deadlines: list[tuple[float, int, Any, Callable[[], None]]] = []
        self._sequence = itertools.count()
        self._closed = False
        self._stop = threading.Event()
        self._started: Future[None] = Future()
        # a refused login or TLS handshake fails start-up at once (not after connect_timeout)
        self._link = KafkaLink(self._settings, on_refused=lambda err: _fail(self._started, err))
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._rejected_replies = 0
        self._thread = threading.Thread(
            target=self._run, name=f"flink-tasks-client-io-{id(self):x}", daemon=True
        )
        self._thread.start()

    # --- properties ---------------------------------------------------------------------------

    @property
    def settings(self) -> ClientSettings:
        """The settings this client runs with."""
        return self._settings

    @property
    def allow_pickle(self) -> bool:
        """Whether pickled results are accepted (see `ClientSettings.allow_pickle`)."""
        return self._settings.allow_pickle

    @property
    def pending_count(self) -> int:
        """The number of calls waiting for a reply."""
        with self._lock:
            return len(self._pending)

    @property
    def rejected_replies(self) -> int:
        """Records on the reply topic that could not be parsed as a `Reply` (logged, skipped)."""
        return self._rejected_replies

    @property
    def closed(self) -> bool:
        """True once `close` was called."""
        return self._closed

    @property
    def healthy(self) -> bool:
        """True while the client is started, not closed and connected to Kafka.

        A client that is not healthy keeps trying to reconnect (see `health` for why it is not);
        calls made meanwhile wait up to ``send_timeout`` for the connection to come back.
        """
        return not self._closed and self._started.done() and self._link.health.healthy

    @property
    def health(self) -> ClientHealth:
        """`healthy`, why not (``reason``), since when, and how often the client reconnected."""
        health = self._link.health
        if self._closed:
            return ClientHealth(False, "the client is closed", health.since, health.rebuilds)
        if self._started.done() and self._started.exception() is not None:
            reason = f"the client could not start: {self._started.exception()}"
            return ClientHealth(False, reason, health.since, health.rebuilds)
        return health

    # --- lifecycle ----------------------------------------------------------------------------

    def wait_ready(self, timeout: timedelta | float | None = None) -> None:
        """Block until start-up is done.

        Raises:
            TransportError: Kafka could not be reached or a topic is missing.
            ClientError: the client was closed.
        """
        # Start-up has four steps, each bounded by connect_timeout (reach the broker, bootstrap
        # the consumer, seek the reply topic, load the producer's metadata).
        limit = self._settings.connect_timeout * 4 if timeout is None else self._timeout(timeout)
        try:
            self._started.result(timeout=limit.total_seconds())
        except TimeoutError as err:
            raise TransportError(
                f"the client did not connect to {self._settings.bootstrap_servers} within {limit}"
            ) from err

    async def wait_ready_async(self) -> None:
        """Wait until start-up is done, without blocking the event loop.

        Raises:
            TransportError: Kafka could not be reached or a topic is missing.
            ClientError: the client was closed.
        """
        await asyncio.wrap_future(self._started)

    def close(self) -> None:
        """Stop the I/O thread and release the Kafka connections; idempotent.

        Calls still waiting for a reply fail with `ClientError`; their pipelines keep running
        and can be looked up with `get_status` / `get_result` from another client.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            calls = list(self._pending.values())
            self._pending.clear()
            self._deadlines.clear()
        self._stop.set()
        for call in calls:
            _fail(
                call.future,
                ClientError(
                    f"the client was closed before the reply for {call.what} arrived; the "
                    "request may still be processed: look it up by pipeline id"
                ),
            )
        for stream in list(self._streams):
            stream.stop(ClientError("the client was closed"))
        if threading.current_thread() is not self._thread:
            self._thread.join(self._settings.connect_timeout.total_seconds() + _CLOSE_GRACE_S)
            if self._thread.is_alive():
                logger.warning("the client's I/O thread did not stop in time; it is a daemon")
        if not self._started.done():
            _fail(self._started, ClientError("the client was closed before it connected"))

    async def aclose(self) -> None:
        """`close` without blocking the event loop."""
        await asyncio.get_running_loop().run_in_executor(None, self.close)

    def __enter__(self) -> FlinkTasksClient:
        try:
            self.wait_ready()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> FlinkTasksClient:
        try:
            await self.wait_ready_async()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return (
            f"FlinkTasksClient({self._settings.bootstrap_servers!r}, {state}, "
            f"pending={self.pending_count})"
        )

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

        if policy == "allow":
            return send(limit)
        self._check_open()
        return _reuse.submit(self, pipeline.id, limit, policy, send)

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
        return _reuse.wait_result(self, pipeline_id, self._timeout(timeout))

    async def wait_result_async(
        self, pipeline_id: str, timeout: timedelta | float | None = None
    ) -> Any:
        """`wait_result`, awaited."""
        return await asyncio.wrap_future(self.wait_result(pipeline_id, timeout))

    def wait_result_sync(self, pipeline_id: str, timeout: timedelta | float | None = None) -> Any:
        """`wait_result`, blocking until the result."""
        return self.wait_result(pipeline_id, timeout).result()

    def _wait_for_final_reply(self, pipeline_id: str, limit: timedelta) -> Future[Any]:
        """A future completed by the next final reply of ``pipeline_id`` (any reply id)."""
        key = f"final:{uuid.uuid4().hex}"
        call = _Call(
            future=Future(),
            interpret=self._pipeline_outcome,
            what=f"the result of pipeline {pipeline_id!r}",
            timeout=limit,
        )
        deadline = time.monotonic() + limit.total_seconds()
        with self._lock:
            if self._closed:
                raise ClientError("the client is closed: create a new FlinkTasksClient")
            self._pending[key] = call
            self._final_waiters.setdefault(pipeline_id, set()).add(key)
            heapq.heappush(self._deadlines, (deadline, next(self._sequence), key))

        def forget(_: Future[Any]) -> None:
            with self._lock:
                self._pending.pop(key, None)
                keys = self._final_waiters.get(pipeline_id)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del self._final_waiters[pipeline_id]

        call.future.add_done_callback(forget)
        return call.future

    def _final_reply_calls(self, reply: messages_pb2.Reply) -> list[_Call]:
        if not self._final_waiters or not _reuse.is_final_reply(reply):
            return []
        with self._lock:
            keys = self._final_waiters.pop(reply.pipeline_id, set())
            return [call for key in keys if (call := self._pending.pop(key, None)) is not None]

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
        if policy == "allow":
            return self._enqueue_now(pipeline.id, value)
        known: Future[str] = Future()
        known.set_result(pipeline.id)
        return _reuse.submit(
            self,
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
        if not isinstance(pipeline_id, str) or not pipeline_id:
            raise ValueError(f"pipeline_id must be a non-empty string, got {pipeline_id!r}")
        limit = self._timeout(timeout)
        name = messages_pb2.Action.Name(action)  # type: ignore[arg-type]
        reply_id = uuid.uuid4().hex
        request = messages_pb2.ActionRequest(
            pipeline_id=pipeline_id,
            action=action,  # type: ignore[arg-type]
            reply_topic=self._settings.reply_topic,
            reply_id=reply_id,
        )
        return self._send(
            topic=self._settings.action_topic,
            key=pipeline_id,
            value=request.SerializeToString(),
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
    ) -> messages_pb2.PipelineRequest:
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
    ) -> messages_pb2.PipelineRequest:
        """Blocking `get_request`."""
        request: messages_pb2.PipelineRequest = self.action(
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
            An `EventStream`: an async iterator of ``events_pb2.PipelineEvent``.
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

    # --- internals: requests ------------------------------------------------------------------

    def _timeout(self, timeout: timedelta | float | None) -> timedelta:
        if timeout is None:
            return self._settings.default_timeout
        if isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
            timeout = timedelta(seconds=timeout)
        if not isinstance(timeout, timedelta):
            raise TypeError(
                f"timeout must be a datetime.timedelta (e.g. timedelta(seconds=30)) or a number "
                f"of seconds, got {timeout!r}"
            )
        if timeout <= timedelta(0):
            raise ValueError(f"timeout must be positive, got {timeout}")
        return timeout

    def _check_open(self) -> None:
        if self._closed:
            raise ClientError("the client is closed: create a new FlinkTasksClient")

    def _encode_request(self, pipeline: PipelineBuilder, reply_id: str) -> bytes:
        if not isinstance(pipeline, PipelineBuilder):
            raise TypeError(
                f"submit takes a pipeline (e.g. task.send(...)), got {type(pipeline).__name__}"
            )
        id_problem = pipeline_id_problem(pipeline.id)
        if id_problem is not None:
            raise PipelineDefinitionError(f"{id_problem}: {pipeline!r}")
        if not pipeline.entries:
            raise PipelineDefinitionError(
                "the pipeline is empty: start it with task.send(...) or in_parallel([...])"
            )
        request = messages_pb2.PipelineRequest(
            pipeline=pipeline.to_proto(),
            reply_topic=self._settings.reply_topic,
            reply_id=reply_id,
            events_topic=self._settings.events_topic,
        )
        value = request.SerializeToString()
        size = len(value) + len(pipeline.id.encode("utf-8"))
        limit = self._settings.max_request_bytes
        if size > limit:
            default_note = (
                " (the default: Kafka's 1 MiB record limit less headroom)"
                if limit == DEFAULT_MAX_REQUEST_BYTES
                else ""
            )
            raise RequestTooLargeError(
                f"the request for pipeline {pipeline.id!r} is {size} bytes, over "
                f"max_request_bytes={limit}{default_note}. Pass large data by reference "
                "(e.g. a URL or a storage key), or raise max_request_bytes together with the "
                "broker's message.max.bytes and the topic's max.message.bytes."
            )
        return value

    def _send(
        self, *, topic: str, key: str, value: bytes, reply_id: str, call: _Call
    ) -> Future[Any]:
        deadline = time.monotonic() + call.timeout.total_seconds()
        with self._lock:
            if self._closed:
                raise ClientError("the client is closed: create a new FlinkTasksClient")
            self._pending[reply_id] = call
            heapq.heappush(self._deadlines, (deadline, next(self._sequence), reply_id))
        # A cancelled (or otherwise completed) future needs no reply any more.
        call.future.add_done_callback(lambda _: self._forget(reply_id))
        key_bytes = key.encode("utf-8")
        # Nothing is produced before start-up is done: the reply consumer must be at the end of
        # the reply topic first, or a fast reply could be produced before its position and lost.
        self._started.add_done_callback(
            lambda started: self._produce(started, topic, key_bytes, value, reply_id, call)
        )
        return call.future

    def _produce(
        self,
        started: Future[None],
        topic: str,
        key: bytes,
        value: bytes,
        reply_id: str,
        call: _Call,
    ) -> None:
        if call.future.done():
            return
        error = started.exception()
        if error is not None:
            self._complete(reply_id, error=error)
            return
        sent = self._send_or_park(
            topic,
            key,
            value,
            lambda: self._produce(started, topic, key, value, reply_id, call),
            lambda err: self._complete(reply_id, error=err),
            call.what,
        )
        if sent is None:
            return
        sent.add_errback(
            lambda err: self._complete(
                reply_id, error=_kafka.send_failure(self._settings, call.what, topic, err)
            )
        )
        self._watch_ack(
            sent, lambda: self._complete(reply_id, error=self._not_acknowledged(call.what, topic))
        )
        logger.debug("sent %s to %s (reply_id %s)", call.what, topic, reply_id)

    def _send_or_park(
        self,
        topic: str,
        key: bytes,
        value: bytes,
        again: Callable[[], None],
        fail: Callable[[BaseException], None],
        what: str,
    ) -> Any:
        """``producer.send``, or park the send until there is a usable producer (None then).

        A send that raised was not appended to the producer, so it is sent again (once) by a
        rebuilt producer, or failed with `TransportError` after ``send_timeout``: it is never
        dropped silently and never sent twice.
        """
        producer = self._link.producer
        if producer is not None:
            try:
                return producer.send(topic, key=key, value=value)
            except Exception as err:
                logger.warning("could not send %s to %s: %s", what, topic, err)
                self._link.producer_failed(producer, f"send raised {type(err).__name__}: {err}")
        if self._closed:
            fail(ClientError(f"the client was closed before {what} was sent"))
            return None
        self._link.park(
            again,
            lambda: fail(
                TransportError(
                    f"could not send {what} to {topic!r} within {self._settings.send_timeout}: "
                    f"{self._link.health.reason or 'no usable producer'}. It was not sent; "
                    "submitting it again is safe."
                )
            ),
        )
        return None

    def _watch_ack(self, sent: Any, on_timeout: Callable[[], None]) -> None:
        deadline = time.monotonic() + self._settings.send_timeout.total_seconds() + _ACK_GRACE_S
        producer = self._link.producer

        def timed_out() -> None:
            # kafka-python neither delivered nor failed the record: do not trust that producer
            self._link.producer_failed(producer, "a send was neither acknowledged nor failed")
            on_timeout()

        with self._lock:
            heapq.heappush(self._ack_deadlines, (deadline, next(self._sequence), sent, timed_out))

    def _not_acknowledged(self, what: str, topic: str) -> TransportError:
        return TransportError(
            f"Kafka did not acknowledge {what} on {topic!r} within "
            f"{self._settings.send_timeout}; it was probably not delivered (the broker may be "
            "down), but may still be: check get_status(...) before submitting it again"
        )

    def _forget(self, reply_id: str) -> None:
        with self._lock:
            self._pending.pop(reply_id, None)

    def _complete(
        self, reply_id: str, *, result: Any = None, error: BaseException | None = None
    ) -> None:
        with self._lock:
            call = self._pending.pop(reply_id, None)
        if call is None:
            return
        if error is not None:
            _fail(call.future, error)
        else:
            _succeed(call.future, result)

    async def _await(self, future: Future[T]) -> T:
        return await asyncio.wrap_future(future)

    # --- internals: the I/O thread ------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._link.start()
            if self._stop.is_set():
                raise ClientError("the client was closed before it connected")
        except BaseException as err:
            self._link.close()
            logger.error("the client could not start: %s", err)
            _fail(self._started, err)
            return
        logger.info(
            "client connected to %s; replies on %s",
            self._settings.bootstrap_servers,
            self._settings.reply_topic,
        )
        _succeed(self._started, None)
        try:
            self._loop()
        finally:
            self._link.close()
            logger.debug("the client's I/O thread stopped")

    def _loop(self) -> None:
        """Until closed: read replies, fail overdue calls, keep the Kafka link repaired.

        An exception here (a bug, or a kafka-python failure not caught below) is logged and the
        reply consumer rebuilt: the I/O thread never ends before `close`.
        """
        while not self._stop.is_set():
            try:
                wait = min(self._expire(), self._link.maintain())
                for value in self._link.poll(max(wait, 0.001)):
                    self._on_reply(value)
            except Exception as err:
                logger.exception("the client's I/O thread failed; rebuilding the reply consumer")
                self._link.consumer_failed(f"{type(err).__name__}: {err}")
                self._stop.wait(0.1)

    def _expire(self) -> float:
        """Fail the calls whose deadline passed; return how long to wait for the next one."""
        now = time.monotonic()
        expired: list[_Call] = []
        unacknowledged: list[Callable[[], None]] = []
        with self._lock:
            while self._ack_deadlines and self._ack_deadlines[0][0] <= now:
                _, _, sent, on_timeout = heapq.heappop(self._ack_deadlines)
                if not sent.is_done:
                    unacknowledged.append(on_timeout)
            while self._deadlines and self._deadlines[0][0] <= now:
                _, _, reply_id = heapq.heappop(self._deadlines)
                call = self._pending.pop(reply_id, None)
                if call is not None:
                    expired.append(call)
            # Entries of answered calls stay in the heap until due; compact when they dominate.
            if len(self._deadlines) > 2 * len(self._pending) + 1024:
                self._deadlines = [d for d in self._deadlines if d[2] in self._pending]
                heapq.heapify(self._deadlines)
            wait = self._deadlines[0][0] - now if self._deadlines else _POLL_INTERVAL_S
        for on_timeout in unacknowledged:
            on_timeout()
        for call in expired:
            _fail(
                call.future,
                ResultTimeoutError(
                    f"no reply for {call.what} within {call.timeout}. It may still be running: "
                    "ask get_status(...) or get_result(...) by pipeline id, or pass a longer "
                    "timeout."
                ),
            )
        return min(max(wait, 0.0), _POLL_INTERVAL_S)

    def _on_reply(self, value: bytes | None) -> None:
        reply = messages_pb2.Reply()
        try:
            reply.ParseFromString(value or b"")
        except Exception as err:
            self._rejected_replies += 1
            logger.warning(
                "skipping a record on %s that is not a Reply (%s); %d skipped so far",
                self._settings.reply_topic,
                err,
                self._rejected_replies,
            )
            return
        with self._lock:
            call = self._pending.pop(reply.reply_id, None)
        calls = [call] if call is not None else []
        calls += self._final_reply_calls(reply)
        if not calls:
            # Another client's reply, or one whose call timed out or was cancelled.
            logger.debug("ignoring reply %s for pipeline %s", reply.reply_id, reply.pipeline_id)
            return
        for each in calls:
            try:
                result = each.interpret(reply)
            except BaseException as err:
                _fail(each.future, err)
            else:
                _succeed(each.future, result)

    # --- internals: replies -------------------------------------------------------------------

    def _pipeline_outcome(self, reply: messages_pb2.Reply) -> Any:
        kind = reply.WhichOneof("outcome")
        if kind == "error":
            raise self._task_error(reply.error)
        if kind == "result" or kind is None:
            return serialization.decode(reply.result, allow_pickle=self.allow_pickle)
        raise ClientError(
            f"unexpected reply for pipeline {reply.pipeline_id!r}: {kind} instead of a result"
        )

    def _action_outcome(self, action: int, reply: messages_pb2.Reply) -> Any:
        kind = reply.WhichOneof("outcome")
        if kind == "error":
            error = reply.error
            if error.exception_type == NOT_FOUND_ERROR:
                raise PipelineNotFoundError(error.exception_message)
            if error.exception_type == ACTION_ERROR:
                raise ActionError(error.exception_message)
            raise self._task_error(error)
        if action in _STATUS_ACTIONS and kind == "status":
            try:
                return PipelineStatus(reply.status)
            except ValueError as err:
                raise ClientError(
                    f"unknown pipeline status {reply.status} in the reply; upgrade the client"
                ) from err
        if action == messages_pb2.ACTION_GET_REQUEST and kind == "request":
            request = messages_pb2.PipelineRequest()
            request.CopyFrom(reply.request)
            return request
        if action == messages_pb2.ACTION_GET_RESULT and kind in ("result", None):
            return serialization.decode(reply.result, allow_pickle=self.allow_pickle)
        raise ClientError(
            f"unexpected reply to {messages_pb2.Action.Name(action)} of pipeline "  # type: ignore[arg-type]
            f"{reply.pipeline_id!r}: {kind}"
        )

    def _task_error(self, error: values_pb2.TaskException) -> TaskError:
        exception = serialization.decode_exception(error, allow_pickle=self.allow_pickle)
        return TaskError.from_exception(exception)


def _succeed(future: Future[T], result: T) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_result(result)


def _fail(future: Future[Any], error: BaseException) -> None:
    with contextlib.suppress(InvalidStateError):
        future.set_exception(error)
