"""`FlinkTasksClient`: submit pipelines and run task actions over Kafka."""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta
from types import TracebackType
from typing import Any

from flink_tasks.errors import ClientError, TransportError
from flink_tasks_client._calls import Call as _Call
from flink_tasks_client._calls import fail as _fail
from flink_tasks_client._client_actions import ActionsMixin
from flink_tasks_client._client_submit import SubmitMixin
from flink_tasks_client._events import EventStream
from flink_tasks_client._link import ClientHealth, KafkaLink
from flink_tasks_client.settings import ClientSettings

logger = logging.getLogger(__name__)

# How long close() waits for the I/O thread (beyond the start-up it may be stuck in).
_CLOSE_GRACE_S = 5.0


class FlinkTasksClient(SubmitMixin, ActionsMixin):
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
