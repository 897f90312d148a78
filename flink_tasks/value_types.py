"""Own types on the wire: `register_type` lets a dataclass, a pydantic model or any class with
converters cross as itself, by a stable name, never by pickle.

A registered value travels as its name and its plain form (a value of the closed set, see
`flink_tasks.serialization`). The receiver looks the name up in its own registry: a type must be
registered in every process that sends or receives it (the client and the worker), at import
time of the module that defines it or its tasks.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flink_tasks.errors import SerializationError

T = TypeVar("T")


@dataclass(frozen=True)
class RegisteredType:
    """How one registered class crosses the wire."""

    name: str
    cls: type[Any]
    to_value: Callable[[Any], Any]
    """The object -> its plain form (any value the codec can encode, registered types included)."""
    from_value: Callable[[Any], Any]
    """The decoded plain form -> the object."""


_lock = threading.Lock()
_by_type: dict[type[Any], RegisteredType] = {}
_by_name: dict[str, RegisteredType] = {}


def register_type(
    cls: type[T],
    *,
    name: str | None = None,
    to_value: Callable[[T], Any] | None = None,
    from_value: Callable[[Any], T] | None = None,
) -> type[T]:
    """Let values of `cls` cross the wire (arguments, results, pipeline state) as themselves.

    Dataclasses and pydantic models need no converters; any other class needs both `to_value`
    (the object -> a value the codec encodes: None, bool, int, float, str, bytes, list, tuple,
    dict, protobuf messages or registered types) and `from_value` (that value -> the object).
    `name` (default ``module.QualName``) is what travels: give the same name in every process,
    e.g. when a client keeps its own copy of a worker's class. Registering the same class again
    under the same name does nothing; returns `cls`, so it also works as a class decorator.

    Raises:
        TypeError: `cls` is not a class, or neither a dataclass nor a pydantic model and has no
            converters.
        ValueError: the name is taken by another class, or the class has another name already.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_type takes a class, got {cls!r}")
    type_name = name or f"{cls.__module__}.{cls.__qualname__}"
    if not type_name or not isinstance(type_name, str):
        raise ValueError(f"a registered type needs a non-empty name, got {name!r}")
    if (to_value is None) != (from_value is None):
        raise TypeError(f"register_type({cls.__qualname__}): give both to_value and from_value")
    if to_value is not None and from_value is not None:
        entry = RegisteredType(type_name, cls, to_value, from_value)
    elif dataclasses.is_dataclass(cls):
        entry = _dataclass_entry(cls, type_name)
    elif _is_pydantic_model(cls):
        entry = _pydantic_entry(cls, type_name)
    else:
        raise TypeError(
            f"register_type({cls.__module__}.{cls.__qualname__}): not a dataclass or a pydantic "
            "model; pass to_value= and from_value= converters"
        )
    with _lock:
        by_name = _by_name.get(type_name)
        if by_name is not None and by_name.cls is not cls:
            raise ValueError(
                f"type name {type_name!r} is already registered for "
                f"{by_name.cls.__module__}.{by_name.cls.__qualname__}"
            )
        by_type = _by_type.get(cls)
        if by_type is not None and by_type.name != type_name:
            raise ValueError(
                f"{cls.__module__}.{cls.__qualname__} is already registered as {by_type.name!r}"
            )
        _by_type[cls] = entry
        _by_name[type_name] = entry
    return cls


def unregister_type(cls: type[Any]) -> None:
    """Forget `cls` (tests; a process normally registers its types once, at import)."""
    with _lock:
        entry = _by_type.pop(cls, None)
        if entry is not None:
            _by_name.pop(entry.name, None)


def for_value(value: Any) -> RegisteredType | None:
    """The registration of `value`'s exact class (a subclass is not its base), or None."""
    return _by_type.get(type(value))


def by_name(type_name: str) -> RegisteredType:
    """The registration under `type_name`; `SerializationError` naming the fix if none."""
    entry = _by_name.get(type_name)
    if entry is None:
        raise SerializationError(
            f"a received value is of registered type {type_name!r}, which is not registered in "
            "this process: call flink_tasks.register_type(cls) (with name= if the class lives "
            "elsewhere here) at import, in every process that sends or receives it"
        )
    return entry


def unregistered_hint(value: Any) -> str:
    """What the sender's error says to do about a value of an unregistered class."""
    cls = type(value)
    if dataclasses.is_dataclass(cls) or _is_pydantic_model(cls):
        return (
            f"register it with flink_tasks.register_type({cls.__qualname__}) in every process "
            "that sends or receives it (the client and the worker)"
        )
    return (
        f"register it with flink_tasks.register_type({cls.__qualname__}, to_value=..., "
        "from_value=...) in every process that sends or receives it, or convert it"
    )


def _dataclass_entry(cls: type[Any], type_name: str) -> RegisteredType:
    fields = dataclasses.fields(cls)
    not_init = [f.name for f in fields if not f.init]
    if not_init:
        raise TypeError(
            f"register_type({cls.__qualname__}): fields {not_init} are not __init__ arguments; "
            "pass to_value= and from_value= converters"
        )
    names = tuple(f.name for f in fields)

    def to_value(obj: Any) -> dict[str, Any]:
        # field by field, not dataclasses.asdict: nested registered types stay themselves
        return {field_name: getattr(obj, field_name) for field_name in names}

    def from_value(value: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected a dict of fields, got {type(value).__name__}")
        return cls(**value)

    return RegisteredType(type_name, cls, to_value, from_value)


def _is_pydantic_model(cls: type[Any]) -> bool:
    # never imports pydantic: a model's class exists only once pydantic is imported
    pydantic = sys.modules.get("pydantic")
    base = getattr(pydantic, "BaseModel", None)
    return isinstance(base, type) and issubclass(cls, base)


def _pydantic_entry(cls: type[Any], type_name: str) -> RegisteredType:
    def to_value(obj: Any) -> Any:
        # JSON mode: datetimes, UUIDs, enums... become plain values the model validates back
        return obj.model_dump(mode="json")

    def from_value(value: Any) -> Any:
        return cls.model_validate(value)

    return RegisteredType(type_name, cls, to_value, from_value)
