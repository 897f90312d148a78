"""The pipeline engine: one message in, state changes and effects out. No I/O, never raises.

Every pipeline, child pipeline and stage runs at its own pipeline-function address. An address
runs a sequence of entries one at a time; an entry is a task or a group. A group's chains are
each a single task or a child pipeline parked ahead at its own address, and a group with more
chains than `auto_stage_threshold` (or with `num_stages`) is split into stages that are child
pipelines too. So every address holds a bounded definition and a bounded aggregation, and one
task result costs O(1) work and state traffic whatever the size of the pipeline.
"""

from __future__ import annotations

import logging
import math
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import cast

from flink_tasks import errors
from flink_tasks._proto import events_pb2, messages_pb2, pipeline_pb2, values_pb2
from flink_tasks.engine import effects, values
from flink_tasks.engine.state import AddressState, CompiledDefinition
from flink_tasks.engine.unreadable import UnreadableMessage
from flink_tasks.pipeline.builder import (
    DEFAULT_NAMESPACE,
    DEFAULT_WORKER_NAME,
    pipeline_id_problem,
)
from flink_tasks.types import retry_delay_ms, type_name_of

logger = logging.getLogger(__name__)

S = messages_pb2  # statuses and actions
RUNNING_STATUSES = (
    S.PIPELINE_STATUS_RUNNING,
    S.PIPELINE_STATUS_PAUSED,
    S.PIPELINE_STATUS_CANCELLING,
)
FINISHED_STATUSES = (
    S.PIPELINE_STATUS_COMPLETED,
    S.PIPELINE_STATUS_FAILED,
    S.PIPELINE_STATUS_CANCELLED,
)
REQUEST_STORE_SUFFIX = "~request"
# what a lost worker's error matches in a retry policy's `retry_for`
_WORKER_LOST_NAMES = frozenset(type_name_of(t) for t in errors.WorkerLostError.__mro__)


@dataclass(frozen=True)
class EngineSettings:
    """Tunables of the pipeline engine."""

    auto_stage_threshold: int = 100
    """Groups with more chains are split into stages of child pipelines automatically."""
    retention: timedelta = timedelta(hours=24)
    """How long a finished pipeline's status and result are kept."""
    served_namespaces: frozenset[str] | None = None
    """Task namespaces that have an endpoint; tasks elsewhere fail at once. None: any."""
    max_reply_bytes: int = 900 * 1024
    """Replies above this fail with a clear error instead of breaking the Kafka egress."""
    progress_events: int = 20
    """Group progress events per group (at most)."""
    stall_timeout: timedelta | None = timedelta(hours=24)
    """A root pipeline that gets no task result (anywhere in its tree) for this long is ended
    with `flink_tasks.PipelineDeadlineError`, so an orphaned pipeline cannot run forever. Raise
    it if single tasks run longer. None (or zero): never."""


def step(
    address_id: str,
    state: AddressState,
    message: object,
    settings: EngineSettings,
    *,
    now_ms: Callable[[], int] = lambda: int(time.time() * 1000),
) -> list[effects.Effect]:
    """Apply one message to one address. Never raises: an engine bug fails the pipeline."""
    engine = _Engine(address_id, state, settings, now_ms)
    try:
        engine.handle(message)
    except Exception:
        logger.exception("pipeline engine failed at %s", address_id)
        engine.fail_internal(traceback.format_exc())
    return engine.effects


@dataclass
class _Engine:
    address_id: str
    state: AddressState
    settings: EngineSettings
    now_ms: Callable[[], int]
    effects: list[effects.Effect] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    # ---------------------------------------------------------------- dispatch

    def handle(self, message: object) -> None:
        if isinstance(message, messages_pb2.TaskResult | messages_pb2.WorkerReport) or (
            isinstance(message, messages_pb2.PipelineMessage)
            and message.WhichOneof("kind") in ("child_result", "progress_beat")
        ):
            self.note_progress()
        if isinstance(message, messages_pb2.PipelineRequest):
            self.on_submit(message)
        elif isinstance(message, messages_pb2.TaskResult):
            self.on_result(message)
        elif isinstance(message, messages_pb2.ActionRequest):
            self.on_action(message)
        elif isinstance(message, messages_pb2.WorkerReport):
            if message.WhichOneof("kind") == "result":
                self.on_result(message.result)
            elif message.WhichOneof("kind") == "running":
                self.on_task_running(message.running)
        elif isinstance(message, messages_pb2.PipelineMessage):
            kind = message.WhichOneof("kind")
            if kind == "define_child":
                self.on_define_child(message.define_child)
            elif kind == "start_child":
                self.on_start_child(message.start_child)
            elif kind == "child_result":
                self.on_result(message.child_result)
            elif kind == "retry_due":
                self.on_retry_due(message.retry_due)
            elif kind == "control":
                self.on_control(message.control.action)
            elif kind == "expire":
                self.on_expire(message.expire)
            elif kind == "store_request":
                self.state.set_raw("request", message.store_request.SerializeToString())
            elif kind == "get_request":
                self.on_get_request(message.get_request)
            elif kind == "task_deadline":
                self.on_task_deadline(message.task_deadline)
            elif kind == "deadline_due":
                self.on_deadline_due(message.deadline_due)
            elif kind == "progress_check":
                self.on_progress_check(message.progress_check)
        elif isinstance(message, UnreadableMessage):
            self.on_unreadable(message)
        self.flush_skipped()

    # ---------------------------------------------------------------- submission

    def on_submit(self, request: messages_pb2.PipelineRequest) -> None:
        run = self.state.run
        if self.refuse_reserved_id(request):
            return
        if run is not None and run.status in RUNNING_STATUSES and not run.parent_id:
            self.reply_error(
                request.reply_topic,
                request.reply_id,
                errors.ALREADY_RUNNING_ERROR,
                f"pipeline {self.address_id!r} is already running; wait for it or cancel it",
            )
            return
        if not request.pipeline.entries:
            self.reply_error(
                request.reply_topic,
                request.reply_id,
                errors.INVALID_REQUEST_ERROR,
                "the pipeline has no entries",
            )
            return
        invocation = (run.invocation + 1) if run is not None else 1
        self.state.clear()
        self.effects.append(
            effects.SendPipelineMessage(
                self.address_id + REQUEST_STORE_SUFFIX,
                messages_pb2.PipelineMessage(store_request=request),
            )
        )
        pipeline = request.pipeline
        run = messages_pb2.Run(
            status=S.PIPELINE_STATUS_RUNNING,
            invocation=invocation,
            root_pipeline_id=self.address_id,
            reply_topic=request.reply_topic,
            reply_id=request.reply_id,
            events_topic=request.events_topic,
            size=_task_count(pipeline),
        )
        run.input.initial.CopyFrom(pipeline.initial)
        if pipeline.initial.has_state:
            run.state.CopyFrom(pipeline.initial.state)
            run.has_state = True
        self.state.set_run(run)
        self.emit(events_pb2.PipelineEvent(pipeline_created=_created(pipeline)))
        self.emit_status(S.PIPELINE_STATUS_RUNNING)
        self.state.set_definition(self.compile(pipeline, run))
        self.arm_deadlines(pipeline.deadline_ms)
        self.start_entry()

    def refuse_reserved_id(self, request: messages_pb2.PipelineRequest) -> bool:
        """Refuse a request at a child's or a stored request's address: it would wipe them."""
        run = self.state.run
        if run is not None and (run.parent_id or run.parked):
            problem = (
                f"pipeline id {self.address_id!r} belongs to a child pipeline of "
                f"{run.root_pipeline_id!r}; submit under an id of your own"
            )
        elif self.state.raw.get("request"):
            problem = f"pipeline id {self.address_id!r} is where a pipeline's request is stored"
        else:
            problem = pipeline_id_problem(self.address_id) or ""
        if not problem:
            return False
        logger.warning("refused a pipeline request at %r: %s", self.address_id, problem)
        self.reply_error(
            request.reply_topic, request.reply_id, errors.INVALID_REQUEST_ERROR, problem
        )
        return True

    def on_define_child(self, definition: messages_pb2.ChildDefinition) -> None:
        run = messages_pb2.Run(
            status=S.PIPELINE_STATUS_PENDING,
            parked=True,
            parent_id=definition.parent_id,
            root_pipeline_id=definition.root_pipeline_id,
            events_topic=definition.events_topic,
            inline=True,
            size=_task_count(definition.pipeline),
        )
        self.state.clear()
        self.state.set_run(run)
        self.state.set_definition(self.compile(definition.pipeline, run))

    def on_start_child(self, start: messages_pb2.ChildStart) -> None:
        run = self.state.run
        if start.has_pipeline:
            run = messages_pb2.Run(
                parent_id=start.parent_id,
                root_pipeline_id=start.root_pipeline_id,
                events_topic=start.events_topic,
                inline=start.pipeline.inline,
                size=_task_count(start.pipeline),
            )
            self.state.clear()
            self.state.set_run(run)
            self.state.set_definition(self.compile(start.pipeline, run))
            self.emit(
                events_pb2.PipelineEvent(pipeline_created=_created(start.pipeline, start.parent_id))
            )
        elif run is None or not run.parked:
            # Cannot happen while messages between two addresses stay in order; answer, never hang.
            failure = _exception(
                self.address_id,
                "",
                errors.INTERNAL_ERROR,
                f"child pipeline {self.address_id!r} has no definition",
            )
            self.send_to_parent(start.parent_id, start.entry_id, start.invocation, failure=failure)
            return
        run.parked = False
        run.status = S.PIPELINE_STATUS_RUNNING
        run.parent_entry_id = start.entry_id
        run.parent_invocation = start.invocation
        run.parent_slot = start.slot
        run.invocation = 1
        run.paused = start.paused
        if start.has_pipeline:
            self.arm_deadlines(start.pipeline.deadline_ms)
        run.input.CopyFrom(start.input)
        if start.has_state:
            run.state.CopyFrom(start.state)
            run.has_state = True
        if start.failing:  # a later segment of a long chain, reached with an error
            run.failing = True
            run.error.CopyFrom(start.error)
        self.state.touch_run()
        self.start_entry()

    # ---------------------------------------------------------------- compilation

    def compile(
        self, pipeline: pipeline_pb2.Pipeline, run: messages_pb2.Run
    ) -> pipeline_pb2.Pipeline:
        """Stage large groups, park multi-entry chains, segment long chains: all as children."""
        out = pipeline_pb2.Pipeline(
            id=pipeline.id, inline=pipeline.inline, deadline_ms=pipeline.deadline_ms
        )
        entries = list(pipeline.entries)
        last = entries.pop() if entries and _is_finally(entries[-1]) else None
        for entry in self.segment(entries, run):
            if entry.WhichOneof("kind") == "group":
                out.entries.add().group.CopyFrom(self.compile_group(entry.group, run))
            else:
                out.entries.append(entry)
        if last is not None:
            out.entries.append(last)
        return out

    def segment(
        self, entries: list[pipeline_pb2.Entry], run: messages_pb2.Run
    ) -> list[pipeline_pb2.Entry]:
        """Split a long chain into inline child segments, so no address holds all of it."""
        threshold = max(2, self.settings.auto_stage_threshold)
        while len(entries) > threshold:
            segments: list[pipeline_pb2.Entry] = []
            for start in range(0, len(entries), threshold):
                part = entries[start : start + threshold]
                child_id = self.new_child_id(run)
                self.send(
                    child_id,
                    messages_pb2.PipelineMessage(
                        define_child=messages_pb2.ChildDefinition(
                            pipeline=pipeline_pb2.Pipeline(id=child_id, entries=part, inline=True),
                            parent_id=self.address_id,
                            root_pipeline_id=run.root_pipeline_id,
                            events_topic=run.events_topic,
                        )
                    ),
                )
                ref = pipeline_pb2.Entry()
                ref.child.child_id = child_id
                ref.child.size = sum(_entry_size(e) for e in part)
                ref.child.has_exceptionally = any(_can_handle_errors(e) for e in part)
                segments.append(ref)
            entries = segments
        return entries

    def compile_group(
        self, group: pipeline_pb2.GroupEntry, run: messages_pb2.Run
    ) -> pipeline_pb2.GroupEntry:
        threshold = max(2, self.settings.auto_stage_threshold)
        chains: Sequence[pipeline_pb2.Pipeline] = group.chains
        if group.num_stages > 1 or len(chains) > threshold:
            return self.compile_group(self.stage(group, threshold), run)
        out = pipeline_pb2.GroupEntry(
            group_id=group.group_id,
            max_parallelism=group.max_parallelism,
            return_exceptions=group.return_exceptions,
            flatten=group.flatten,
        )
        seen: set[str] = set()
        for position, chain in enumerate(chains):
            if len(chain.entries) == 1 and chain.entries[0].WhichOneof("kind") in ("task", "child"):
                chain_id = chain.entries[0].task.task_id or chain.entries[0].child.child_id
                out.chains.append(chain)
                if chain_id in seen:  # the same pipeline value used twice: results must not collide
                    out.chains[-1].entries[0].task.task_id = f"{chain_id}.{position}"
                seen.add(chain_id)
            else:
                child_id = self.new_child_id(run)
                self.send(
                    child_id,
                    messages_pb2.PipelineMessage(
                        define_child=messages_pb2.ChildDefinition(
                            pipeline=pipeline_pb2.Pipeline(
                                id=child_id, entries=chain.entries, inline=True
                            ),
                            parent_id=self.address_id,
                            root_pipeline_id=run.root_pipeline_id,
                            events_topic=run.events_topic,
                        )
                    ),
                )
                ref = out.chains.add(id=child_id, inline=True).entries.add().child
                ref.child_id = child_id
                ref.size = _task_count(chain)
        return out

    def stage(self, group: pipeline_pb2.GroupEntry, threshold: int) -> pipeline_pb2.GroupEntry:
        """Split a group into consecutive stages, each an inline child pipeline of its own group."""
        chains = group.chains
        count = group.num_stages if group.num_stages > 1 else math.ceil(len(chains) / threshold)
        count = max(1, min(count, len(chains)))
        outer_limit = inner_limit = 0
        if group.max_parallelism > 0:
            outer_limit = min(group.max_parallelism, count)
            inner_limit = max(1, group.max_parallelism // outer_limit)
        staged = pipeline_pb2.GroupEntry(
            group_id=group.group_id,
            max_parallelism=outer_limit,
            return_exceptions=group.return_exceptions,
            flatten=True,
        )
        base, extra = divmod(len(chains), count)
        start = 0
        for index in range(count):
            size = base + (1 if index < extra else 0)
            stage = pipeline_pb2.Pipeline(id=f"{group.group_id}.s{index}", inline=True)
            stage.entries.add().group.CopyFrom(
                pipeline_pb2.GroupEntry(
                    group_id=f"{group.group_id}.s{index}",
                    chains=chains[start : start + size],
                    max_parallelism=inner_limit,
                    return_exceptions=group.return_exceptions,
                    flatten=group.flatten,
                )
            )
            staged.chains.append(stage)
            start += size
        return staged

    def new_child_id(self, run: messages_pb2.Run) -> str:
        return f"{run.root_pipeline_id or self.address_id}:{uuid.uuid4().hex[:20]}"

    # ---------------------------------------------------------------- running entries

    @property
    def run(self) -> messages_pb2.Run:
        run = self.state.run
        assert run is not None
        return run

    @property
    def definition(self) -> CompiledDefinition:
        definition = self.state.definition
        assert definition is not None
        return definition

    def start_entry(self) -> None:
        """Start the entry at the cursor, skipping what the current outcome skips."""
        run = self.run
        entries = self.definition.pipeline.entries
        while True:
            if run.cursor >= len(entries):
                self.flush_skipped()  # before the terminal status: event readers stop there
                self.finish()
                return
            entry = entries[run.cursor]
            kind = (
                entry.task.kind
                if entry.WhichOneof("kind") == "task"
                else pipeline_pb2.ENTRY_KIND_TASK
            )
            if kind == pipeline_pb2.ENTRY_KIND_FINALLY:
                if not run.has_outcome:
                    run.outcome.CopyFrom(self.current_outcome())
                    run.has_outcome = True
                run.finalizing = True
                run.failing = False
            elif (
                run.failing
                and kind != pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY
                and not (entry.WhichOneof("kind") == "child" and entry.child.has_exceptionally)
            ):
                self.skipped.extend(_entry_task_ids(entry))
                run.cursor += 1
                continue
            elif not run.failing and kind == pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY:
                run.cursor += 1  # on success the result passes through
                continue
            break
        self.state.touch_run()
        if run.paused and not run.finalizing:
            run.entry_started = False
            return
        run.entry_started = True
        if entry.WhichOneof("kind") == "task":
            self.start_task_entry(entry.task)
        elif entry.WhichOneof("kind") == "child":
            self.start_segment(entry.child)
        else:
            self.start_group(entry.group)

    def start_segment(self, child: pipeline_pb2.ChildEntry) -> None:
        run = self.run
        start = messages_pb2.ChildStart(
            parent_id=self.address_id,
            root_pipeline_id=run.root_pipeline_id,
            entry_id=child.child_id,
            input=run.input,
            events_topic=run.events_topic,
            invocation=run.invocation,
            failing=run.failing,
        )
        if run.failing:
            start.error.CopyFrom(run.error)
        if run.has_state:
            start.state.CopyFrom(run.state)
            start.has_state = True
        run.task_id = child.child_id
        run.attempt = 1
        run.active_children.append(child.child_id)
        self.send(child.child_id, messages_pb2.PipelineMessage(start_child=start))

    def sequence_task_args(
        self, task: pipeline_pb2.TaskEntry
    ) -> tuple[values_pb2.ValueList, values_pb2.ValueMap]:
        """Args of a task entry of the sequence: `exceptionally` gets the error first,
        `finally_do` only its own args, any other task the previous result first."""
        run = self.run
        if task.kind == pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY:
            args = values_pb2.ValueList()
            args.items.add().exception.CopyFrom(run.error)
            args.items.extend(task.args.items)
            return args, task.kwargs
        if task.kind == pipeline_pb2.ENTRY_KIND_FINALLY:
            return task.args, task.kwargs
        return values.entry_args(task, run.input)

    def start_task_entry(self, task: pipeline_pb2.TaskEntry) -> None:
        run = self.run
        args, kwargs = self.sequence_task_args(task)
        run.task_id = task.task_id
        run.attempt = 1
        run.task_beat = 0
        self.send_task(task, args, kwargs, run.state if run.has_state else None, attempt=1)

    def send_task(
        self,
        task: pipeline_pb2.TaskEntry,
        args: values_pb2.ValueList,
        kwargs: values_pb2.ValueMap,
        state: values_pb2.Value | None,
        *,
        attempt: int,
        slot: int = 0,
    ) -> None:
        run = self.run
        namespace = task.namespace or DEFAULT_NAMESPACE
        served = self.settings.served_namespaces
        if served is not None and namespace not in served:
            failure = _exception(
                task.task_id,
                task.task_type,
                errors.TASK_NOT_FOUND_ERROR,
                f"task {task.task_type!r} is bound to namespace {namespace!r}, which no endpoint "
                f"serves (served: {sorted(served)}); add it to the StateFun module",
            )
            result = messages_pb2.TaskResult(
                task_id=task.task_id, error=failure, invocation=run.invocation, slot=slot
            )
            self.send(self.address_id, result)
            return
        request = messages_pb2.TaskRequest(
            task_id=task.task_id,
            task_type=task.task_type,
            args=args,
            kwargs=kwargs,
            reply_id=self.address_id,
            attempt=attempt,
            timeout_s=task.timeout_s,
            pipeline_id=self.address_id,
            root_pipeline_id=run.root_pipeline_id,
            invocation=run.invocation,
            not_fruitful=task.not_fruitful,
            slot=slot,
        )
        if state is not None:
            request.state.CopyFrom(state)
            request.has_state = True
        if task.has_retry_policy:
            request.retry_policy.CopyFrom(task.retry_policy)
            request.has_retry_policy = True
        self.effects.append(
            effects.SendTask(
                namespace,
                task.worker_name or DEFAULT_WORKER_NAME,
                _task_address(task.task_id, attempt),
                request,
            )
        )

    def start_group(self, group: pipeline_pb2.GroupEntry) -> None:
        run = self.run
        run.next_chain = run.running = run.completed = 0
        run.group_id = group.group_id
        run.group_size = len(group.chains)
        run.group_limit = group.max_parallelism
        run.group_flatten = group.flatten
        run.group_return_exceptions = group.return_exceptions
        self.state.set_slots(
            messages_pb2.GroupSlots(slots=[messages_pb2.Slot() for _ in group.chains])
        )
        if not group.chains:
            self.finish_group()
            return
        self.pump_group()

    def pump_group(self) -> None:
        """Start chains while the group's parallelism allows; no-op once every chain started."""
        run = self.run
        limit = run.group_limit
        chains: Sequence[pipeline_pb2.Pipeline] | None = None
        while (
            not run.paused
            and not run.cancelling
            and run.next_chain < run.group_size
            and (limit <= 0 or run.running < limit)
        ):
            if chains is None:
                chains = self.definition.pipeline.entries[run.cursor].group.chains
            self.start_chain(run.next_chain, chains[run.next_chain])
            run.next_chain += 1
            run.running += 1
        self.state.touch_run()

    def start_chain(self, index: int, chain: pipeline_pb2.Pipeline) -> None:
        run = self.run
        head = chain.entries[0]
        if head.WhichOneof("kind") == "task":
            args, kwargs = values.entry_args(head.task, run.input)
            self.send_task(
                head.task,
                args,
                kwargs,
                run.state if run.has_state else None,
                attempt=1,
                slot=index + 1,
            )
            return
        child_id = head.child.child_id
        start = messages_pb2.ChildStart(
            parent_id=self.address_id,
            root_pipeline_id=run.root_pipeline_id,
            entry_id=child_id,
            input=run.input,
            events_topic=run.events_topic,
            invocation=run.invocation,
            slot=index + 1,
        )
        if run.has_state:
            start.state.CopyFrom(run.state)
            start.has_state = True
        run.active_children.append(child_id)
        self.send(child_id, messages_pb2.PipelineMessage(start_child=start))

    # ---------------------------------------------------------------- results

    def on_result(self, result: messages_pb2.TaskResult) -> None:
        run = self.state.run
        if (
            run is None
            or run.parked
            or result.invocation != run.invocation
            or run.status in FINISHED_STATUSES
        ):
            logger.debug("ignoring a stale result for %s at %s", result.task_id, self.address_id)
            return
        if run.cancelling and not run.finalizing:
            return  # results of running tasks are ignored once cancelled
        if result.task_id in run.active_children:
            run.active_children.remove(result.task_id)
        if result.slot > 0:
            # a chain of the running group: no need to look at the definition
            if run.entry_started and result.slot <= run.group_size:
                self.on_chain_result(result.slot - 1, result)
            return
        entries = self.definition.pipeline.entries
        if run.cursor >= len(entries) or not run.entry_started or result.task_id != run.task_id:
            return
        if result.attempt and result.attempt != run.attempt:
            return  # a duplicate or late result of an attempt already decided
        entry = entries[run.cursor]
        if entry.WhichOneof("kind") == "task":
            self.on_task_entry_result(entry.task, result)
        elif entry.WhichOneof("kind") == "child":
            self.on_task_entry_result(_SEGMENT, result)

    def on_task_entry_result(
        self, task: pipeline_pb2.TaskEntry, result: messages_pb2.TaskResult
    ) -> None:
        run = self.run
        outcome = result.WhichOneof("outcome")
        if outcome == "pipeline":
            if result.has_state:
                run.state.CopyFrom(result.state)
                run.has_state = True
            self.start_orchestrated_child(result, run.state if run.has_state else None)
            return
        if outcome == "error":
            if self.schedule_retry(task, result, result.attempt or run.attempt):
                return
            run.failing = True
            run.error.CopyFrom(
                _with_state(_final_error(result.error, result.attempt or run.attempt), run)
            )
        else:
            if result.has_state:
                run.state.CopyFrom(result.state)
                run.has_state = True
            if run.finalizing:
                run.cursor += 1
                self.start_entry()
                return
            run.failing = False
            run.ClearField("error")
            value = values.none_value() if task.not_fruitful else result.result
            run.input.Clear()
            run.input.has_previous = True
            run.input.previous.CopyFrom(value)
        if run.finalizing and outcome == "error":
            run.outcome.Clear()
            run.outcome.error.CopyFrom(run.error)
        run.cursor += 1
        run.entry_started = False
        self.state.touch_run()
        self.start_entry()

    def on_chain_result(self, index: int, result: messages_pb2.TaskResult) -> None:
        run = self.run
        slots = self.state.slots
        assert slots is not None
        slot = slots.slots[index]
        if slot.done or (result.attempt and result.attempt != max(slot.attempt, 1)):
            return  # a duplicate or late result of an attempt already decided
        outcome = result.WhichOneof("outcome")
        if outcome == "pipeline":
            state = result.state if result.has_state else (run.state if run.has_state else None)
            self.start_orchestrated_child(result, state, slot=index + 1)
            return
        if outcome == "error" and result.error.retryable:
            head = self.definition.pipeline.entries[run.cursor].group.chains[index].entries[0]
            if head.WhichOneof("kind") == "task" and self.schedule_retry(
                head.task, result, result.attempt or 1, slot=index + 1
            ):
                return
        slot.done = True
        if outcome == "error":
            slot.failed = True
            error = _final_error(result.error, result.attempt or 1)
            if not error.has_state and run.has_state:
                error.state.CopyFrom(run.state)
                error.has_state = True
            slot.error.CopyFrom(error)
        else:
            slot.result.CopyFrom(result.result)
            if result.has_state:
                slot.state.CopyFrom(result.state)
                slot.has_state = True
        self.state.touch_slots()
        run.running -= 1
        run.completed += 1
        self.progress(run.completed)
        if run.completed == run.group_size:
            self.finish_group()
        else:
            self.pump_group()

    # ---------------------------------------------------------------- leases of long tasks

    def running_task(
        self, task_id: str, attempt: int, invocation: int, slot: int
    ) -> tuple[pipeline_pb2.TaskEntry, messages_pb2.Run | messages_pb2.Slot] | None:
        """The task entry and the record holding its lease beat, if that attempt is still
        the one running here; None for anything stale."""
        run = self.state.run
        if (
            run is None
            or run.parked
            or invocation != run.invocation
            or run.status in FINISHED_STATUSES
            or (run.cancelling and not run.finalizing)
            or not run.entry_started
        ):
            return None
        entries = self.definition.pipeline.entries
        if run.cursor >= len(entries):
            return None
        entry = entries[run.cursor]
        if slot == 0:
            if entry.WhichOneof("kind") != "task" or entry.task.task_id != task_id:
                return None
            return (entry.task, run) if attempt == run.attempt else None
        if entry.WhichOneof("kind") != "group" or not 0 < slot <= len(entry.group.chains):
            return None
        head = entry.group.chains[slot - 1].entries[0]
        slots = self.state.slots
        if head.WhichOneof("kind") != "task" or head.task.task_id != task_id or slots is None:
            return None
        record = slots.slots[slot - 1]
        if record.done or attempt != max(record.attempt, 1):
            return None
        return head.task, record

    def on_task_running(self, running: messages_pb2.TaskRunning) -> None:
        """A worker holds this attempt past its request-reply call: arm a durable deadline."""
        found = self.running_task(
            running.task_id, running.attempt, running.invocation, running.slot
        )
        if found is None:
            return
        _, record = found
        if isinstance(record, messages_pb2.Run):
            if running.beat < record.task_beat:
                return
            record.task_beat = running.beat
            self.state.touch_run()
        else:
            if running.beat < record.beat:
                return
            record.beat = running.beat
            self.state.touch_slots()
        deadline = messages_pb2.TaskDeadline(
            task_id=running.task_id,
            attempt=running.attempt,
            invocation=running.invocation,
            slot=running.slot,
            beat=running.beat,
            lease_ms=running.lease_ms,
        )
        self.send(
            self.address_id,
            messages_pb2.PipelineMessage(task_deadline=deadline),
            delay_ms=max(1, running.lease_ms),
        )

    def on_task_deadline(self, deadline: messages_pb2.TaskDeadline) -> None:
        """No newer beat within the lease: the worker is gone; the attempt fails as lost."""
        found = self.running_task(
            deadline.task_id, deadline.attempt, deadline.invocation, deadline.slot
        )
        if found is None:
            return
        task, record = found
        beat = record.task_beat if isinstance(record, messages_pb2.Run) else record.beat
        if beat != deadline.beat:
            return
        failure = _exception(
            deadline.task_id,
            task.task_type,
            errors.WORKER_LOST_ERROR,
            f"the worker running task {task.task_type!r} (attempt {deadline.attempt}) sent no "
            f"word for {deadline.lease_ms / 1000:g} s: its process died or lost its connection",
        )
        failure.attempts = deadline.attempt
        failure.retryable = task.has_retry_policy and bool(
            set(task.retry_policy.retry_for) & _WORKER_LOST_NAMES
        )
        logger.warning(
            "task %s (attempt %d) at %s lost its worker",
            deadline.task_id,
            deadline.attempt,
            self.address_id,
        )
        self.on_result(
            messages_pb2.TaskResult(
                task_id=deadline.task_id,
                error=failure,
                attempt=deadline.attempt,
                invocation=deadline.invocation,
                slot=deadline.slot,
            )
        )

    def start_orchestrated_child(
        self, result: messages_pb2.TaskResult, state: values_pb2.Value | None, *, slot: int = 0
    ) -> None:
        """A task returned a pipeline: run it as a child whose result becomes the task's result."""
        run = self.run
        pipeline = result.pipeline
        child_id = self.new_child_id(run)
        start = messages_pb2.ChildStart(
            parent_id=self.address_id,
            root_pipeline_id=run.root_pipeline_id,
            entry_id=result.task_id,
            pipeline=pipeline,
            has_pipeline=True,
            events_topic=run.events_topic,
            invocation=run.invocation,
            paused=run.paused,
            slot=slot,
        )
        start.input.initial.CopyFrom(pipeline.initial)
        if pipeline.inline:
            if state is not None:
                start.state.CopyFrom(state)
                start.has_state = True
        elif pipeline.initial.has_state:
            start.state.CopyFrom(pipeline.initial.state)
            start.has_state = True
        run.active_children.append(result.task_id)
        self.state.touch_run()
        self.send(child_id, messages_pb2.PipelineMessage(start_child=start))

    def schedule_retry(
        self,
        task: pipeline_pb2.TaskEntry,
        result: messages_pb2.TaskResult,
        attempt: int,
        *,
        slot: int = 0,
    ) -> bool:
        """Schedule a durable retry if the task's policy allows one more attempt."""
        if not (
            task.has_retry_policy
            and result.error.retryable
            and attempt <= task.retry_policy.max_retries
        ):
            return False
        run = self.run
        # from now on only the next attempt's result counts
        if slot:
            self.state.slots.slots[slot - 1].attempt = attempt + 1  # type: ignore[union-attr]
            self.state.touch_slots()
        else:
            run.attempt = attempt + 1
            run.task_beat = 0
            self.state.touch_run()
        delay = retry_delay_ms(task.retry_policy, attempt)
        due = messages_pb2.RetryDue(
            task_id=task.task_id, attempt=attempt + 1, invocation=run.invocation, slot=slot
        )
        self.send(self.address_id, messages_pb2.PipelineMessage(retry_due=due), delay_ms=delay)
        logger.warning(
            "task %s failed (attempt %d); retrying in %d ms", task.task_id, attempt, delay
        )
        return True

    def on_retry_due(self, due: messages_pb2.RetryDue) -> None:
        run = self.state.run
        if (
            run is None
            or due.invocation != run.invocation
            or run.status in FINISHED_STATUSES
            or run.cancelling
        ):
            return
        if run.paused:
            run.pending_retries.append(due)
            self.state.touch_run()
            return
        self.resend(due)

    def resend(self, due: messages_pb2.RetryDue) -> None:
        run = self.run
        entries = self.definition.pipeline.entries
        if run.cursor >= len(entries):
            return
        entry = entries[run.cursor]
        if entry.WhichOneof("kind") == "task":
            task = entry.task
            if task.task_id != due.task_id:
                return
            args, kwargs = self.sequence_task_args(task)
            run.attempt = due.attempt
            self.state.touch_run()
        else:
            if due.slot < 1 or due.slot > len(entry.group.chains):
                return
            task = entry.group.chains[due.slot - 1].entries[0].task
            if task.task_id != due.task_id:
                return
            args, kwargs = values.entry_args(task, run.input)
        self.send_task(
            task,
            args,
            kwargs,
            run.state if run.has_state else None,
            attempt=due.attempt,
            slot=due.slot,
        )

    def complete_entry(self, value: values_pb2.Value) -> None:
        run = self.run
        run.input.Clear()
        run.input.has_previous = True
        run.input.previous.CopyFrom(value)
        run.cursor += 1
        run.entry_started = False
        self.state.touch_run()
        self.start_entry()

    def finish_group(self) -> None:
        run = self.run
        slots = self.state.slots
        assert slots is not None
        items: list[values_pb2.Value] = []
        failures: list[values_pb2.TaskException] = []
        states: list[values_pb2.Value] = []
        for slot in slots.slots:
            if slot.failed:
                if run.group_return_exceptions:
                    items.append(values_pb2.Value(exception=slot.error))
                else:
                    failures.append(slot.error)
            elif run.group_flatten and slot.result.WhichOneof("kind") == "list_value":
                items.extend(slot.result.list_value.items)
            else:
                items.append(slot.result)
            if slot.has_state:
                states.append(slot.state)
            elif run.has_state:
                states.append(run.state)
        if states:
            run.state.CopyFrom(values.merge_states(states))
            run.has_state = True
        group_id = run.group_id
        run.group_size = 0
        self.state.set_slots(None)
        if failures:
            run.failing = True
            run.error.CopyFrom(_with_state(_aggregate(group_id, failures), run))
            run.cursor += 1
            run.entry_started = False
            self.state.touch_run()
            self.start_entry()
            return
        self.complete_entry(values.list_value(items))

    def progress(self, completed: int) -> None:
        run = self.run
        total = run.group_size
        every = max(1, total // max(1, self.settings.progress_events))
        if completed == total or completed % every == 0:
            self.emit(
                events_pb2.PipelineEvent(
                    group_progress=events_pb2.GroupProgress(
                        group_id=run.group_id, completed=completed, total=total
                    )
                )
            )

    # ---------------------------------------------------------------- finishing

    def current_outcome(self) -> messages_pb2.Reply:
        run = self.run
        outcome = messages_pb2.Reply()
        if run.failing:
            outcome.error.CopyFrom(run.error)
        elif run.input.has_previous:
            outcome.result.CopyFrom(run.input.previous)
        else:
            outcome.result.none = True
        return outcome

    def finish(self) -> None:
        run = self.run
        outcome = run.outcome if run.has_outcome else self.current_outcome()
        if run.has_state:
            outcome.state.CopyFrom(run.state)
            outcome.has_state = True
        if run.parent_id:
            self.finish_child(run, outcome)
            return
        outcome.reply_id = run.reply_id
        outcome.pipeline_id = self.address_id
        if (
            outcome.ByteSize() > self.settings.max_reply_bytes
            and outcome.WhichOneof("outcome") == "result"
        ):
            size = outcome.ByteSize()
            outcome.ClearField("result")
            outcome.error.CopyFrom(
                _exception(
                    self.address_id,
                    "",
                    errors.SERIALIZATION_ERROR,
                    f"the pipeline's result is {size} bytes, above the "
                    f"{self.settings.max_reply_bytes}-byte "
                    "reply limit; return a reference (e.g. a storage key) instead of the data",
                )
            )
            outcome.ClearField("state")
            outcome.has_state = False
        if outcome.WhichOneof("outcome") == "error":
            cancelled = outcome.error.exception_type == errors.CANCELLED_ERROR
            status = S.PIPELINE_STATUS_CANCELLED if cancelled else S.PIPELINE_STATUS_FAILED
        else:
            status = S.PIPELINE_STATUS_COMPLETED
        invocation = run.invocation
        reply_topic = run.reply_topic
        events_topic = run.events_topic
        self.state.clear()
        finished = messages_pb2.Run(
            status=status,
            invocation=invocation,
            root_pipeline_id=self.address_id,
            reply_topic=reply_topic,
            events_topic=events_topic,
        )
        self.state.set_run(finished)
        self.state.set_raw("result", outcome.SerializeToString())
        if reply_topic:
            self.effects.append(effects.SendReply(reply_topic, self.address_id, outcome))
        self.emit_status(status)
        expire = messages_pb2.PipelineMessage(expire=messages_pb2.Expire(invocation=invocation))
        self.send(
            self.address_id, expire, delay_ms=int(self.settings.retention.total_seconds() * 1000)
        )

    def finish_child(self, run: messages_pb2.Run, outcome: messages_pb2.Reply) -> None:
        failure = outcome.error if outcome.WhichOneof("outcome") == "error" else None
        state = outcome.state if (outcome.has_state and run.inline) else None
        self.send_to_parent(
            run.parent_id,
            run.parent_entry_id,
            run.parent_invocation,
            result=outcome.result,
            failure=failure,
            state=state,
            slot=run.parent_slot,
        )
        self.state.clear()

    def send_to_parent(
        self,
        parent_id: str,
        entry_id: str,
        invocation: int,
        *,
        result: values_pb2.Value | None = None,
        failure: values_pb2.TaskException | None = None,
        state: values_pb2.Value | None = None,
        slot: int = 0,
    ) -> None:
        message = messages_pb2.TaskResult(task_id=entry_id, invocation=invocation, slot=slot)
        if failure is not None:
            message.error.CopyFrom(failure)
        else:
            message.result.CopyFrom(result if result is not None else values.none_value())
        if state is not None:
            message.state.CopyFrom(state)
            message.has_state = True
        self.send(parent_id, messages_pb2.PipelineMessage(child_result=message))

    def on_expire(self, expire: messages_pb2.Expire) -> None:
        run = self.state.run
        if run is None and self.address_id.endswith(REQUEST_STORE_SUFFIX):
            self.state.clear()
            return
        if (
            run is not None
            and run.invocation == expire.invocation
            and run.status in FINISHED_STATUSES
        ):
            self.state.clear()
            self.send(
                self.address_id + REQUEST_STORE_SUFFIX, messages_pb2.PipelineMessage(expire=expire)
            )

    def fail_internal(self, stacktrace: str) -> None:
        """An engine bug: fail this pipeline with an internal error rather than leave it hanging."""
        self.effects.clear()
        self.skipped.clear()
        run = self.state.run
        if run is None or run.status in FINISHED_STATUSES:
            return
        try:
            run.failing = True
            run.error.CopyFrom(
                _exception(
                    self.address_id,
                    "",
                    errors.INTERNAL_ERROR,
                    "the pipeline engine failed",
                    stacktrace,
                )
            )
            run.has_outcome = False
            run.cursor = 1 << 30
            self.state.touch_run()
            self.finish()
        except Exception:
            logger.exception("could not fail pipeline %s after an engine error", self.address_id)

    # ---------------------------------------------------------------- actions

    def on_action(self, action: messages_pb2.ActionRequest) -> None:
        run = self.state.run
        kind = action.action
        if kind == S.ACTION_GET_REQUEST:
            self.send(
                self.address_id + REQUEST_STORE_SUFFIX,
                messages_pb2.PipelineMessage(get_request=action),
            )
            return
        if kind == S.ACTION_GET_STATUS:
            status = run.status if run is not None and not run.parked else S.PIPELINE_STATUS_PENDING
            self.reply_action(action, status=status)
            return
        if kind == S.ACTION_GET_RESULT:
            stored = self.state.get_message("result", messages_pb2.Reply)
            if stored is None:
                what = "is unknown" if run is None else "has not finished"
                self.reply_error(
                    action.reply_topic,
                    action.reply_id,
                    errors.NOT_FOUND_ERROR,
                    f"pipeline {self.address_id!r} {what}",
                )
                return
            stored.reply_id = action.reply_id
            self.effects.append(effects.SendReply(action.reply_topic, self.address_id, stored))
            return
        if run is None or run.parked or run.parent_id:
            self.reply_error(
                action.reply_topic,
                action.reply_id,
                errors.NOT_FOUND_ERROR,
                f"pipeline {self.address_id!r} is unknown",
            )
            return
        if run.status in FINISHED_STATUSES:
            self.reply_error(
                action.reply_topic,
                action.reply_id,
                errors.ACTION_ERROR,
                f"pipeline {self.address_id!r} has finished ({S.PipelineStatus.Name(run.status)}); "
                f"{S.Action.Name(kind).removeprefix('ACTION_').lower()} changes nothing",
            )
            return
        self.on_control(kind)
        self.reply_action(
            action,
            status=self.run.status if self.state.run is not None else S.PIPELINE_STATUS_PENDING,
        )

    def on_control(self, kind: int) -> None:
        run = self.state.run
        if run is None or run.parked or run.status in FINISHED_STATUSES:
            return
        for child_id in run.active_children:
            self.send(
                child_id,
                messages_pb2.PipelineMessage(
                    control=messages_pb2.ChildControl(action=_action(kind))
                ),
            )
        if kind == S.ACTION_PAUSE:
            if not run.paused and not run.cancelling:
                run.paused = True
                run.status = S.PIPELINE_STATUS_PAUSED
                self.state.touch_run()
                self.emit_status(run.status)
        elif kind == S.ACTION_UNPAUSE:
            if run.paused:
                run.paused = False
                if not run.cancelling:
                    run.status = S.PIPELINE_STATUS_RUNNING
                self.state.touch_run()
                self.emit_status(run.status)
                self.resume()
        elif kind == S.ACTION_CANCEL and not run.cancelling:
            self.cancel()

    def resume(self) -> None:
        run = self.run
        pending = list(run.pending_retries)
        del run.pending_retries[:]
        entries = self.definition.pipeline.entries
        if run.cursor < len(entries):
            entry = entries[run.cursor]
            if not run.entry_started:
                self.start_entry()
            elif entry.WhichOneof("kind") == "group":
                self.pump_group()
        for due in pending:
            self.resend(due)

    def cancel(self) -> None:
        run = self.run
        run.status = S.PIPELINE_STATUS_CANCELLING
        self.emit_status(run.status)
        cancelled = _exception(
            self.address_id,
            "",
            errors.CANCELLED_ERROR,
            f"pipeline {self.address_id!r} was cancelled",
        )
        self.end_with(cancelled)

    def end_with(self, error: values_pb2.TaskException) -> None:
        """Stop starting work, ignore running tasks' results, run `finally_do`, reply `error`."""
        run = self.run
        run.cancelling = True
        run.paused = False
        run.group_size = 0  # late chain results must not reach the group's dropped slots
        del run.pending_retries[:]
        del run.active_children[:]
        self.state.touch_run()
        entries = self.definition.pipeline.entries
        last = entries[-1] if entries else None
        has_finally = (
            last is not None
            and last.WhichOneof("kind") == "task"
            and last.task.kind == pipeline_pb2.ENTRY_KIND_FINALLY
        )
        run.outcome.Clear()
        run.outcome.error.CopyFrom(_with_state(error, run))
        run.has_outcome = True
        if has_finally and not run.finalizing:
            run.cursor = len(entries) - 1
            run.entry_started = False
            self.state.set_slots(None)
            self.start_entry()
        elif not run.finalizing:
            run.cursor = len(entries)
            self.finish()

    # ---------------------------------------------------------------- deadlines and stalls

    def stall_ms(self) -> int:
        timeout = self.settings.stall_timeout
        return int(timeout.total_seconds() * 1000) if timeout else 0

    def arm_deadlines(self, deadline_ms: int) -> None:
        """At the start: the pipeline's own deadline, and (at a root) the one stall check."""
        run = self.run
        if deadline_ms > 0:
            due = messages_pb2.PipelineDeadlineDue(invocation=run.invocation)
            self.send(self.address_id, messages_pb2.PipelineMessage(deadline_due=due), deadline_ms)
        stall = self.stall_ms()
        if stall > 0 and not run.parent_id:
            run.last_progress_ms = self.now_ms()
            self.arm_progress_check(stall)

    def arm_progress_check(self, delay_ms: int) -> None:
        check = messages_pb2.PipelineProgressCheck(invocation=self.run.invocation)
        self.send(
            self.address_id, messages_pb2.PipelineMessage(progress_check=check), max(1, delay_ms)
        )

    def note_progress(self) -> None:
        """A result arrived: a root remembers when; a child tells its root, at most every half
        stall timeout, so that one pending check per root suffices (O(1) per result)."""
        run = self.state.run
        stall = self.stall_ms()
        if run is None or run.parked or run.status in FINISHED_STATUSES or stall <= 0:
            return
        now = self.now_ms()
        if not run.parent_id:
            run.last_progress_ms = now
            self.state.touch_run()
        elif now - run.last_beat_ms >= stall // 2 and run.root_pipeline_id:
            run.last_beat_ms = now
            self.state.touch_run()
            beat = messages_pb2.PipelineMessage(progress_beat=messages_pb2.PipelineProgressBeat())
            self.send(run.root_pipeline_id, beat)

    def on_progress_check(self, check: messages_pb2.PipelineProgressCheck) -> None:
        run = self.state.run
        stall = self.stall_ms()
        if (
            run is None
            or run.invocation != check.invocation
            or run.status in FINISHED_STATUSES
            or run.parent_id
            or stall <= 0
        ):
            return
        now = self.now_ms()
        if run.paused:  # held by the user, not stalled: the wait starts again at unpause
            run.last_progress_ms = now
            self.state.touch_run()
        idle = now - run.last_progress_ms
        if idle < stall:
            self.arm_progress_check(stall - idle)
            return
        self.end_early(
            f"pipeline {self.address_id!r} made no progress (no task result anywhere in it) for "
            f"{idle / 1000:g} s, over the stall timeout of {stall / 1000:g} s "
            "(EngineSettings.stall_timeout): it was ended as orphaned",
            errors.PIPELINE_DEADLINE_ERROR,
        )

    def on_deadline_due(self, due: messages_pb2.PipelineDeadlineDue) -> None:
        run = self.state.run
        if run is None or run.invocation != due.invocation:
            return
        definition = self.state.definition
        deadline_ms = definition.pipeline.deadline_ms if definition is not None else 0
        self.end_early(
            f"pipeline {self.address_id!r} did not finish within its deadline of "
            f"{deadline_ms / 1000:g} s",
            errors.PIPELINE_DEADLINE_ERROR,
        )

    def on_unreadable(self, message: UnreadableMessage) -> None:
        start = message.start
        if start is not None:  # a child that cannot start: its parent's entry fails instead
            failure = _exception(
                start.entry_id,
                "",
                errors.SERIALIZATION_ERROR,
                f"child pipeline {self.address_id!r} cannot be started: its start message cannot "
                f"be read ({message.detail})",
            )
            self.send_to_parent(
                start.parent_id, start.entry_id, start.invocation, failure=failure, slot=start.slot
            )
            return
        self.end_early(
            f"pipeline {self.address_id!r} received a message it cannot read ({message.detail}); "
            "it was failed rather than left waiting for it",
            errors.SERIALIZATION_ERROR,
        )

    def end_early(self, message: str, exception_type: str) -> None:
        """Fail a running pipeline now: children cancelled, `finally_do` run, as on failure."""
        run = self.state.run
        if run is None or run.parked or run.status in FINISHED_STATUSES:
            return
        logger.warning("ending pipeline %s: %s", self.address_id, message)
        error = _with_state(_exception(self.address_id, "", exception_type, message), run)
        if run.finalizing:  # finally_do already runs: do not wait for it
            run.outcome.Clear()
            run.outcome.error.CopyFrom(error)
            run.has_outcome = True
            self.finish()
            return
        for child_id in run.active_children:
            cancel = messages_pb2.ChildControl(action=S.ACTION_CANCEL)
            self.send(child_id, messages_pb2.PipelineMessage(control=cancel))
        if run.status == S.PIPELINE_STATUS_PAUSED:
            run.status = S.PIPELINE_STATUS_RUNNING
            self.emit_status(run.status)
        self.end_with(error)

    def on_get_request(self, action: messages_pb2.ActionRequest) -> None:
        data = self.state.raw.get("request")
        if not data:
            self.reply_error(
                action.reply_topic,
                action.reply_id,
                errors.NOT_FOUND_ERROR,
                f"pipeline {action.pipeline_id!r} is unknown",
            )
            return
        reply = messages_pb2.Reply(reply_id=action.reply_id, pipeline_id=action.pipeline_id)
        reply.request.ParseFromString(data)
        self.effects.append(effects.SendReply(action.reply_topic, action.pipeline_id, reply))

    # ---------------------------------------------------------------- output helpers

    def reply_action(self, action: messages_pb2.ActionRequest, *, status: int) -> None:
        reply = messages_pb2.Reply(
            reply_id=action.reply_id, pipeline_id=self.address_id, status=_status(status)
        )
        self.effects.append(effects.SendReply(action.reply_topic, self.address_id, reply))

    def reply_error(self, topic: str, reply_id: str, exception_type: str, message: str) -> None:
        if not topic:
            logger.warning("no reply topic for %s: %s", self.address_id, message)
            return
        reply = messages_pb2.Reply(reply_id=reply_id, pipeline_id=self.address_id)
        reply.error.CopyFrom(_exception(self.address_id, "", exception_type, message))
        self.effects.append(effects.SendReply(topic, self.address_id, reply))

    def send(
        self,
        pipeline_id: str,
        message: messages_pb2.PipelineMessage | messages_pb2.TaskResult,
        delay_ms: int = 0,
    ) -> None:
        self.effects.append(effects.SendPipelineMessage(pipeline_id, message, delay_ms))

    def emit(self, event: events_pb2.PipelineEvent) -> None:
        run = self.state.run
        if run is None or not run.events_topic:
            return
        event.pipeline_id = self.address_id
        event.root_pipeline_id = run.root_pipeline_id or self.address_id
        event.timestamp_ms = self.now_ms()
        self.effects.append(effects.EmitEvent(run.events_topic, event.root_pipeline_id, event))

    def emit_status(self, status: int) -> None:
        self.emit(
            events_pb2.PipelineEvent(
                status_changed=events_pb2.PipelineStatusChanged(status=_status(status))
            )
        )

    def flush_skipped(self) -> None:
        if self.skipped:
            self.emit(
                events_pb2.PipelineEvent(
                    tasks_skipped=events_pb2.PipelineTasksSkipped(task_ids=self.skipped)
                )
            )
            self.skipped = []


# -------------------------------------------------------------------- helpers


_SEGMENT = pipeline_pb2.TaskEntry()  # a chain segment's result is handled as a plain task's


def _is_finally(entry: pipeline_pb2.Entry) -> bool:
    return entry.WhichOneof("kind") == "task" and entry.task.kind == pipeline_pb2.ENTRY_KIND_FINALLY


def _can_handle_errors(entry: pipeline_pb2.Entry) -> bool:
    kind = entry.WhichOneof("kind")
    if kind == "task":
        return entry.task.kind == pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY
    return kind == "child" and entry.child.has_exceptionally


def _entry_size(entry: pipeline_pb2.Entry) -> int:
    kind = entry.WhichOneof("kind")
    if kind == "task":
        return 1
    if kind == "child":
        return entry.child.size
    return sum(_task_count(chain) for chain in entry.group.chains)


def _status(value: int) -> messages_pb2.PipelineStatus.ValueType:
    return cast("messages_pb2.PipelineStatus.ValueType", value)


def _action(value: int) -> messages_pb2.Action.ValueType:
    return cast("messages_pb2.Action.ValueType", value)


def _task_address(task_id: str, attempt: int) -> str:
    # One address per task attempt: attempts never queue behind each other's batch.
    return task_id if attempt <= 1 else f"{task_id}#{attempt}"


def _exception(
    task_id: str, task_type: str, exception_type: str, message: str, stacktrace: str = ""
) -> values_pb2.TaskException:
    return values_pb2.TaskException(
        id=task_id,
        type=task_type,
        exception_type=exception_type,
        exception_message=message,
        stacktrace=stacktrace,
    )


def _with_state(error: values_pb2.TaskException, run: messages_pb2.Run) -> values_pb2.TaskException:
    if not error.has_state and run.has_state:
        error.state.CopyFrom(run.state)
        error.has_state = True
    return error


def _final_error(error: values_pb2.TaskException, attempts: int) -> values_pb2.TaskException:
    out = values_pb2.TaskException()
    out.CopyFrom(error)
    if attempts > 1 and "attempts)" not in out.exception_message:
        out.exception_message = f"{out.exception_message} (failed after {attempts} attempts)"
    out.attempts = attempts
    out.retryable = False
    return out


def _aggregate(
    group_id: str, failures: Sequence[values_pb2.TaskException]
) -> values_pb2.TaskException:
    lines: list[str] = []
    for failure in failures:
        if failure.exception_type == errors.AGGREGATED_ERROR:
            lines.extend(failure.exception_message.splitlines()[1:])
        else:
            lines.append(f"  {failure.id}: {failure.exception_type}: {failure.exception_message}")
    message = f"{len(lines)} chain(s) of group {group_id} failed:\n" + "\n".join(lines)
    stacktrace = "\n".join(f.stacktrace for f in failures if f.stacktrace)
    return _exception(group_id, "", errors.AGGREGATED_ERROR, message, stacktrace)


def _entry_task_ids(entry: pipeline_pb2.Entry) -> list[str]:
    kind = entry.WhichOneof("kind")
    if kind == "task":
        return [entry.task.task_id]
    if kind == "child":
        return [entry.child.child_id]
    return [entry.group.group_id]


def _task_count(pipeline: pipeline_pb2.Pipeline) -> int:
    return sum(_entry_size(entry) for entry in pipeline.entries)


MAX_STRUCTURE_ENTRIES = 1000  # in a PipelineCreated event, so that it always fits a Kafka record


def _created(pipeline: pipeline_pb2.Pipeline, parent_id: str = "") -> events_pb2.PipelineCreated:
    """The PipelineCreated event: the shape, cut after MAX_STRUCTURE_ENTRIES entries."""
    budget = [MAX_STRUCTURE_ENTRIES]
    return events_pb2.PipelineCreated(
        pipeline=_structure(pipeline, budget),
        parent_id=parent_id,
        task_count=_task_count(pipeline),
        truncated=budget[0] < 0,
    )


def _structure(pipeline: pipeline_pb2.Pipeline, budget: list[int]) -> pipeline_pb2.Pipeline:
    """The pipeline's shape for events: arguments and state left out; `budget` counts entries."""
    out = pipeline_pb2.Pipeline(id=pipeline.id, inline=pipeline.inline)
    for entry in pipeline.entries:
        budget[0] -= 1
        if budget[0] < 0:
            break
        kind = entry.WhichOneof("kind")
        if kind == "task":
            task = out.entries.add().task
            task.CopyFrom(entry.task)
            task.ClearField("args")
            task.ClearField("kwargs")
        elif kind == "child":
            out.entries.append(entry)
        else:
            group = out.entries.add().group
            group.group_id = entry.group.group_id
            group.max_parallelism = entry.group.max_parallelism
            group.num_stages = entry.group.num_stages
            group.return_exceptions = entry.group.return_exceptions
            for chain in entry.group.chains:
                if budget[0] < 0:
                    break
                group.chains.append(_structure(chain, budget))
    return out
