"""An in-memory stand-in for the StateFun runtime that keeps its rules, for fast pipeline tests.

It drives the worker through the same request-reply handler StateFun calls over HTTP:
- every invocation ships all registered state values of its address, and the missing-state
  handshake registers specs on first use;
- one request in flight per address; messages that arrive meanwhile go out as the next batch
  (at most `max_batch` per batch);
- delayed messages fire after their delay (on a `VirtualClock` if given: see
  `flink_tasks.testing.virtual_time`); egress records go to topic listeners.
It also counts what crosses the protocol, so tests can check what one task result costs.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from flink_tasks import wire
from flink_tasks.requests import DEFAULT_MAX_REQUEST_BYTES
from flink_tasks.testing.virtual_time import VirtualClock
from flink_tasks.testing.wire_codec import decode_reply, encode_batch

logger = logging.getLogger(__name__)

Handler = Callable[[bytes], Awaitable[bytes]]
EgressListener = Callable[[str, str, bytes], None]


@dataclass
class AddressStats:
    """What crossed the protocol for one address."""

    batches: int = 0
    invocations: int = 0
    state_bytes: int = 0
    max_state_bytes: int = 0
    # the most one call shipped of each state cell, by cell name
    max_cell_bytes: dict[str, int] = field(default_factory=dict)


@dataclass
class _Address:
    typename: str
    address_id: str
    state: dict[str, bytes | None] = field(default_factory=dict)
    backlog: collections.deque[tuple[str | None, str | None, str, bytes]] = field(
        default_factory=collections.deque
    )
    in_flight: bool = False


class InMemoryRuntime:
    """Routes messages between functions served by `handler`, as StateFun would."""

    def __init__(
        self, handler: Handler, *, max_batch: int = 1000, clock: VirtualClock | None = None
    ) -> None:
        self._handler = handler
        self.clock = clock
        # virtual time only jumps when no task body runs and a caller waits for a reply
        self.busy: Callable[[], bool] = lambda: False
        self.waiting: Callable[[], bool] = lambda: True
        self._advancing: asyncio.Task[None] | None = None
        self._max_batch = max_batch
        self._addresses: dict[tuple[str, str], _Address] = {}
        self._specs: dict[str, dict[str, str]] = collections.defaultdict(dict)
        self._listeners: list[EgressListener] = []
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.stats: dict[tuple[str, str], AddressStats] = collections.defaultdict(AddressStats)
        self.failure: BaseException | None = None
        self._on_failure: list[Callable[[BaseException], None]] = []
        self._closed = False

    def add_egress_listener(self, listener: EgressListener) -> None:
        """Call `listener(topic, key, payload)` for every egress record."""
        self._listeners.append(listener)

    def on_failure(self, callback: Callable[[BaseException], None]) -> None:
        """Call `callback` if the handler ever fails (StateFun would fail the job)."""
        self._on_failure.append(callback)

    def route(
        self,
        typename: str,
        address_id: str,
        value_typename: str,
        payload: bytes,
        *,
        caller: tuple[str, str] | None = None,
        delay_ms: int = 0,
    ) -> None:
        """Deliver a message to a function address (after `delay_ms`)."""
        if self._closed:
            return
        if delay_ms > 0 and self.clock is not None:
            self.clock.call_later(
                delay_ms,
                lambda: self.route(typename, address_id, value_typename, payload, caller=caller),
            )
            self.schedule_advance()
            return
        if delay_ms > 0:
            loop = asyncio.get_running_loop()
            handle: asyncio.TimerHandle

            def fire() -> None:
                self._timers.discard(handle)
                self.route(typename, address_id, value_typename, payload, caller=caller)

            handle = loop.call_later(delay_ms / 1000, fire)
            self._timers.add(handle)
            return
        key = (typename, address_id)
        address = self._addresses.get(key)
        if address is None:
            address = self._addresses[key] = _Address(typename, address_id)
        address.backlog.append(
            (caller[0] if caller else None, caller[1] if caller else None, value_typename, payload)
        )
        if not address.in_flight:
            address.in_flight = True
            task = asyncio.get_running_loop().create_task(self._drain(address))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            task.add_done_callback(lambda _: self.schedule_advance())

    def schedule_advance(self) -> None:
        """On a virtual clock: once the runtime is idle, jump to the next delayed message."""
        if self.clock is None or self._closed or self._advancing is not None:
            return
        self._advancing = asyncio.get_running_loop().create_task(self._advance_when_idle())

    async def _advance_when_idle(self) -> None:
        assert self.clock is not None
        try:
            while not self._closed and self.clock.pending:
                for _ in range(3):  # let replies and task reports that are on their way land
                    await asyncio.sleep(0)
                if self._tasks or self.busy() or not self.waiting():
                    return
                self.clock.advance()
        finally:
            self._advancing = None

    async def _drain(self, address: _Address) -> None:
        try:
            while address.backlog and not self._closed:
                batch = [
                    address.backlog.popleft()
                    for _ in range(min(self._max_batch, len(address.backlog)))
                ]
                await self._invoke(address, batch)
        except asyncio.CancelledError:
            if not self._closed:
                raise
        except BaseException as err:  # StateFun would retry and then fail the job: surface it
            logger.exception(
                "in-memory runtime: the handler failed for %s %r",
                address.typename,
                address.address_id,
            )
            self.failure = err
            for callback in self._on_failure:
                callback(err)
        finally:
            address.in_flight = False
            if not address.state and not address.backlog:
                self._addresses.pop((address.typename, address.address_id), None)

    async def _invoke(
        self, address: _Address, batch: list[tuple[str | None, str | None, str, bytes]]
    ) -> None:
        specs = self._specs[address.typename]
        while True:
            state = {name: (typename, address.state.get(name)) for name, typename in specs.items()}
            body = encode_batch(address.typename, address.address_id, state, batch)
            reply = decode_reply(await self._handler(body))
            if reply.missing:
                for spec in reply.missing:
                    specs[spec.name] = spec.typename
                continue
            break
        stats = self.stats[(address.typename, address.address_id)]
        shipped = sum(len(data) for _, data in state.values() if data)
        stats.batches += 1
        stats.invocations += len(batch)
        stats.state_bytes += shipped
        stats.max_state_bytes = max(stats.max_state_bytes, shipped)
        for name, (_, data) in state.items():
            if data:
                stats.max_cell_bytes[name] = max(stats.max_cell_bytes.get(name, 0), len(data))
        for name, data in reply.mutations.items():
            if data is None:
                address.state.pop(name, None)
            else:
                address.state[name] = data
        caller = (address.typename, address.address_id)
        for message in reply.messages:
            self.route(
                message.typename,
                message.address_id,
                message.value_typename,
                message.payload,
                caller=caller,
                delay_ms=message.delay_ms,
            )
        for record in reply.egress:
            for listener in self._listeners:
                listener(record.topic, record.key, record.payload)

    async def settled(self) -> None:
        """Wait until every message sent so far, and every message those sent, is handled:
        only delayed ones (retries, deadlines, retention) remain. Tests wait on this instead of
        sleeping."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def state_of(self, typename: str, address_id: str) -> dict[str, bytes | None]:
        """The stored state of an address (empty if it has none)."""
        address = self._addresses.get((typename, address_id))
        return dict(address.state) if address else {}

    @property
    def address_count(self) -> int:
        """Addresses that hold state or have messages queued."""
        return len(self._addresses)

    async def close(self) -> None:
        """Drop pending timers and stop routing."""
        self._closed = True
        if self.clock is not None:
            self.clock.clear()
        if self._advancing is not None:
            self._advancing.cancel()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


class InMemoryReportSink:
    """The task-reports topic of the in-process environment: reports go to the pipeline
    function through the in-memory runtime, as the Kafka ingress would route them."""

    def __init__(self, max_report_bytes: int = DEFAULT_MAX_REQUEST_BYTES) -> None:
        self.runtime: InMemoryRuntime | None = None
        self.sent = 0
        #: the Kafka record limit the worker's real reports path has by default
        self.max_report_bytes = max_report_bytes

    def send(self, pipeline_id: str, report: bytes) -> None:
        if self.runtime is not None:
            self.sent += 1
            self.runtime.route(wire.PIPELINE_FUNCTION, pipeline_id, wire.WORKER_REPORT, report)

    def close(self, timeout: float = 10.0) -> None:
        self.runtime = None
