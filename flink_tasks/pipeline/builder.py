"""Pipelines as immutable values: tasks, continuations, groups, error handlers and finally."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Generic, Literal, overload

from flink_tasks import serialization, wire
from flink_tasks._proto import pipeline_pb2
from flink_tasks.errors import PipelineDefinitionError, SerializationError, TaskException
from flink_tasks.pipeline.typed import R2, Result, Sendable, T
from flink_tasks.types import RetryPolicy

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


class PipelineBuilder(Generic[Result]):
    """An immutable pipeline: each method returns a new pipeline; nothing runs until submitted.

    `id` is the pipeline's id; it may be set before the pipeline is submitted. The type
    parameter is the pipeline's result type, for type checkers (see docs/semantics.md, Typing).
    """

    __slots__ = ("_entries", "_initial", "_inline", "_options", "id")

    def __init__(
        self,
        entries: Sequence[Entry] = (),
        *,
        initial: Initial | None = None,
        inline: bool = False,
        pipeline_id: str | None = None,
        options: PipelineOptions | None = None,
    ) -> None:
        self._entries: tuple[Entry, ...] = tuple(entries)
        self._initial = initial or Initial()
        self._inline = inline
        self._options = options or PipelineOptions()
        self.id: str = pipeline_id or new_id()
        _validate(self._entries)

    @property
    def entries(self) -> tuple[Entry, ...]:
        """The entries, in order."""
        return self._entries

    @property
    def initial(self) -> Initial:
        """The initial args, kwargs and state."""
        return self._initial

    @property
    def options(self) -> PipelineOptions:
        """The pipeline-level options (`with_options`)."""
        return self._options

    @property
    def is_inline(self) -> bool:
        """True if, run as a child, this pipeline shares its parent's state."""
        return self._inline

    def _with_entries(self, entries: Sequence[Entry]) -> PipelineBuilder[Any]:
        return PipelineBuilder(
            entries, initial=self._initial, inline=self._inline, options=self._options
        )

    @overload
    def continue_with(self, continuation: PipelineBuilder[R2]) -> PipelineBuilder[R2]: ...

    @overload
    def continue_with(
        self, continuation: Sendable[..., R2], *args: Any, **kwargs: Any
    ) -> PipelineBuilder[R2]: ...

    def continue_with(
        self, continuation: Sendable[..., Any] | PipelineBuilder[Any], *args: Any, **kwargs: Any
    ) -> PipelineBuilder[Any]:
        """Run `continuation` after this pipeline; it receives the previous result first."""
        return self._with_entries(
            self._entries + _entries_of(continuation, args, kwargs, "continue_with")
        )

    def exceptionally(
        self, handler: Sendable[..., R2], *args: Any, **kwargs: Any
    ) -> PipelineBuilder[Result | R2]:
        """On error, run `handler` with the `TaskException` first; on success it is skipped."""
        call = _call_of(handler, args, kwargs, "exceptionally")
        return self._with_entries(
            (*self._entries, replace(call, kind=pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY))
        )

    def finally_do(
        self, task: Sendable[..., Any], *args: Any, **kwargs: Any
    ) -> PipelineBuilder[Result]:
        """Run `task` last, after success, error or cancellation; it gets only its own args."""
        call = _call_of(task, args, kwargs, "finally_do")
        return self._with_entries(
            (*self._entries, replace(call, kind=pipeline_pb2.ENTRY_KIND_FINALLY))
        )

    def with_initial(
        self, args: Any = None, kwargs: Mapping[str, Any] | None = None, state: Any = _NO_STATE
    ) -> PipelineBuilder[Result]:
        """Give the first entries leading `args`, default `kwargs` and the initial `state`.

        A tuple is spread into several args; any other value is one arg.
        """
        if args is None:
            initial_args: tuple[Any, ...] = ()
        elif isinstance(args, tuple):
            initial_args = args
        else:
            initial_args = (args,)
        initial = Initial(
            args=initial_args,
            kwargs=dict(kwargs or {}),
            state=state,
            has_args=args is not None,
            has_kwargs=kwargs is not None,
        )
        return PipelineBuilder(
            self._entries, initial=initial, inline=self._inline, options=self._options
        )

    def inline(self) -> PipelineBuilder[Result]:
        """Run as a child that shares state with its parent (instead of being isolated)."""
        return PipelineBuilder(
            self._entries, initial=self._initial, inline=True, options=self._options
        )

    def with_options(self, *, deadline: timedelta | None = None) -> PipelineBuilder[Result]:
        """Options of the whole pipeline.

        Args:
            deadline: if the pipeline is still running this long after it started, it fails
                with `flink_tasks.PipelineDeadlineError`: running children are cancelled and
                `finally_do` runs, as after any failure. Applies to a submitted pipeline and to
                one an orchestrator task returns (from when it starts as a child).
        """
        if deadline is not None and (
            not isinstance(deadline, timedelta) or deadline <= timedelta(0)
        ):
            raise PipelineDefinitionError(
                f"deadline must be a positive timedelta, got {deadline!r}"
            )
        return PipelineBuilder(
            self._entries,
            initial=self._initial,
            inline=self._inline,
            options=replace(self._options, deadline=deadline),
        )

    def set(self, **options: Any) -> PipelineBuilder[Result]:
        """Override bind options (retry_policy, is_fruitful, namespace, worker_name, display_name,
        timeout) for this pipeline's last task entry."""
        if not self._entries or not isinstance(self._entries[-1], TaskCall):
            raise PipelineDefinitionError(
                "set(...) applies to a task entry; this pipeline ends in a group"
            )
        unknown = set(options) - {
            f for f in TaskOptions.__dataclass_fields__ if f not in _WORKER_SIDE_OPTIONS
        }
        if unknown:
            raise PipelineDefinitionError(f"set(...) got unknown options: {sorted(unknown)}")
        last = self._entries[-1]
        updated = replace(last, options=replace(last.options, **options))
        return self._with_entries((*self._entries[:-1], updated))

    def task_count(self) -> int:
        """The number of task entries, groups included."""
        return sum(_count(e) for e in self._entries)

    def to_proto(self) -> pipeline_pb2.Pipeline:
        """The wire form; raises `SerializationError` if an argument cannot be serialized."""
        out = pipeline_pb2.Pipeline(id=self.id, inline=self._inline)
        if self._options.deadline is not None:
            out.deadline_ms = max(1, int(self._options.deadline.total_seconds() * 1000))
        for entry in self._entries:
            _entry_to_proto(entry, out.entries.add())
        initial = self._initial
        pickle_ok = any(_allows_pickle(e) for e in self._entries)
        if initial.has_args:
            out.initial.args.CopyFrom(
                serialization.encode_args(initial.args, allow_pickle=pickle_ok)
            )
            out.initial.has_args = True
        if initial.has_kwargs:
            out.initial.kwargs.CopyFrom(
                serialization.encode_kwargs(initial.kwargs, allow_pickle=pickle_ok)
            )
            out.initial.has_kwargs = True
        if initial.has_state:
            out.initial.state.CopyFrom(serialization.encode(initial.state, allow_pickle=pickle_ok))
            out.initial.has_state = True
        return out

    def __repr__(self) -> str:
        return f"PipelineBuilder(id={self.id!r}, entries={len(self._entries)})"


@overload
def in_parallel(
    entries: Sequence[PipelineBuilder[T]],
    max_parallelism: int | None = None,
    num_stages: int | None = None,
    return_exceptions: Literal[False] = False,
) -> PipelineBuilder[list[T]]: ...


@overload
def in_parallel(
    entries: Sequence[PipelineBuilder[T]],
    max_parallelism: int | None = None,
    num_stages: int | None = None,
    *,
    return_exceptions: Literal[True],
) -> PipelineBuilder[list[T | TaskException]]: ...


@overload
def in_parallel(
    entries: Sequence[PipelineBuilder[T]],
    max_parallelism: int | None = None,
    num_stages: int | None = None,
    return_exceptions: bool = False,
) -> PipelineBuilder[list[Any]]: ...


def in_parallel(
    entries: Sequence[PipelineBuilder[Any]],
    max_parallelism: int | None = None,
    num_stages: int | None = None,
    return_exceptions: bool = False,
) -> PipelineBuilder[list[Any]]:
    """Run pipelines in parallel; the result is the list of their results in declaration order."""
    chains = tuple(entries)
    for chain in chains:
        if not isinstance(chain, PipelineBuilder):
            raise PipelineDefinitionError(
                f"in_parallel takes pipelines (task.send(...)), got {type(chain).__name__}"
            )
        if chain.initial != Initial():
            raise PipelineDefinitionError(
                "with_initial(...) belongs on the outer pipeline, not a chain"
            )
        if chain.options != PipelineOptions():
            raise PipelineDefinitionError(
                "with_options(...) belongs on the outer pipeline, not a chain"
            )
    if len(chains) == 1 and _is_empty_group(chains[0]):
        chains = ()  # in_parallel([in_parallel([])]) is [] (docs/semantics.md)
    nesting = 1 + max(
        (e.nesting for chain in chains for e in chain.entries if isinstance(e, Group)), default=0
    )
    if nesting > MAX_GROUP_NESTING:
        raise PipelineDefinitionError(
            f"in_parallel groups are nested {nesting} deep, more than {MAX_GROUP_NESTING}: "
            "flatten the groups, or let a task return the inner part as a child pipeline"
        )
    group = Group(
        group_id=new_id(),
        chains=chains,
        max_parallelism=max(0, max_parallelism or 0),
        num_stages=max(0, num_stages or 0),
        return_exceptions=return_exceptions,
        nesting=nesting,
    )
    return PipelineBuilder((group,))


def _is_empty_group(chain: PipelineBuilder) -> bool:
    return (
        len(chain.entries) == 1
        and isinstance(chain.entries[0], Group)
        and not chain.entries[0].chains
    )


def _call_of(
    task: Sendable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], method: str
) -> TaskCall:
    make_call = getattr(task, "_make_call", None)
    if make_call is None:
        raise PipelineDefinitionError(f"{method}(...) takes a bound task, got {task!r}")
    call: TaskCall = make_call(args, kwargs)
    return call


def _entries_of(
    continuation: Sendable[..., Any] | PipelineBuilder[Any],
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    method: str,
) -> tuple[Entry, ...]:
    if isinstance(continuation, PipelineBuilder):
        if args or kwargs:
            raise PipelineDefinitionError(f"{method}(pipeline) takes no extra arguments")
        if continuation.initial != Initial():
            raise PipelineDefinitionError("with_initial(...) belongs on the outer pipeline")
        if continuation.options != PipelineOptions():
            raise PipelineDefinitionError("with_options(...) belongs on the outer pipeline")
        return continuation.entries
    return (_call_of(continuation, args, kwargs, method),)


def _validate(entries: tuple[Entry, ...]) -> None:
    if (
        entries
        and isinstance(entries[0], TaskCall)
        and entries[0].kind == pipeline_pb2.ENTRY_KIND_EXCEPTIONALLY
    ):
        raise PipelineDefinitionError("a pipeline may not start with exceptionally(...)")
    for index, entry in enumerate(entries):
        if (
            isinstance(entry, TaskCall)
            and entry.kind == pipeline_pb2.ENTRY_KIND_FINALLY
            and index != len(entries) - 1
        ):
            raise PipelineDefinitionError(
                "finally_do(...) must be the last entry of a pipeline, at most once"
            )


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
        return
    group = out.group
    group.group_id = entry.group_id
    group.max_parallelism = entry.max_parallelism
    group.num_stages = entry.num_stages
    group.return_exceptions = entry.return_exceptions
    for chain in entry.chains:
        chain_out = group.chains.add()
        for chain_entry in chain.entries:
            _entry_to_proto(chain_entry, chain_out.entries.add())
