"""A pipeline's entries in their wire form (`pipeline_pb2`)."""

from __future__ import annotations

from flink_tasks import serialization
from flink_tasks._proto import pipeline_pb2
from flink_tasks.errors import SerializationError
from flink_tasks.pipeline import timing
from flink_tasks.pipeline.entries import DEFAULT_NAMESPACE, DEFAULT_WORKER_NAME, Entry, TaskCall


def _count(entry: Entry) -> int:
    if isinstance(entry, TaskCall):
        return 1
    return sum(chain.task_count() for chain in entry.chains)


def _allows_pickle(entry: Entry) -> bool:
    if isinstance(entry, TaskCall):
        return entry.options.allow_pickle
    return any(_allows_pickle(e) for chain in entry.chains for e in chain.entries)


def _entry_to_proto(entry: Entry, out: pipeline_pb2.Entry) -> None:
    if isinstance(entry, TaskCall):
        options = entry.options
        task = out.task
        task.task_id = entry.task_id
        task.task_type = entry.task_type
        if options.namespace != DEFAULT_NAMESPACE:
            task.namespace = options.namespace
        if options.worker_name != DEFAULT_WORKER_NAME:
            task.worker_name = options.worker_name
        task.kind = entry.kind  # type: ignore[assignment]
        if entry.has_args:
            try:
                task.args.CopyFrom(
                    serialization.encode_args(entry.args, allow_pickle=options.allow_pickle)
                )
                if entry.kwargs:
                    task.kwargs.CopyFrom(
                        serialization.encode_kwargs(entry.kwargs, allow_pickle=options.allow_pickle)
                    )
            except SerializationError as err:
                raise SerializationError(f"an argument of {entry.task_type!r}: {err}") from err
            task.has_args = True
        task.not_fruitful = not options.is_fruitful
        if options.retry_policy is not None:
            task.retry_policy.CopyFrom(options.retry_policy.to_proto())
            task.has_retry_policy = True
        if options.display_name:
            task.display_name = options.display_name
        if options.timeout is not None:
            task.timeout_s = options.timeout.total_seconds()
        if entry.pause_after:
            task.pause_after = True
        if options.countdown or options.eta or options.expires:
            timing.timing_to_proto(task, options.countdown, options.eta, options.expires)
        return
    group = out.group
    group.group_id = entry.group_id
    group.max_parallelism = entry.max_parallelism
    group.num_stages = entry.num_stages
    group.return_exceptions = entry.return_exceptions
    if entry.pause_after:
        group.pause_after = True
    if not entry.ordered:
        group.unordered = True
    for chain in entry.chains:
        chain_out = group.chains.add()
        for chain_entry in chain.entries:
            _entry_to_proto(chain_entry, chain_out.entries.add())
