"""Tasks by name: a `TaskRef` builds the same pipeline entry as the bound task, without its code.

`FlinkTasks.ref("myapp.tasks.multiply")` is untyped; `FlinkTasks.stub` declares the signature on
the client side (a body-less function) so that mypy checks `send` and `continue_with` calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any, Generic, ParamSpec, TypeVar

from flink_tasks.pipeline.builder import PipelineBuilder, TaskCall, TaskOptions, new_task_id
from flink_tasks.types import RetryPolicy

P = ParamSpec("P")
R = TypeVar("R")


class TaskRef(Generic[P, R]):
    """A task known by its type name: `send(...)` builds a one-entry pipeline; never runs here."""

    def __init__(self, type_name: str, options: TaskOptions) -> None:
        if not isinstance(type_name, str) or not type_name:
            raise ValueError(f"a task reference needs a non-empty type name, got {type_name!r}")
        self._type_name = type_name
        self._options = options

    @property
    def type_name(self) -> str:
        """The name the worker has the task bound under."""
        return self._type_name

    @property
    def options(self) -> TaskOptions:
        """The options every entry of this reference starts with (`.set(...)` overrides them)."""
        return self._options

    def send(self, *args: P.args, **kwargs: P.kwargs) -> PipelineBuilder[R]:
        """Build a pipeline of this one task with these arguments; nothing runs yet."""
        return PipelineBuilder((self._make_call(args, kwargs),))

    def _make_call(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> TaskCall:
        return TaskCall(
            task_id=new_task_id(),
            task_type=self._type_name,
            args=tuple(args),
            kwargs=dict(kwargs),
            options=self._options,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{self!r} only builds pipelines (use .send(...)): its code lives in the worker"
        )

    def __repr__(self) -> str:
        return f"TaskRef({self._type_name!r})"


def reference_options(
    *,
    namespace: str,
    worker_name: str,
    retry_policy: RetryPolicy | None,
    is_fruitful: bool,
    display_name: str | None,
    timeout: timedelta | None,
    allow_pickle: bool,
) -> TaskOptions:
    """The options a reference's entries carry: those `bind` would give the task's entries."""
    return TaskOptions(
        namespace=namespace,
        worker_name=worker_name,
        retry_policy=retry_policy,
        is_fruitful=is_fruitful,
        display_name=display_name or "",
        timeout=timeout,
        allow_pickle=allow_pickle,
    )


def stub_type_name(fn: Callable[..., Any], type_name: str | None, module: str | None) -> str:
    """The type name a stub stands for: given, or the worker's ``module`` + the stub's name."""
    if type_name and module:
        raise ValueError("stub(...) takes a type name or module=, not both")
    if type_name:
        return type_name
    if module:
        return f"{module}.{fn.__name__}"
    raise ValueError(
        f"stub(...) of {fn.__name__} needs the worker's type name, e.g. "
        f"stub('myapp.tasks.{fn.__name__}') or stub(module='myapp.tasks'): the stub's own "
        "module is not the worker's"
    )
