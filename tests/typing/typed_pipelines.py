"""What mypy checks in pipelines, and what it does not: type-checked by tests/unit/test_typing.py,
never run. A trailing comment "R: T" after `reveal_type(...)`: mypy must reveal T (written
without the `builtins.` and module prefixes); "E: code": mypy must report an error with that code
on that line; any other error fails the test."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flink_tasks_client import FlinkTasksClient

from flink_tasks import FlinkTasks, PipelineBuilder, TaskRef, in_parallel

if TYPE_CHECKING:
    from typing_extensions import reveal_type

tasks = FlinkTasks()


@tasks.bind()
def add(x: int, y: int) -> int:
    return x + y


@tasks.bind()
async def shout(text: str) -> str:
    return text.upper()


@tasks.bind()
def fan_out(n: int) -> PipelineBuilder[list[int]]:
    return in_parallel([add.send(i, i) for i in range(n)])


@tasks.bind(with_state=True)
def count(state: Any, item: str) -> tuple[Any, int]:
    return (state or 0) + 1, len(item)


@tasks.bind(with_context=True)
def where(context: Any, prefix: str) -> str:
    return prefix


@tasks.bind()
def echo(*args: Any) -> Any:
    return args


@tasks.stub(module="myapp.tasks")
def multiply(x: int, y: int) -> int:
    raise NotImplementedError  # runs in the worker


untyped = tasks.ref("myapp.tasks.divide")
typed_ref: TaskRef[[float, float], float] = tasks.ref("myapp.tasks.divide")

# --- checked: send's arguments, for bound tasks, stubs and annotated refs
add.send(1, 2)
add.send(1, "2")  # E: arg-type
add.send(1)  # E: call-arg
shout.send(text="a")
shout.send(txt="a")  # E: call-arg
count.send("item")  # the state is not an argument
where.send("p", "q")  # E: call-arg
multiply.send(6, 7)
multiply.send(6.5, 7)  # E: arg-type
typed_ref.send(1.0, "2")  # E: arg-type
untyped.send("anything", at=["all"])  # a ref by name alone: unchecked

# --- checked: result types carried through the pipeline
reveal_type(add.send(1, 2))  # R: PipelineBuilder[int]
reveal_type(shout.send("a"))  # R: PipelineBuilder[str]
reveal_type(fan_out.send(3))  # R: PipelineBuilder[list[int]]
reveal_type(count.send("a"))  # R: PipelineBuilder[int]
reveal_type(multiply.send(6, 7))  # R: PipelineBuilder[int]
reveal_type(untyped.send(1))  # R: PipelineBuilder[Any]
reveal_type(add.send(1, 2).continue_with(shout))  # R: PipelineBuilder[str]
reveal_type(add.send(1, 2).continue_with(fan_out.send(2)))  # R: PipelineBuilder[list[int]]
reveal_type(in_parallel([add.send(1, 2), multiply.send(3, 4)]))  # R: PipelineBuilder[list[int]]
gathered = in_parallel([add.send(1, 2)], return_exceptions=True)
reveal_type(gathered)  # R: PipelineBuilder[list[int | TaskException]]
reveal_type(add.send(1, 2).exceptionally(where, "p"))  # R: PipelineBuilder[int | str]
tuned = add.send(1, 2).finally_do(echo).set(timeout=None).with_initial(state={})
reveal_type(tuned)  # R: PipelineBuilder[int]


def submit(client: FlinkTasksClient) -> None:
    reveal_type(client.submit_sync(add.send(1, 2).continue_with(shout)))  # R: str
    total: int = client.submit_sync(in_parallel([add.send(1, 2)]))  # E: assignment
    texts: list[str] = client.submit_sync(in_parallel([shout.send("a")]))
    del total, texts


# --- not checked: a continuation's parameters against the previous result (a tuple result is
# spread into arguments at run time, and with_initial adds leading ones), and a group of mixed
# result types is a list of their common base
add.send(1, 2).continue_with(shout)  # shout gets an int at run time: not caught
reveal_type(in_parallel([add.send(1, 2), shout.send("a")]))  # R: PipelineBuilder[list[object]]
