"""`FlinkTasks` binds Python functions as tasks; a `Task` builds pipelines."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any, Generic, Literal, ParamSpec, TypeVar, cast, overload

from flink_tasks.errors import TaskNotFoundError
from flink_tasks.pipeline.builder import (
    DEFAULT_NAMESPACE,
    DEFAULT_WORKER_NAME,
    PipelineBuilder,
    TaskCall,
    TaskOptions,
    new_task_id,
)
from flink_tasks.pipeline.refs import TaskRef, reference_options, stub_type_name
from flink_tasks.pipeline.typed import (
    BindTask,
    BindWithContext,
    BindWithContextAndState,
    BindWithState,
)
from flink_tasks.types import RetryPolicy, parse_memory_size

P = ParamSpec("P")
R = TypeVar("R")

PIPELINE_FUNCTION_NAME = "pipeline"


@dataclass(frozen=True)
class TaskDefinition:
    """What the worker needs to run a task."""

    type_name: str
    fn: Callable[..., Any]
    is_async: bool
    with_state: bool
    with_context: bool
    options: TaskOptions


class Task(Generic[P, R]):
    """A bound task. `send(...)` builds a one-entry pipeline; calling it runs the function here."""

    def __init__(self, definition: TaskDefinition) -> None:
        self._definition = definition
        functools.update_wrapper(self, definition.fn)

    @property
    def type_name(self) -> str:
        """The name this task is registered under."""
        return self._definition.type_name

    @property
    def definition(self) -> TaskDefinition:
        """The task's definition as the worker runs it."""
        return self._definition

    def send(self, *args: P.args, **kwargs: P.kwargs) -> PipelineBuilder[R]:
        """Build a pipeline of this one task with these arguments; nothing runs yet."""
        return PipelineBuilder((self._make_call(args, kwargs),))

    def _make_call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> TaskCall:
        return TaskCall(
            task_id=new_task_id(),
            task_type=self._definition.type_name,
            args=tuple(args),
            kwargs=dict(kwargs),
            options=self._definition.options,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._definition.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Task({self._definition.type_name!r})"


class FlinkTasks:
    """A registry of tasks, served by a worker and referenced by pipelines.

    Args:
        namespace: StateFun namespace of the task and pipeline functions.
        worker_name: StateFun function name that runs this registry's tasks.
        default_timeout: how long a task may run before it fails with a timeout.
    """

    def __init__(
        self,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        worker_name: str = DEFAULT_WORKER_NAME,
        default_timeout: timedelta = timedelta(minutes=5),
    ) -> None:
        if worker_name == PIPELINE_FUNCTION_NAME:
            raise ValueError(
                f"worker_name {PIPELINE_FUNCTION_NAME!r} is reserved for the pipeline function"
            )
        self.namespace = namespace
        self.worker_name = worker_name
        self.default_timeout = default_timeout
        self._tasks: dict[str, TaskDefinition] = {}

    @overload
    def bind(
        self,
        name: str | None = ...,
        *,
        with_state: Literal[False] = ...,
        with_context: Literal[False] = ...,
        retry_policy: RetryPolicy | None = ...,
        is_fruitful: bool = ...,
        namespace: str | None = ...,
        worker_name: str | None = ...,
        display_name: str | None = ...,
        timeout: timedelta | None = ...,
        allow_pickle: bool = ...,
        max_memory: int | str | None = ...,
    ) -> BindTask: ...

    @overload
    def bind(
        self,
        name: str | None = ...,
        *,
        with_state: Literal[True],
        with_context: Literal[False] = ...,
        retry_policy: RetryPolicy | None = ...,
        is_fruitful: bool = ...,
        namespace: str | None = ...,
        worker_name: str | None = ...,
        display_name: str | None = ...,
        timeout: timedelta | None = ...,
        allow_pickle: bool = ...,
        max_memory: int | str | None = ...,
    ) -> BindWithState: ...

    @overload
    def bind(
        self,
        name: str | None = ...,
        *,
        with_state: Literal[False] = ...,
        with_context: Literal[True],
        retry_policy: RetryPolicy | None = ...,
        is_fruitful: bool = ...,
        namespace: str | None = ...,
        worker_name: str | None = ...,
        display_name: str | None = ...,
        timeout: timedelta | None = ...,
        allow_pickle: bool = ...,
        max_memory: int | str | None = ...,
    ) -> BindWithContext: ...

    @overload
    def bind(
        self,
        name: str | None = ...,
        *,
        with_state: Literal[True],
        with_context: Literal[True],
        retry_policy: RetryPolicy | None = ...,
        is_fruitful: bool = ...,
        namespace: str | None = ...,
        worker_name: str | None = ...,
        display_name: str | None = ...,
        timeout: timedelta | None = ...,
        allow_pickle: bool = ...,
        max_memory: int | str | None = ...,
    ) -> BindWithContextAndState: ...

    def bind(
        self,
        name: str | None = None,
        *,
        with_state: bool = False,
        with_context: bool = False,
        retry_policy: RetryPolicy | None = None,
        is_fruitful: bool = True,
        namespace: str | None = None,
        worker_name: str | None = None,
        display_name: str | None = None,
        timeout: timedelta | None = None,
        allow_pickle: bool = False,
        max_memory: int | str | None = None,
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
        """Register a function as a task.

        With `with_context=True` the function receives a `TaskContext` first; with
        `with_state=True` it receives the pipeline state (after the context) and returns
        `(new_state, result)`.

        `max_memory` (bytes, or a string such as ``"512MiB"``) limits the resident memory of the
        process running the task; over it the task fails with `MemoryLimitError`. Only the
        process pool (``serve --pool process``) enforces it.
        """
        memory_limit = parse_memory_size(max_memory) if max_memory is not None else None

        def decorate(fn: Callable[..., Any]) -> Task[Any, Any]:
            type_name = name or f"{fn.__module__}.{fn.__qualname__}"
            if type_name in self._tasks and self._tasks[type_name].fn is not fn:
                raise ValueError(f"a task named {type_name!r} is already bound")
            options = TaskOptions(
                namespace=namespace or self.namespace,
                worker_name=worker_name or self.worker_name,
                retry_policy=retry_policy,
                is_fruitful=is_fruitful,
                display_name=display_name or "",
                timeout=timeout,
                allow_pickle=allow_pickle,
                max_memory=memory_limit,
            )
            definition = TaskDefinition(
                type_name=type_name,
                fn=fn,
                is_async=inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn),
                with_state=with_state,
                with_context=with_context,
                options=options,
            )
            self._tasks[type_name] = definition
            return Task(definition)

        return decorate

    def ref(
        self,
        type_name: str,
        *,
        retry_policy: RetryPolicy | None = None,
        is_fruitful: bool = True,
        namespace: str | None = None,
        worker_name: str | None = None,
        display_name: str | None = None,
        timeout: timedelta | None = None,
        allow_pickle: bool = False,
    ) -> TaskRef[..., Any]:
        """A task by its type name, without its code: `ref(name).send(...)` builds the entry
        `bind` would (same type name, namespace, worker name and options). Untyped; see `stub`.
        """
        return TaskRef(
            type_name,
            reference_options(
                namespace=namespace or self.namespace,
                worker_name=worker_name or self.worker_name,
                retry_policy=retry_policy,
                is_fruitful=is_fruitful,
                display_name=display_name,
                timeout=timeout,
                allow_pickle=allow_pickle,
            ),
        )

    def stub(
        self,
        type_name: str | None = None,
        *,
        module: str | None = None,
        retry_policy: RetryPolicy | None = None,
        is_fruitful: bool = True,
        namespace: str | None = None,
        worker_name: str | None = None,
        display_name: str | None = None,
        timeout: timedelta | None = None,
        allow_pickle: bool = False,
    ) -> Callable[[Callable[P, R]], TaskRef[P, R]]:
        """Declare a worker's task on the client side by its signature, for mypy to check.

        Decorates a body-less function (``def multiply(x: int, y: int) -> int: ...``) whose
        parameters are those `send` takes (no context or state); the body never runs. The type
        name is `type_name`, or ``module`` + the function's name. Options are `ref`'s.
        """

        def declare(fn: Callable[P, R]) -> TaskRef[P, R]:
            # ref's untyped reference, typed by the declared signature
            reference = cast(
                "TaskRef[P, R]",
                self.ref(
                    stub_type_name(fn, type_name, module),
                    retry_policy=retry_policy,
                    is_fruitful=is_fruitful,
                    namespace=namespace,
                    worker_name=worker_name,
                    display_name=display_name,
                    timeout=timeout,
                    allow_pickle=allow_pickle,
                ),
            )
            functools.update_wrapper(reference, fn)  # its name and docstring, for help()
            return reference

        return declare

    def register(self, task: Task[Any, Any]) -> None:
        """Serve a task bound on another registry from this one as well."""
        self._tasks[task.type_name] = replace(task.definition)

    def include(self, other: FlinkTasks) -> FlinkTasks:
        """Serve every task of `other` from this registry as well; returns self."""
        for type_name, definition in other._tasks.items():
            existing = self._tasks.get(type_name)
            if existing is not None and existing.fn is not definition.fn:
                raise ValueError(f"a task named {type_name!r} is already bound")
            self._tasks[type_name] = definition
        return self

    def get(self, type_name: str) -> TaskDefinition:
        """The definition of a bound task; `TaskNotFoundError` names the type if none."""
        try:
            return self._tasks[type_name]
        except KeyError:
            raise TaskNotFoundError(
                f"no task {type_name!r} is bound in this worker: import the module that defines it "
                "in the worker, or check the name"
            ) from None

    @property
    def task_types(self) -> list[str]:
        """The bound type names."""
        return sorted(self._tasks)

    @property
    def namespaces(self) -> list[str]:
        """Every StateFun namespace this registry's tasks are served under."""
        return sorted({self.namespace} | {d.options.namespace for d in self._tasks.values()})

    @property
    def function_types(self) -> list[tuple[str, str]]:
        """(namespace, name) of every task function this registry serves."""
        return sorted(
            {(self.namespace, self.worker_name)}
            | {(d.options.namespace, d.options.worker_name) for d in self._tasks.values()}
        )
