"""The values a pipeline is made of: task calls, groups, options, initial values, and ids."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from flink_tasks import wire
from flink_tasks._proto import pipeline_pb2
from flink_tasks.types import RetryPolicy

if TYPE_CHECKING:
    from flink_tasks.pipeline.builder import PipelineBuilder

_NO_STATE: Any = object()
# Task entries leave these out on the wire; the engine reads empty as the default.
DEFAULT_NAMESPACE = wire.DEFAULT_TASK_NAMESPACE
DEFAULT_WORKER_NAME = wire.DEFAULT_WORKER_NAME
RESERVED_ID_CHARACTERS = ":~"
"""Not allowed in a pipeline id: child pipelines live at `<root id>:<random>` and a pipeline's
request at `<id>~request`, so an id with them could address another pipeline's state."""
MAX_GROUP_NESTING = 10
"""How deeply `in_parallel` groups may nest in one pipeline: with values nested up to
`serialization.MAX_VALUE_DEPTH`, every message stays within protobuf's parse limit."""


def new_id() -> str:
    """A fresh, unique id for a pipeline or task."""
    return uuid.uuid4().hex


def pipeline_id_problem(pipeline_id: object) -> str | None:
    """Why `pipeline_id` cannot be submitted as a pipeline's id, or None if it can."""
    if not isinstance(pipeline_id, str) or not pipeline_id:
        return f"a pipeline id must be a non-empty string, got {pipeline_id!r}"
    reserved = sorted(set(pipeline_id) & set(RESERVED_ID_CHARACTERS))
    if reserved:
        return (
            f"pipeline id {pipeline_id!r} contains {' and '.join(map(repr, reserved))}, which "
            "flink-tasks reserves for the addresses of child pipelines and stored requests; "
            "choose an id without them"
        )
    return None


def new_task_id() -> str:
    """A task id: 80 random bits, short because a fan-out carries one per task."""
    return uuid.uuid4().hex[:20]


@dataclass(frozen=True)
class TaskOptions:
    """Options of one task entry: bind options, overridable per entry with `.set(...)`."""

    namespace: str
    worker_name: str
    retry_policy: RetryPolicy | None = None
    is_fruitful: bool = True
    display_name: str = ""
    timeout: timedelta | None = None
    allow_pickle: bool = False
    max_memory: int | None = None  # bytes; enforced by the worker's process pool
    countdown: timedelta | None = None  # per entry, with .set(...): see pipeline/timing.py
    eta: datetime | None = None
    expires: timedelta | datetime | None = None


# read by the worker from its own registry, never sent: a pipeline entry cannot change them
_WORKER_SIDE_OPTIONS = frozenset({"allow_pickle", "max_memory"})


@dataclass(frozen=True)
class TaskCall:
    """One task entry of a pipeline."""

    task_id: str
    task_type: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    options: TaskOptions
    kind: int = pipeline_pb2.ENTRY_KIND_TASK
    pause_after: bool = False
    """`.wait()`: the pipeline pauses when this entry completes."""

    @property
    def has_args(self) -> bool:
        return bool(self.args) or bool(self.kwargs)


@dataclass(frozen=True)
class Group:
    """A fan-out of chains whose results are gathered into one list (fan-in)."""

    group_id: str
    chains: tuple[PipelineBuilder, ...]
    max_parallelism: int
    num_stages: int
    return_exceptions: bool
    nesting: int = 1
    """1 + the deepest group nested in its chains."""
    ordered: bool = True
    """False: results in completion order (`in_parallel(..., ordered=False)`)."""
    pause_after: bool = False
    """`.wait()`: the pipeline pauses when this group completes."""


Entry = TaskCall | Group


@dataclass(frozen=True)
class PipelineOptions:
    """Options of a whole pipeline (`with_options`)."""

    deadline: timedelta | None = None
    """The pipeline fails with `flink_tasks.PipelineDeadlineError` if still running this long
    after it started (running children are cancelled, `finally_do` runs as after a failure)."""


@dataclass(frozen=True)
class Initial:
    """Leading args, default kwargs and initial state for a pipeline's first entries."""

    args: tuple[Any, ...] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    state: Any = _NO_STATE
    has_args: bool = False
    has_kwargs: bool = False

    @property
    def has_state(self) -> bool:
        return self.state is not _NO_STATE
