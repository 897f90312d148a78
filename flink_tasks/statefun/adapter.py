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
from typing import Any

import statefun
from statefun import request_reply_v3, statefun_builder, storage

logger = logging.getLogger(__name__)

EGRESS_TYPENAME = "flink_tasks/kafka"

# The Outbox of the batch being handled: one per request, shared by the batch's invocations.
_BATCH_OUTBOX: contextvars.ContextVar[Outbox | None] = contextvars.ContextVar(
    "batch_outbox", default=None
)


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


@dataclass(frozen=True)
class Invocation:
    """One message delivered to a function address."""

    namespace: str
    function: str
    address_id: str
    typename: str
    payload: bytes
    caller_typename: str | None
    caller_id: str | None


class Outbox:
    """What an invocation may do: read and write its cells, send, schedule, write to Kafka."""

    __slots__ = ("_batch_end", "_ctx", "_specs", "scratch")

    def __init__(self, ctx: Any, specs: dict[str, Any]) -> None:
        self._ctx = ctx
        self._specs = specs
        self._batch_end: list[Callable[[], None]] = []
        self.scratch: dict[str, Any] = {}

    def at_batch_end(self, callback: Callable[[], None]) -> None:
        """Run `callback` once, after the last invocation of this batch, before the reply is
        built: e.g. write state cells once per batch instead of once per invocation."""
        self._batch_end.append(callback)

    def end_batch(self) -> None:
        callbacks, self._batch_end = self._batch_end, []
        for callback in callbacks:
            callback()

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
                typename=EGRESS_TYPENAME, topic=topic, key=key, value=payload
            )
        )


_TYPES: dict[str, Any] = {}

# The SDK builds its reply with the module-level `collect_success(ctx)` after the batch's last
# invocation; run the batch-end callbacks just before it. This is the SDK's only hook point
# between "all invocations done" and "reply built" (it has no callback of its own).
_sdk_collect_success = request_reply_v3.collect_success


def _collect_success_after_batch_end(ctx: Any) -> Any:
    outbox = _BATCH_OUTBOX.get()
    if outbox is not None:
        outbox.end_batch()
    return _sdk_collect_success(ctx)


request_reply_v3.collect_success = _collect_success_after_batch_end


def _message(typename: str, address_id: str, value_typename: str, payload: bytes) -> Any:
    value_type = _TYPES.get(value_typename)
    if value_type is None:
        value_type = _TYPES[value_typename] = raw_type(value_typename)
    return statefun.message_builder(typename, address_id, value=payload, value_type=value_type)


Handler = Callable[[Invocation, Outbox], Awaitable[None]]


class _Functions(statefun.StatefulFunctions):  # type: ignore[misc]
    """Function lookup with a fallback per namespace: an unknown function never fails the job."""

    __slots__ = ("_fallbacks",)

    def __init__(self) -> None:
        super().__init__()
        self._fallbacks: dict[str, Any] = {}

    def for_typename(self, typename: str) -> Any:
        found = self._functions.get(typename)
        if found is not None:
            return found
        namespace = typename.partition("/")[0]
        return self._fallbacks.get(namespace) or self._fallbacks.get("*")


class StatefunEndpoint:
    """Serves functions over the request-reply protocol: `await handle(body) -> body`."""

    def __init__(self) -> None:
        self._functions = _Functions()
        self._handler = request_reply_v3.RequestReplyHandler(self._functions)

    def register(self, typename: str, handler: Handler, cells: Iterable[CellSpec] = ()) -> None:
        """Serve `handler` as the function `namespace/name`."""
        cells = list(cells)
        self._functions.register(typename, self._wrap(handler, cells), _value_specs(cells))

    def register_fallback(self, namespace: str, handler: Handler) -> None:
        """Serve every other function of `namespace` (or `*`: of any namespace) with `handler`."""
        specs = storage.make_address_storage_spec([])
        self._functions._fallbacks[namespace] = statefun_builder.StatefulFunction(
            fun=self._wrap(handler, []), specs=specs, is_async=True
        )

    async def handle(self, body: bytes) -> bytes:
        """Handle one `ToFunction` request and return the `FromFunction` reply."""
        token = _BATCH_OUTBOX.set(None)
        try:
            result: bytes = await self._handler.handle_async(body)
        finally:
            _BATCH_OUTBOX.reset(token)
        return result

    @staticmethod
    def _wrap(handler: Handler, cells: list[CellSpec]) -> Callable[[Any, Any], Awaitable[None]]:
        specs = {c.name: c for c in cells}

        async def invoke(context: Any, message: Any) -> None:
            address = context.address
            caller = context.caller
            namespace, _, function = address.typename.partition("/")
            invocation = Invocation(
                namespace=namespace,
                function=function,
                address_id=address.id,
                typename=message.value_typename(),
                payload=message.raw_value() or b"",
                caller_typename=caller.typename if caller is not None else None,
                caller_id=caller.id if caller is not None else None,
            )
            outbox = _BATCH_OUTBOX.get()
            if outbox is None:
                # one Outbox per batch: handlers may keep parsed state between its invocations
                outbox = Outbox(context, specs)
                _BATCH_OUTBOX.set(outbox)
            await handler(invocation, outbox)

        return invoke


def _value_specs(cells: list[CellSpec]) -> list[Any]:
    return [
        statefun.ValueSpec(
            name=c.name, type=raw_type(c.typename), expire_after_write=c.expire_after_write
        )
        for c in cells
    ]


# ---------------------------------------------------------------------------- wire helpers
# For in-memory routers (flink_tasks.testing) that play the StateFun runtime's part.


@dataclass(frozen=True)
class Outgoing:
    """A message a function sent: to a function, after a delay, or to a Kafka egress topic."""

    typename: str = ""
    address_id: str = ""
    value_typename: str = ""
    payload: bytes = b""
    delay_ms: int = 0
    topic: str = ""
    key: str = ""


@dataclass(frozen=True)
class BatchReply:
    """A decoded `FromFunction`: missing state specs, or the batch's effects."""

    missing: list[CellSpec]
    mutations: dict[str, bytes | None]
    messages: list[Outgoing]
    egress: list[Outgoing]


def encode_batch(
    typename: str,
    address_id: str,
    state: dict[str, tuple[str, bytes | None]],
    invocations: Iterable[tuple[str | None, str | None, str, bytes]],
) -> bytes:
    """A `ToFunction` batch: state is {name: (typename, bytes or None)}; each invocation is
    (caller typename, caller id, value typename, payload)."""
    pb = request_reply_v3.ToFunction()
    batch = pb.invocation
    namespace, _, name = typename.partition("/")
    batch.target.namespace = namespace
    batch.target.type = name
    batch.target.id = address_id
    for state_name, (value_typename, data) in state.items():
        value = batch.state.add()
        value.state_name = state_name
        value.state_value.typename = value_typename
        if data is not None:
            value.state_value.has_value = True
            value.state_value.value = data
    for caller_typename, caller_id, value_typename, payload in invocations:
        invocation = batch.invocations.add()
        if caller_typename:
            caller_namespace, _, caller_name = caller_typename.partition("/")
            invocation.caller.namespace = caller_namespace
            invocation.caller.type = caller_name
            invocation.caller.id = caller_id or ""
        invocation.argument.typename = value_typename
        invocation.argument.has_value = True
        invocation.argument.value = payload
    encoded: bytes = pb.SerializeToString()
    return encoded


def decode_reply(data: bytes) -> BatchReply:
    """Decode a `FromFunction` reply."""
    from statefun.kafka_egress_pb2 import KafkaProducerRecord

    pb = request_reply_v3.FromFunction()
    pb.ParseFromString(data)
    if pb.HasField("incomplete_invocation_context"):
        missing = [
            CellSpec(spec.state_name, spec.type_typename)
            for spec in pb.incomplete_invocation_context.missing_values
        ]
        return BatchReply(missing, {}, [], [])
    result = pb.invocation_result
    mutations: dict[str, bytes | None] = {}
    for mutation in result.state_mutations:
        deleted = (
            mutation.mutation_type == request_reply_v3.FromFunction.PersistedValueMutation.DELETE
        )
        mutations[mutation.state_name] = None if deleted else mutation.state_value.value
    messages = [
        Outgoing(
            typename=f"{m.target.namespace}/{m.target.type}",
            address_id=m.target.id,
            value_typename=m.argument.typename,
            payload=m.argument.value,
        )
        for m in result.outgoing_messages
    ]
    messages.extend(
        Outgoing(
            typename=f"{m.target.namespace}/{m.target.type}",
            address_id=m.target.id,
            value_typename=m.argument.typename,
            payload=m.argument.value,
            delay_ms=m.delay_in_ms,
        )
        for m in result.delayed_invocations
        if not m.is_cancellation_request
    )
    egress = []
    for e in result.outgoing_egresses:
        record = KafkaProducerRecord()
        record.ParseFromString(e.argument.value)
        egress.append(Outgoing(topic=record.topic, key=record.key, payload=record.value_bytes))
    return BatchReply([], mutations, messages, egress)
