"""Value-level rules of pipelines, on the wire form only: no user value is ever decoded here."""

from __future__ import annotations

from collections.abc import Sequence

from flink_tasks._proto import messages_pb2, pipeline_pb2, values_pb2


def entry_args(
    task: pipeline_pb2.TaskEntry, entry_input: messages_pb2.EntryInput
) -> tuple[values_pb2.ValueList, values_pb2.ValueMap]:
    """The args and kwargs a task entry is called with, given what the pipeline passes it."""
    args = values_pb2.ValueList()
    kwargs = values_pb2.ValueMap()
    if entry_input.has_previous:
        previous = entry_input.previous
        if previous.WhichOneof("kind") == "tuple_value":
            args.items.extend(previous.tuple_value.items)
        else:
            args.items.append(previous)
    else:
        initial = entry_input.initial
        args.items.extend(initial.args.items)
        kwargs.entries.extend(initial.kwargs.entries)
    if task.has_args:
        args.items.extend(task.args.items)
        kwargs = merge_kwargs(kwargs, task.kwargs)
    return args, kwargs


def merge_kwargs(defaults: values_pb2.ValueMap, own: values_pb2.ValueMap) -> values_pb2.ValueMap:
    """`own` wins over `defaults`, key by key."""
    if not defaults.entries:
        return own
    own_keys = {e.key.SerializeToString(deterministic=True) for e in own.entries}
    out = values_pb2.ValueMap()
    out.entries.extend(
        e for e in defaults.entries if e.key.SerializeToString(deterministic=True) not in own_keys
    )
    out.entries.extend(own.entries)
    return out


def merge_states(states: Sequence[values_pb2.Value]) -> values_pb2.Value:
    """Group end: dicts merge key by key (the earlier chain wins); otherwise the first state."""
    if not states:
        return values_pb2.Value(none=True)
    if not all(s.WhichOneof("kind") == "dict_value" for s in states):
        return states[0]
    seen: set[bytes] = set()
    merged = values_pb2.Value()
    merged.dict_value.SetInParent()
    for state in states:
        for entry in state.dict_value.entries:
            key = entry.key.SerializeToString(deterministic=True)
            if key not in seen:
                seen.add(key)
                merged.dict_value.entries.append(entry)
    return merged


def none_value() -> values_pb2.Value:
    """The wire form of None."""
    return values_pb2.Value(none=True)


def list_value(items: Sequence[values_pb2.Value]) -> values_pb2.Value:
    """The wire form of a list of values."""
    out = values_pb2.Value()
    out.list_value.SetInParent()
    out.list_value.items.extend(items)
    return out
