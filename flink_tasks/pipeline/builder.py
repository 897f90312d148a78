"""Pipelines as immutable values: tasks, continuations, groups, error handlers and finally."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any, Generic, Literal, overload

from flink_tasks import serialization
from flink_tasks._proto import pipeline_pb2
from flink_tasks.errors import PipelineDefinitionError, TaskException
from flink_tasks.pipeline import timing

# the values, importable from here as before the split
from flink_tasks.pipeline.encoding import _allows_pickle, _count, _entry_to_proto
from flink_tasks.pipeline.entries import _NO_STATE as _NO_STATE
from flink_tasks.pipeline.entries import _WORKER_SIDE_OPTIONS as _WORKER_SIDE_OPTIONS
from flink_tasks.pipeline.entries import DEFAULT_NAMESPACE as DEFAULT_NAMESPACE
from flink_tasks.pipeline.entries import DEFAULT_WORKER_NAME as DEFAULT_WORKER_NAME
from flink_tasks.pipeline.entries import MAX_GROUP_NESTING as MAX_GROUP_NESTING
from flink_tasks.pipeline.entries import RESERVED_ID_CHARACTERS as RESERVED_ID_CHARACTERS
from flink_tasks.pipeline.entries import Entry as Entry
from flink_tasks.pipeline.entries import Group as Group
from flink_tasks.pipeline.entries import Initial as Initial
from flink_tasks.pipeline.entries import PipelineOptions as PipelineOptions
from flink_tasks.pipeline.entries import TaskCall as TaskCall
from flink_tasks.pipeline.entries import TaskOptions as TaskOptions
from flink_tasks.pipeline.entries import new_id as new_id
from flink_tasks.pipeline.entries import new_task_id as new_task_id
from flink_tasks.pipeline.entries import pipeline_id_problem as pipeline_id_problem
from flink_tasks.pipeline.typed import R2, Result, Sendable, T


class PipelineBuilder(Generic[Result]):
    """An immutable pipeline: each method returns a new pipeline; nothing runs until submitted.

    `id` is the pipeline's id; it may be set before the pipeline is submitted. The type
    parameter is the pipeline's result type, for type checkers (see docs/semantics.md, Typing).
    """

    __slots__ = ("_entries", "_initial", "_inline", "_options", "_unsent_id", "id")

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
        # an id generated here, not yet submitted: no engine can know it (see claim_fresh_id)
        self._unsent_id: list[str] = [] if pipeline_id else [self.id]
        _validate(self._entries)

    def claim_fresh_id(self) -> bool:
        """True at most once per builder: for the first submit of an id this builder generated
        (and `id` not reassigned since). Such an id is unknown to the engine, so a client's
        reuse lookup before sending it would only answer "unknown". A retry of the same builder,
        a given id and a copy or unpickled builder answer False (they are looked up)."""
        try:
            generated = self._unsent_id.pop()  # atomic: two threads cannot both claim it
        except IndexError:
            return False
        return generated == self.id

    def __getstate__(self) -> tuple[None, dict[str, Any]]:
        # a copy (pickled, copied) may be submitted besides the original: it is looked up
        state = {name: getattr(self, name) for name in self.__slots__ if name != "_unsent_id"}
        return None, state

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        for name, value in state[1].items():
            setattr(self, name, value)
        self._unsent_id = []

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
        timeout) for this pipeline's last task entry, or delay its start: `countdown=timedelta`
        and `eta=datetime` (durable), `expires=timedelta | datetime` (fail if not started by)."""
        if not self._entries or not isinstance(self._entries[-1], TaskCall):
            raise PipelineDefinitionError(
                "set(...) applies to a task entry; this pipeline ends in a group"
            )
        unknown = set(options) - {
            f for f in TaskOptions.__dataclass_fields__ if f not in _WORKER_SIDE_OPTIONS
        }
        if unknown:
            raise PipelineDefinitionError(f"set(...) got unknown options: {sorted(unknown)}")
        timing.check_timing(options)
        last = self._entries[-1]
        updated = replace(last, options=replace(last.options, **options))
        return self._with_entries((*self._entries[:-1], updated))

    def wait(self) -> PipelineBuilder[Result]:
        """Make this pipeline's last entry (a task or a group) a pause point: when it completes,
        the pipeline's status becomes PAUSED and nothing after it starts until `unpause`."""
        if not self._entries:
            raise PipelineDefinitionError("wait() needs an entry to pause after")
        last = self._entries[-1]
        if isinstance(last, TaskCall) and last.kind == pipeline_pb2.ENTRY_KIND_FINALLY:
            raise PipelineDefinitionError(
                "wait() cannot follow finally_do(...): nothing is after it"
            )
        return self._with_entries((*self._entries[:-1], replace(last, pause_after=True)))

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
    ordered: bool = True,
) -> PipelineBuilder[list[T]]: ...


@overload
def in_parallel(
    entries: Sequence[PipelineBuilder[T]],
    max_parallelism: int | None = None,
    num_stages: int | None = None,
    *,
    return_exceptions: Literal[True],
    ordered: bool = True,
) -> PipelineBuilder[list[T | TaskException]]: ...


@overload
def in_parallel(
    entries: Sequence[PipelineBuilder[T]],
    max_parallelism: int | None = None,
    num_stages: int | None = None,
    return_exceptions: bool = False,
    ordered: bool = True,
) -> PipelineBuilder[list[Any]]: ...


def in_parallel(
    entries: Sequence[PipelineBuilder[Any]],
    max_parallelism: int | None = None,
    num_stages: int | None = None,
    return_exceptions: bool = False,
    ordered: bool = True,
) -> PipelineBuilder[list[Any]]:
    """Run pipelines in parallel; the result is the list of their results in declaration order
    (`ordered=False`: in the order they complete)."""
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
        ordered=ordered,
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
