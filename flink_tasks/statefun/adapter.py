"""The one module that speaks StateFun's request-reply v3 protocol.

Everything else in flink-tasks sees `Invocation` (what arrived) and `Outbox` (what to send,
schedule, write to Kafka, and the address's state cells as raw bytes). This module reads the
`ToFunction` request and writes the `FromFunction` reply with the messages generated from the
official `request-reply.proto`, as the pinned `flink-statefun` distribution ships them
(`statefun.request_reply_pb2`), and follows its SDK's handler rule for rule (missing state
specs, state mutations, delayed messages, Kafka egress records). It does not go through the
SDK's handler, context and storage objects: one batch of a chain is one invocation, and those
objects cost a fifth of the pipeline function's time there (docs/decisions.md, "The adapter
speaks request-reply from the generated messages").
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple

from statefun.kafka_egress_pb2 import KafkaProducerRecord
from statefun.request_reply_pb2 import FromFunction, ToFunction

from flink_tasks import wire

logger = logging.getLogger(__name__)

#: the typename StateFun's generic Kafka egress expects its records under
KAFKA_RECORD_TYPENAME = "type.googleapis.com/io.statefun.sdk.egress.KafkaProducerRecord"
_MODIFY = FromFunction.PersistedValueMutation.MutationType.Value("MODIFY")
_DELETE = FromFunction.PersistedValueMutation.MutationType.Value("DELETE")
_EXPIRE_NONE = FromFunction.ExpirationSpec.ExpireMode.Value("NONE")
_EXPIRE_AFTER_WRITE = FromFunction.ExpirationSpec.ExpireMode.Value("AFTER_WRITE")


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


@functools.cache
def split_typename(typename: str) -> tuple[str, str]:
    """`namespace/name` -> (namespace, name), as the SDK splits it (at the last slash); cached:
    a worker sends to a handful of function types, once per message."""
    namespace, slash, name = typename.rpartition("/")
    if not slash or not namespace or not name:
        raise ValueError(f"a function type must be of the form namespace/name, not {typename!r}")
    return namespace, name


class Outbox:
    """What an invocation may do: read and write its cells, send, schedule, write to Kafka.

    One per batch, shared by its invocations; what they do is written into the batch's reply
    as they do it."""

    __slots__ = (
        "_batch_end",
        "_batch_end_async",
        "_cells",
        "_dirty",
        "_reply",
        "_specs",
        "batch_size",
        "scratch",
    )

    def __init__(
        self,
        cells: dict[str, bytes | None],
        specs: dict[str, CellSpec],
        reply: Any,
        batch_size: int = 1,
    ) -> None:
        self._cells = cells
        self._specs = specs
        self._dirty: set[str] = set()
        self._reply = reply  # FromFunction.InvocationResponse
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
        try:
            return self._cells[cell]
        except KeyError:
            raise AttributeError(f"{cell!r} is not a state cell of this function") from None

    def set(self, cell: str, data: bytes | None) -> None:
        """Write a cell (None deletes it); the reply carries the last write of the batch."""
        if cell not in self._cells:
            raise AttributeError(f"{cell!r} is not a state cell of this function")
        self._cells[cell] = data
        self._dirty.add(cell)

    def send(self, typename: str, address_id: str, value_typename: str, payload: bytes) -> None:
        _fill(self._reply.outgoing_messages.add(), typename, address_id, value_typename, payload)

    def send_after(
        self, delay: timedelta, typename: str, address_id: str, value_typename: str, payload: bytes
    ) -> None:
        delayed = self._reply.delayed_invocations.add()
        _fill(delayed, typename, address_id, value_typename, payload)
        delayed.delay_in_ms = int(delay.total_seconds() * 1000.0)

    def egress(self, topic: str, key: str, payload: bytes) -> None:
        if not topic:
            raise ValueError("a Kafka egress record needs a topic")
        record = KafkaProducerRecord(topic=topic, key=key, value_bytes=payload)
        outgoing = self._reply.outgoing_egresses.add()
        outgoing.egress_namespace, outgoing.egress_type = _EGRESS
        argument = outgoing.argument
        argument.typename = KAFKA_RECORD_TYPENAME
        argument.has_value = True
        argument.value = record.SerializeToString()

    def write_mutations(self) -> None:
        """Put the batch's cell writes into the reply (in the order the cells are declared)."""
        for name, spec in self._specs.items():
            if name not in self._dirty:
                continue
            mutation = self._reply.state_mutations.add()
            mutation.state_name = name
            data = self._cells[name]
            if data is None:
                mutation.mutation_type = _DELETE
            else:
                mutation.mutation_type = _MODIFY
                value = mutation.state_value
                value.typename = spec.typename
                value.has_value = True
                value.value = data


def _fill(pb: Any, typename: str, address_id: str, value_typename: str, payload: bytes) -> None:
    """Target and argument of an outgoing (or delayed) invocation."""
    if not address_id:
        raise ValueError(f"a message to {typename} needs an address id")
    target = pb.target
    target.namespace, target.type = split_typename(typename)
    target.id = address_id
    argument = pb.argument
    argument.typename = value_typename
    argument.has_value = True
    argument.value = payload


Handler = Callable[[Invocation, Outbox], Awaitable[None]]
#: where every Kafka egress record goes (`wire.EGRESS_ID`, split once)
_EGRESS = split_typename(wire.EGRESS_ID)


class _Function(NamedTuple):
    handler: Handler
    specs: dict[str, CellSpec]  # by cell name, in declaration order


class StatefunEndpoint:
    """Serves functions over the request-reply protocol: `await handle(body) -> body`."""

    def __init__(self) -> None:
        self._functions: dict[str, _Function] = {}
        self._fallbacks: dict[str, _Function] = {}

    def register(self, typename: str, handler: Handler, cells: Iterable[CellSpec] = ()) -> None:
        """Serve `handler` as the function `namespace/name`."""
        split_typename(typename)
        self._functions[typename] = _Function(handler, {c.name: c for c in cells})

    def register_fallback(self, namespace: str, handler: Handler) -> None:
        """Serve every other function of `namespace` (or `*`: of any namespace) with `handler`."""
        self._fallbacks[namespace] = _Function(handler, {})

    def _lookup(self, typename: str) -> _Function:
        found = self._functions.get(typename)
        if found is None:
            namespace = typename.partition("/")[0]
            found = self._fallbacks.get(namespace) or self._fallbacks.get("*")
            if found is None:
                raise ValueError(f"Unable to find a function of type {typename}")
        return found

    async def handle(self, body: bytes) -> bytes:
        """Handle one `ToFunction` request and return the `FromFunction` reply."""
        batch = ToFunction.FromString(body).invocation
        target = batch.target
        namespace, function, address_id = target.namespace, target.type, target.id
        registered = self._lookup(f"{namespace}/{function}")
        specs = registered.specs
        cells = _received_cells(batch.state, specs)
        reply = FromFunction()
        if cells is None:
            _ask_for_missing(reply, specs, batch.state)
            return reply.SerializeToString()  # type: ignore[no-any-return]
        invocations = batch.invocations
        outbox = Outbox(cells, specs, reply.invocation_result, len(invocations))
        handler = registered.handler
        for invocation in invocations:
            argument, caller = invocation.argument, invocation.caller
            caller_id: str | None = caller.id
            caller_typename: str | None = f"{caller.namespace}/{caller.type}"
            if not (caller.namespace or caller.type or caller_id):
                caller_typename = caller_id = None
            await handler(
                Invocation(
                    namespace,
                    function,
                    address_id,
                    argument.typename,
                    argument.value if argument.has_value else b"",
                    caller_typename,
                    caller_id,
                ),
                outbox,
            )
        if invocations:
            await outbox.end_batch_async()
            outbox.end_batch()
        outbox.write_mutations()
        return reply.SerializeToString()  # type: ignore[no-any-return]


def _received_cells(state: Any, specs: dict[str, CellSpec]) -> dict[str, bytes | None] | None:
    """The cells' values as bytes (None: empty), or None when StateFun sent not all of them
    (it then needs the specs: the first call to a function after it is deployed)."""
    cells: dict[str, bytes | None] = {}
    for persisted in state:
        name = persisted.state_name
        spec = specs.get(name)
        if spec is None:
            continue
        expected = spec.typename
        value = persisted.state_value
        if not value.has_value:
            cells[name] = None
        elif value.typename != expected:
            raise TypeError(
                f"state cell {name!r} holds a {value.typename} value, declared as {expected}"
            )
        else:
            cells[name] = value.value
    return cells if len(cells) == len(specs) else None


def _ask_for_missing(reply: Any, specs: dict[str, CellSpec], state: Any) -> None:
    received = {persisted.state_name for persisted in state}
    missing_values = reply.incomplete_invocation_context.missing_values
    for cell in specs.values():
        if cell.name in received:
            continue
        missing = missing_values.add()
        missing.state_name = cell.name
        missing.type_typename = cell.typename
        expiration = missing.expiration_spec
        if cell.expire_after_write is None:
            expiration.mode = _EXPIRE_NONE
        else:
            expiration.mode = _EXPIRE_AFTER_WRITE
            expiration.expire_after_millis = int(cell.expire_after_write.total_seconds() * 1000)
