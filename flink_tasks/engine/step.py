"""The pipeline engine's one entry point: one message in, state changes and effects out.

No I/O, never raises, deterministic (the clock and the id source are arguments).

Every pipeline, child pipeline and stage runs at its own pipeline-function address. An address
runs a sequence of entries one at a time; an entry is a task or a group. A group's chains are
each a single task or a child pipeline parked ahead at its own address, and a group with more
chains than `auto_stage_threshold` (or with `num_stages`) is split into stages that are child
pipelines too. So every address holds a bounded definition and a bounded aggregation, and one
task result costs O(1) work and state traffic whatever the size of the pipeline.

Naming rule: a message's kind is its envelope field (`PipelineMessage.kind`; a `WorkerReport`'s
kind prefixed with `task_`) or its type in snake case; the handler of kind K is `on_K`, in the
module of its concern (see HANDLERS).
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from typing import Any

from flink_tasks._proto import messages_pb2
from flink_tasks.engine import (
    control,
    deadlines,
    effects,
    finish,
    inline,
    leases,
    retries,
    sequence,
    submit,
)
from flink_tasks.engine.context import Clock, Context, EngineSettings, IdSource
from flink_tasks.engine.state import AddressState
from flink_tasks.engine.unreadable import UnreadableMessage

logger = logging.getLogger(__name__)

EngineMessage = (
    messages_pb2.PipelineRequest
    | messages_pb2.ActionRequest
    | messages_pb2.TaskResult
    | messages_pb2.WorkerReport
    | messages_pb2.PipelineMessage
    | UnreadableMessage
)
"""Everything the pipeline function accepts."""

Handler = Callable[[Context, Any], None]

HANDLERS: dict[str, Handler] = {
    "pipeline_request": submit.on_pipeline_request,
    "action_request": control.on_action_request,
    "task_result": inline.with_inlined(sequence.on_task_result),
    "task_running": leases.on_task_running,
    "define_child": submit.on_define_child,
    "start_child": submit.on_start_child,
    "child_result": sequence.on_child_result,
    "retry_due": retries.on_retry_due,
    "control": control.on_control,
    "expire": finish.on_expire,
    "store_request": finish.on_store_request,
    "get_request": finish.on_get_request,
    "task_deadline": leases.on_task_deadline,
    "task_lease_check": leases.on_task_lease_check,
    "deadline_due": deadlines.on_deadline_due,
    "progress_check": deadlines.on_progress_check,
    "progress_beat": deadlines.on_progress_beat,
    "unreadable": control.on_unreadable,
}

# a result anywhere in a pipeline's tree: the stall timeout starts again
PROGRESS_KINDS = frozenset({"task_result", "task_running", "child_result", "progress_beat"})


# the message types that are their own payload, by type (the common path: one dict lookup)
_PLAIN_KINDS: dict[type, str] = {
    messages_pb2.TaskResult: "task_result",
    messages_pb2.PipelineRequest: "pipeline_request",
    messages_pb2.ActionRequest: "action_request",
}


def message_kind(message: EngineMessage) -> tuple[str, Any]:
    """The message's kind and the payload its handler takes ("" for an empty envelope)."""
    plain = _PLAIN_KINDS.get(type(message))
    if plain is not None:
        return plain, message
    if isinstance(message, messages_pb2.PipelineMessage):
        kind = message.WhichOneof("kind")
        return (kind, getattr(message, kind)) if kind else ("", None)
    if isinstance(message, messages_pb2.WorkerReport):
        report = message.WhichOneof("kind")
        return (f"task_{report}", getattr(message, report)) if report else ("", None)
    if isinstance(message, messages_pb2.PipelineRequest):
        return "pipeline_request", message
    if isinstance(message, messages_pb2.ActionRequest):
        return "action_request", message
    if isinstance(message, messages_pb2.TaskResult):
        return "task_result", message
    return "unreadable", message


def step(
    address_id: str,
    state: AddressState,
    message: EngineMessage,
    settings: EngineSettings,
    *,
    clock: Clock,
    ids: IdSource,
) -> list[effects.Effect]:
    """Apply one message to one address's `state` (changed in place; `state.encoded()` has the
    cells to write back) and return the effects. Never raises: an engine bug fails the pipeline."""
    ctx = Context(address_id, state, settings, clock, ids)
    try:
        kind, payload = message_kind(message)
        if kind in PROGRESS_KINDS:
            deadlines.note_progress(ctx)
        handler = HANDLERS.get(kind)
        if handler is not None:
            handler(ctx, payload)
        if ctx.skipped:
            ctx.flush_skipped()
    except Exception:
        logger.exception("pipeline engine failed at %s", address_id)
        finish.fail_internal(ctx, traceback.format_exc())
    return ctx.effects
