"""Python values <-> the wire `Value` tree.

The default codec is closed: None, bool, int, float, str, bytes, list, tuple, dict, protobuf
messages, `TaskException` and the types given to `flink_tasks.register_type` (by name, rebuilt by
the receiver's own registration). Decoding never runs code the sender chose. Pickle is an
explicit opt-in (`allow_pickle=True`), refused otherwise, because unpickling untrusted bytes runs
arbitrary code.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import any_pb2, descriptor_pool, message, message_factory

from flink_tasks import value_types
from flink_tasks._proto import values_pb2
from flink_tasks.errors import SerializationError, TaskException

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1
_SUPPORTED = (
    "None, bool, int, float, str, bytes, list, tuple, dict, protobuf messages and registered types"
)

MAX_VALUE_DEPTH = 20
"""How deeply containers (list, tuple, dict, a `TaskException` with state, a registered type)
may nest in a value.

The encoder and the decoder both enforce it, so a value either fails where it is encoded (in the
client, or in the task that returns it) or arrives whole. It leaves room in protobuf's parse
limit of 100 nested messages: a dict level costs 3 (Value, ValueMap, ValueMapEntry; a registered
type's level 2: Value, RegisteredValue), so a value costs at most 60; the deepest envelope
around one (a `get_request` reply: Reply, PipelineRequest, Pipeline, Entry, TaskEntry,
ValueList, and 3 per nested group, at most `flink_tasks.pipeline.builder.MAX_GROUP_NESTING` = 10
of them) costs at most 36.
"""


def _too_deep(what: str) -> SerializationError:
    return SerializationError(
        f"{what} is nested more than {MAX_VALUE_DEPTH} levels deep (lists, tuples, dicts, task "
        "exceptions), the limit every flink-tasks process shares; flatten it, or pass it as "
        "bytes or by reference"
    )


def encode(value: Any, *, allow_pickle: bool = False) -> values_pb2.Value:
    """Encode a Python value as a `Value`, raising `SerializationError` if it has no encoding."""
    out = values_pb2.Value()
    _encode_into(out, value, allow_pickle, 0)
    return out


def _encode_into(out: values_pb2.Value, value: Any, allow_pickle: bool, depth: int) -> None:
    if value is None:
        out.none = True
    elif value is True or value is False:
        out.bool_value = value
    elif type(value) is int:
        if _INT64_MIN <= value <= _INT64_MAX:
            out.int_value = value
        else:
            out.big_int = str(value)
    elif type(value) is float:
        out.float_value = value
    elif type(value) is str:
        out.str_value = value
    elif type(value) in (bytes, bytearray):
        out.bytes_value = bytes(value)
    elif depth >= MAX_VALUE_DEPTH and (
        type(value) in (list, tuple, dict) or isinstance(value, TaskException)
    ):
        raise _too_deep("a value")
    elif type(value) is list:
        items = out.list_value.items
        for item in value:
            _encode_into(items.add(), item, allow_pickle, depth + 1)
        if not value:
            out.list_value.SetInParent()
    elif type(value) is tuple:
        items = out.tuple_value.items
        for item in value:
            _encode_into(items.add(), item, allow_pickle, depth + 1)
        if not value:
            out.tuple_value.SetInParent()
    elif type(value) is dict:
        entries = out.dict_value.entries
        for key, item in value.items():
            entry = entries.add()
            _encode_into(entry.key, key, allow_pickle, depth + 1)
            _encode_into(entry.value, item, allow_pickle, depth + 1)
        if not value:
            out.dict_value.SetInParent()
    elif (registered := value_types.for_value(value)) is not None:
        if depth >= MAX_VALUE_DEPTH:
            raise _too_deep("a value")
        _encode_registered(out, registered, value, allow_pickle, depth + 1)
    elif isinstance(value, TaskException):
        out.exception.CopyFrom(_encode_exception(value, allow_pickle, depth + 1))
    elif isinstance(value, message.Message):
        out.message.Pack(value)
    elif allow_pickle:
        try:
            out.pickled = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as err:
            raise SerializationError(f"cannot pickle {type(value).__qualname__}: {err}") from err
    else:
        raise SerializationError(
            f"a value of type {type(value).__module__}.{type(value).__qualname__} cannot be "
            f"serialized: supported types are {_SUPPORTED}. To send it, "
            f"{value_types.unregistered_hint(value)}; or bind the task with allow_pickle=True if "
            "both sides trust each other."
        )


def _encode_registered(
    out: values_pb2.Value,
    registered: value_types.RegisteredType,
    value: Any,
    allow_pickle: bool,
    depth: int,
) -> None:
    try:
        plain = registered.to_value(value)
    except Exception as err:
        raise SerializationError(
            f"converting a {registered.name!r} for the wire failed: {type(err).__name__}: {err}"
        ) from err
    out.registered.type_name = registered.name
    _encode_into(out.registered.value, plain, allow_pickle, depth)


def decode(value: values_pb2.Value, *, allow_pickle: bool = False) -> Any:
    """Decode a `Value` into Python; pickled values are refused unless `allow_pickle`."""
    return _decode(value, allow_pickle, 0)


def _decode(value: values_pb2.Value, allow_pickle: bool, depth: int) -> Any:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "none":
        return None
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "big_int":
        return int(value.big_int)
    if kind == "float_value":
        return value.float_value
    if kind == "str_value":
        return value.str_value
    if kind == "bytes_value":
        return value.bytes_value
    if kind in ("list_value", "tuple_value", "dict_value", "exception", "registered"):
        if depth >= MAX_VALUE_DEPTH:
            raise _too_deep("a received value")
        depth += 1
    if kind == "list_value":
        return [_decode(v, allow_pickle, depth) for v in value.list_value.items]
    if kind == "tuple_value":
        return tuple(_decode(v, allow_pickle, depth) for v in value.tuple_value.items)
    if kind == "dict_value":
        return {
            _decode(e.key, allow_pickle, depth): _decode(e.value, allow_pickle, depth)
            for e in value.dict_value.entries
        }
    if kind == "exception":
        return _decode_exception(value.exception, allow_pickle, depth)
    if kind == "registered":
        return _decode_registered(value.registered, allow_pickle, depth)
    if kind == "message":
        return _unpack_any(value.message)
    if kind == "pickled":
        if not allow_pickle:
            raise SerializationError(
                "refusing to unpickle a value from the wire: pickle runs arbitrary code. "
                "Opt in with allow_pickle=True only if you trust the sender."
            )
        return pickle.loads(value.pickled)
    raise SerializationError(f"unknown value kind {kind!r}")


def _decode_registered(value: values_pb2.RegisteredValue, allow_pickle: bool, depth: int) -> Any:
    registered = value_types.by_name(value.type_name)
    plain = _decode(value.value, allow_pickle, depth)
    try:
        return registered.from_value(plain)
    except Exception as err:
        raise SerializationError(
            f"a received {value.type_name!r} does not fit the class registered here "
            f"({registered.cls.__module__}.{registered.cls.__qualname__}): "
            f"{type(err).__name__}: {err}"
        ) from err


def _unpack_any(packed: any_pb2.Any) -> message.Message:
    name = packed.TypeName()
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError as err:
        raise SerializationError(
            f"protobuf message type {name!r} is unknown here: import the module that defines it"
        ) from err
    result = message_factory.GetMessageClass(descriptor)()
    packed.Unpack(result)
    return result


def encode_args(args: Sequence[Any], *, allow_pickle: bool = False) -> values_pb2.ValueList:
    """Encode positional arguments."""
    out = values_pb2.ValueList()
    for arg in args:
        _encode_into(out.items.add(), arg, allow_pickle, 0)
    return out


def encode_kwargs(kwargs: Mapping[str, Any], *, allow_pickle: bool = False) -> values_pb2.ValueMap:
    """Encode keyword arguments."""
    out = values_pb2.ValueMap()
    for key, arg in kwargs.items():
        entry = out.entries.add()
        entry.key.str_value = key
        _encode_into(entry.value, arg, allow_pickle, 0)
    return out


def decode_args(args: values_pb2.ValueList, *, allow_pickle: bool = False) -> list[Any]:
    """Decode positional arguments."""
    return [decode(v, allow_pickle=allow_pickle) for v in args.items]


def decode_kwargs(kwargs: values_pb2.ValueMap, *, allow_pickle: bool = False) -> dict[str, Any]:
    """Decode keyword arguments (keys are strings)."""
    out: dict[str, Any] = {}
    for entry in kwargs.entries:
        key = decode(entry.key)
        if not isinstance(key, str):
            raise SerializationError(f"keyword argument names must be strings, got {key!r}")
        out[key] = decode(entry.value, allow_pickle=allow_pickle)
    return out


def encode_exception(exc: TaskException, *, allow_pickle: bool = False) -> values_pb2.TaskException:
    """Encode a `TaskException` (its state included)."""
    return _encode_exception(exc, allow_pickle, 0)


def _encode_exception(
    exc: TaskException, allow_pickle: bool, depth: int
) -> values_pb2.TaskException:
    out = values_pb2.TaskException(
        id=exc.id,
        type=exc.type,
        exception_type=exc.exception_type,
        exception_message=exc.exception_message,
        stacktrace=exc.stacktrace,
    )
    if exc.state is not None:
        _encode_into(out.state, exc.state, allow_pickle, depth)
        out.has_state = True
    return out


def decode_exception(exc: values_pb2.TaskException, *, allow_pickle: bool = False) -> TaskException:
    """Decode a `TaskException`."""
    return _decode_exception(exc, allow_pickle, 0)


def _decode_exception(
    exc: values_pb2.TaskException, allow_pickle: bool, depth: int
) -> TaskException:
    return TaskException(
        id=exc.id,
        type=exc.type,
        exception_type=exc.exception_type,
        exception_message=exc.exception_message,
        stacktrace=exc.stacktrace,
        state=_decode(exc.state, allow_pickle, depth) if exc.has_state else None,
    )
