"""The client's I/O side: pending calls, sending with acknowledgement deadlines, and the I/O
thread that reads replies and fails overdue calls."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from datetime import timedelta
from typing import Any

from flink_tasks import requests
from flink_tasks._proto import messages_pb2
from flink_tasks.errors import ClientError, ResultTimeoutError, TransportError
from flink_tasks_client import _kafka, _reuse
from flink_tasks_client._calls import ACK_GRACE_S as _ACK_GRACE_S
from flink_tasks_client._calls import POLL_INTERVAL_S as _POLL_INTERVAL_S
from flink_tasks_client._calls import Call as _Call
from flink_tasks_client._calls import T
from flink_tasks_client._calls import fail as _fail
from flink_tasks_client._calls import succeed as _succeed
from flink_tasks_client._client_replies import ReplyDecoding
from flink_tasks_client._events import EventStream
from flink_tasks_client._link import KafkaLink

logger = logging.getLogger("flink_tasks_client._client")


class ClientIO(ReplyDecoding):
    """The state `FlinkTasksClient.__init__` sets up, and everything that moves bytes."""

    _lock: threading.Lock
    _pending: dict[str, _Call]
    _final_waiters: dict[str, set[str]]
    _deadlines: list[tuple[float, int, str]]
    _ack_deadlines: list[tuple[float, int, Any, Callable[[], None]]]
    _sequence: itertools.count[int]
    _closed: bool
    _stop: threading.Event
    _started: Future[None]
    _link: KafkaLink
    _streams: weakref.WeakSet[EventStream]
    _rejected_replies: int

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

    def _timeout(self, timeout: timedelta | float | None) -> timedelta:
        return requests.check_timeout(timeout, self._settings.default_timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise ClientError("the client is closed: create a new FlinkTasksClient")

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
                sent = producer.send(topic, key=key, value=value)
            except Exception as err:
                logger.warning("could not send %s to %s: %s", what, topic, err)
                self._link.producer_failed(producer, f"send raised {type(err).__name__}: {err}")
            else:
                sent.add_errback(lambda err: self._distrust_after_expiry(producer, err))
                return sent
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

    def _distrust_after_expiry(self, producer: Any, err: BaseException) -> None:
        """A record that expired after it was sent leaves kafka-python 3.0.12's idempotent
        producer without a producer id for good (`reset_producer_id` keeps the state READY, and
        `init_producer_id` acts only in UNINITIALIZED; Java's client goes back to UNINITIALIZED):
        every later send would expire too. So that producer is rebuilt."""
        if _kafka.send_expired(err):
            self._link.producer_failed(producer, f"a send expired ({err})")

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
