"""The client's link to Kafka: a producer and a reply consumer that are rebuilt when they break,
sends parked while there is no producer, and the client's health.

kafka-python reconnects a live producer or consumer by itself (with a short reconnect back-off,
see ``_kafka``), but an object whose I/O thread ended, or whose poll raised, is not usable
again: the link closes it and builds a new one, with a bounded back-off between attempts. The
reply consumer is rebuilt at the positions the old one had reached, so no reply is missed.

Everything here except `producer_failed`, `park` and `health` runs on the client's I/O thread.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flink_tasks_client import _kafka
from flink_tasks_client.settings import ClientSettings

logger = logging.getLogger(__name__)

#: The first wait before a rebuild is tried again; it doubles up to ``reconnect_backoff_max``.
_FIRST_BACKOFF_S = 0.25
#: How often the I/O thread checks that the link still has a connection to a broker.
_CHECK_INTERVAL_S = 0.5


@dataclass(frozen=True)
class ClientHealth:
    """Whether a client can reach Kafka now, and why not.

    Attributes:
        healthy: The producer and reply consumer are up and connected to a broker.
        reason: Why the client is not healthy (empty when it is).
        since: When ``healthy`` last changed (``time.time()``).
        rebuilds: How many times a producer or reply consumer was rebuilt.
    """

    healthy: bool
    reason: str
    since: float
    rebuilds: int


@dataclass(order=True)
class _Parked:
    deadline: float
    sequence: int
    send: Callable[[], None]
    expire: Callable[[], None]


class KafkaLink:
    """The producer and reply consumer of one client, rebuilt when they break."""

    def __init__(
        self,
        settings: ClientSettings,
        on_refused: Callable[[BaseException], None] = lambda _: None,
    ) -> None:
        self._settings = settings
        self._on_refused = on_refused
        self._refusals = _kafka.RefusalWatch(settings, self._refused).__enter__()
        self._lock = threading.Lock()
        self.producer: Any = None
        self.consumer: Any = None
        #: the next offset to read, per reply-topic partition (kept across consumer rebuilds)
        self._positions: dict[Any, int] = {}
        self._producer_broken: str | None = None
        self._consumer_broken: str | None = None
        self._parked: list[_Parked] = []
        self._sequence = itertools.count()
        self._backoff_s = _FIRST_BACKOFF_S
        self._next_attempt = 0.0
        self._next_check = 0.0
        self._health = ClientHealth(False, "starting", time.time(), 0)

    # --- state seen from any thread ---------------------------------------------------------

    @property
    def health(self) -> ClientHealth:
        return self._health

    def producer_failed(self, producer: Any, reason: str) -> None:
        """Mark ``producer`` as unusable (if it is still the current one): it will be rebuilt."""
        with self._lock:
            if producer is None or producer is not self.producer or self._producer_broken:
                return
            self._producer_broken = reason
        self._set_health(False, f"the producer failed ({reason}); rebuilding it")

    def consumer_failed(self, reason: str) -> None:
        """Mark the reply consumer as unusable (I/O thread only): it will be rebuilt."""
        if not self._consumer_broken:
            self._consumer_broken = reason
            self._set_health(False, f"the reply consumer failed ({reason}); rebuilding it")

    def park(self, send: Callable[[], None], expire: Callable[[], None]) -> None:
        """Keep a send that found no usable producer until there is one (``send`` is called
        again) or until ``send_timeout`` passes (``expire`` is called)."""
        deadline = time.monotonic() + self._settings.send_timeout.total_seconds()
        with self._lock:
            heapq.heappush(self._parked, _Parked(deadline, next(self._sequence), send, expire))

    # --- the I/O thread ---------------------------------------------------------------------

    def start(self) -> None:
        """Connect for the first time; raises `TransportError` (nothing is retried here)."""
        _kafka.wait_reachable(self._settings)
        self._build_consumer()
        self.producer = _kafka.create_producer(self._settings)
        self._set_health(True, "")

    def poll(self, timeout_s: float) -> list[bytes | None]:
        """The reply values that arrived (waits at most ``timeout_s``); never raises."""
        consumer = self.consumer
        if consumer is None or self._consumer_broken:
            time.sleep(timeout_s)
            return []
        try:
            batches = consumer.poll(timeout_ms=max(1, int(timeout_s * 1000)))
        except Exception as err:
            logger.warning("the reply consumer failed, rebuilding it: %s", err)
            self.consumer_failed(f"{type(err).__name__}: {err}")
            return []
        values: list[bytes | None] = []
        for tp, records in batches.items():
            for record in records:
                values.append(record.value)
                self._positions[tp] = record.offset + 1
        return values

    def maintain(self) -> float:
        """Check the link, rebuild what is broken (when its back-off allows), send parked sends
        once there is a producer, fail those past their deadline. Returns how long the caller
        may wait before the next call."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + _CHECK_INTERVAL_S
            self._check()
        if (self._producer_broken or self._consumer_broken) and now >= self._next_attempt:
            self._repair()
        self._flush_parked()
        with self._lock:
            next_parked = self._parked[0].deadline - now if self._parked else _CHECK_INTERVAL_S
        return max(0.0, min(next_parked, self._next_check - now, _CHECK_INTERVAL_S))

    def _refused(self, error: BaseException) -> None:
        self._set_health(False, str(error))
        self._on_refused(error)

    def close(self) -> None:
        self._refusals.__exit__(None, None, None)
        with contextlib.suppress(Exception):
            if self.consumer is not None:
                self.consumer.close()
        with contextlib.suppress(Exception):
            if self.producer is not None:
                self.producer.close(timeout=5.0)
        with self._lock:
            parked, self._parked = self._parked, []
        for item in parked:
            item.expire()

    # --- internals --------------------------------------------------------------------------

    def _check(self) -> None:
        producer = self.producer
        sender = getattr(producer, "_sender", None)
        if producer is not None and sender is not None and not sender.is_alive():
            self.producer_failed(producer, "its I/O thread ended")
        if self._producer_broken or self._consumer_broken:
            return
        if _kafka.connected(self.consumer):
            if not self._health.healthy:
                self._set_health(True, "")
        elif self._health.healthy:
            self._set_health(False, f"no connection to Kafka at {self._settings.bootstrap_servers}")

    def _repair(self) -> None:
        try:
            _kafka.probe(self._settings)
            if self._consumer_broken:
                self._close_consumer()
                self._build_consumer()
                self._consumer_broken = None
            if self._producer_broken:
                with self._lock:
                    old, self.producer = self.producer, None
                _close_quickly(old)
                self.producer = _kafka.create_producer(self._settings)
                with self._lock:
                    self._producer_broken = None
        except Exception as err:
            self._next_attempt = time.monotonic() + self._backoff_s
            logger.warning(
                "could not reconnect to Kafka at %s (%s); next try in %.1fs",
                self._settings.bootstrap_servers,
                err,
                self._backoff_s,
            )
            self._backoff_s = min(
                self._backoff_s * 2, self._settings.reconnect_backoff_max.total_seconds()
            )
            self._set_health(False, f"cannot reconnect to Kafka: {err}")
            return
        self._backoff_s = _FIRST_BACKOFF_S
        self._health = ClientHealth(True, "", time.time(), self._health.rebuilds + 1)
        logger.info("client reconnected to %s", self._settings.bootstrap_servers)

    def _build_consumer(self) -> None:
        consumer = _kafka.create_consumer(self._settings, purpose="replies")
        try:
            self._positions = _kafka.assign_all(
                consumer, self._settings.reply_topic, self._settings, positions=self._positions
            )
        except BaseException:
            with contextlib.suppress(Exception):
                consumer.close()
            raise
        self.consumer = consumer

    def _close_consumer(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is not None:
            with contextlib.suppress(Exception):
                consumer.close()

    def _flush_parked(self) -> None:
        now = time.monotonic()
        ready = self.producer is not None and not self._producer_broken
        with self._lock:
            due: list[_Parked] = []
            while self._parked and (ready or self._parked[0].deadline <= now):
                due.append(heapq.heappop(self._parked))
        for item in due:
            if item.deadline <= now:
                item.expire()
            else:
                item.send()

    def _set_health(self, healthy: bool, reason: str) -> None:
        current = self._health
        if current.healthy == healthy and current.reason == reason:
            return
        if not healthy:
            logger.warning("client unhealthy: %s", reason)
        self._health = ClientHealth(healthy, reason, time.time(), current.rebuilds)


def _close_quickly(producer: Any) -> None:
    """Close a broken producer without waiting: its unsent records fail (their callers get a
    `TransportError`), nothing is sent again by the client."""
    if producer is not None:
        with contextlib.suppress(Exception):
            producer.close(timeout=0)
