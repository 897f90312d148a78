"""What one step works with: the address, its state, the settings, a clock, an id source, and
the effects it collects. The clock and the id source are injected, so a step is deterministic."""

from __future__ import annotations

import functools
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from flink_tasks._proto import events_pb2, messages_pb2
from flink_tasks.config import DEFAULT_TASK_BUCKETS
from flink_tasks.engine import effects
from flink_tasks.engine.common import as_status, task_exception
from flink_tasks.engine.state import AddressState, CompiledDefinition

if TYPE_CHECKING:
    from flink_tasks.engine.inline import Pending

logger = logging.getLogger(__name__)

Clock = Callable[[], int]
"""Milliseconds since the epoch."""
IdSource = Callable[[], str]
"""A fresh id for a child pipeline (unique within its root pipeline)."""


def system_clock() -> int:
    return int(time.time() * 1000)


def random_ids() -> str:
    return uuid.uuid4().hex[:20]


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
    inline_request_bytes: int = 2048
    """A root's request up to this size is kept in the root's own `request` cell (shipped with
    every call to the root); a larger one at its `<id>~request` address (one more call)."""
    progress_events: int = 20
    """Group progress events per group (at most)."""
    stall_timeout: timedelta | None = timedelta(hours=24)
    """A root pipeline that gets no task result (anywhere in its tree) for this long is ended
    with `flink_tasks.PipelineDeadlineError`, so an orphaned pipeline cannot run forever. Raise
    it if single tasks run longer. None (or zero): never."""
    task_buckets: int = DEFAULT_TASK_BUCKETS
    """N > 0: the tasks a pipeline address's groups start go to N addresses of the task function
    (by slot), packed one message per address, so StateFun batches them into few requests and the
    worker runs a batch's tasks concurrently; a slow task holds its bucket's call for at most the
    worker's batch wait, then runs on a lease (docs/decisions.md, "Task addressing revisited").
    0: one StateFun address per task attempt (each task its own request). `flink-tasks serve
    --task-buckets`, ``FLINK_TASKS_TASK_BUCKETS``."""
    inline_chain_steps: int = 0
    """Opt-in: a task request also carries up to this many following steps of the same chain
    that the same worker serves, run in the same call (`flink_tasks.engine.inline`). 0: off.
    ``FLINK_TASKS_INLINE_CHAIN_STEPS``."""

    def __post_init__(self) -> None:
        if self.task_buckets < 0:
            raise ValueError(f"task_buckets must be >= 0, got {self.task_buckets}")
        if self.inline_chain_steps < 0:
            raise ValueError(f"inline_chain_steps must be >= 0, got {self.inline_chain_steps}")

    @functools.cached_property
    def stall_ms(self) -> int:
        """`stall_timeout` in ms, 0 for never (worked out once: every result reads it)."""
        timeout = self.stall_timeout
        return int(timeout.total_seconds() * 1000) if timeout else 0


class Context:
    """One step at one address. Concern modules read and change `state` and append `effects`.

    A plain class with slots, not a dataclass: one is made for every message."""

    __slots__ = ("address_id", "clock", "effects", "ids", "inline", "settings", "skipped", "state")

    def __init__(
        self,
        address_id: str,
        state: AddressState,
        settings: EngineSettings,
        clock: Clock,
        ids: IdSource,
    ) -> None:
        self.address_id = address_id
        self.state = state
        self.settings = settings
        self.clock = clock
        self.ids = ids
        self.effects: list[effects.Effect] = []
        self.skipped: list[str] = []
        self.inline: Pending | None = None  # inlined results being applied (engine/inline.py)

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

    def now_ms(self) -> int:
        return self.clock()

    def new_child_id(self, run: messages_pb2.Run) -> str:
        return f"{run.root_pipeline_id or self.address_id}:{self.ids()}"

    def stall_ms(self) -> int:
        return self.settings.stall_ms

    # ---------------------------------------------------------------- output

    def send(
        self,
        pipeline_id: str,
        message: messages_pb2.PipelineMessage | messages_pb2.TaskResult,
        delay_ms: int = 0,
    ) -> None:
        self.effects.append(effects.SendPipelineMessage(pipeline_id, message, delay_ms))

    def reply(self, topic: str, key: str, reply: messages_pb2.Reply) -> None:
        self.effects.append(effects.SendReply(topic, key, reply))

    def reply_action(self, action: messages_pb2.ActionRequest, *, status: int) -> None:
        reply = messages_pb2.Reply(
            reply_id=action.reply_id, pipeline_id=self.address_id, status=as_status(status)
        )
        self.reply(action.reply_topic, self.address_id, reply)

    def reply_error(self, topic: str, reply_id: str, exception_type: str, message: str) -> None:
        if not topic:
            logger.warning("no reply topic for %s: %s", self.address_id, message)
            return
        reply = messages_pb2.Reply(reply_id=reply_id, pipeline_id=self.address_id)
        reply.error.CopyFrom(task_exception(self.address_id, "", exception_type, message))
        self.reply(topic, self.address_id, reply)

    def emit(self, event: events_pb2.PipelineEvent) -> None:
        run = self.state.run
        if run is None or not run.events_topic:
            return
        event.pipeline_id = self.address_id
        event.root_pipeline_id = run.root_pipeline_id or self.address_id
        event.timestamp_ms = self.clock()
        self.effects.append(effects.EmitEvent(run.events_topic, event.root_pipeline_id, event))

    def emit_status(self, status: int) -> None:
        self.emit(
            events_pb2.PipelineEvent(
                status_changed=events_pb2.PipelineStatusChanged(status=as_status(status))
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
