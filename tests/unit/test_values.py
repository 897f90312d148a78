"""The wire codec: round trips, refusals, and no pickle unless asked."""

from __future__ import annotations

import pickle
from typing import Any

import pytest

from flink_tasks import SerializationError, TaskException
from flink_tasks._proto import values_pb2
from flink_tasks.serialization import decode, encode


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        0,
        -(2**63),
        2**63 - 1,
        2**200,
        -(2**70),
        1.5,
        "text",
        b"\x00\xff",
        [],
        (),
        {},
        [1, (2, 3), {"a": [None]}],
        {1: "int key", (1, 2): "tuple key", "s": {"nested": True}},
        TaskException("t1", "mod.task", "builtins.ValueError", "bad", "trace", state={"s": 1}),
    ],
)
def test_round_trip(value: Any) -> None:
    decoded = decode(values_pb2.Value.FromString(encode(value).SerializeToString()))
    assert decoded == value
    assert type(decoded) is type(value)


def test_protobuf_messages_round_trip() -> None:
    message = values_pb2.ValueList(items=[encode(1)])
    assert decode(encode(message)) == message


def test_unsupported_values_are_refused_with_a_clear_error() -> None:
    with pytest.raises(SerializationError, match="cannot be serialized"):
        encode(object())


def test_pickle_is_refused_on_decode_unless_opted_in() -> None:
    wire = values_pb2.Value(pickled=pickle.dumps(complex(1, 2)))
    with pytest.raises(SerializationError, match="refusing to unpickle"):
        decode(wire)
    assert decode(wire, allow_pickle=True) == complex(1, 2)
    assert encode(complex(1, 2), allow_pickle=True).WhichOneof("kind") == "pickled"
