"""The one module that speaks StateFun's request-reply v3 protocol, through the official SDK.

Everything else in flink-tasks sees `Invocation` (what arrived) and `Outbox` (what to send,
schedule, write to Kafka, and the address's state cells as raw bytes); this module maps them onto
the SDK (`statefun`, from the pinned `flink-statefun` distribution).
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

import statefun
from statefun import request_reply_v3, statefun_builder, storage
from statefun.request_reply_pb2 import ToFunction, TypedValue

from flink_tasks import wire

logger = logging.getLogger(__name__)


@dataclass
class _Batch:
    """The batch being handled: how many invocations it has, and its Outbox, shared by them
    (made by the first)."""

    size: int
    outbox: Outbox | None = None


_BATCH: contextvars.ContextVar[_Batch | None] = contextvars.ContextVar("batch", default=None)


def _identity(data: bytes) -> bytes:
    return data


def raw_type(typename: str) -> Any:
    """A StateFun type whose values are bytes we encode ourselves (no double decoding)."""
    return statefun.simple_type(typename, serialize_fn=_identity, deserialize_fn=_identity)


@dataclass(frozen=True)
class CellSpec:
    """A state cell of a function: its name, value typename and optional expiry after write."""

    name: str
    typename: str
    expire_after_write: timedelta | None = None


class Invocation(NamedTuple):
    """One message delivered to a function address (a named tuple: one is made per message)."""

    namespace: str
    function: str
    address_id: str
    typename: str
    payload: bytes
    caller_typename: str | None
    caller_id: str | None


class Outbox:
    """What an invocation may do: read and write its cells, send, schedule, write to Kafka."""

    __slots__ = ("_batch_end", "_batch_end_async", "_ctx", "_specs", "batch_size", "scratch")

    def __init__(self, ctx: Any, specs: dict[str, Any], batch_size: int = 1) -> None:
        self._ctx = ctx
        self._specs = specs
        #: invocations in this batch (all share this Outbox)
        self.batch_size = batch_size
        self._batch_end: list[Callable[[], None]] = []
        self._batch_end_async: list[Callable[[], Awaitable[None]]] = []
        self.scratch: dict[str, Any] = {}

    def at_batch_end_async(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Await `callback()` once, after the last invocation of this batch, before the
        synchronous batch-end callbacks: e.g. wait for work the batch's invocations started,
        so that they run concurrently instead of one after another."""
        self._batch_end_async.append(callback)

    async def end_batch_async(self) -> None:
        callbacks, self._batch_end_async = self._batch_end_async, []
        for callback in callbacks:
            await callback()

    def at_batch_end(self, callback: Callable[[], None]) -> None:
        """Run `callback` once, after the last invocation of this batch, before the reply is
        built: e.g. write state cells once per batch instead of once per invocation."""
        self._batch_end.append(callback)

    def end_batch(self) -> None:
        callbacks, self._batch_end = self._batch_end, []
        for callback in callbacks:
            callback()
        # what handlers kept here often refers back to this Outbox (a cell loader is a bound
        # method of it): dropped now, no reference cycle is left per batch for the GC to find
        self.scratch.clear()

    def get(self, cell: str) -> bytes | None:
        value: bytes | None = getattr(self._ctx.storage, cell)
        return value

    def set(self, cell: str, data: bytes | None) -> None:
        if data is None:
            delattr(self._ctx.storage, cell)
        else:
            setattr(self._ctx.storage, cell, data)

    def send(self, typename: str, address_id: str, value_typename: str, payload: bytes) -> None:
        self._ctx.send(_message(typename, address_id, value_typename, payload))

    def send_after(
        self, delay: timedelta, typename: str, address_id: str, value_typename: str, payload: bytes
    ) -> None:
        self._ctx.send_after(delay, _message(typename, address_id, value_typename, payload))

    def egress(self, topic: str, key: str, payload: bytes) -> None:
        self._ctx.send_egress(
            statefun.kafka_egress_message(
                typename=wire.EGRESS_ID, topic=topic, key=key, value=payload
            )
        )


def _message(typename: str, address_id: str, value_typename: str, payload: bytes) -> Any:
    """`statefun.message_builder(..., value=payload, value_type=raw_type(value_typename))`, built
    directly: the payload is already bytes (the raw type's serializer is the identity), and
    this runs for every message sent. `Message` refuses an empty target as the builder does."""
    typed_value = TypedValue(typename=value_typename, has_value=True, value=payload)
    return statefun.Message(target_typename=typename, target_id=address_id, typed_value=typed_value)


Handler = Callable[[Invocation, Outbox], Awaitable[None]]


class _FunctionTable:
    """What the SDK's handler looks functions up in, with a fallback per namespace: an unknown
    function never fails the job."""

    def __init__(self) -> None:
        self.functions: dict[str, Any] = {}
        self.fallbacks: dict[str, Any] = {}

    def for_typename(self, typename: str) -> Any:
        found = self.functions.get(typename)
        if found is not None:
            return found
        namespace = typename.partition("/")[0]
        return self.fallbacks.get(namespace) or self.fallbacks.get("*")


def _function(fun: Callable[[Any, Any], Awaitable[None]], cells: list[CellSpec]) -> Any:
    specs = storage.make_address_storage_spec(_value_specs(cells))
    return statefun_builder.StatefulFunction(fun=fun, specs=specs, is_async=True)


class _BatchHandler(request_reply_v3.RequestReplyHandler):  # type: ignore[misc]
    """The SDK's request-reply handler (its `handle_async`, for async functions, which all of
    ours are) plus the one step it has no hook for: after a batch's last invocation, the batch-end
    callbacks of its Outbox run, before the reply is built from the context. Owning the loop
    means the batch's end is known without counting its invocations first (a second parse of
    the whole request, state included, in every batch)."""

    async def handle_async(self, request_bytes: bytes) -> bytes:
        to_function = ToFunction()
        to_function.ParseFromString(request_bytes)
        batch = to_function.invocation
        address = request_reply_v3.sdk_address_from_pb(batch.target)
        target = self.functions.for_typename(address.typename)
        if not target:
            raise ValueError(f"Unable to find a function of type {address.typename}")
        resolution = storage.resolve(target.storage_spec, address.typename, batch.state)
        if resolution.missing_specs:
            failure = request_reply_v3.collect_failure(resolution.missing_specs)
            return failure.SerializeToString()  # type: ignore[no-any-return]
        ctx = request_reply_v3.UserFacingContext(address, resolution.storage)
        fun, typename, address_id = target.fun, address.typename, address.id
        caller_of = request_reply_v3.sdk_address_from_pb
        state = _Batch(len(batch.invocations))
        token = _BATCH.set(state)
        try:
            for invocation in batch.invocations:
                message = statefun.Message(
                    target_typename=typename, target_id=address_id, typed_value=invocation.argument
                )
                ctx._caller = caller_of(invocation.caller)
                await fun(ctx, message)
        finally:
            _BATCH.reset(token)
        if state.outbox is not None:
            await state.outbox.end_batch_async()
            state.outbox.end_batch()
        return request_reply_v3.collect_success(ctx).SerializeToString()  # type: ignore[no-any-return]


class StatefunEndpoint:
    """Serves functions over the request-reply protocol: `await handle(body) -> body`."""

    def __init__(self) -> None:
        self._functions = _FunctionTable()
        self._handler = _BatchHandler(self._functions)

    def register(self, typename: str, handler: Handler, cells: Iterable[CellSpec] = ()) -> None:
        """Serve `handler` as the function `namespace/name`."""
        cells = list(cells)
        self._functions.functions[typename] = _function(self._wrap(handler, cells), cells)

    def register_fallback(self, namespace: str, handler: Handler) -> None:
        """Serve every other function of `namespace` (or `*`: of any namespace) with `handler`."""
        self._functions.fallbacks[namespace] = _function(self._wrap(handler, []), [])

    async def handle(self, body: bytes) -> bytes:
        """Handle one `ToFunction` request and return the `FromFunction` reply."""
        result: bytes = await self._handler.handle_async(body)
        return result

    @staticmethod
    def _wrap(handler: Handler, cells: list[CellSpec]) -> Callable[[Any, Any], Awaitable[None]]:
        specs = {c.name: c for c in cells}

        async def invoke(context: Any, message: Any) -> None:
            address = context.address
            caller = context.caller
            typed_value = message.typed_value
            invocation = Invocation(
                address.namespace,
                address.name,
                address.id,
                typed_value.typename,
                typed_value.value if typed_value.has_value else b"",
                caller.typename if caller is not None else None,
                caller.id if caller is not None else None,
            )
            batch = _BATCH.get()
            assert batch is not None, "invoked outside StatefunEndpoint.handle"
            if batch.outbox is None:
                # one Outbox per batch: handlers may keep parsed state between its invocations
                batch.outbox = Outbox(context, specs, batch.size)
            await handler(invocation, batch.outbox)

        return invoke


def _value_specs(cells: list[CellSpec]) -> list[Any]:
    return [
        statefun.ValueSpec(
            name=c.name, type=raw_type(c.typename), expire_after_write=c.expire_after_write
        )
        for c in cells
    ]
