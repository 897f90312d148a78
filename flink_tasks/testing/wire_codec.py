"""StateFun's side of request-reply, for in-memory routers that play the runtime's part
(flink_tasks.testing, the benchmarks): `ToFunction` batches in, `FromFunction` replies out.

It needs only the StateFun SDK, so the statefun-tasks benchmark (its own venv, whose protobuf
cannot import flink-tasks) loads this file by path and uses the same codec."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from statefun import request_reply_v3
from statefun.kafka_egress_pb2 import KafkaProducerRecord


@dataclass(frozen=True)
class MissingState:
    """A state cell the function asked to be registered: its name and value typename."""

    name: str
    typename: str


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

    missing: list[MissingState]
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
    pb = request_reply_v3.FromFunction()
    pb.ParseFromString(data)
    if pb.HasField("incomplete_invocation_context"):
        missing = [
            MissingState(spec.state_name, spec.type_typename)
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
