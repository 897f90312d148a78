"""Type variables and protocols of typed pipelines: a `PipelineBuilder[R]` results in an R.

Only for type checkers: at run time a pipeline knows nothing of its result type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, Protocol, overload
from typing import TypeVar as _TypeVar

if TYPE_CHECKING:
    # a default (PEP 696) keeps a bare `PipelineBuilder` meaning `PipelineBuilder[Any]`
    from typing_extensions import TypeVar

    from flink_tasks.pipeline.builder import PipelineBuilder, TaskCall
    from flink_tasks.registry import Task

    Result = TypeVar("Result", covariant=True, default=Any)
else:
    Result = _TypeVar("Result", covariant=True)

P = ParamSpec("P")
T = _TypeVar("T")
R2 = _TypeVar("R2")
SendResult = _TypeVar("SendResult", covariant=True)


class Sendable(Protocol[P, SendResult]):
    """What builds a task entry: a bound `Task` or a `TaskRef` (a stub or `ref` by name)."""

    def send(self, *args: P.args, **kwargs: P.kwargs) -> PipelineBuilder[SendResult]: ...

    def _make_call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> TaskCall: ...


# What `FlinkTasks.bind(...)` returns: the pipeline result type R of a task is what its function
# returns, awaited if async, the child's result if it returns a pipeline (an orchestrator) and the
# second item of `(new_state, result)` with `with_state=True`.


class BindTask(Protocol):
    """`bind()`: the function takes the task's arguments."""

    @overload
    def __call__(self, fn: Callable[P, Awaitable[PipelineBuilder[R2]]]) -> Task[P, R2]: ...

    @overload
    def __call__(self, fn: Callable[P, PipelineBuilder[R2]]) -> Task[P, R2]: ...

    @overload
    def __call__(self, fn: Callable[P, Awaitable[R2]]) -> Task[P, R2]: ...

    @overload
    def __call__(self, fn: Callable[P, R2]) -> Task[P, R2]: ...


class BindWithContext(Protocol):
    """`bind(with_context=True)`: the function takes the `TaskContext` first."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, P], Awaitable[PipelineBuilder[R2]]]
    ) -> Task[P, R2]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], PipelineBuilder[R2]]) -> Task[P, R2]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], Awaitable[R2]]) -> Task[P, R2]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], R2]) -> Task[P, R2]: ...


class BindWithState(Protocol):
    """`bind(with_state=True)`: the function takes the state first, returns (state, result)."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, P], Awaitable[tuple[Any, R2]]]
    ) -> Task[P, R2]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, P], tuple[Any, R2]]) -> Task[P, R2]: ...


class BindWithContextAndState(Protocol):
    """`bind(with_context=True, with_state=True)`: context, then state; returns (state, result)."""

    @overload
    def __call__(
        self, fn: Callable[Concatenate[Any, Any, P], Awaitable[tuple[Any, R2]]]
    ) -> Task[P, R2]: ...

    @overload
    def __call__(self, fn: Callable[Concatenate[Any, Any, P], tuple[Any, R2]]) -> Task[P, R2]: ...
